//! Reading the kernel side's maps into a snapshot.
pub(crate) mod batch;
pub(crate) mod bpf_sys;
pub mod clock;
pub mod prog_info;

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap},
};
use leak_common::{
    Allocation, Goroutine, StackCounts, StackTotals, StackTrace, counter, probe_cookie,
    unwind_state,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CollectError {
    #[error("eBPF map {0} is missing")]
    MissingMap(&'static str),
    #[error("cannot read eBPF map {map}: {source}")]
    Map { map: &'static str, source: MapError },
    #[error("cannot start the clock thread: {0}")]
    Thread(String),
}

/// Outstanding allocations of one stack.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StackOutstanding {
    /// Allocations at least `min_age` old.
    pub aged_bytes: u64,
    pub aged_allocs: u64,
    /// Of any age.
    pub bytes: u64,
    pub allocs: u64,
    pub oldest_ns: u64,
    pub kind: u32,
    /// Standard error of `aged_bytes` under byte sampling (0 when every allocation counts).
    pub aged_stderr_bytes: f64,
    /// Of any age, the blocks traced exactly since the stack's call site was escalated
    /// (`--always-on`): real figures, not estimates.
    pub exact_bytes: u64,
    pub exact_allocs: u64,
}

/// The kernel's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub values: [u64; counter::COUNT as usize],
}

impl Counters {
    pub fn get(&self, index: u32) -> u64 {
        self.values[index as usize]
    }
}

/// Aged outstanding allocations of one stack made by goroutines created at one `go`
/// statement (Go targets with cgo).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CreationShare {
    /// The goroutines' `gopc` (a return address).
    pub gopc: u64,
    pub bytes: u64,
    pub allocs: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC, the clock of the kernel's timestamps.
    pub taken_ns: u64,
    pub by_stack: HashMap<u64, StackOutstanding>,
    /// Per stack: the recorded blocks outstanding, and every allocation ever made there.
    pub totals: HashMap<u64, StackTotals>,
    /// Per stack: its aged bytes split by the creation site of the goroutine that allocated
    /// them; blocks allocated outside any goroutine are in no share.
    pub by_creation_site: HashMap<u64, Vec<CreationShare>>,
    pub counters: Counters,
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
    /// Probe runs the kernel skipped (another BPF program was running on that CPU).
    pub skipped_runs: u64,
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The weight of one sampled allocation of `size` bytes under byte sampling of mean
/// `sample_bytes` (1 when every allocation is recorded): it was recorded with probability
/// p = 1 - exp(-size / mean), so it stands for 1/p allocations.
pub fn sample_weight(size: u64, sample_bytes: u64) -> f64 {
    if sample_bytes == 0 {
        return 1.0;
    }
    let p = -(-(size as f64) / sample_bytes as f64).exp_m1();
    if p > 0.0 { 1.0 / p } else { 1.0 }
}

/// Reads every outstanding allocation and the counters. Under byte sampling the figures are
/// unbiased estimates, each allocation weighted by the inverse of its sampling probability.
pub fn snapshot(ebpf: &Ebpf, min_age_ns: u64, sample_bytes: u64) -> Result<Snapshot, CollectError> {
    let taken_ns = monotonic_ns();
    // A million blocks is a normal day: one pass, one hash lookup per block.
    let blocks: Vec<(u64, Allocation)> = entries(ebpf, "ALLOCS")?;

    let mut snapshot = Snapshot {
        taken_ns,
        ..Snapshot::default()
    };
    // Per stack, estimates in floating point (rounded once at the end): bytes and
    // allocations of any age, then of aged ones, then the variance of the aged bytes.
    let mut stacks: HashMap<u64, (StackOutstanding, [f64; 5])> = HashMap::new();
    // And per stack, the blocks as recorded (sampled ones only, unweighted).
    let mut totals: HashMap<u64, StackTotals> = HashMap::new();
    let (mut total_bytes, mut total_allocs) = (0.0, 0.0);
    // Per (stack, gopc): aged bytes and allocations, estimated as above.
    let mut shares: HashMap<(u64, u64), (f64, f64)> = HashMap::new();
    for (_, block) in &blocks {
        let recorded = totals.entry(block.stack_id).or_default();
        recorded.outstanding_allocs += 1;
        recorded.outstanding_bytes += block.size;
        let (stack, e) = stacks.entry(block.stack_id).or_default();
        // An exactly traced block stands for itself alone.
        let w = if probe_cookie::kind_exact(block.kind) {
            stack.exact_bytes += block.size;
            stack.exact_allocs += 1;
            1.0
        } else {
            sample_weight(block.size, sample_bytes)
        };
        let bytes = block.size as f64 * w;
        e[0] += bytes;
        e[1] += w;
        stack.kind = block.kind;
        let age = taken_ns.saturating_sub(block.timestamp_ns);
        if age >= min_age_ns {
            e[2] += bytes;
            e[3] += w;
            // Variance of this term of the estimator: size^2 (1 - p) / p^2.
            e[4] += (block.size as f64).powi(2) * (w - 1.0) * w;
            if stack.oldest_ns == 0 || block.timestamp_ns < stack.oldest_ns {
                stack.oldest_ns = block.timestamp_ns;
            }
            if block.gopc != 0 {
                let share = shares.entry((block.stack_id, block.gopc)).or_default();
                share.0 += bytes;
                share.1 += w;
            }
        }
        total_bytes += bytes;
        total_allocs += w;
    }
    snapshot.by_stack = stacks
        .into_iter()
        .map(|(id, (mut stack, e))| {
            stack.bytes = e[0].round() as u64;
            stack.allocs = e[1].round() as u64;
            stack.aged_bytes = e[2].round() as u64;
            stack.aged_allocs = e[3].round() as u64;
            stack.aged_stderr_bytes = e[4].sqrt();
            (id, stack)
        })
        .collect();
    for ((stack, gopc), (bytes, allocs)) in shares {
        snapshot
            .by_creation_site
            .entry(stack)
            .or_default()
            .push(CreationShare {
                gopc,
                bytes: bytes.round() as u64,
                allocs: allocs.round() as u64,
            });
    }
    snapshot.outstanding_bytes = total_bytes.round() as u64;
    snapshot.outstanding_allocs = total_allocs.round() as u64;

    // Read after the blocks: an allocation made in between counts here and not there, never
    // the other way round.
    for (id, counts) in stack_counts(ebpf)? {
        let t = totals.entry(id).or_default();
        t.total_allocs = counts.allocs;
        t.total_bytes = counts.bytes;
    }
    for t in totals.values_mut() {
        // Stacks whose counts could not be kept (`totals_map_full`): at least what is held.
        t.total_allocs = t.total_allocs.max(t.outstanding_allocs);
        t.total_bytes = t.total_bytes.max(t.outstanding_bytes);
    }
    snapshot.totals = totals;
    snapshot.counters = counters(ebpf)?;
    snapshot.skipped_runs = prog_info::skipped_runs(ebpf);
    Ok(snapshot)
}

/// Each stack's outstanding bytes, of any age, estimated as [`snapshot`] does under byte
/// sampling (so the verdicts' history has one unit): the outstanding blocks in one batch read,
/// and nothing else (the verdicts' frequent sample). Returns them and how many blocks.
pub fn outstanding_bytes_by_stack(
    ebpf: &Ebpf,
    sample_bytes: u64,
) -> Result<(HashMap<u64, u64>, usize), CollectError> {
    let blocks: Vec<(u64, Allocation)> = entries(ebpf, "ALLOCS")?;
    let mut by_stack: HashMap<u64, f64> = HashMap::new();
    for (_, block) in &blocks {
        let w = if probe_cookie::kind_exact(block.kind) {
            1.0
        } else {
            sample_weight(block.size, sample_bytes)
        };
        *by_stack.entry(block.stack_id).or_default() += block.size as f64 * w;
    }
    let rounded = by_stack
        .into_iter()
        .map(|(stack, bytes)| (stack, bytes.round() as u64))
        .collect();
    Ok((rounded, blocks.len()))
}

/// Every outstanding block, by address: what a reachability scan looks for.
pub fn outstanding_blocks(ebpf: &Ebpf) -> Result<Vec<(u64, Allocation)>, CollectError> {
    entries(ebpf, "ALLOCS")
}

pub fn counters(ebpf: &Ebpf) -> Result<Counters, CollectError> {
    let map = ebpf
        .map("COUNTERS")
        .ok_or(CollectError::MissingMap("COUNTERS"))?;
    let array: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(|source| CollectError::Map {
            map: "COUNTERS",
            source,
        })?;
    let mut counters = Counters::default();
    for (index, value) in counters.values.iter_mut().enumerate() {
        let per_cpu = array
            .get(&(index as u32), 0)
            .map_err(|source| CollectError::Map {
                map: "COUNTERS",
                source,
            })?;
        *value = per_cpu.iter().sum();
    }
    Ok(counters)
}

/// Goroutines created since attaching and still alive, by `g` address (Go targets).
pub fn goroutines(ebpf: &Ebpf) -> Result<Vec<(u64, Goroutine)>, CollectError> {
    entries(ebpf, "GOROUTINES")
}

/// Removes stacks (their frames and totals) from the kernel's maps; returns how many went.
pub fn evict_stacks(ebpf: &mut Ebpf, ids: &[u64]) -> Result<u64, CollectError> {
    let err = |map| move |source| CollectError::Map { map, source };
    if ids.is_empty() {
        return Ok(0);
    }
    // First void the probes' cache of stored stack ids, so none of these is taken as stored.
    {
        let map = ebpf
            .map_mut("UNWIND_STATE")
            .ok_or(CollectError::MissingMap("UNWIND_STATE"))?;
        let mut state: Array<&mut MapData, u32> =
            Array::try_from(map).map_err(err("UNWIND_STATE"))?;
        let epoch = state
            .get(&unwind_state::STACK_EPOCH, 0)
            .map_err(err("UNWIND_STATE"))?;
        state
            .set(unwind_state::STACK_EPOCH, epoch.wrapping_add(1), 0)
            .map_err(err("UNWIND_STATE"))?;
    }
    let mut evicted = 0;
    {
        let map = ebpf
            .map_mut("STACKS")
            .ok_or(CollectError::MissingMap("STACKS"))?;
        let mut stacks: BpfHashMap<&mut MapData, u64, StackTrace> =
            BpfHashMap::try_from(map).map_err(err("STACKS"))?;
        for id in ids {
            if stacks.remove(id).is_ok() {
                evicted += 1;
            }
        }
    }
    let map = ebpf
        .map_mut("STACK_TOTALS")
        .ok_or(CollectError::MissingMap("STACK_TOTALS"))?;
    let mut totals: PerCpuHashMap<&mut MapData, u64, StackCounts> =
        PerCpuHashMap::try_from(map).map_err(err("STACK_TOTALS"))?;
    for id in ids {
        let _ = totals.remove(id);
    }
    Ok(evicted)
}

/// Each stack's allocation counts, summed over CPUs.
fn stack_counts(ebpf: &Ebpf) -> Result<Vec<(u64, StackCounts)>, CollectError> {
    const MAP: &str = "STACK_TOTALS";
    let error = |source| CollectError::Map { map: MAP, source };
    let map = ebpf.map(MAP).ok_or(CollectError::MissingMap(MAP))?;
    let sum = |values: &[StackCounts]| {
        values
            .iter()
            .fold(StackCounts::default(), |a, v| StackCounts {
                allocs: a.allocs + v.allocs,
                bytes: a.bytes + v.bytes,
            })
    };
    if let aya::maps::Map::PerCpuHashMap(data) = map {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| {
            error(MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error: e,
            }))
        })?;
        let mut out = Vec::new();
        match batch::lookup_all_per_cpu::<u64, StackCounts>(data, cpus, |id, values| {
            out.push((id, sum(values)))
        }) {
            Ok(()) => return Ok(out),
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(e) => {
                return Err(error(MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error: e,
                })));
            }
        }
    }
    let counts: PerCpuHashMap<&MapData, u64, StackCounts> =
        PerCpuHashMap::try_from(map).map_err(error)?;
    let mut out = Vec::new();
    for entry in counts.iter() {
        match entry {
            Ok((id, values)) => out.push((id, sum(&values))),
            // Freed between reading its key and its values.
            Err(MapError::KeyNotFound) => continue,
            Err(source) => return Err(error(source)),
        }
    }
    Ok(out)
}

/// The frames of a stack, innermost first.
pub fn stack(ebpf: &Ebpf, id: u64) -> Result<Option<StackTrace>, CollectError> {
    if id == 0 {
        return Ok(None);
    }
    let stacks: BpfHashMap<&MapData, u64, StackTrace> = hash_map(ebpf, "STACKS")?;
    match stacks.get(&id, 0) {
        Ok(trace) => Ok(Some(trace)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(source) => Err(CollectError::Map {
            map: "STACKS",
            source,
        }),
    }
}

/// Every entry of a hash map keyed by u64: in batches, or key by key on kernels without batch
/// lookups. The kernel keeps changing the map meanwhile; a key walk may see an entry vanish.
fn entries<V: aya::Pod + Default>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<Vec<(u64, V)>, CollectError> {
    let map = ebpf.map(name).ok_or(CollectError::MissingMap(name))?;
    if let aya::maps::Map::HashMap(data) = map {
        match batch::lookup_all::<u64, V>(data) {
            Ok(entries) => return Ok(entries),
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(e) => {
                return Err(CollectError::Map {
                    map: name,
                    source: MapError::SyscallError(aya::sys::SyscallError {
                        call: "bpf_map_lookup_batch",
                        io_error: e,
                    }),
                });
            }
        }
    }
    let map: BpfHashMap<&MapData, u64, V> = hash_map(ebpf, name)?;
    let mut out = Vec::new();
    for entry in map.iter() {
        match entry {
            Ok(kv) => out.push(kv),
            // Freed between reading its key and its value.
            Err(MapError::KeyNotFound) => continue,
            Err(source) => return Err(CollectError::Map { map: name, source }),
        }
    }
    Ok(out)
}

fn hash_map<'a, V: aya::Pod>(
    ebpf: &'a Ebpf,
    name: &'static str,
) -> Result<BpfHashMap<&'a MapData, u64, V>, CollectError> {
    let map = ebpf.map(name).ok_or(CollectError::MissingMap(name))?;
    BpfHashMap::try_from(map).map_err(|source| CollectError::Map { map: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya::maps::PerCpuValues;
    use leak_common::UnwindRow;

    #[test]
    fn sampling_weights_are_inverse_probabilities() {
        assert_eq!(sample_weight(100, 0), 1.0);
        // A block of the mean size is sampled with probability 1 - 1/e.
        let w = sample_weight(524_288, 524_288);
        assert!((w - 1.0 / (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        // Small blocks stand for many; huge ones are always sampled.
        assert!((sample_weight(512, 524_288) - 1024.5).abs() < 0.01);
        assert!((sample_weight(1 << 40, 524_288) - 1.0).abs() < 1e-12);
    }

    // Root only (BPF), on the real object's maps: the test suite runs as root.

    #[test]
    fn per_cpu_stack_counts_are_summed_over_cpus() {
        let mut ebpf = crate::attach::load(crate::attach::MapLimits::minimal()).expect("load");
        let cpus = aya::util::nr_cpus().expect("possible CPUs");
        {
            let map = ebpf.map_mut("STACK_TOTALS").expect("map");
            let mut counts: PerCpuHashMap<&mut MapData, u64, StackCounts> =
                PerCpuHashMap::try_from(map).expect("per-CPU hash");
            for stack in 1..=3u64 {
                // CPU i made i + stack allocations of 10 bytes each.
                let values = (0..cpus as u64)
                    .map(|cpu| StackCounts {
                        allocs: cpu + stack,
                        bytes: 10 * (cpu + stack),
                    })
                    .collect::<Vec<_>>();
                let values = PerCpuValues::try_from(values).expect("one value per CPU");
                counts.insert(stack, values, 0).expect("insert");
            }
        }
        let mut read = stack_counts(&ebpf).expect("read");
        read.sort_by_key(|&(id, _)| id);
        let n = cpus as u64;
        let expected: Vec<(u64, StackCounts)> = (1..=3u64)
            .map(|stack| {
                let allocs = n * (n - 1) / 2 + n * stack;
                (
                    stack,
                    StackCounts {
                        allocs,
                        bytes: 10 * allocs,
                    },
                )
            })
            .collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn aged_bytes_split_by_goroutine_creation_site() {
        let mut ebpf = crate::attach::load(crate::attach::MapLimits::minimal()).expect("load");
        let now = monotonic_ns();
        let (stack, go_a, go_b) = (7, 0x40_1234, 0x40_5678);
        {
            let map = ebpf.map_mut("ALLOCS").expect("map");
            let mut allocs: BpfHashMap<&mut MapData, u64, Allocation> =
                BpfHashMap::try_from(map).expect("hash");
            // (address, size, gopc, age in seconds): two blocks from goroutines of `go_a`, one
            // of `go_b`, one from a C thread, and one of `go_a` too young to count.
            let blocks = [
                (0x1000, 1000, go_a, 10),
                (0x2000, 1000, go_a, 10),
                (0x3000, 500, go_b, 10),
                (0x4000, 300, 0, 10),
                (0x5000, 64, go_a, 0),
            ];
            for (addr, size, gopc, age_s) in blocks {
                let block = Allocation {
                    size,
                    timestamp_ns: now - age_s * 1_000_000_000,
                    stack_id: stack,
                    gopc,
                    ..Allocation::default()
                };
                allocs.insert(addr, block, 0).expect("insert");
            }
        }
        let snapshot = snapshot(&ebpf, 5_000_000_000, 0).expect("snapshot");
        let mut shares = snapshot.by_creation_site[&stack].clone();
        shares.sort_by_key(|s| s.gopc);
        let share = |gopc, bytes, allocs| CreationShare {
            gopc,
            bytes,
            allocs,
        };
        assert_eq!(shares, [share(go_a, 2000, 2), share(go_b, 500, 1)]);
        assert_eq!(snapshot.by_stack[&stack].aged_bytes, 2800);
    }

    #[test]
    fn batch_updates_write_every_array_slot() {
        let ebpf = crate::attach::load(crate::attach::MapLimits::minimal()).expect("load");
        // More than one batch's worth would need a bigger map than the minimal one: 1000 rows
        // from index 7, the rest untouched.
        let keys: Vec<u32> = (7..1007).collect();
        let rows: Vec<UnwindRow> = keys
            .iter()
            .map(|&k| UnwindRow {
                pc: u64::from(k) * 16,
                cfa_offset: k as i32,
                rbp_offset: -16,
                cfa_reg: 1,
                rbp_saved: 1,
            })
            .collect();
        match ebpf.map("UNWIND_ROWS").expect("map") {
            aya::maps::Map::Array(data) => {
                batch::update_all(data, &keys, &rows).expect("batch update")
            }
            other => panic!("UNWIND_ROWS is not an array: {other:?}"),
        }
        let array: Array<&MapData, UnwindRow> =
            Array::try_from(ebpf.map("UNWIND_ROWS").expect("map")).expect("array");
        for (&k, row) in keys.iter().zip(&rows) {
            assert_eq!(array.get(&k, 0).expect("row"), *row, "slot {k}");
        }
        assert_eq!(array.get(&6, 0).expect("row"), UnwindRow::default());
        assert_eq!(array.get(&1007, 0).expect("row"), UnwindRow::default());
    }
}

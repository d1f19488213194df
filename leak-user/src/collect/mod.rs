//! Reading the kernel side's maps into a snapshot.
mod batch;

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray},
};
use leak_common::{Allocation, StackTotals, StackTrace, counter};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CollectError {
    #[error("eBPF map {0} is missing")]
    MissingMap(&'static str),
    #[error("cannot read eBPF map {map}: {source}")]
    Map { map: &'static str, source: MapError },
}

/// Outstanding allocations of one stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackOutstanding {
    /// Allocations at least `min_age` old.
    pub aged_bytes: u64,
    pub aged_allocs: u64,
    /// Of any age.
    pub bytes: u64,
    pub allocs: u64,
    pub oldest_ns: u64,
    pub kind: u32,
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

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC, the clock of the kernel's timestamps.
    pub taken_ns: u64,
    pub by_stack: HashMap<u64, StackOutstanding>,
    /// Kernel-kept totals per stack (include every allocation ever made there).
    pub totals: HashMap<u64, StackTotals>,
    pub counters: Counters,
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
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

/// Reads every outstanding allocation and the counters. The kernel keeps changing the maps
/// while we iterate: keys are deduplicated and the walk is bounded.
pub fn snapshot(ebpf: &Ebpf, min_age_ns: u64) -> Result<Snapshot, CollectError> {
    let taken_ns = monotonic_ns();
    let blocks: HashMap<u64, Allocation> = entries(ebpf, "ALLOCS")?.into_iter().collect();

    let mut snapshot = Snapshot {
        taken_ns,
        ..Snapshot::default()
    };
    for block in blocks.values() {
        let stack = snapshot.by_stack.entry(block.stack_id).or_default();
        stack.bytes += block.size;
        stack.allocs += 1;
        stack.kind = block.kind;
        let age = taken_ns.saturating_sub(block.timestamp_ns);
        if age >= min_age_ns {
            stack.aged_bytes += block.size;
            stack.aged_allocs += 1;
            if stack.oldest_ns == 0 || block.timestamp_ns < stack.oldest_ns {
                stack.oldest_ns = block.timestamp_ns;
            }
        }
        snapshot.outstanding_bytes += block.size;
        snapshot.outstanding_allocs += 1;
    }

    snapshot.totals = entries(ebpf, "STACK_TOTALS")?.into_iter().collect();
    snapshot.counters = counters(ebpf)?;
    Ok(snapshot)
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

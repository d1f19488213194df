//! Reading the kernel side's maps into a snapshot.
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
    let allocs: BpfHashMap<&MapData, u64, Allocation> = hash_map(ebpf, "ALLOCS")?;
    let mut blocks: HashMap<u64, Allocation> = HashMap::new();
    for entry in allocs.iter() {
        match entry {
            Ok((addr, block)) => {
                blocks.insert(addr, block);
            }
            // The entry vanished between reading its key and its value: it was freed.
            Err(MapError::KeyNotFound) => continue,
            Err(source) => {
                return Err(CollectError::Map {
                    map: "ALLOCS",
                    source,
                });
            }
        }
    }

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

    let totals: BpfHashMap<&MapData, u64, StackTotals> = hash_map(ebpf, "STACK_TOTALS")?;
    for entry in totals.iter() {
        match entry {
            Ok((id, t)) => {
                snapshot.totals.insert(id, t);
            }
            Err(MapError::KeyNotFound) => continue,
            Err(source) => {
                return Err(CollectError::Map {
                    map: "STACK_TOTALS",
                    source,
                });
            }
        }
    }
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

fn hash_map<'a, V: aya::Pod>(
    ebpf: &'a Ebpf,
    name: &'static str,
) -> Result<BpfHashMap<&'a MapData, u64, V>, CollectError> {
    let map = ebpf.map(name).ok_or(CollectError::MissingMap(name))?;
    BpfHashMap::try_from(map).map_err(|source| CollectError::Map { map: name, source })
}

//! `--reachability`: a conservative scan of the live target for pointers into the blocks
//! leaktrace tracks, with LSan's answer per call site: definitely lost (no root reaches the
//! block), indirectly lost (only lost blocks point to it), or reachable.
//!
//! The picture is consistent because the world is stopped for the whole scan: every thread is
//! stopped ([`stop`]), then the outstanding blocks are read from the kernel's map (a block freed
//! before is gone, one just allocated has its pointer in a register or in memory), the roots
//! ([`roots`]) and the reached blocks are read ([`read`]) and marked ([`graph`]), and the
//! threads let go. A scan that would stop the target longer than `--reachability-max-pause`
//! lets it go at that point and calls nothing lost.
pub mod graph;
mod read;
mod roots;
mod stop;
mod tracker;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aya::Ebpf;
use thiserror::Error;

use crate::collect::{self, CollectError};
use graph::{Block, Graph};
use read::Reader;
use roots::{Region, RootsError};
use stop::{StopError, StoppedWorld};

pub use tracker::Tracker;

/// Bytes of blocks read per system-call batch while marking.
const BATCH_BYTES: usize = 8 << 20;
const BATCH_BLOCKS: usize = 1024;

#[derive(Debug, Error)]
pub enum ReachError {
    #[error("reachability scan: {0}")]
    Stop(#[from] StopError),
    #[error("reachability scan: {0}")]
    Roots(#[from] RootsError),
    #[error("reachability scan: {0}")]
    Collect(#[from] CollectError),
}

/// A site's lost blocks (those at least `--min-age` old).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LostCounts {
    /// Definitely and indirectly lost together.
    pub unreachable_bytes: u64,
    pub unreachable_allocs: u64,
    /// Of them, reachable only from lost blocks.
    pub indirect_bytes: u64,
    pub indirect_allocs: u64,
}

impl LostCounts {
    fn add(&mut self, size: u64, indirect: bool) {
        self.unreachable_bytes += size;
        self.unreachable_allocs += 1;
        if indirect {
            self.indirect_bytes += size;
            self.indirect_allocs += 1;
        }
    }
}

/// What one scan found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub per_stack: HashMap<u64, LostCounts>,
    pub totals: LostCounts,
    /// Root and block bytes read.
    pub scanned_bytes: u64,
    /// How long the target was stopped.
    pub pause: Duration,
    pub duration: Duration,
    pub threads: usize,
    pub blocks: usize,
    /// The whole scan ran with the world stopped; false: it outran the pause bound, and no
    /// block is called lost.
    pub consistent: bool,
}

/// Scans `pid` (the target) for the blocks in `ebpf`'s map.
pub fn scan(
    pid: u32,
    ebpf: &Ebpf,
    max_pause: Duration,
    min_age_ns: u64,
) -> Result<Outcome, ReachError> {
    let began = Instant::now();
    let world = StoppedWorld::stop(pid, max_pause)?;
    let blocks: Vec<Block> = collect::outstanding_blocks(ebpf)?
        .into_iter()
        .map(|(address, a)| Block {
            address,
            size: a.size,
            stack_id: a.stack_id,
            timestamp_ns: a.timestamp_ns,
        })
        .collect();
    let taken_ns = collect::monotonic_ns();
    let regions = roots::root_regions(pid, &world.threads)?;
    let mut graph = Graph::new(blocks);
    let mut reader = Reader::new(pid);
    let within = |world: &StoppedWorld| world.paused() <= max_pause;
    let mut consistent = mark_from_registers_and_roots(
        &mut graph,
        &mut reader,
        &world,
        regions.as_slice(),
        max_pause,
    ) && mark_transitively(&mut graph, &mut reader, &world, max_pause);
    let indirect = if consistent {
        lost_pointed_to_by_lost(&graph, &mut reader)
    } else {
        Vec::new()
    };
    consistent = consistent && within(&world);
    let pause = world.paused();
    let threads = world.threads.len();
    drop(world);

    let mut outcome = Outcome {
        scanned_bytes: reader.bytes_read,
        pause,
        threads,
        blocks: graph.blocks.len(),
        consistent,
        ..Outcome::default()
    };
    if consistent {
        for (i, b) in graph.blocks.iter().enumerate() {
            let aged = taken_ns.saturating_sub(b.timestamp_ns) >= min_age_ns;
            if graph.reached[i] || !aged {
                continue;
            }
            let lost_indirectly = indirect.get(i).copied().unwrap_or(false);
            outcome
                .per_stack
                .entry(b.stack_id)
                .or_default()
                .add(b.size, lost_indirectly);
            outcome.totals.add(b.size, lost_indirectly);
        }
    }
    outcome.duration = began.elapsed();
    Ok(outcome)
}

/// Marks from every thread's registers and the root regions (less the blocks' own bytes).
/// False when the pause bound ran out.
fn mark_from_registers_and_roots(
    graph: &mut Graph,
    reader: &mut Reader,
    world: &StoppedWorld,
    regions: &[Region],
    max_pause: Duration,
) -> bool {
    for regs in world.threads.values().filter_map(|t| t.regs.as_ref()) {
        for word in stop::register_words(regs) {
            if let Some(i) = graph.find(word) {
                graph.reached[i] = true;
            }
        }
    }
    let mut buf = Vec::new();
    for region in regions {
        if world.paused() > max_pause {
            return false;
        }
        // The region in large reads (a heap has a gap of a few bytes between blocks: one read
        // per gap would cost a system call each), its blocks' bytes skipped in memory.
        let mut found = Vec::new();
        reader.each_chunk(region.start, region.end, &mut buf, |at, bytes| {
            for (start, end) in graph.gaps(at, at + bytes.len() as u64) {
                let part = &bytes[(start - at) as usize..(end - at) as usize];
                graph.each_pointer(start, part, |i| found.push(i));
            }
        });
        for i in found {
            graph.reached[i] = true;
        }
    }
    true
}

/// Scans every reached block for pointers into others until nothing new is reached.
fn mark_transitively(
    graph: &mut Graph,
    reader: &mut Reader,
    world: &StoppedWorld,
    max_pause: Duration,
) -> bool {
    let mut work: Vec<usize> = (0..graph.blocks.len())
        .filter(|&i| graph.reached[i])
        .collect();
    let mut bytes = Vec::new();
    while !work.is_empty() {
        if world.paused() > max_pause {
            return false;
        }
        let batch = take_batch(&mut work, graph);
        let mut found = Vec::new();
        scan_blocks(graph, reader, &batch, &mut bytes, |i| found.push(i));
        for i in found {
            graph.mark(i, &mut work);
        }
    }
    true
}

/// Per lost block: whether another lost block points into it.
fn lost_pointed_to_by_lost(graph: &Graph, reader: &mut Reader) -> Vec<bool> {
    let lost: Vec<usize> = (0..graph.blocks.len())
        .filter(|&i| !graph.reached[i])
        .collect();
    let mut indirect = vec![false; graph.blocks.len()];
    let mut buf = Vec::new();
    for &from in &lost {
        let b = graph.blocks[from];
        reader.each_chunk(b.address, b.address + b.size, &mut buf, |at, data| {
            graph.each_pointer(at, data, |to| {
                if to != from && !graph.reached[to] {
                    indirect[to] = true;
                }
            });
        });
    }
    indirect
}

/// Up to a batch of blocks from `work`.
fn take_batch(work: &mut Vec<usize>, graph: &Graph) -> Vec<usize> {
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    while let Some(&i) = work.last() {
        let size = graph.blocks[i].size as usize;
        if !batch.is_empty() && (batch.len() >= BATCH_BLOCKS || bytes + size > BATCH_BYTES) {
            break;
        }
        work.pop();
        batch.push(i);
        bytes += size;
    }
    batch
}

/// Hands `hit` every block the blocks of `batch` point into: small blocks read many per system
/// call, large ones chunk by chunk.
fn scan_blocks(
    graph: &Graph,
    reader: &mut Reader,
    batch: &[usize],
    bytes: &mut Vec<u8>,
    mut hit: impl FnMut(usize),
) {
    let (large, small): (Vec<usize>, Vec<usize>) = batch
        .iter()
        .partition(|&&i| graph.blocks[i].size as usize > read::CHUNK);
    let ranges: Vec<(u64, usize)> = small
        .iter()
        .map(|&i| (graph.blocks[i].address, graph.blocks[i].size as usize))
        .collect();
    reader.read_blocks(&ranges, bytes);
    let mut offset = 0;
    for &(address, size) in &ranges {
        graph.each_pointer(address, &bytes[offset..offset + size], &mut hit);
        offset += size;
    }
    let mut buf = Vec::new();
    for i in large {
        let b = graph.blocks[i];
        reader.each_chunk(b.address, b.address + b.size, &mut buf, |at, data| {
            graph.each_pointer(at, data, &mut hit);
        });
    }
}

//! `--reachability`: a conservative scan of the live target for pointers into the blocks
//! leaktrace tracks, with LSan's answer per call site: definitely lost (no root reaches the
//! block), indirectly lost (only lost blocks point to it), or reachable.
//!
//! The picture is consistent because the world is stopped for the whole scan: every thread is
//! stopped ([`stop`]), then the outstanding blocks are read from the kernel's map (a block freed
//! before is gone, one just allocated has its pointer in a register or in memory), the roots
//! ([`roots`]) and the reached blocks are read ([`read`]) and marked ([`graph`], [`pass`]), and
//! the threads let go. A scan that would stop the target longer than
//! `--reachability-max-pause` lets it go at that point and falls back to two passes over the
//! running target: a block is lost only when both passes found it lost with the same contents
//! (as kmemleak decides), the registers being those read while the world was stopped.
pub(crate) mod glibc_heap;
pub mod graph;
mod pass;
mod read;
pub(crate) mod roots;
mod stop;
mod tracker;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use aya::Ebpf;
use thiserror::Error;

use crate::collect::{self, CollectError};
use graph::Block;
pub use pass::Heaps;
use read::Reader;
use roots::RootsError;
use stop::{StopError, StoppedWorld};

pub use tracker::Tracker;

/// Reading one entry of the kernel's block map, measured on a million blocks (0.45 s), rounded
/// up.
const MAP_READ_PER_BLOCK: Duration = Duration::from_nanos(500);

/// The least time each thread is given to stop.
const STOP_WAIT_FLOOR: Duration = Duration::from_secs(1);

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

/// How a scan's picture was made consistent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Method {
    /// Every thread stopped for the whole scan.
    #[default]
    StoppedWorld,
    /// The stopped scan would have outrun the pause bound: two passes over the running target
    /// had to agree.
    TwoLivePasses,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::StoppedWorld => "stopped_world",
            Method::TwoLivePasses => "two_live_passes",
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
    pub method: Method,
}

/// Scans `pid` (the target) for the blocks in `ebpf`'s map: with the world stopped, or, when
/// that would outrun `max_pause`, with two live passes that must agree.
pub fn scan(
    pid: u32,
    ebpf: &Ebpf,
    max_pause: Duration,
    min_age_ns: u64,
    heaps: Heaps,
) -> Result<Outcome, ReachError> {
    let began = Instant::now();
    // Whether reading the block map alone, with the world stopped, would outrun the bound (a
    // million blocks take about half a second): then only the registers are read stopped.
    let blocks_before = collect::outstanding_blocks(ebpf)?.len();
    let map_read_fits = MAP_READ_PER_BLOCK
        .saturating_mul(u32::try_from(blocks_before).unwrap_or(u32::MAX))
        < max_pause;
    let mut reader = Reader::new(pid);
    // Waiting for a thread to stop (one busy in the kernel) is bounded apart: a tight pause
    // bound then still gets the registers, and the scan falls back to live passes.
    let world = StoppedWorld::stop(pid, max_pause.max(STOP_WAIT_FLOOR))?;
    let registers: Vec<u64> = world
        .threads
        .values()
        .filter_map(|t| t.regs.as_ref())
        .flat_map(stop::register_words)
        .collect();
    let stopped_pass = if map_read_fits {
        let blocks = outstanding_blocks(ebpf)?;
        let regions = roots::root_regions(pid, &world.threads)?;
        let within = || world.paused() <= max_pause;
        pass::run(blocks, &registers, &regions, heaps, &mut reader, &within)
    } else {
        None
    };
    let taken_ns = collect::monotonic_ns();
    let pause = world.paused();
    let threads = world.threads.len();
    drop(world);

    let (lost, method, blocks) = match stopped_pass {
        Some(pass) => (pass.lost, Method::StoppedWorld, pass.blocks),
        None => {
            let first = live_pass(pid, ebpf, &registers, heaps, &mut reader)?;
            let second = live_pass(pid, ebpf, &registers, heaps, &mut reader)?;
            let lost = pass::agreed(first.lost, second.lost);
            (lost, Method::TwoLivePasses, second.blocks)
        }
    };
    let mut outcome = Outcome {
        scanned_bytes: reader.bytes_read,
        pause,
        threads,
        blocks,
        method,
        ..Outcome::default()
    };
    for lost in lost.values() {
        let b = &lost.block;
        if taken_ns.saturating_sub(b.timestamp_ns) < min_age_ns {
            continue;
        }
        outcome
            .per_stack
            .entry(b.stack_id)
            .or_default()
            .add(b.size, lost.indirect);
        outcome.totals.add(b.size, lost.indirect);
    }
    outcome.duration = began.elapsed();
    Ok(outcome)
}

fn outstanding_blocks(ebpf: &Ebpf) -> Result<Vec<Block>, ReachError> {
    Ok(collect::outstanding_blocks(ebpf)?
        .into_iter()
        .map(|(address, a)| Block {
            address,
            size: a.size,
            stack_id: a.stack_id,
            timestamp_ns: a.timestamp_ns,
        })
        .collect())
}

/// One pass over the running target. Stacks are scanned whole (their stack pointers move);
/// the registers are those read while the world was stopped.
fn live_pass(
    pid: u32,
    ebpf: &Ebpf,
    registers: &[u64],
    heaps: Heaps,
    reader: &mut Reader,
) -> Result<pass::Pass, ReachError> {
    let blocks = outstanding_blocks(ebpf)?;
    let regions = roots::root_regions(pid, &BTreeMap::new())?;
    // Without a time bound a pass always completes.
    Ok(pass::run(blocks, registers, &regions, heaps, reader, &|| true).unwrap_or_default())
}

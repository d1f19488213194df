//! One marking pass: the blocks reached from the registers and the root regions, then from
//! the reached blocks, until nothing new is reached; then, among the blocks left, those another
//! lost block points to (indirectly lost), and a checksum of each lost block's contents.
use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hasher as _},
};

use super::{
    glibc_heap,
    graph::{Block, Graph},
    read::{self, Reader},
    roots::{Region, RegionKind},
};

/// Bytes of blocks read per system-call batch while marking.
const BATCH_BYTES: usize = 8 << 20;
const BATCH_BLOCKS: usize = 1024;

/// A block no root reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostBlock {
    pub block: Block,
    /// Another lost block points into it.
    pub indirect: bool,
    /// Of its contents as read: two passes agree only on unchanged blocks.
    pub checksum: u64,
}

/// Which allocator's heaps are among the roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heaps {
    /// glibc's: their free chunks are no roots.
    Glibc,
    /// Another allocator's, scanned whole.
    Opaque,
}

/// What a pass found.
#[derive(Debug, Default)]
pub struct Pass {
    /// By address.
    pub lost: HashMap<u64, LostBlock>,
    pub blocks: usize,
}

/// Marks `blocks` from `registers` and `regions`. None as soon as `in_time` says the time is
/// up.
pub fn run(
    blocks: Vec<Block>,
    registers: &[u64],
    regions: &[Region],
    heaps: Heaps,
    reader: &mut Reader,
    in_time: &dyn Fn() -> bool,
) -> Option<Pass> {
    let mut graph = Graph::new(blocks);
    for &word in registers {
        if let Some(i) = graph.find(word) {
            graph.reached[i] = true;
        }
    }
    mark_from_roots(&mut graph, reader, regions, heaps, in_time)?;
    mark_transitively(&mut graph, reader, in_time)?;
    let lost = lost_blocks(&graph, reader);
    in_time().then_some(Pass {
        lost,
        blocks: graph.blocks.len(),
    })
}

/// The blocks lost in both passes, at the same address with the same size and contents.
pub fn agreed(
    first: HashMap<u64, LostBlock>,
    second: HashMap<u64, LostBlock>,
) -> HashMap<u64, LostBlock> {
    second
        .into_iter()
        .filter(|(address, lost)| {
            first.get(address).is_some_and(|before| {
                before.block.size == lost.block.size && before.checksum == lost.checksum
            })
        })
        .collect()
}

/// The root regions in large reads (a heap has a gap of a few bytes between blocks: one read
/// per gap would cost a system call each), the blocks' own bytes skipped in memory, and
/// glibc's free chunks too.
fn mark_from_roots(
    graph: &mut Graph,
    reader: &mut Reader,
    regions: &[Region],
    heaps: Heaps,
    in_time: &dyn Fn() -> bool,
) -> Option<()> {
    let mut buf = Vec::new();
    let key = match heaps {
        Heaps::Glibc => regions
            .iter()
            .find(|r| r.kind == RegionKind::Brk)
            .and_then(|&brk| glibc_heap::tcache_key(brk, &mut |at, b| reader.read_exact(at, b))),
        Heaps::Opaque => None,
    };
    for region in regions {
        if !in_time() {
            return None;
        }
        let mut walk = match heaps {
            Heaps::Glibc => {
                glibc_heap::walk(*region, key, &mut |at, buf| reader.read_exact(at, buf))
            }
            Heaps::Opaque => None,
        };
        let mut found = Vec::new();
        reader.each_chunk(region.start, region.end, &mut buf, |at, bytes| {
            let window_end = at + bytes.len() as u64;
            let mut roots = graph.gaps(at, window_end);
            if let Some(walk) = walk.as_mut() {
                roots = glibc_heap::subtract(&roots, &walk.free_in(at, bytes));
            }
            for (start, end) in roots {
                let part = &bytes[(start - at) as usize..(end - at) as usize];
                graph.each_pointer(start, part, |i| found.push(i));
            }
        });
        for i in found {
            graph.reached[i] = true;
        }
    }
    Some(())
}

/// Scans every reached block for pointers into others until nothing new is reached.
fn mark_transitively(
    graph: &mut Graph,
    reader: &mut Reader,
    in_time: &dyn Fn() -> bool,
) -> Option<()> {
    let mut work: Vec<usize> = (0..graph.blocks.len())
        .filter(|&i| graph.reached[i])
        .collect();
    let mut bytes = Vec::new();
    while !work.is_empty() {
        if !in_time() {
            return None;
        }
        let batch = take_batch(&mut work, graph);
        let mut found = Vec::new();
        scan_blocks(graph, reader, &batch, &mut bytes, |i| found.push(i));
        for i in found {
            graph.mark(i, &mut work);
        }
    }
    Some(())
}

/// The blocks left unreached, each with whether another of them points into it and the
/// checksum of its contents.
fn lost_blocks(graph: &Graph, reader: &mut Reader) -> HashMap<u64, LostBlock> {
    let lost: Vec<usize> = (0..graph.blocks.len())
        .filter(|&i| !graph.reached[i])
        .collect();
    let mut indirect = vec![false; graph.blocks.len()];
    let mut checksums = HashMap::new();
    let mut buf = Vec::new();
    for &from in &lost {
        let b = graph.blocks[from];
        let mut hasher = DefaultHasher::new();
        reader.each_chunk(b.address, b.address + b.size, &mut buf, |at, data| {
            hasher.write_u64(at);
            hasher.write(data);
            graph.each_pointer(at, data, |to| {
                if to != from && !graph.reached[to] {
                    indirect[to] = true;
                }
            });
        });
        checksums.insert(from, hasher.finish());
    }
    lost.into_iter()
        .map(|i| {
            let block = graph.blocks[i];
            let lost = LostBlock {
                block,
                indirect: indirect[i],
                checksum: checksums.get(&i).copied().unwrap_or(0),
            };
            (block.address, lost)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(address: u64, size: u64, checksum: u64) -> (u64, LostBlock) {
        let block = Block {
            address,
            size,
            stack_id: 1,
            timestamp_ns: 0,
        };
        (
            address,
            LostBlock {
                block,
                indirect: false,
                checksum,
            },
        )
    }

    #[test]
    fn two_passes_agree_only_on_unchanged_blocks() {
        let first = HashMap::from([
            lost(0x1000, 64, 7),
            lost(0x2000, 64, 8),
            lost(0x3000, 64, 9),
        ]);
        // 0x2000 was written to, 0x3000 freed and reused with another size, 0x4000 is new.
        let second = HashMap::from([
            lost(0x1000, 64, 7),
            lost(0x2000, 64, 80),
            lost(0x3000, 32, 9),
            lost(0x4000, 64, 1),
        ]);
        let agreed = agreed(first, second);
        assert_eq!(agreed.keys().copied().collect::<Vec<_>>(), vec![0x1000]);
    }
}

//! The graph of tracked blocks: sorted intervals, a word pointing anywhere inside a block (its
//! start or its interior, as LSan counts) reaches it. Marking from the roots, then among the
//! blocks left unmarked, those another unmarked block points to are indirectly lost.

/// One outstanding block as the kernel recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub address: u64,
    pub size: u64,
    pub stack_id: u64,
    pub timestamp_ns: u64,
}

/// Blocks sorted by address; overlapping ones (a record the scan cannot trust) are reachable
/// from the start, never called lost.
pub struct Graph {
    pub blocks: Vec<Block>,
    pub reached: Vec<bool>,
    /// The highest block end up to each index: monotonic even when records overlap.
    ends_so_far: Vec<u64>,
    lowest: u64,
    highest_end: u64,
}

impl Graph {
    pub fn new(mut blocks: Vec<Block>) -> Self {
        blocks.retain(|b| b.size > 0);
        blocks.sort_unstable_by_key(|b| b.address);
        // A block starting inside an earlier one: both reachable from the start.
        let mut reached = vec![false; blocks.len()];
        let (mut highest, mut owner) = (0u64, 0usize);
        for (i, b) in blocks.iter().enumerate() {
            if i > 0 && b.address < highest {
                reached[i] = true;
                reached[owner] = true;
            }
            let end = b.address.saturating_add(b.size);
            if end > highest {
                (highest, owner) = (end, i);
            }
        }
        let lowest = blocks.first().map_or(u64::MAX, |b| b.address);
        let ends_so_far: Vec<u64> = blocks
            .iter()
            .scan(0u64, |highest, b| {
                *highest = (*highest).max(b.address.saturating_add(b.size));
                Some(*highest)
            })
            .collect();
        let highest_end = ends_so_far.last().copied().unwrap_or(0);
        Graph {
            blocks,
            reached,
            ends_so_far,
            lowest,
            highest_end,
        }
    }

    /// The block `word` points into.
    pub fn find(&self, word: u64) -> Option<usize> {
        if word < self.lowest || word >= self.highest_end {
            return None;
        }
        let after = self.blocks.partition_point(|b| b.address <= word);
        let index = after.checked_sub(1)?;
        let b = &self.blocks[index];
        (word - b.address < b.size).then_some(index)
    }

    /// Calls `hit` with each block an aligned word of `bytes` (at address `at`) points into.
    pub fn each_pointer(&self, at: u64, bytes: &[u8], mut hit: impl FnMut(usize)) {
        let skip = ((8 - at % 8) % 8) as usize;
        let Some(aligned) = bytes.get(skip..) else {
            return;
        };
        for word in aligned.chunks_exact(8) {
            let mut w = [0; 8];
            w.copy_from_slice(word);
            if let Some(index) = self.find(u64::from_le_bytes(w)) {
                hit(index);
            }
        }
    }

    pub fn mark(&mut self, index: usize, work: &mut Vec<usize>) {
        if !self.reached[index] {
            self.reached[index] = true;
            work.push(index);
        }
    }

    /// The parts of `[start, end)` outside every block: roots exclude the blocks' bytes.
    pub fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        let first = self.ends_so_far.partition_point(|&end| end <= start);
        for b in &self.blocks[first..] {
            if b.address >= end {
                break;
            }
            if b.address > at {
                out.push((at, b.address));
            }
            at = at.max(b.address.saturating_add(b.size));
        }
        if at < end {
            out.push((at, end));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(address: u64, size: u64) -> Block {
        Block {
            address,
            size,
            stack_id: 1,
            timestamp_ns: 0,
        }
    }

    #[test]
    fn interior_pointers_find_their_block_and_ends_do_not() {
        let g = Graph::new(vec![block(0x2000, 0x100), block(0x1000, 0x10)]);
        assert_eq!(g.find(0x1000), Some(0));
        assert_eq!(g.find(0x100f), Some(0));
        assert_eq!(g.find(0x1010), None);
        assert_eq!(g.find(0x20ff), Some(1));
        assert_eq!(g.find(0x2100), None);
        assert_eq!(g.find(0), None);
    }

    #[test]
    fn roots_skip_block_bytes() {
        let g = Graph::new(vec![block(0x1010, 0x10), block(0x1040, 0x20)]);
        assert_eq!(
            g.gaps(0x1000, 0x1100),
            vec![(0x1000, 0x1010), (0x1020, 0x1040), (0x1060, 0x1100)]
        );
        assert_eq!(g.gaps(0x1018, 0x1050), vec![(0x1020, 0x1040)]);
    }

    #[test]
    fn unaligned_words_are_not_pointers() {
        let g = Graph::new(vec![block(0x1000, 0x10)]);
        let mut bytes = vec![0u8; 24];
        bytes[3..11].copy_from_slice(&0x1008u64.to_le_bytes());
        bytes[16..24].copy_from_slice(&0x1000u64.to_le_bytes());
        let mut hits = Vec::new();
        // At 0x5000: words at 0, 8 and 16; the one at 3 is not aligned.
        g.each_pointer(0x5000, &bytes, |i| hits.push(i));
        assert_eq!(hits, vec![0]);
    }

    #[test]
    fn overlapping_records_are_never_lost() {
        let g = Graph::new(vec![
            block(0x1000, 0x20),
            block(0x1010, 0x20),
            block(0x3000, 8),
        ]);
        assert_eq!(g.reached, vec![true, true, false]);
    }
}

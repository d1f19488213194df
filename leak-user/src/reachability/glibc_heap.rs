//! glibc's free heap memory, which is no root. A freed chunk keeps its old contents: chunks in
//! the per-thread cache (tcache) stay marked in use, larger ones are binned or merged into the
//! top chunk, and all keep the pointers the program stored in them. Taken for roots, they make
//! a block the program dropped reachable; a tcache chunk's safe-linked `next` (its address
//! xor-ed with a page number) can even point into a block by chance, in the low heaps of
//! non-PIE programs (Go's). LSan avoids both by scanning only live chunks.
//!
//! Walking a heap's chunk headers tells them apart: a chunk is free when the next chunk's
//! `PREV_INUSE` bit is clear, the last one (top) always is, and a tcache entry carries the
//! process's tcache key in its second word. Fast-bin chunks have no such mark and stay roots.
//! The walk starts where glibc puts a heap's first chunk: at the start of `[heap]` (the main
//! arena), after the `heap_info` (and an arena's first heap, its `malloc_state`) of a 64 MiB
//! aligned mapping (the other arenas). Its first chunks are checked before it is trusted; a
//! chain that stops checking out (a size out of bounds, a hole) ends it, the rest of the region
//! being scanned whole. The target's data only ever hides its own bytes.
use super::roots::{Region, RegionKind};

const PREV_INUSE: u64 = 1;
const IS_MMAPPED: u64 = 2;
const SIZE_FLAGS: u64 = 7;
const MIN_CHUNK: u64 = 32;
const ALIGN: u64 = 16;
/// prev_size and size: a chunk's user bytes start after them.
const HEADER: u64 = 16;
/// The header and the first two user words (a tcache entry's `next` and key).
const HEADER_AND_KEY: u64 = 32;
/// glibc's HEAP_MAX_SIZE on 64-bit: the other arenas' heaps are mappings aligned to it.
const ARENA_HEAP_ALIGN: u64 = 64 << 20;
/// sizeof(heap_info): 32 bytes up to glibc 2.34, 48 since (a page size and padding).
const HEAP_INFO_SIZES: [u64; 2] = [32, 48];
/// sizeof(struct malloc_state): 2192 bytes in glibc 2.26, 2200 since 2.27.
const MALLOC_STATE_SIZES: [u64; 2] = [2192, 2200];
/// Chunks checked before a walk is trusted.
const PREFIX_CHUNKS: usize = 8;
/// The chunk of a thread's `tcache_perthread_struct` since glibc 2.30 (64 u16 counts, 64
/// entry pointers), the first chunk of the main arena.
const TCACHE_STRUCT_SIZE_WORD: u64 = 0x290 | PREV_INUSE;
const TCACHE_BINS: usize = 64;

/// Reads `buf.len()` bytes of the target at an address; false when it cannot.
pub type ReadFn<'a> = dyn FnMut(u64, &mut [u8]) -> bool + 'a;

/// Where a static program's TLS block may end in `[heap]`: glibc puts it there, before the
/// main arena.
const STATIC_TLS_MAX: usize = 64 << 10;

/// The main arena's first chunk in `[heap]`: at its start, or in a static program, the first
/// thread cache after the TLS block.
fn main_arena_start(brk_heap: Region, read: &mut ReadFn) -> u64 {
    let len = (brk_heap.end - brk_heap.start).min(STATIC_TLS_MAX as u64) as usize;
    let mut bytes = vec![0u8; len];
    if !read(brk_heap.start, &mut bytes) {
        return brk_heap.start;
    }
    let tcache_header = [0u64.to_le_bytes(), TCACHE_STRUCT_SIZE_WORD.to_le_bytes()].concat();
    bytes
        .chunks_exact(ALIGN as usize)
        .position(|header| header == tcache_header)
        .map_or(brk_heap.start, |i| brk_heap.start + (i as u64) * ALIGN)
}

/// The process's tcache key (glibc 2.29 and later), read from the entries of the main arena's
/// first tcache: every entry holds it in its second word. None without an entry to read it
/// from, when the entries disagree, or for another allocator.
pub fn tcache_key(brk_heap: Region, read: &mut ReadFn) -> Option<u64> {
    let first = main_arena_start(brk_heap, read);
    let header = read_words::<2>(read, first)?;
    if header[1] != TCACHE_STRUCT_SIZE_WORD {
        return None;
    }
    let entries_at = first + HEADER + 2 * TCACHE_BINS as u64;
    let entries = read_words::<TCACHE_BINS>(read, entries_at)?;
    let mut key = None;
    for entry in entries
        .into_iter()
        .filter(|&e| e != 0 && e.is_multiple_of(ALIGN))
    {
        let [found] = read_words::<1>(read, entry + 8)?;
        match key {
            _ if found == 0 => return None,
            Some(k) if k != found => return None,
            _ => key = Some(found),
        }
    }
    key
}

/// A walk over the glibc heap in `region`, when it is one: its first chunks check out.
pub fn walk(region: Region, key: Option<u64>, read: &mut ReadFn) -> Option<HeapWalk> {
    let (firsts, end) = match region.kind {
        RegionKind::Brk => (vec![main_arena_start(region, read)], region.end),
        RegionKind::Anonymous if region.start.is_multiple_of(ARENA_HEAP_ALIGN) => {
            arena_heap(region, read)?
        }
        _ => return None,
    };
    let first = firsts
        .into_iter()
        .find(|&first| prefix_checks_out(first, end, read))?;
    log::debug!(
        "glibc heap {:#x}-{end:#x}: chunks from {first:#x}, tcache key known: {}",
        region.start,
        key.is_some()
    );
    Some(HeapWalk::new(first, end, key))
}

/// Where the first chunk of a non-main arena's heap may be, and where its top chunk ends.
fn arena_heap(region: Region, read: &mut ReadFn) -> Option<(Vec<u64>, u64)> {
    // ar_ptr, prev, size, mprotect_size.
    let [ar_ptr, _, size, mprotect_size] = read_words::<4>(read, region.start)?;
    let end = region.start.checked_add(size)?;
    if size == 0 || !size.is_multiple_of(4096) || end > region.end || mprotect_size < size {
        return None;
    }
    let mut firsts = Vec::new();
    for info in HEAP_INFO_SIZES {
        if ar_ptr == region.start + info {
            // The arena's first heap: its malloc_state follows the heap_info.
            firsts.extend(
                MALLOC_STATE_SIZES
                    .map(|state| (region.start + info + state).next_multiple_of(ALIGN)),
            );
        } else {
            firsts.push(region.start + info);
        }
    }
    Some((firsts, end))
}

/// The first [`PREFIX_CHUNKS`] chunks from `first` have sizes that chain up to `end`.
fn prefix_checks_out(first: u64, end: u64, read: &mut ReadFn) -> bool {
    let mut at = first;
    for i in 0..PREFIX_CHUNKS {
        let Some([_, size_word]) = read_words::<2>(read, at) else {
            return false;
        };
        // glibc marks the first chunk's (missing) predecessor in use.
        if i == 0 && size_word & PREV_INUSE == 0 {
            return false;
        }
        let Some(next) = chunk_end(at, size_word, end) else {
            return false;
        };
        if next == end {
            return true;
        }
        at = next;
    }
    true
}

/// The end of the chunk at `at` whose size word is `size_word`, when it is a heap chunk inside
/// `..end`.
fn chunk_end(at: u64, size_word: u64, end: u64) -> Option<u64> {
    let size = size_word & !SIZE_FLAGS;
    let fits = size >= MIN_CHUNK && size.is_multiple_of(ALIGN) && size_word & IS_MMAPPED == 0;
    let chunk_end = at.checked_add(size).filter(|&e| fits && e <= end)?;
    Some(chunk_end)
}

fn read_words<const N: usize>(read: &mut ReadFn, at: u64) -> Option<[u64; N]> {
    let mut bytes = vec![0u8; 8 * N];
    if !read(at, &mut bytes) {
        return None;
    }
    let mut words = [0u64; N];
    for (word, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_le_bytes(b.try_into().ok()?);
    }
    Some(words)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Walking,
    /// The top chunk was reached at the heap's end.
    Done,
    /// The chain stopped checking out: no more free ranges.
    Broken,
}

/// A heap's chunks walked along with the scan's reads, window after window.
#[derive(Debug)]
pub struct HeapWalk {
    /// The next chunk's header.
    next: u64,
    /// Where the top chunk ends.
    end: u64,
    key: Option<u64>,
    /// The last chunk's user bytes: free when the next header says so.
    pending: Option<(u64, u64)>,
    /// A free range known before the window it reaches into: a tcache entry or the top chunk.
    carried: Option<(u64, u64)>,
    /// The last bytes of the previous window, where a header may begin.
    tail: Vec<u8>,
    tail_at: u64,
    /// Where the previous window ended: windows must follow each other.
    streamed_to: Option<u64>,
    state: State,
}

impl HeapWalk {
    fn new(first: u64, end: u64, key: Option<u64>) -> Self {
        HeapWalk {
            next: first,
            end,
            key,
            pending: None,
            carried: None,
            tail: Vec::new(),
            tail_at: 0,
            streamed_to: None,
            state: State::Walking,
        }
    }

    /// The free user bytes within the window `bytes` at `at` (the next one after the last),
    /// sorted.
    pub fn free_in(&mut self, at: u64, bytes: &[u8]) -> Vec<(u64, u64)> {
        let window_end = at + bytes.len() as u64;
        if self.streamed_to.is_some_and(|to| to != at) {
            self.break_off();
        }
        let mut free = Vec::new();
        if let Some(range) = self.carried {
            push_clipped(&mut free, range, at, window_end);
            if range.1 <= window_end {
                self.carried = None;
            }
        }
        while self.state == State::Walking {
            let c = self.next;
            let (Some(size_word), Some(second_word)) = (
                self.word(c + 8, at, bytes),
                self.word(c + HEADER + 8, at, bytes),
            ) else {
                if c + HEADER_AND_KEY <= window_end {
                    self.break_off();
                }
                break;
            };
            let Some(chunk_end) = chunk_end(c, size_word, self.end) else {
                self.break_off();
                break;
            };
            if let Some(previous) = self.pending.take()
                && size_word & PREV_INUSE == 0
            {
                push_clipped(&mut free, previous, at, window_end);
            }
            let user = (c + HEADER, chunk_end);
            let top = chunk_end == self.end;
            if top || self.key == Some(second_word) {
                push_clipped(&mut free, user, at, window_end);
                if chunk_end > window_end {
                    self.carried = Some(user);
                }
            } else {
                self.pending = Some(user);
            }
            self.next = chunk_end;
            if top {
                self.state = State::Done;
            }
        }
        self.keep_tail(at, bytes);
        free
    }

    /// The 8 bytes at `addr`, from this window or the end of the last.
    fn word(&self, addr: u64, at: u64, bytes: &[u8]) -> Option<u64> {
        let from = |base: u64, data: &[u8]| {
            let offset = usize::try_from(addr.checked_sub(base)?).ok()?;
            let b = data.get(offset..offset.checked_add(8)?)?;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        };
        from(at, bytes).or_else(|| from(self.tail_at, &self.tail))
    }

    fn keep_tail(&mut self, at: u64, bytes: &[u8]) {
        let keep = bytes.len().min(HEADER_AND_KEY as usize);
        self.tail = bytes[bytes.len() - keep..].to_vec();
        self.tail_at = at + (bytes.len() - keep) as u64;
        self.streamed_to = Some(at + bytes.len() as u64);
    }

    fn break_off(&mut self) {
        if self.state == State::Walking {
            log::debug!(
                "glibc heap walk stops at {:#x}: the rest is scanned whole",
                self.next
            );
        }
        self.state = State::Broken;
        self.pending = None;
        self.carried = None;
    }
}

fn push_clipped(free: &mut Vec<(u64, u64)>, (start, end): (u64, u64), at: u64, window_end: u64) {
    let (start, end) = (start.max(at), end.min(window_end));
    if start < end {
        free.push((start, end));
    }
}

/// `ranges` (sorted, disjoint) less `holes` (sorted, disjoint).
pub fn subtract(ranges: &[(u64, u64)], holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut h = 0;
    for &(start, end) in ranges {
        let mut at = start;
        while h < holes.len() && holes[h].1 <= at {
            h += 1;
        }
        let mut i = h;
        while at < end && i < holes.len() && holes[i].0 < end {
            if holes[i].0 > at {
                out.push((at, holes[i].0));
            }
            at = at.max(holes[i].1);
            i += 1;
        }
        if at < end {
            out.push((at, end));
        }
    }
    out
}

#[cfg(test)]
/// A heap captured as text (`region START END`, then `ADDRESS WORD WORD` lines).
pub(crate) fn captured_heap(text: &str, kind: RegionKind) -> (Region, Vec<u8>) {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let header: Vec<&str> = lines.next().expect("region line").split(' ').collect();
    let (start, end) = (hex(header[1]), hex(header[2]));
    let mut bytes = vec![0u8; (end - start) as usize];
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        let at = (hex(fields[0]) - start) as usize;
        bytes[at..at + 8].copy_from_slice(&hex(fields[1]).to_le_bytes());
        bytes[at + 8..at + 16].copy_from_slice(&hex(fields[2]).to_le_bytes());
    }
    (Region { start, end, kind }, bytes)
}

/// The captured heaps of testdata/: a cgo program's `[heap]`, a C thread's arena.
#[cfg(test)]
pub(crate) fn captured_heaps() -> [(Region, Vec<u8>); 2] {
    [
        captured_heap(
            include_str!("testdata/go_cgo_brk_heap.txt"),
            RegionKind::Brk,
        ),
        captured_heap(
            include_str!("testdata/thread_arena_heap.txt"),
            RegionKind::Anonymous,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captured `[heap]` of a cgo program: its region and bytes.
    fn captured() -> (Region, Vec<u8>) {
        captured_heap(
            include_str!("testdata/go_cgo_brk_heap.txt"),
            RegionKind::Brk,
        )
    }

    fn reader(region: Region, bytes: &[u8]) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
        move |at, buf| {
            let Some(from) = at.checked_sub(region.start).map(|o| o as usize) else {
                return false;
            };
            match bytes.get(from..from + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    /// The free ranges a walk finds when the heap is read `window` bytes at a time.
    fn free_ranges(region: Region, bytes: &[u8], window: usize) -> Vec<(u64, u64)> {
        let key = tcache_key(region, &mut reader(region, bytes));
        free_ranges_with(region, bytes, window, key)
    }

    fn free_ranges_with(
        region: Region,
        bytes: &[u8],
        window: usize,
        key: Option<u64>,
    ) -> Vec<(u64, u64)> {
        let mut walk = walk(region, key, &mut reader(region, bytes)).expect("a glibc heap");
        let mut free: Vec<(u64, u64)> = Vec::new();
        for (i, part) in bytes.chunks(window).enumerate() {
            let at = region.start + (i * window) as u64;
            for range in walk.free_in(at, part) {
                // Ranges cut by a window boundary join up again.
                match free.last_mut() {
                    Some(last) if last.1 == range.0 => last.1 = range.1,
                    _ => free.push(range),
                }
            }
        }
        assert_eq!(walk.state, State::Done);
        free
    }

    const KEY: u64 = 0x73bc_fe00_acb2_7067;
    /// A tcache entry whose safe-linked `next` points into the last dropped block (the word that
    /// made a lost block reachable in a real scan).
    const STALE_NEXT: u64 = 0x9c6_6ae0;
    /// The keep and drop blocks of reach_cgo: in use.
    const LIVE: [(u64, u64); 2] = [(0x9c6_7050, 8 * 0x1010), (0x9c6_f0d0, 5 * 0x810)];
    /// The top chunk's user bytes.
    const TOP: (u64, u64) = (0x9c7_1920, 0x9c8_7000);

    #[test]
    fn tcache_key_is_read_from_the_main_arena_tcache() {
        let (region, bytes) = captured();
        assert_eq!(tcache_key(region, &mut reader(region, &bytes)), Some(KEY));
        // Another allocator's heap: no tcache at its start.
        let mut other = bytes.clone();
        other[8..16].copy_from_slice(&0x31u64.to_le_bytes());
        assert_eq!(tcache_key(region, &mut reader(region, &other)), None);
    }

    #[test]
    fn tcache_entries_and_the_top_chunk_are_free_live_chunks_are_not() {
        let (region, bytes) = captured();
        let whole = free_ranges(region, &bytes, bytes.len());
        let inside = |a: u64| whole.iter().any(|&(s, e)| (s..e).contains(&a));
        assert!(inside(STALE_NEXT), "{whole:x?}");
        assert_eq!(whole.last(), Some(&TOP));
        for (start, len) in LIVE {
            assert!(
                whole.iter().all(|&(s, e)| e <= start || s >= start + len),
                "{whole:x?}"
            );
        }
        // Every free range is a chunk's user bytes: after a header, 16-aligned.
        assert!(whole.iter().all(|&(s, _)| s % 16 == 0));
        // The same ranges whatever the reads' size (1000: headers cut by a read)...
        for window in [4096, 1000] {
            assert_eq!(
                free_ranges(region, &bytes, window),
                whole,
                "window {window}"
            );
        }
        // ...but for the bytes of a free chunk read before its next header: those are scanned.
        let tiny = free_ranges(region, &bytes, 40);
        assert_eq!(tiny.len(), whole.len());
        for (t, w) in tiny.iter().zip(&whole) {
            assert!(t.0 >= w.0 && t.1 == w.1, "{t:x?} {w:x?}");
        }
    }

    /// A thread's arena: its chunks start after the heap_info and malloc_state; the pointers
    /// lose_in_freed left in three tcache entries and in a binned chunk are in free ranges,
    /// the blocks they pointed to are not.
    #[test]
    fn a_thread_arena_heap_is_walked_from_after_its_malloc_state() {
        let (region, bytes) = captured_heap(
            include_str!("testdata/thread_arena_heap.txt"),
            RegionKind::Anonymous,
        );
        let key = Some(0x786a_02ce_1d9a_29bd);
        let walk = walk(region, key, &mut reader(region, &bytes)).expect("an arena heap");
        assert_eq!(walk.next, 0x7f7a_7800_08d0);
        let free = free_ranges_with(region, &bytes, bytes.len(), key);
        let inside = |a: u64| free.iter().any(|&(s, e)| (s..e).contains(&a));
        for stale in [0xb90, 0xbd0, 0xc10, 0xc60, 0xc68] {
            assert!(inside(0x7f7a_7800_0000 + stale), "{stale:#x}: {free:x?}");
        }
        let blocks = 0x7f7a_7800_1440..0x7f7a_7800_1440 + 5 * 0xa0;
        assert!(
            free.iter()
                .all(|&(s, e)| e <= blocks.start || s >= blocks.end)
        );
        assert_eq!(free.last(), Some(&(0x7f7a_7800_1760, region.end)));
        // Not 64 MiB aligned: no arena heap.
        let moved = Region {
            start: region.start + 4096,
            ..region
        };
        assert!(super::walk(moved, key, &mut reader(region, &bytes)).is_none());
    }

    #[test]
    fn a_chain_that_stops_checking_out_ends_the_walk() {
        let (region, mut bytes) = captured();
        // The first keep block's size word: from there on, nothing is free.
        let at = (LIVE[0].0 - 8 - region.start) as usize;
        bytes[at..at + 8].copy_from_slice(&0x7u64.to_le_bytes());
        let mut walk = walk(region, Some(KEY), &mut reader(region, &bytes)).expect("heap");
        let free = walk.free_in(region.start, &bytes);
        assert_eq!(walk.state, State::Broken);
        assert!(free.iter().all(|&(_, e)| e <= LIVE[0].0), "{free:x?}");
        assert!(free.iter().any(|&(s, e)| (s..e).contains(&STALE_NEXT)));
        // Garbage from the start is no heap at all.
        let mut garbage = bytes.clone();
        garbage[8..16].copy_from_slice(&0x1234_5678u64.to_le_bytes());
        assert!(super::walk(region, Some(KEY), &mut reader(region, &garbage)).is_none());
    }

    #[test]
    fn subtracting_holes_from_ranges() {
        let ranges = [(0, 100), (200, 300), (400, 500)];
        let holes = [(50, 60), (90, 250), (300, 400), (450, 500)];
        assert_eq!(
            subtract(&ranges, &holes),
            vec![(0, 50), (60, 90), (250, 300), (400, 450)]
        );
        assert_eq!(subtract(&ranges, &[]), ranges.to_vec());
    }
}

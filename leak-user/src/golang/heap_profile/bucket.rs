//! Decoding one memory-profile bucket read from the target, and the figures `runtime/pprof`
//! would write for it. Everything here is target data: bounded, never trusted.
use super::layout::{BucketLayout, CycleLayout, MEM_PROFILE};
use crate::golang::elf_data::u64_at;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BucketError {
    #[error("bucket header cut short")]
    ShortHeader,
    #[error("bucket of type {0}, not a memory-profile bucket")]
    NotMemProfile(u64),
    #[error("bucket with {nstk} PCs (the runtime keeps at most {max})")]
    TooDeep { nstk: u64, max: u64 },
    #[error("bucket of object size 0")]
    ZeroSize,
    #[error("bucket body cut short")]
    ShortBody,
}

/// The fixed part of a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub allnext: u64,
    /// Bytes of each object allocated from this stack.
    pub size: u64,
    pub nstk: u64,
}

/// One `memRecordCycle`. Bytes are `None` where the runtime derives them from the size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cycle {
    pub allocs: u64,
    pub frees: u64,
    pub bytes: Option<(u64, u64)>,
}

impl Cycle {
    fn add(&mut self, other: &Cycle) {
        self.allocs = self.allocs.wrapping_add(other.allocs);
        self.frees = self.frees.wrapping_add(other.frees);
        self.bytes = match (self.bytes, other.bytes) {
            (Some((a, f)), Some((oa, of))) => Some((a.wrapping_add(oa), f.wrapping_add(of))),
            (mine, _) => mine,
        };
    }

    fn is_empty(&self) -> bool {
        self.allocs == 0 && self.frees == 0
    }
}

/// The body of a bucket: its stack (return PCs, innermost first) and record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    pub pcs: Vec<u64>,
    pub active: Cycle,
    pub future: [Cycle; 3],
}

pub fn parse_header(bytes: &[u8], layout: &BucketLayout) -> Result<Header, BucketError> {
    let field = |offset: u64| {
        usize::try_from(offset)
            .ok()
            .and_then(|offset| u64_at(bytes, offset))
            .ok_or(BucketError::ShortHeader)
    };
    let typ = field(layout.typ)?;
    if typ != MEM_PROFILE {
        return Err(BucketError::NotMemProfile(typ));
    }
    let header = Header {
        allnext: field(layout.allnext)?,
        size: field(layout.size)?,
        nstk: field(layout.nstk)?,
    };
    if header.nstk > layout.max_stack {
        return Err(BucketError::TooDeep {
            nstk: header.nstk,
            max: layout.max_stack,
        });
    }
    if header.size == 0 {
        return Err(BucketError::ZeroSize);
    }
    Ok(header)
}

/// Bytes of a body of `nstk` PCs (`nstk` already bounded by [`parse_header`]).
pub fn body_len(layout: &BucketLayout, nstk: u64) -> u64 {
    nstk * 8 + layout.record_size()
}

/// `bytes`: what follows the header, [`body_len`] long.
pub fn parse_body(bytes: &[u8], layout: &BucketLayout, nstk: u64) -> Result<Body, BucketError> {
    let nstk = usize::try_from(nstk).map_err(|_| BucketError::ShortBody)?;
    let pcs = (0..nstk)
        .map(|i| u64_at(bytes, i * 8).ok_or(BucketError::ShortBody))
        .collect::<Result<Vec<_>, _>>()?;
    let record = (nstk * 8) as u64;
    let cycle = |at: u64| read_cycle(bytes, record + at, &layout.cycle);
    Ok(Body {
        pcs,
        active: cycle(layout.active)?,
        future: [
            cycle(layout.future)?,
            cycle(layout.future + layout.cycle.size)?,
            cycle(layout.future + 2 * layout.cycle.size)?,
        ],
    })
}

fn read_cycle(bytes: &[u8], at: u64, layout: &CycleLayout) -> Result<Cycle, BucketError> {
    let field = |offset: u64| {
        at.checked_add(offset)
            .and_then(|offset| usize::try_from(offset).ok())
            .and_then(|offset| u64_at(bytes, offset))
            .ok_or(BucketError::ShortBody)
    };
    Ok(Cycle {
        allocs: field(layout.allocs)?,
        frees: field(layout.frees)?,
        bytes: match layout.bytes {
            Some((alloc, free)) => Some((field(alloc)?, field(free)?)),
            None => None,
        },
    })
}

/// What `runtime.MemProfile` publishes for each body at profile cycle `cycle`: `active` plus
/// the cycle not flushed yet (`future[cycle % 3]`), and when nothing at all was published
/// (no GC yet) every future cycle, as the runtime itself does.
pub fn published(bodies: &[&Body], cycle: u32) -> Vec<Cycle> {
    let index = (cycle % 3) as usize;
    let mut counts: Vec<Cycle> = bodies
        .iter()
        .map(|body| {
            let mut active = body.active;
            active.add(&body.future[index]);
            active
        })
        .collect();
    if counts.iter().all(Cycle::is_empty) {
        for (count, body) in counts.iter_mut().zip(bodies) {
            for (i, future) in body.future.iter().enumerate() {
                if i != index {
                    count.add(future);
                }
            }
        }
    }
    counts
}

/// A site's figures as `runtime/pprof` writes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scaled {
    pub inuse_objects: i64,
    pub inuse_bytes: i64,
    pub alloc_objects: i64,
    pub alloc_bytes: i64,
}

/// `runtime/pprof`'s `scaleHeapSample` for a bucket of objects of `size` bytes sampled
/// every `rate` bytes on average, in each release's arithmetic: with byte counts (Go up to
/// 1.22: `scaleHeapSample(count, bytes, rate)`), else from the size
/// (`scaleHeapSample(count, size, rate)`).
pub fn scale(counts: &Cycle, size: u64, rate: i64) -> Scaled {
    let as_i64 = |v: u64| v as i64;
    let (alloc, inuse) = match counts.bytes {
        Some((alloc_bytes, free_bytes)) => (
            scale_with_bytes(as_i64(counts.allocs), as_i64(alloc_bytes), rate),
            scale_with_bytes(
                as_i64(counts.allocs).wrapping_sub(as_i64(counts.frees)),
                as_i64(alloc_bytes).wrapping_sub(as_i64(free_bytes)),
                rate,
            ),
        ),
        None => (
            scale_with_size(as_i64(counts.allocs), as_i64(size), rate),
            scale_with_size(
                as_i64(counts.allocs).wrapping_sub(as_i64(counts.frees)),
                as_i64(size),
                rate,
            ),
        ),
    };
    Scaled {
        alloc_objects: alloc.0,
        alloc_bytes: alloc.1,
        inuse_objects: inuse.0,
        inuse_bytes: inuse.1,
    }
}

/// Go up to 1.22: `avgSize := float64(size) / float64(count)`.
fn scale_with_bytes(count: i64, bytes: i64, rate: i64) -> (i64, i64) {
    if count == 0 || bytes == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, bytes);
    }
    let average = bytes as f64 / count as f64;
    let scale = 1.0 / (1.0 - (-average / rate as f64).exp());
    ((count as f64 * scale) as i64, (bytes as f64 * scale) as i64)
}

/// Go 1.23+: `scaleHeapSample(count, avgSize, rate)` with the bucket's object size.
fn scale_with_size(count: i64, size: i64, rate: i64) -> (i64, i64) {
    if count == 0 || size == 0 {
        return (0, 0);
    }
    let bytes = count.wrapping_mul(size);
    if rate <= 1 {
        return (count, bytes);
    }
    let scale = 1.0 / (1.0 - (-(size as f64) / rate as f64).exp());
    ((count as f64 * scale) as i64, (bytes as f64 * scale) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::buildinfo::GoVersion;

    fn layout(minor: u32) -> BucketLayout {
        let version = GoVersion::parse(&format!("go1.{minor}.0")).unwrap();
        BucketLayout::for_binary(b"", &version).unwrap().0
    }

    fn bucket(layout: &BucketLayout, typ: u64, nstk: u64, words: &[u64]) -> Vec<u8> {
        let mut bytes = vec![0u8; layout.header_size as usize];
        let mut put = |at: u64, v: u64| {
            bytes[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
        };
        put(layout.allnext, 0x1000);
        put(layout.typ, typ);
        put(layout.size, 64);
        put(layout.nstk, nstk);
        for w in words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn parses_a_go127_bucket_and_publishes_the_unflushed_cycle() {
        let l = layout(27);
        // 2 PCs, active {3 allocs, 1 free}, future[0] {2, 0}, future[1] {9, 9}, future[2] 0.
        let words = [0x401000, 0x402000, 3, 1, 2, 0, 9, 9, 0, 0];
        let bytes = bucket(&l, MEM_PROFILE, 2, &words);
        let header = parse_header(&bytes, &l).unwrap();
        assert_eq!(
            header,
            Header {
                allnext: 0x1000,
                size: 64,
                nstk: 2
            }
        );
        let body_bytes = &bytes[l.header_size as usize..];
        assert_eq!(body_len(&l, 2), body_bytes.len() as u64);
        let body = parse_body(body_bytes, &l, 2).unwrap();
        assert_eq!(body.pcs, [0x401000, 0x402000]);
        // Cycle 3: future[0] is the one not flushed yet.
        let counts = published(&[&body], 3);
        assert_eq!((counts[0].allocs, counts[0].frees), (5, 1));
        assert_eq!(
            parse_body(&body_bytes[1..], &l, 2),
            Err(BucketError::ShortBody)
        );
    }

    #[test]
    fn rejects_what_no_runtime_writes() {
        let l = layout(19);
        let block = bucket(&l, 2, 1, &[]);
        assert_eq!(parse_header(&block, &l), Err(BucketError::NotMemProfile(2)));
        let deep = bucket(&l, MEM_PROFILE, 33, &[]);
        assert_eq!(
            parse_header(&deep, &l),
            Err(BucketError::TooDeep { nstk: 33, max: 32 })
        );
        assert_eq!(parse_header(&deep[..20], &l), Err(BucketError::ShortHeader));
    }

    #[test]
    fn nothing_published_yet_sums_every_cycle() {
        let empty = Cycle::default();
        let one = |allocs| Cycle {
            allocs,
            frees: 0,
            bytes: None,
        };
        let body = Body {
            pcs: vec![],
            active: empty,
            future: [empty, one(2), one(4)],
        };
        assert_eq!(published(&[&body], 0)[0].allocs, 6);
        // Something published: the other cycles wait for their GC.
        let flushed = Body {
            future: [one(1), one(2), one(4)],
            ..body
        };
        assert_eq!(published(&[&flushed], 0)[0].allocs, 1);
    }

    /// At the default rate (524288), five 64 KiB objects count 1 / (1 - exp(-1/8)) times.
    #[test]
    fn scaling_is_runtime_pprofs() {
        let rate = 512 * 1024;
        let counts = |allocs, bytes: Option<(u64, u64)>| Cycle {
            allocs,
            frees: 0,
            bytes,
        };
        let new = scale(&counts(5, None), 65536, rate);
        assert_eq!((new.inuse_objects, new.inuse_bytes), (42, 2788692));
        let old = scale(&counts(5, Some((5 * 65536, 0))), 65536, rate);
        assert_eq!(old, new);
        let unsampled = scale(&counts(5, None), 320, 1);
        assert_eq!((unsampled.alloc_objects, unsampled.alloc_bytes), (5, 1600));
        assert_eq!(scale(&counts(0, None), 320, rate), Scaled::default());
    }
}

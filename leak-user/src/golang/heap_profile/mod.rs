//! The Go runtime's own heap profile, read from a live process: the memory-profile buckets
//! (`runtime.mbuckets`, linked through `bucket.allnext`, each a stack and a `memRecord`),
//! published as of the last completed GC exactly as `runtime.MemProfile` publishes them,
//! and scaled as `runtime/pprof` scales them, so that each site equals what the program's own
//! `pprof.WriteHeapProfile` would write at that moment.
//!
//! The runtime mutates the list while it is read: every pointer is checked, counts and
//! depths are bounded, and a list that loops or reads torn is dropped for this interval.
pub mod bucket;
pub mod layout;
pub mod locate;

use std::collections::HashSet;

use bucket::{Body, BucketError, Scaled};
use layout::{BucketLayout, LayoutSource};
use locate::ProfileVars;

use super::buildinfo::GoVersion;

/// More buckets than this is a torn or hostile list (a large service has a few thousand).
pub const MAX_BUCKETS: usize = 1 << 17;
/// PCs read per profile at most (each bucket has at most the runtime's own depth bound).
pub const MAX_TOTAL_PCS: u64 = 1 << 22;

#[derive(Debug, thiserror::Error)]
pub enum HeapProfileError {
    /// `MemProfileRate` is 0: set by the program, or by the runtime when the program never
    /// references `runtime.MemProfile` (the linker tells it so).
    #[error(
        "the Go runtime keeps no heap profile (runtime.MemProfileRate is 0: the program \
         disabled it, or never links runtime.MemProfile)"
    )]
    Disabled,
    #[error("cannot read the target's memory at {addr:#x}: {source}")]
    Read {
        addr: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("bucket at {addr:#x}: {source}")]
    Bucket {
        addr: u64,
        #[source]
        source: BucketError,
    },
    #[error("the bucket list loops back to {0:#x} (read while the runtime changed it)")]
    Loop(u64),
    #[error("more than {MAX_BUCKETS} buckets or {MAX_TOTAL_PCS} PCs in the profile")]
    TooLarge,
    #[error("bucket pointer {0:#x} is not aligned")]
    Misaligned(u64),
}

/// Why no heap profile can be read from a binary at all.
#[derive(Debug, thiserror::Error)]
#[error("the Go heap profile cannot be read: {missing} not found ({reason})")]
pub struct Unavailable {
    pub missing: String,
    pub reason: String,
}

/// One site of the profile: a stack (return PCs, innermost first, as the runtime recorded
/// them) and its figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSite {
    pub pcs: Vec<u64>,
    /// Bytes per object.
    pub object_size: u64,
    pub figures: Scaled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawHeapProfile {
    pub sample_rate_bytes: i64,
    /// `mProfCycle`: the runtime's heap profile cycle (GC cycles, wrapped).
    pub gc_cycle: u32,
    pub sites: Vec<RawSite>,
}

/// Everything needed to read a binary's profile, at link-time addresses.
#[derive(Clone, Copy, Debug)]
pub struct ProfileLocation {
    pub layout: BucketLayout,
    pub layout_source: LayoutSource,
    mbuckets: u64,
    mprof_cycle: u64,
    mem_profile_rate: u64,
}

impl ProfileLocation {
    pub fn for_binary(elf: &[u8], version: &GoVersion) -> Result<ProfileLocation, Unavailable> {
        let vars = ProfileVars::locate(elf);
        let layout = BucketLayout::for_binary(elf, version);
        let mut missing: Vec<&str> = vars.missing();
        if layout.is_none() {
            missing.push("the bucket layout (runtime.bucket, runtime.memRecord)");
        }
        match (
            vars.mbuckets,
            vars.mprof_cycle,
            vars.mem_profile_rate,
            layout,
        ) {
            (Some(mbuckets), Some(mprof_cycle), Some(mem_profile_rate), Some((layout, source))) => {
                Ok(ProfileLocation {
                    layout,
                    layout_source: source,
                    mbuckets,
                    mprof_cycle,
                    mem_profile_rate,
                })
            }
            _ => Err(Unavailable {
                missing: missing.join(", "),
                reason: format!(
                    "{} has no DWARF and no .symtab for them, and leaktrace has no table row \
                     for it",
                    version.raw
                ),
            }),
        }
    }
}

/// Reads `len(buf)` bytes of the target at a run-time address.
pub trait TargetMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl TargetMemory for crate::tracee::remote_memory::RemoteMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        crate::tracee::remote_memory::RemoteMemory::read(self, addr, buf)
    }
}

/// Reads the profile now; `bias`: run-time minus link-time address of the executable.
pub fn read_profile(
    memory: &impl TargetMemory,
    location: &ProfileLocation,
    bias: u64,
) -> Result<RawHeapProfile, HeapProfileError> {
    let read_u64 = |addr: u64| -> Result<u64, HeapProfileError> {
        let addr = addr.wrapping_add(bias);
        let mut bytes = [0u8; 8];
        memory
            .read(addr, &mut bytes)
            .map_err(|source| HeapProfileError::Read { addr, source })?;
        Ok(u64::from_le_bytes(bytes))
    };
    let rate = read_u64(location.mem_profile_rate)? as i64;
    // Buckets made before the rate was set to 0 (during init) are stale: no profile is kept.
    if rate == 0 {
        return Err(HeapProfileError::Disabled);
    }
    // `mProfCycleHolder.value`: the cycle above the flushed bit.
    let gc_cycle = (read_u64(location.mprof_cycle)? as u32) >> 1;
    let head = read_u64(location.mbuckets)?;
    let buckets = read_buckets(memory, &location.layout, head)?;
    let bodies: Vec<&Body> = buckets.iter().map(|(_, body)| body).collect();
    let counts = bucket::published(&bodies, gc_cycle);
    let sites = buckets
        .iter()
        .zip(&counts)
        .map(|((size, body), counts)| RawSite {
            pcs: body.pcs.clone(),
            object_size: *size,
            figures: bucket::scale(counts, *size, rate),
        })
        .collect();
    Ok(RawHeapProfile {
        sample_rate_bytes: rate,
        gc_cycle,
        sites,
    })
}

/// The list from `head`: each bucket's object size and body.
pub fn read_buckets(
    memory: &impl TargetMemory,
    layout: &BucketLayout,
    head: u64,
) -> Result<Vec<(u64, Body)>, HeapProfileError> {
    let mut seen = HashSet::new();
    let mut buckets = Vec::new();
    let mut total_pcs = 0u64;
    let mut header_bytes = vec![0u8; usize::try_from(layout.header_size).unwrap_or(0)];
    let mut next = head;
    while next != 0 {
        let addr = next;
        if !addr.is_multiple_of(8) {
            return Err(HeapProfileError::Misaligned(addr));
        }
        if !seen.insert(addr) {
            return Err(HeapProfileError::Loop(addr));
        }
        if buckets.len() >= MAX_BUCKETS {
            return Err(HeapProfileError::TooLarge);
        }
        let read = |at: u64, buf: &mut [u8]| {
            memory
                .read(at, buf)
                .map_err(|source| HeapProfileError::Read { addr: at, source })
        };
        let bucket_error = |source| HeapProfileError::Bucket { addr, source };
        read(addr, &mut header_bytes)?;
        let header = bucket::parse_header(&header_bytes, layout).map_err(bucket_error)?;
        total_pcs += header.nstk;
        if total_pcs > MAX_TOTAL_PCS {
            return Err(HeapProfileError::TooLarge);
        }
        // nstk is bounded by the layout's depth: the body is a few KiB at most.
        let mut body_bytes = vec![0u8; bucket::body_len(layout, header.nstk) as usize];
        read(addr.wrapping_add(layout.header_size), &mut body_bytes)?;
        let body = bucket::parse_body(&body_bytes, layout, header.nstk).map_err(bucket_error)?;
        buckets.push((header.size, body));
        next = header.allnext;
    }
    Ok(buckets)
}

/// Reads one target's profile through its memory.
pub struct HeapProfileReader {
    memory: crate::tracee::remote_memory::RemoteMemory,
    location: ProfileLocation,
    /// Run-time minus link-time address of the executable.
    bias: u64,
}

impl HeapProfileReader {
    pub fn new(
        memory: crate::tracee::remote_memory::RemoteMemory,
        location: ProfileLocation,
        bias: u64,
    ) -> Self {
        HeapProfileReader {
            memory,
            location,
            bias,
        }
    }

    pub fn read(&self) -> Result<RawHeapProfile, HeapProfileError> {
        read_profile(&self.memory, &self.location, self.bias)
    }
}

/// A profile read, and when.
#[derive(Clone, Debug)]
pub struct HeapReading {
    pub profile: RawHeapProfile,
    /// Seconds into the run.
    pub read_at_s: f64,
    /// Read as the OOM killer took the target.
    pub at_oom_kill: bool,
}

impl RawSite {
    /// A key for the site's history across readings: its stack and object size.
    pub fn key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&self.pcs, self.object_size).hash(&mut hasher);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::testutil::{self, TOOLCHAINS, Variant};

    /// A release without a table row: DWARF gives everything; a stripped build says what is
    /// missing (the layout), and nothing it found is claimed missing.
    #[test]
    fn unknown_release_says_which_figures_are_missing() {
        let unknown = GoVersion::parse("go1.99.0").unwrap();
        for toolchain in TOOLCHAINS {
            let plain = testutil::read(&testutil::build(toolchain, Variant::Plain));
            let location = ProfileLocation::for_binary(&plain, &unknown).unwrap();
            assert_eq!(location.layout_source, LayoutSource::Dwarf);
            let stripped = testutil::read(&testutil::build(toolchain, Variant::Stripped));
            let error = ProfileLocation::for_binary(&stripped, &unknown).unwrap_err();
            assert_eq!(
                error.missing,
                "the bucket layout (runtime.bucket, runtime.memRecord)"
            );
            assert!(error.to_string().contains("go1.99.0"), "{error}");
        }
    }

    /// Memory that is a list of two buckets whose second links back to the first.
    struct Looping(Vec<u8>, u64);

    impl TargetMemory for Looping {
        fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            let start = usize::try_from(addr - self.1).unwrap();
            buf.copy_from_slice(&self.0[start..start + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn a_list_that_loops_is_dropped() {
        let version = GoVersion::parse("go1.27.3").unwrap();
        let (layout, _) = BucketLayout::for_binary(b"", &version).unwrap();
        let base = 0x10000;
        let one = layout.header_size + layout.record_size();
        let mut bytes = vec![0u8; 2 * one as usize];
        for (at, next) in [(0, base + one), (one, base)] {
            for (offset, value) in [
                (layout.allnext, next),
                (layout.typ, layout::MEM_PROFILE),
                (layout.size, 16),
            ] {
                let at = (at + offset) as usize;
                bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        let memory = Looping(bytes, base);
        assert!(matches!(
            read_buckets(&memory, &layout, base),
            Err(HeapProfileError::Loop(addr)) if addr == base
        ));
        assert!(matches!(
            read_buckets(&memory, &layout, base + 4),
            Err(HeapProfileError::Misaligned(_))
        ));
    }
}

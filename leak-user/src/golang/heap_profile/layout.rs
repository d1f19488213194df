//! The layout of the runtime's memory-profile buckets (`runtime/mprof.go`): a `bucket`
//! header, `nstk` PCs, then a `memRecord` (`active`, then `future[3]`, each a
//! `memRecordCycle`). From the binary's DWARF, else from a row per Go release generated
//! from real toolchains (see `table_rows_are_the_toolchains`).
use super::super::{buildinfo::GoVersion, offsets};

/// Byte offsets of one `runtime.memRecordCycle`'s counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CycleLayout {
    /// Bytes of one cycle.
    pub size: u64,
    pub allocs: u64,
    pub frees: u64,
    /// `alloc_bytes`/`free_bytes`: Go up to 1.22 counts bytes too; later releases derive
    /// them from the bucket's object size.
    pub bytes: Option<(u64, u64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketLayout {
    /// `unsafe.Sizeof(bucket{})`: the PCs start there.
    pub header_size: u64,
    pub allnext: u64,
    pub typ: u64,
    pub size: u64,
    pub nstk: u64,
    /// Offset of `memRecord.active` and `memRecord.future` from the record's start.
    pub active: u64,
    pub future: u64,
    pub cycle: CycleLayout,
    /// The runtime's own bound on `nstk` (`maxStack`, `maxProfStackDepth`).
    pub max_stack: u64,
}

/// `bucketType` of memory-profile buckets (`memProfile = 1 + iota`, unchanged since Go 1.0).
pub const MEM_PROFILE: u64 = 1;

/// Bound on `nstk` when only DWARF tells the layout (Go 1.23+'s `maxProfStackDepth`).
const MAX_STACK_UNKNOWN_RELEASE: u64 = 1024;

/// Where the layout came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutSource {
    Dwarf,
    Table,
}

impl BucketLayout {
    /// Bytes of a `memRecord`: `active` and three `future` cycles.
    pub fn record_size(&self) -> u64 {
        self.future + 3 * self.cycle.size
    }

    /// From DWARF, else the release's row; `None` when neither is there.
    pub fn for_binary(elf: &[u8], version: &GoVersion) -> Option<(BucketLayout, LayoutSource)> {
        let table = row(version);
        if let Some(mut layout) = from_dwarf(elf) {
            layout.max_stack = table.map_or(MAX_STACK_UNKNOWN_RELEASE, |row| row.max_stack);
            return Some((layout, LayoutSource::Dwarf));
        }
        table.map(|row| (row, LayoutSource::Table))
    }
}

/// Rows printed by `table_rows_are_the_toolchains` (linux/amd64), `max_stack` from the
/// release's `runtime/mprof.go`.
const TABLE: &[(u32, BucketLayout)] = &[
    (
        19,
        BucketLayout {
            header_size: 48,
            allnext: 8,
            typ: 16,
            size: 32,
            nstk: 40,
            active: 0,
            future: 32,
            cycle: CycleLayout {
                size: 32,
                allocs: 0,
                frees: 8,
                bytes: Some((16, 24)),
            },
            max_stack: 32,
        },
    ),
    (
        27,
        BucketLayout {
            header_size: 48,
            allnext: 8,
            typ: 16,
            size: 32,
            nstk: 40,
            active: 0,
            future: 16,
            cycle: CycleLayout {
                size: 16,
                allocs: 0,
                frees: 8,
                bytes: None,
            },
            max_stack: 1024,
        },
    ),
];

fn row(version: &GoVersion) -> Option<BucketLayout> {
    if version.major != 1 {
        return None;
    }
    TABLE
        .iter()
        .find(|(minor, _)| *minor == version.minor)
        .map(|(_, layout)| *layout)
}

/// The layout from `runtime.bucket`, `runtime.memRecord` and `runtime.memRecordCycle`.
fn from_dwarf(elf: &[u8]) -> Option<BucketLayout> {
    const STRUCTS: [&str; 3] = [
        "runtime.bucket",
        "runtime.memRecord",
        "runtime.memRecordCycle",
    ];
    let structs = offsets::read_structs(elf, &STRUCTS).ok()?;
    let member = |name| offsets::checked_member(&structs, name).ok();
    let size = |name: &str| structs.get(name)?.checked_size();
    let cycle = CycleLayout {
        size: size("runtime.memRecordCycle")?,
        allocs: member("runtime.memRecordCycle.allocs")?,
        frees: member("runtime.memRecordCycle.frees")?,
        bytes: member("runtime.memRecordCycle.alloc_bytes")
            .zip(member("runtime.memRecordCycle.free_bytes")),
    };
    let layout = BucketLayout {
        header_size: size("runtime.bucket")?,
        allnext: member("runtime.bucket.allnext")?,
        typ: member("runtime.bucket.typ")?,
        size: member("runtime.bucket.size")?,
        nstk: member("runtime.bucket.nstk")?,
        active: member("runtime.memRecord.active")?,
        future: member("runtime.memRecord.future")?,
        cycle,
        max_stack: MAX_STACK_UNKNOWN_RELEASE,
    };
    // Three future cycles after `active`, inside the record as DWARF sizes it.
    (layout.record_size() <= size("runtime.memRecord")?).then_some(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::buildinfo;
    use crate::golang::testutil::{self, TOOLCHAINS, Variant};

    /// The rows are what the toolchains' DWARF says (on a mismatch, the row to embed is
    /// printed: `cargo test table_rows_are_the_toolchains -- --nocapture`).
    #[test]
    fn table_rows_are_the_toolchains() {
        for toolchain in TOOLCHAINS {
            let elf = testutil::read(&testutil::build(toolchain, Variant::Plain));
            let version = buildinfo::go_version(&elf).unwrap();
            let (layout, source) = BucketLayout::for_binary(&elf, &version).unwrap();
            println!("({}, {layout:?}),", version.minor);
            assert_eq!(source, LayoutSource::Dwarf);
            assert_eq!(Some(layout), row(&version), "{}", version.raw);
        }
    }

    #[test]
    fn stripped_builds_take_the_row() {
        for toolchain in TOOLCHAINS {
            let elf = testutil::read(&testutil::build(toolchain, Variant::Stripped));
            let version = buildinfo::go_version(&elf).unwrap();
            let (layout, source) = BucketLayout::for_binary(&elf, &version).unwrap();
            assert_eq!((Some(layout), source), (row(&version), LayoutSource::Table));
            let unknown = GoVersion::parse("go1.99.0").unwrap();
            assert_eq!(BucketLayout::for_binary(&elf, &unknown), None);
        }
    }
}

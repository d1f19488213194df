//! Root regions: the target's writable memory, conservatively. Data and bss of every object,
//! the heap and every anonymous mapping (the allocator's arenas, the Go heap, TLS blocks),
//! and each thread's stack from its stack pointer up (the red zone below it included, dead
//! frames further down not). A mapping is cut at a stack pointer only when it is a thread's
//! own stack: `[stack]`, or the mapping that also holds the thread's TLS block (`fs_base`), as
//! glibc and musl lay out a thread's stack. A goroutine's stack pointer is in the Go heap,
//! which is scanned whole. The tracked blocks' own bytes are taken out by the scan, not
//! here: they are the graph, reached only through a pointer; so are glibc's free chunks
//! ([`super::glibc_heap`]).
use std::collections::BTreeMap;

use procfs::process::{MMPermissions, MMapPath, MemoryMap, Process};
use thiserror::Error;

use super::stop::Stopped;

/// Mappings at most: the kernel's default `vm.max_map_count` is 65530.
pub const MAX_REGIONS: usize = 1 << 20;
/// x86-64's red zone: a leaf function may keep data this far below its stack pointer.
const RED_ZONE: u64 = 128;

#[derive(Debug, Error)]
pub enum RootsError {
    #[error("cannot read the mappings of PID {pid}: {source}")]
    Maps { pid: u32, source: procfs::ProcError },
    #[error("PID {pid} has more than {MAX_REGIONS} mappings")]
    TooMany { pid: u32 },
}

/// `[start, end)` of the target's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub kind: RegionKind,
}

/// What a region is, as far as an allocator's heap may be in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// `[heap]`: the program break's memory.
    Brk,
    /// Anonymous memory.
    Anonymous,
    /// A stack, an object's data, or some other mapping.
    Other,
}

/// The root regions of `pid`, whose threads are stopped.
pub fn root_regions(pid: u32, threads: &BTreeMap<u32, Stopped>) -> Result<Vec<Region>, RootsError> {
    let maps = Process::new(pid as i32)
        .and_then(|p| p.maps())
        .map_err(|source| RootsError::Maps { pid, source })?;
    if maps.0.len() > MAX_REGIONS {
        return Err(RootsError::TooMany { pid });
    }
    let stacks: Vec<ThreadStack> = threads
        .values()
        .filter_map(|t| {
            t.regs.map(|r| ThreadStack {
                sp: r.rsp,
                tls: r.fs_base,
            })
        })
        .collect();
    Ok(regions_of(&maps.0, &stacks))
}

/// A thread's stack pointer and TLS pointer.
#[derive(Debug, Clone, Copy)]
pub struct ThreadStack {
    pub sp: u64,
    pub tls: u64,
}

/// The scanned part of each writable mapping: all of it, or for a thread's stack, from the
/// lowest stack pointer in it (less the red zone) to its end.
pub fn regions_of(maps: &[MemoryMap], stacks: &[ThreadStack]) -> Vec<Region> {
    maps.iter()
        .filter(|m| is_scanned(m))
        .map(|m| {
            let (start, end) = m.address;
            let inside = |a: u64| a >= start && a < end;
            let is_main_stack = m.pathname == MMapPath::Stack;
            let lowest_sp = stacks
                .iter()
                .filter(|t| inside(t.sp) && (is_main_stack || (inside(t.tls) && t.tls > t.sp)))
                .map(|t| t.sp)
                .min();
            let kind = match m.pathname {
                _ if lowest_sp.is_some() => RegionKind::Other,
                MMapPath::Heap => RegionKind::Brk,
                MMapPath::Anonymous => RegionKind::Anonymous,
                _ => RegionKind::Other,
            };
            let start = match lowest_sp {
                Some(sp) => sp.saturating_sub(RED_ZONE).max(start) & !7,
                None => start,
            };
            Region { start, end, kind }
        })
        .collect()
}

/// Readable and writable memory, but not the kernel's pages nor a device's registers.
fn is_scanned(map: &MemoryMap) -> bool {
    let rw = MMPermissions::READ | MMPermissions::WRITE;
    if !map.perms.contains(rw) {
        return false;
    }
    match &map.pathname {
        MMapPath::Vdso | MMapPath::Vvar | MMapPath::Vsyscall | MMapPath::Rollup => false,
        MMapPath::Path(path) => !path.starts_with("/dev/") || path.starts_with("/dev/zero"),
        MMapPath::Other(name) => !name.starts_with("[v"),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::FromRead as _;

    /// A real /proc/PID/maps of a two-thread program (captured from tests/targets/reach.c).
    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234 /opt/reach
55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 1234 /opt/reach
55d0c0a03000-55d0c0a04000 rw-p 00003000 08:01 1234 /opt/reach
55d0c1e9d000-55d0c1ebe000 rw-p 00000000 00:00 0 [heap]
7f3a5c000000-7f3a5c021000 rw-p 00000000 00:00 0 
7f3a60bff000-7f3a60c00000 ---p 00000000 00:00 0 
7f3a60c00000-7f3a61400000 rw-p 00000000 00:00 0 
7f3a61600000-7f3a61628000 r--p 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f3a61815000-7f3a61817000 rw-p 00214000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd1a3e0000-7ffd1a401000 rw-p 00000000 00:00 0 [stack]
7ffd1a5f2000-7ffd1a5f6000 r--p 00000000 00:00 0 [vvar]
7ffd1a5f6000-7ffd1a5f8000 r-xp 00000000 00:00 0 [vdso]
";

    #[test]
    fn writable_mappings_are_roots_and_stacks_start_at_their_pointer() {
        let maps = procfs::process::MemoryMaps::from_read(MAPS.as_bytes()).expect("maps");
        let main_sp = 0x7ffd1a3ff128;
        let thread_sp = 0x7f3a613fee40;
        let stacks = [
            ThreadStack {
                sp: main_sp,
                tls: 0x7f3a5c000740,
            },
            ThreadStack {
                sp: thread_sp,
                tls: 0x7f3a613ff6c0,
            },
            // A goroutine's stack in an anonymous mapping without the thread's TLS (the Go
            // heap): that mapping is scanned whole.
            ThreadStack {
                sp: 0x7f3a5c010000,
                tls: 0x7f3a613ff6c0,
            },
        ];
        let regions = regions_of(&maps.0, &stacks);
        let expected = [
            (0x55d0c0a03000, 0x55d0c0a04000),
            (0x55d0c1e9d000, 0x55d0c1ebe000),
            (0x7f3a5c000000, 0x7f3a5c021000),
            (thread_sp - 128, 0x7f3a61400000),
            (0x7f3a61815000, 0x7f3a61817000),
            (main_sp - 128, 0x7ffd1a401000),
        ];
        let got: Vec<(u64, u64)> = regions.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(got, expected);
        let kinds: Vec<RegionKind> = regions.iter().map(|r| r.kind).collect();
        use RegionKind::*;
        assert_eq!(kinds, [Other, Brk, Anonymous, Other, Other, Other]);
    }
}

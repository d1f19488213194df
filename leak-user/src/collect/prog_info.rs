//! What the kernel counts about our programs beyond aya's view: `recursion_misses`, the
//! runs it skipped because another BPF program was already running on that CPU (another
//! tracer's uprobe on the same function, a profiler's perf event). Each skip is an allocator
//! call we never saw: it must show in `dropped`, never pass silently.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{Ebpf, programs::Program};

/// `BPF_OBJ_GET_INFO_BY_FD`.
const OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `struct bpf_prog_info` up to and including `recursion_misses` (Linux 5.12+).
const INFO_LEN: usize = 216;
const RUN_TIME_NS: usize = 192;
const RUN_CNT: usize = 200;
const RECURSION_MISSES: usize = 208;

/// Kernel statistics of one loaded program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub run_time_ns: u64,
    pub run_count: u64,
    pub recursion_misses: u64,
}

pub fn stats(program: &Program) -> io::Result<ProgStats> {
    let fd = program
        .fd()
        .map_err(|e| io::Error::other(e.to_string()))?
        .as_fd()
        .as_raw_fd();
    #[repr(C, align(8))]
    struct Info([u8; INFO_LEN]);
    let mut info = Info([0; INFO_LEN]);
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = Attr {
        bpf_fd: fd as u32,
        info_len: INFO_LEN as u32,
        info: info.0.as_mut_ptr() as u64,
    };
    // SAFETY: the attribute points at a buffer of `info_len` bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<Attr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let field = |at: usize| {
        let bytes: [u8; 8] = info.0[at..at + 8].try_into().unwrap_or_default();
        u64::from_ne_bytes(bytes)
    };
    // A kernel that knows fewer fields says so by the length it filled in.
    let known = |at: usize| {
        if (attr.info_len as usize) >= at + 8 {
            field(at)
        } else {
            0
        }
    };
    Ok(ProgStats {
        run_time_ns: known(RUN_TIME_NS),
        run_count: known(RUN_CNT),
        recursion_misses: known(RECURSION_MISSES),
    })
}

/// Runs of the allocator programs the kernel skipped, summed.
pub fn skipped_runs(ebpf: &Ebpf) -> u64 {
    ebpf.programs()
        .filter(|(name, _)| !name.starts_with("oom_"))
        .filter_map(|(_, program)| stats(program).ok())
        .map(|s| s.recursion_misses)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya::programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    };

    #[test]
    fn offsets_agree_with_aya_on_a_program_that_ran() {
        // Root only (BPF): the test suite runs as root.
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF stats");
        let mut ebpf = crate::attach::load(crate::attach::MapLimits::minimal()).expect("load");
        let libc_path = std::fs::read_to_string("/proc/self/maps")
            .expect("maps")
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("libc.so"))
            .expect("libc mapped")
            .to_owned();
        let program: &mut UProbe = ebpf
            .program_mut("free_enter")
            .expect("program")
            .try_into()
            .expect("uprobe");
        program.load().expect("verify");
        let pid = std::num::NonZeroU32::new(std::process::id()).expect("pid");
        program
            .attach(
                UProbeAttachPoint {
                    location: UProbeAttachLocation::Symbol("free"),
                    cookie: None,
                },
                &libc_path,
                UProbeScope::OneProcess(pid),
            )
            .expect("attach");
        for size in 1..100 {
            drop(std::hint::black_box(vec![0u8; size * 64]));
        }
        let program = ebpf.program("free_enter").expect("program");
        let ours = stats(program).expect("info");
        let info = program.info().expect("aya's info");
        assert!(ours.run_count >= 99, "{ours:?}");
        assert_eq!(ours.run_count, info.run_count());
        assert_eq!(ours.run_time_ns, info.run_time().as_nanos() as u64);
        assert_eq!(ours.recursion_misses, 0);
    }
}

//! What the kernel counts about our programs beyond aya's view: `recursion_misses`, the
//! runs it skipped because another BPF program was already running on that CPU (another
//! tracer's uprobe on the same function, a profiler's perf event). Each skip is an allocator
//! call we never saw: it must show in `dropped`, never pass silently.
use std::{
    io, mem,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::{Ebpf, programs::Program};
use aya_obj::generated::{bpf_cmd, bpf_prog_info};

use super::bpf_sys;

/// Kernel statistics of one loaded program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub run_time_ns: u64,
    pub run_count: u64,
    pub recursion_misses: u64,
}

pub fn stats(program: &Program) -> io::Result<ProgStats> {
    let fd = program.fd().map_err(|e| io::Error::other(e.to_string()))?;
    stats_of_fd(fd.as_fd())
}

/// The statistics of the program behind `fd` (also those loaded outside aya).
pub fn stats_of_fd(fd: BorrowedFd<'_>) -> io::Result<ProgStats> {
    let fd = fd.as_raw_fd();
    // SAFETY: bpf_prog_info is plain integers (and pointers the kernel only writes through
    // when their lengths are non-zero); all zero is valid.
    let mut info: bpf_prog_info = unsafe { mem::zeroed() };
    let mut attr = bpf_sys::zeroed_attr();
    attr.info.bpf_fd = fd as u32;
    attr.info.info_len = mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = (&raw mut info) as u64;
    // The pointer is `info_len` bytes that outlive the call.
    bpf_sys::bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // A kernel that knows fewer fields leaves the rest zero (and says so by the length).
    Ok(ProgStats {
        run_time_ns: info.run_time_ns,
        run_count: info.run_cnt,
        recursion_misses: info.recursion_misses,
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
        // Other test threads of this process free too, between any two reads: aya's figures
        // must lie between ours read before and after.
        let before = stats(program).expect("info");
        let info = program.info().expect("aya's info");
        let after = stats(program).expect("info");
        assert!(before.run_count >= 99, "{before:?}");
        assert!(
            (before.run_count..=after.run_count).contains(&info.run_count()),
            "{before:?} {after:?} {info:?}"
        );
        assert!(
            (before.run_time_ns..=after.run_time_ns).contains(&(info.run_time().as_nanos() as u64)),
            "{before:?} {after:?}"
        );
        assert_eq!(after.recursion_misses, 0);
    }
}

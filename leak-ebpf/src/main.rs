//! leaktrace's eBPF programs: uprobes on the target's allocator.
//!
//! Entry probes note the call per thread (size, arguments, stack); the shared return probe turns a
//! successful call into an entry of `ALLOCS` and per-stack totals; `free`/`munmap` remove entries.
//! Nothing is sent to user space per call: it reads the maps at each report.
#![no_std]
#![no_main]
// Atomic adds on map values: core's atomic types have no read-modify-write on BPF.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod args;
mod dlopen;
mod escalation;
mod golang;
mod in_flight;
mod maps;
mod sampling;
mod session;
mod track;
mod unwind;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_buf, generated::bpf_send_signal},
    macros::{tracepoint, uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use leak_common::{OOM_RECORD_BYTES, OomRecord, call, probe_cookie};

/// From `<sys/mman.h>` (x86-64).
const MAP_ANONYMOUS: u64 = 0x20;
const PROT_NONE: u64 = 0;

/// Set to 1 by user space (`--empty-probes`, the floor of `cargo xtask bench`): every allocator
/// probe returns at once, so only the cost of the probes themselves remains. A read-only global:
/// the verifier sees its value and drops the dead branch.
#[unsafe(no_mangle)]
static EMPTY_PROBES: u8 = 0;

#[inline(always)]
fn empty_probes() -> bool {
    // SAFETY: a plain read of a global; volatile so the compiler keeps the load that user space
    // patches before loading.
    unsafe { core::ptr::read_volatile(&EMPTY_PROBES) != 0 }
}

/// The entry probe of every allocating function; the attach cookie says how to read its
/// arguments (a single program is verified once, where one per function took the verifier a
/// second in all).
#[uprobe]
pub fn alloc_enter(ctx: ProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    alloc_entry(&ctx, track::Probe::Uprobe);
    0
}

/// The return probe shared by every allocating entry point: the in-flight record says which.
#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    track::exit(ctx.ret::<u64>());
    0
}

/// `alloc_enter` and `alloc_return` as one uprobe session program, where the kernel has them:
/// the entry skips the return probe of a call it does not need to see return (unsampled, or
/// nested in another allocator call). Written without aya's `#[uprobe]`, whose wrapper returns
/// 0 whatever the function returns: here the value is the entry's answer.
#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe/alloc_session")]
pub fn alloc_session(ctx: *mut core::ffi::c_void) -> u32 {
    let ctx = ProbeContext::new(ctx);
    // The floor of full tracing takes both traps, as full tracing does.
    if empty_probes() {
        return session::RUN_RETURN;
    }
    if session::is_return(&ctx) {
        // SAFETY: a uprobe's context is the user registers, readable directly.
        track::exit(unsafe { (*ctx.regs).rax });
        return 0;
    }
    if alloc_entry(&ctx, track::Probe::Session) {
        session::RUN_RETURN
    } else {
        session::SKIP_RETURN
    }
}

/// An allocating call's entry: returns whether its return must be seen.
#[inline(always)]
fn alloc_entry(ctx: &ProbeContext, probe: track::Probe) -> bool {
    let cookie = args::cookie(ctx);
    // Every argument a layout may read, once: the layouts below then only combine them, and
    // the verifier walks one register lookup per argument instead of one per use.
    let a = [
        args::arg(ctx, cookie, 0),
        args::arg(ctx, cookie, 1),
        args::arg(ctx, cookie, 2),
    ];
    let kind = probe_cookie::kind(cookie);
    let (size, ptr_arg) = match probe_cookie::call(cookie) {
        call::SIZE => (a[0], 0),
        // pvalloc rounds the size up to whole pages; that is what the program holds.
        call::PAGES => ((a[0] + 4095) & !4095, 0),
        call::COUNT_SIZE => (a[0].wrapping_mul(a[1]), 0),
        call::REALLOC => (a[1], a[0]),
        call::REALLOC_COUNT => (a[1].wrapping_mul(a[2]), a[0]),
        // The block comes back through `memptr`.
        call::POSIX_MEMALIGN => (a[1], a[0]),
        // In place: like a realloc that keeps the address, the block moves to this call's
        // stack with its new size (see track).
        call::RESIZE | call::EXPAND => (a[1], a[0]),
        // The size is the returned string's, known at return; until then a nominal one for
        // byte sampling.
        call::STRING => (track::STRING_WEIGHT, 0),
        call::MMAP => {
            // Only anonymous, accessible mappings hold memory: file mappings are not heap, and
            // PROT_NONE ones only reserve address space (glibc's arenas, made inside free too,
            // where no outer call marks them as the allocator's own). An untracked call still
            // counts as nesting so that the return probe stays balanced.
            // In cgo binaries the Go runtime maps its heap through libc (`x_cgo_mmap`): Go
            // memory, accounted apart.
            let len = a[0];
            let tracked = a[2] & MAP_ANONYMOUS != 0
                && a[1] != PROT_NONE
                && !(golang::go_target() && golang::mmap_by_go_runtime(ctx, len));
            return track::enter_mmap(ctx, probe, kind, len, tracked);
        }
        _ => return false,
    };
    track::enter(ctx, probe, kind, size, ptr_arg)
}

/// free, delete, sdallocx, mi_free_size...: the cookie says where the pointer is.
#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    let cookie = args::cookie(&ctx);
    track::release_from_user(args::arg(&ctx, cookie, 0), false);
    0
}

#[uprobe]
pub fn munmap_enter(ctx: ProbeContext) -> u32 {
    if empty_probes() {
        return 0;
    }
    let cookie = args::cookie(&ctx);
    track::release_from_user(args::arg(&ctx, cookie, 0), true);
    0
}

/// `leaktrace run`: stops the new program at its entry point, after the dynamic loader has mapped
/// its libraries and before any of its own code runs, so that user space can install the unwind
/// tables first; it continues the program with SIGCONT.
#[uprobe]
pub fn program_entry(_ctx: ProbeContext) -> u32 {
    const SIGSTOP: u32 = 19;
    // SAFETY: the signal helper has no preconditions; it signals the current task.
    unsafe { bpf_send_signal(SIGSTOP) };
    0
}

/// Every OOM victim of the machine goes to user space (rare), which keeps the target's.
#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let mut record = OomRecord {
        // SAFETY: the clock helper has no preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        data: [0; OOM_RECORD_BYTES],
    };
    // SAFETY: the context is the tracepoint's record; a short record reads what follows it,
    // which the layout in user space ignores.
    if unsafe { bpf_probe_read_kernel_buf(ctx.as_ptr().cast::<u8>(), &mut record.data) }.is_ok() {
        let _ = maps::OOM_EVENTS.output::<OomRecord>(&record, 0);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

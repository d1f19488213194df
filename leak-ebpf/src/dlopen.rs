//! dlopen: a probe on the dynamic loader's debugger hook (`_dl_debug_state`, called by glibc's
//! and musl's loaders once a library is mapped and before its constructors run). It stops the
//! process (SIGSTOP) and tells user space, which installs the new object's unwind rows and
//! continues it (SIGCONT): the library's very first allocations already get full stacks.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_send_signal},
    macros::{map, uprobe},
    maps::{Array, RingBuf},
    programs::ProbeContext,
};
use leak_common::dlopen_event;

use crate::maps::CLOCK;

/// One `u64` per call of the hook (`dlopen_event`).
#[map]
pub static DLOPEN_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Slot 0: the run-time address of the loader's `r_debug.r_state`, 0 when unknown (then every
/// call stops the process).
#[map]
pub static DLOPEN_PARAMS: Array<u64> = Array::with_max_entries(1, 0);

/// `r_state` once the link map is consistent again (glibc also calls the hook at RT_ADD and
/// RT_DELETE, before anything is mapped or after it is gone).
const RT_CONSISTENT: i32 = 0;
/// User space writes `CLOCK` every 10 ms; older than this, it is not there to continue the
/// process, which must then not be stopped.
const CLOCK_FRESH_NS: u64 = 100_000_000;
const SIGSTOP: u32 = 19;
const SIGCONT: u32 = 18;

#[uprobe]
pub fn dl_debug_state(_ctx: ProbeContext) -> u32 {
    let r_state = DLOPEN_PARAMS.get(0).copied().unwrap_or(0);
    if r_state != 0 {
        // SAFETY: a user-space read, checked by the helper.
        let state = unsafe { bpf_probe_read_user(r_state as *const i32) };
        if state.is_ok_and(|state| state != RT_CONSISTENT) {
            return 0;
        }
    }
    let clock = CLOCK.get(0).copied().unwrap_or(0);
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.saturating_sub(clock) > CLOCK_FRESH_NS {
        let _ = DLOPEN_EVENTS.output::<u64>(&dlopen_event::NOT_STOPPED, 0);
        return 0;
    }
    // The stop is queued before user space can hear of it, so its SIGCONT always comes after.
    // SAFETY: signals the current process.
    if unsafe { bpf_send_signal(SIGSTOP) } != 0 {
        return 0;
    }
    // Unheard of, it would stay stopped: SIGCONT drops the pending SIGSTOP.
    if DLOPEN_EVENTS
        .output::<u64>(&dlopen_event::STOPPED, 0)
        .is_err()
    {
        // SAFETY: as above.
        unsafe { bpf_send_signal(SIGCONT) };
    }
    0
}

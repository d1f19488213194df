//! Exact tracing of escalated call sites (`--always-on`): user space names a site by the return
//! address of its allocator call, which sits at `[rsp]` at the probe (probes never move past an
//! instruction that touches the stack), so an unsampled call is checked with one read and one
//! lookup, and only while some site is escalated.
use aya_ebpf::{helpers::bpf_probe_read_user, programs::ProbeContext};

use crate::maps::{ESCALATED, ESCALATED_COUNT};

/// True when this allocator call comes from an escalated call site.
#[inline(always)]
pub fn escalated(ctx: &ProbeContext) -> bool {
    match ESCALATED_COUNT.get(0) {
        Some(&n) if n != 0 => {}
        _ => return false,
    }
    // SAFETY: a uprobe's context is the user registers, readable directly.
    let rsp = unsafe { (*ctx.regs).rsp };
    // SAFETY: a helper read of user memory; a bad address is an error, not a fault.
    match unsafe { bpf_probe_read_user(rsp as *const u64) } {
        Ok(ret) => ESCALATED.get_ptr(ret).is_some(),
        Err(_) => false,
    }
}

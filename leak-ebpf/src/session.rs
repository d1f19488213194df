//! Uprobe sessions (Linux 6.12+): one program runs at a function's entry and, only if the entry
//! returned 0, at its return. An unsampled allocation then costs one trap instead of two.
use aya_ebpf::programs::ProbeContext;
use leak_common::SESSION_IS_RETURN_PLACEHOLDER;

/// The entry's answer: run the program again at the function's return.
pub const RUN_RETURN: u32 = 0;
/// The entry's answer: no return probe for this call.
pub const SKIP_RETURN: u32 = 1;

/// True when the session program runs at the function's return (the `bpf_session_is_return`
/// kfunc). Called as a helper with a placeholder id that user space rewrites into the kfunc
/// call (see `leak_common::SESSION_IS_RETURN_PLACEHOLDER`). The context goes in R1 for kernels
/// whose kfunc takes it; 6.12-6.18's takes no argument and ignores the register.
#[inline(always)]
pub fn is_return(ctx: &ProbeContext) -> bool {
    // SAFETY: user space replaces this call by a call of the kfunc before the program is
    // loaded (a program still calling the placeholder is refused by the verifier, never run).
    let kfunc: unsafe extern "C" fn(*mut core::ffi::c_void) -> u64 =
        unsafe { core::mem::transmute(SESSION_IS_RETURN_PLACEHOLDER as usize) };
    // SAFETY: see above; the kfunc has no preconditions.
    unsafe { kfunc(ctx.regs.cast()) & 1 != 0 }
}

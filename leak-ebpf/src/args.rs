//! Reading an allocator call's arguments where the probe finds them. A probe placed past the
//! function's first instructions (so the kernel can emulate the probed one rather than
//! single-step it) may find an argument moved to another register: user space works out which
//! and says so in the attach cookie (`leak_common::probe_cookie`).
use aya_ebpf::{
    EbpfContext as _, helpers::generated::bpf_get_attach_cookie, programs::ProbeContext,
};
use leak_common::{probe_cookie, reg};

/// The probe's attach cookie.
pub fn cookie(ctx: &ProbeContext) -> u64 {
    // SAFETY: the context pointer comes from the kernel.
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
}

/// Argument `n` of the call layout named by `cookie`.
pub fn arg(ctx: &ProbeContext, cookie: u64, n: usize) -> u64 {
    register(ctx, probe_cookie::reg(cookie, n))
}

/// The value of a register numbered as in `leak_common::reg`.
fn register(ctx: &ProbeContext, number: u8) -> u64 {
    // SAFETY: a uprobe's context is the user registers, readable directly.
    let regs = unsafe { &*ctx.regs };
    match number {
        reg::RDI => regs.rdi,
        reg::RSI => regs.rsi,
        reg::RDX => regs.rdx,
        reg::RCX => regs.rcx,
        reg::R8 => regs.r8,
        reg::R9 => regs.r9,
        reg::RAX => regs.rax,
        reg::RBX => regs.rbx,
        reg::RBP => regs.rbp,
        reg::R10 => regs.r10,
        reg::R11 => regs.r11,
        reg::R12 => regs.r12,
        reg::R13 => regs.r13,
        reg::R14 => regs.r14,
        reg::R15 => regs.r15,
        _ => 0,
    }
}

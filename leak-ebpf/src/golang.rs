//! Go runtime probes. Goroutines: creation at the RET sites of `runtime.newproc1` (the new `g`
//! is in RAX there, goid and creation site filled in), exit at `runtime.gdestroy` (or `goexit0`
//! on older runtimes). cgo: the Go stack of a cgo call, captured at `runtime.cgocall` (after its
//! stack check, so a stack growth does not capture twice) and kept by goroutine; the stack
//! walker appends it to the C stack when it reaches `asmcgocall`, which saved that goroutine's
//! `g` on the system stack. No probe at cgocall's RET sites: a RET is single-stepped, about
//! 20 µs a hit here, and keyed by `g` the entry of a finished call is never joined to another.
//! Never a uretprobe here: a return trampoline on a goroutine stack breaks stack copying.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use leak_common::{GO_FRAMES, Goroutine, counter, go_param};

use crate::maps::{GO_PARAMS, GO_SCRATCH, GO_STACKS, GOROUTINES, add, count};

/// 1 for a Go target: the Go-only branches of the allocator probes exist only then (a
/// read-only global, so the verifier drops them for other targets).
#[unsafe(no_mangle)]
static GO_TARGET: u8 = 0;
/// Offsets of `runtime.g` fields, from the target's DWARF or the per-version table.
#[unsafe(no_mangle)]
static GO_G_GOID: u64 = 0;
#[unsafe(no_mangle)]
static GO_G_GOPC: u64 = 0;
#[unsafe(no_mangle)]
static GO_G_STARTPC: u64 = 0;

#[inline(always)]
pub fn go_target() -> bool {
    // SAFETY: a plain read of a global user space sets before loading.
    unsafe { core::ptr::read_volatile(&GO_TARGET) != 0 }
}

#[inline(always)]
fn global(value: &u64) -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(value) }
}

fn read_u64(addr: u64) -> u64 {
    // SAFETY: a helper read of user memory; a bad address is an error, not a fault.
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

fn param(index: u32) -> u64 {
    GO_PARAMS.get(index).copied().unwrap_or(0)
}

fn in_range(pc: u64, start: u32, end: u32) -> bool {
    let start = param(start);
    start != 0 && pc >= start && pc < param(end)
}

/// A pc of the Go side of a cgo call: the C stack ends there.
pub fn is_cgo_boundary(pc: u64) -> bool {
    in_range(pc, go_param::ASMCGOCALL_START, go_param::ASMCGOCALL_END)
        || in_range(pc, go_param::LANDINGPAD_START, go_param::LANDINGPAD_END)
}

/// The goroutine whose cgo call the C code returning to `sp` (in asmcgocall) runs for: the `g`
/// asmcgocall saved in its frame; 0 when unknown (asmcgocall_no_g stores 0 there).
pub fn cgo_caller_g(sp: u64) -> u64 {
    match param(go_param::G_SLOT) {
        0 => 0,
        slot => read_u64(sp.wrapping_add(slot)),
    }
}

/// The creation site (`gopc`: the pc after the `go` statement's call) of goroutine `g`.
pub fn creation_pc(g: u64) -> u64 {
    read_u64(g.wrapping_add(global(&GO_G_GOPC)))
}

/// True when an `mmap` call comes from the Go runtime (`x_cgo_mmap`): Go memory, not native.
pub fn mmap_by_go_runtime(ctx: &ProbeContext, len: u64) -> bool {
    // At the probe (mmap's first instruction) the return address is at RSP.
    // SAFETY: a uprobe's context is the user registers, readable directly.
    let caller = read_u64(unsafe { (*ctx.regs).rsp });
    if in_range(caller, go_param::CGO_MMAP_START, go_param::CGO_MMAP_END) {
        add(counter::GO_RUNTIME_MMAP_BYTES, len);
        return true;
    }
    false
}

#[uprobe]
pub fn go_newproc1_ret(ctx: ProbeContext) -> u32 {
    // SAFETY: a uprobe's context is the user registers, readable directly.
    let g = unsafe { (*ctx.regs).rax };
    if g == 0 {
        return 0;
    }
    let goroutine = Goroutine {
        goid: read_u64(g + global(&GO_G_GOID)),
        gopc: read_u64(g + global(&GO_G_GOPC)),
        startpc: read_u64(g + global(&GO_G_STARTPC)),
        // SAFETY: the clock helper has no preconditions.
        created_ns: unsafe { bpf_ktime_get_ns() },
    };
    // A reused `g` replaces the entry of the goroutine that last ran on it.
    if GOROUTINES.insert(g, goroutine, 0).is_err() {
        count(counter::DROP_GOROUTINE_MAP_FULL);
        return 0;
    }
    count(counter::GOROUTINES_CREATED);
    0
}

#[uprobe]
pub fn go_goroutine_exit(ctx: ProbeContext) -> u32 {
    // SAFETY: a uprobe's context is the user registers, readable directly.
    let g = unsafe { (*ctx.regs).rax };
    if GOROUTINES.remove(g).is_ok() {
        count(counter::GOROUTINES_EXITED);
    }
    0
}

/// `runtime.cgocall`, after its stack check (if any): RBP still holds the caller's frame pointer and the
/// return address is at RSP; Go keeps frame pointers, so the chain is the whole Go stack.
#[uprobe]
pub fn go_cgocall_enter(ctx: ProbeContext) -> u32 {
    let Some(stack) = GO_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, valid for the program's run.
    let stack = unsafe { &mut *stack };
    // SAFETY: a uprobe's context is the user registers, readable directly.
    let regs = unsafe { &*ctx.regs };
    let mut pc = read_u64(regs.rsp);
    let mut bp = regs.rbp;
    let mut len = 0;
    for i in 0..GO_FRAMES {
        if pc == 0 {
            break;
        }
        stack.pcs[i] = pc;
        len = i + 1;
        if bp == 0 {
            break;
        }
        pc = read_u64(bp + 8);
        bp = read_u64(bp);
    }
    stack.len = len as u32;
    // R14 holds the running goroutine's g in Go's register ABI.
    let _ = GO_STACKS.insert(regs.r14, stack, 0);
    0
}

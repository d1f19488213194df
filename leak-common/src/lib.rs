//! Types shared by the eBPF programs (`leak-ebpf`) and the user-space tracer (`leak-user`).
//!
//! Every struct here is `#[repr(C)]` and padded explicitly: the kernel copies them byte for byte
//! between BPF maps and user space, so both sides must agree on the layout.
#![no_std]

/// Deepest user stack kept per allocation site (frames beyond are cut, and the cut is visible).
pub const MAX_FRAMES: usize = 64;

/// Executable mappings one unwind table may describe. Two tables exist (double buffering) so that
/// user space can rebuild one while the probes read the other.
pub const MAX_MAPPINGS: u32 = 512;

/// How a probed allocator entry point passes its arguments and result: the low byte of the
/// probe's cookie ([`probe_cookie`]). One eBPF program serves every entry point of a kind; the
/// cookie says how to read this one.
pub mod call {
    /// `malloc(size)`, `operator new(size)`, `mallocx(size, flags)`, `mi_malloc_aligned(size, a)`.
    pub const SIZE: u32 = 0;
    /// `pvalloc(size)`: the size rounded up to whole pages, which is what the program holds.
    pub const PAGES: u32 = 1;
    /// `calloc(count, size)`: the product.
    pub const COUNT_SIZE: u32 = 2;
    /// `realloc(ptr, size)`, `rallocx(ptr, size, flags)`: a moved block frees the old one.
    pub const REALLOC: u32 = 3;
    /// `reallocarray(ptr, count, size)`, `mi_reallocn`, `mi_recalloc`.
    pub const REALLOC_COUNT: u32 = 4;
    /// `posix_memalign(memptr, alignment, size)`: returns a status, the block comes in `*memptr`.
    pub const POSIX_MEMALIGN: u32 = 5;
    /// `mmap(addr, len, prot, flags, ...)`: only anonymous, accessible mappings count.
    pub const MMAP: u32 = 6;
    /// `xallocx(ptr, size, extra, flags)`: resizes in place and returns the block's real size;
    /// the block is then counted at this call, as a realloc that kept its address.
    pub const RESIZE: u32 = 7;
    /// `mi_expand(ptr, size)`: resizes in place, returns `ptr` or NULL (then as `RESIZE`).
    pub const EXPAND: u32 = 8;
    /// `mi_strdup(s)`, `mi_strndup`, `mi_realpath`: the size is the returned string's.
    pub const STRING: u32 = 9;
    /// `free(ptr)`, sized and aligned deletes, `sdallocx`, `mi_free_size`: releases `ptr`.
    pub const FREE: u32 = 10;
    /// `munmap(addr, len)`: releases an mmap'd block.
    pub const MUNMAP: u32 = 11;
}

/// Registers a probe reads arguments from, as numbered in probe cookies. At a function's first
/// instruction the arguments are in the System V order; a probe placed further in (past
/// instructions the kernel would have to single-step) may find one moved to another register.
pub mod reg {
    pub const RDI: u8 = 0;
    pub const RSI: u8 = 1;
    pub const RDX: u8 = 2;
    pub const RCX: u8 = 3;
    pub const R8: u8 = 4;
    pub const R9: u8 = 5;
    pub const RAX: u8 = 6;
    pub const RBX: u8 = 7;
    pub const RBP: u8 = 8;
    pub const R10: u8 = 9;
    pub const R11: u8 = 10;
    pub const R12: u8 = 11;
    pub const R13: u8 = 12;
    pub const R14: u8 = 13;
    pub const R15: u8 = 14;
    /// The argument registers of the System V x86-64 calling convention, in order.
    pub const ARGS: [u8; 6] = [RDI, RSI, RDX, RCX, R8, R9];
}

/// The 64-bit attach cookie of an allocator probe: the call layout (bits 0-7), the register of
/// each of up to three arguments the layout reads (4 bits each from bit 8), and the entry point's
/// id in user space's catalogue (bits 32-47), which the records keep so the report can name it.
pub mod probe_cookie {
    /// Arguments a layout reads, at most.
    pub const ARGS: usize = 3;

    pub const fn encode(call: u32, regs: [u8; ARGS], entry: u16) -> u64 {
        (call as u64 & 0xff)
            | (regs[0] as u64 & 0xf) << 8
            | (regs[1] as u64 & 0xf) << 12
            | (regs[2] as u64 & 0xf) << 16
            | (entry as u64) << 32
    }

    pub const fn call(cookie: u64) -> u32 {
        (cookie & 0xff) as u32
    }

    /// The register holding argument `n` of the layout.
    pub const fn reg(cookie: u64, n: usize) -> u8 {
        ((cookie >> (8 + 4 * n)) & 0xf) as u8
    }

    pub const fn entry(cookie: u64) -> u16 {
        (cookie >> 32) as u16
    }

    /// What a record keeps of the cookie (`Allocation::kind`, `InFlight::kind`): the layout
    /// and the entry id.
    pub const fn kind(cookie: u64) -> u32 {
        call(cookie) | (entry(cookie) as u32) << 16
    }

    /// The layout of a record's `kind`.
    pub const fn kind_call(kind: u32) -> u32 {
        kind & 0xff
    }

    /// The entry id of a record's `kind`.
    pub const fn kind_entry(kind: u32) -> u16 {
        (kind >> 16) as u16
    }

    /// True for a block recorded because its call site was escalated to exact tracing
    /// ([`super::escalation::EXACT_KIND`]): it counts once, not as a byte sample.
    pub const fn kind_exact(kind: u32) -> bool {
        kind & super::escalation::EXACT_KIND != 0
    }
}

/// `--always-on`'s escalation: call sites whose sampled estimate keeps growing are traced
/// exactly from then on. The kernel side knows a site by its allocator call's return address
/// (`ESCALATED`), the one address it can read at allocator entry without walking the stack.
pub mod escalation {
    /// Call sites traced exactly at once, at most (`ESCALATED`'s size).
    pub const MAX_SITES: u32 = 64;
    /// Bit 8 of a record's `kind` (free between the layout and the entry id): an exactly traced
    /// block.
    pub const EXACT_KIND: u32 = 1 << 8;
    /// `InFlight::sampled` of a call at an escalated site.
    pub const EXACT_CALL: u32 = 2;
}

/// Indexes of the per-CPU counters (`COUNTERS` map).
pub mod counter {
    /// Allocations recorded in the outstanding-allocation map.
    pub const ALLOCS: u32 = 0;
    /// Frees (free, munmap, realloc's release) that matched a recorded allocation.
    pub const FREES: u32 = 1;
    /// Allocations lost because the outstanding-allocation map was full.
    pub const DROP_ALLOC_MAP_FULL: u32 = 2;
    /// Allocations recorded without a stack because the stack map was full.
    pub const DROP_STACK_MAP_FULL: u32 = 3;
    /// Allocations lost because the per-thread in-flight map was full.
    pub const DROP_IN_FLIGHT_FULL: u32 = 4;
    /// Per-stack totals that could not be kept because that map was full.
    pub const DROP_TOTALS_MAP_FULL: u32 = 5;
    /// Stacks cut at `MAX_FRAMES`.
    pub const STACKS_TRUNCATED: u32 = 6;
    /// Allocator calls made from inside another allocator call (ignored: the outer call counts).
    pub const NESTED_CALLS: u32 = 7;
    /// Anonymous mmaps recorded as allocations.
    pub const MMAPS: u32 = 8;
    /// Goroutines created / exited while traced (Go targets).
    pub const GOROUTINES_CREATED: u32 = 9;
    pub const GOROUTINES_EXITED: u32 = 10;
    /// Goroutines not tracked because `GOROUTINES` was full.
    pub const DROP_GOROUTINE_MAP_FULL: u32 = 11;
    /// Bytes the Go runtime mapped through libc's mmap (`x_cgo_mmap`): Go memory, not native.
    pub const GO_RUNTIME_MMAP_BYTES: u32 = 12;
    /// Native stacks joined to the Go stack of the cgo call that led to them.
    pub const CGO_STACKS_JOINED: u32 = 13;
    pub const COUNT: u32 = 14;
}

/// Go frames kept per cgo call (the Go stack that called into C).
pub const GO_FRAMES: usize = 32;

/// A goroutine created while traced, keyed by its `g` address in `GOROUTINES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Goroutine {
    pub goid: u64,
    /// pc of the `go` statement (a return address: look it up at pc - 1).
    pub gopc: u64,
    /// The function the goroutine started in.
    pub startpc: u64,
    /// CLOCK_MONOTONIC at creation.
    pub created_ns: u64,
}

/// The Go stack of a goroutine's latest cgo call, captured at `runtime.cgocall` entry
/// (`GO_STACKS`, by `g`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoStack {
    pub len: u32,
    pub _pad: u32,
    pub pcs: [u64; GO_FRAMES],
}

/// Indexes of `GO_PARAMS`: run-time addresses (load bias applied) user space writes once the
/// target's executable is mapped. A zero range matches nothing.
pub mod go_param {
    /// `runtime.asmcgocall` and `runtime.asmcgocall_landingpad`: the C stack's outer end.
    pub const ASMCGOCALL_START: u32 = 0;
    pub const ASMCGOCALL_END: u32 = 1;
    pub const LANDINGPAD_START: u32 = 2;
    pub const LANDINGPAD_END: u32 = 3;
    /// `x_cgo_mmap`: the Go runtime's mmap through libc in cgo binaries.
    pub const CGO_MMAP_START: u32 = 4;
    pub const CGO_MMAP_END: u32 = 5;
    /// Where asmcgocall keeps the calling goroutine's `g`, from the stack pointer the C code
    /// returns to (48 in Go 1.19, 8 since the landing pad).
    pub const G_SLOT: u32 = 6;
    pub const COUNT: u32 = 7;
}

/// One outstanding allocation, keyed by its address in `ALLOCS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    pub size: u64,
    /// CLOCK_MONOTONIC when the allocation returned, to user space's last clock tick (10 ms).
    pub timestamp_ns: u64,
    /// Key into `STACKS`; 0 when the stack could not be stored.
    pub stack_id: u64,
    pub tid: u32,
    /// The call layout and entry point ([`probe_cookie::kind`]).
    pub kind: u32,
    /// Go targets: `gopc` of the goroutine whose cgo call made the allocation (its `go`
    /// statement, a return address); 0 outside any goroutine (C threads, the runtime's g0).
    pub gopc: u64,
}

/// Allocations made from one stack so far, freed or not, counted by the kernel side per CPU
/// (`STACK_TOTALS`): plain adds, where shared counters had two threads allocating from one
/// stack trade the counters' cache line on every call. What is outstanding comes from the
/// blocks in `ALLOCS`, so a free touches nothing but its block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCounts {
    pub allocs: u64,
    pub bytes: u64,
}

/// Totals of one stack as user space works with them: [`StackCounts`] summed over CPUs, and
/// what is outstanding from the recorded blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackTotals {
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
    /// Every allocation ever made from this stack, freed or not.
    pub total_allocs: u64,
    pub total_bytes: u64,
}

/// A user stack: `pcs[0]` is the allocator's entry, then return addresses outward.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackTrace {
    pub len: u32,
    /// 1 when the walk stopped at `MAX_FRAMES` rather than at the outermost frame.
    pub truncated: u32,
    pub pcs: [u64; MAX_FRAMES],
}

/// An allocator call between its entry and its return, per thread (`IN_FLIGHT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InFlight {
    pub size: u64,
    /// realloc's old pointer, posix_memalign's `memptr`.
    pub ptr_arg: u64,
    pub stack_id: u64,
    pub kind: u32,
    /// Allocator calls nested inside this one that have not returned yet.
    pub depth: u32,
    /// 0 when byte sampling passed this call over: it is tracked only to keep nesting right;
    /// 1 when sampled; [`escalation::EXACT_CALL`] at an escalated call site.
    pub sampled: u32,
    /// 1 when a return probe will run for this call and remove the record. 0 for a call whose
    /// uprobe session skips the return (unsampled, nothing to do there): the record then only
    /// marks the call as running, with `size` = the stack pointer at entry and `ptr_arg` = the
    /// return address found there, and a later call on the thread tells from the stack whether
    /// it has returned since (see `leak-ebpf`'s `track`).
    pub return_pending: u32,
    /// As [`Allocation::gopc`], found by the stack walk at entry.
    pub gopc: u64,
}

/// The helper id `leak-ebpf` calls `bpf_session_is_return` by: aya-ebpf cannot emit a kfunc
/// call, so the program calls this (nonexistent) helper and user space rewrites each such call
/// into a call of the kfunc, by its BTF id in the running kernel, before loading.
pub const SESSION_IS_RETURN_PLACEHOLDER: i32 = 0x0fee_5e55;

/// How the canonical frame address (CFA) of a frame is found.
pub mod cfa {
    /// CFA = RSP + offset.
    pub const RSP: u8 = 0;
    /// CFA = RBP + offset.
    pub const RBP: u8 = 1;
    /// The outermost frame (`DW_CFA_undefined rip`): the walk ends here.
    pub const END: u8 = 2;
    /// No rule the probe can follow (a gap between FDEs, or a DWARF expression): fall back to
    /// frame pointers.
    pub const UNKNOWN: u8 = 3;
}

/// One row of a compact unwind table: the rule that holds from `pc` up to the next row's `pc`.
/// The return address is always at CFA - 8 on x86-64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    /// Address in the object's own (ELF virtual) address space.
    pub pc: u64,
    pub cfa_offset: i32,
    /// Where the caller's RBP was saved, relative to the CFA (valid when `rbp_saved` is 1).
    pub rbp_offset: i16,
    pub cfa_reg: u8,
    pub rbp_saved: u8,
}

/// An executable mapping of the target and the slice of `UNWIND_ROWS` that describes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecMapping {
    pub start: u64,
    pub end: u64,
    /// Runtime address minus the object's virtual address.
    pub bias: u64,
    pub rows_start: u32,
    pub rows_len: u32,
}

/// What `dl_debug_state` (the dlopen hook) tells user space, one `u64` per call.
pub mod dlopen_event {
    /// The process was stopped (SIGSTOP): user space installs the new rows and continues it.
    pub const STOPPED: u64 = 1;
    /// User space's clock was stale: the process runs on; the rows come at the next refresh.
    pub const NOT_STOPPED: u64 = 0;
}

/// Indexes of `UNWIND_STATE`.
pub mod unwind_state {
    /// Which of the two mapping tables the probes read (0 or 1).
    pub const ACTIVE: u32 = 0;
    /// Number of mappings in table 0; table 1's count follows.
    pub const LEN0: u32 = 1;
    pub const LEN1: u32 = 2;
    /// Bumped at every table change; keys the probes' cache of rules.
    pub const GENERATION: u32 = 3;
    /// Bumped when user space evicts stacks: the probes' cache of stored stack ids is void.
    pub const STACK_EPOCH: u32 = 4;
    /// Byte offsets, in the running kernel, of the fields that lead from the current task to
    /// the return addresses that return probes took over (`task_struct.utask`,
    /// `uprobe_task.return_instances`, `return_instance.stack` / `.orig_ret_vaddr` / `.next`).
    /// `TASK_UTASK` 0: unknown, such frames end the walk.
    pub const TASK_UTASK: u32 = 5;
    pub const UTASK_RETURN_INSTANCES: u32 = 6;
    pub const RETURN_STACK: u32 = 7;
    pub const RETURN_ORIG_RET_VADDR: u32 = 8;
    pub const RETURN_NEXT: u32 = 9;
    pub const COUNT: u32 = 10;
}

/// Bytes of an `oom:mark_victim` tracepoint record handed to user space, which decodes them with
/// the layout from the tracepoint's `format` file (the layout grew over kernel versions).
pub const OOM_RECORD_BYTES: usize = 120;

/// One OOM victim, as the tracepoint recorded it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomRecord {
    /// CLOCK_MONOTONIC when the kernel marked the victim.
    pub timestamp_ns: u64,
    pub data: [u8; OOM_RECORD_BYTES],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    macro_rules! pod {
        ($($ty:ty),* $(,)?) => {$(
            // SAFETY: `#[repr(C)]`, made of plain integers, and padded explicitly: every bit
            // pattern is a valid value and there are no uninitialised bytes.
            unsafe impl aya::Pod for $ty {}
        )*};
    }

    pod!(
        Allocation,
        StackCounts,
        StackTrace,
        InFlight,
        UnwindRow,
        ExecMapping,
        OomRecord,
        Goroutine,
        GoStack,
    );
}

//! User stack walking from the binaries' own `.eh_frame` rules.
//!
//! Frame pointers alone lose frames: glibc (strdup calling malloc) and `-O2` programs keep no
//! frame pointer, so the real caller vanishes or garbage frames split one leak into many stacks.
//! User space compiles each executable object's CFI into compact rows (CFA = RSP|RBP + offset,
//! where RBP was saved); here each frame takes two binary searches (mapping, then row), cached
//! by pc. Code without CFI (JIT, Go) falls back to frame pointers. The frames come from one copy
//! of the stack's first [`WINDOW`] bytes: a user read costs about 20 ns, and a walk that read
//! each return address and saved RBP apart made half of the probe's time.
use core::{
    ffi::c_void,
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user, generated as raw,
        generated::{bpf_get_current_task, bpf_loop},
    },
    programs::ProbeContext,
};
use leak_common::{GO_FRAMES, GoStack, MAX_FRAMES, MAX_MAPPINGS, cfa, counter, unwind_state};

use crate::{
    golang,
    maps::{
        GO_STACKS, KNOWN_STACK_SLOTS, KNOWN_STACKS, RULE_CACHE, RULE_CACHE_SLOTS, SCRATCH,
        STACK_WINDOW, STACKS, UNWIND_MAPPINGS, UNWIND_ROWS, UNWIND_STATE, count,
    },
};

/// Bytes of stack copied from the stack pointer up at the start of a walk. Frames beyond it
/// are read one by one.
pub const WINDOW: usize = 2048;

/// The copy of the stack's first bytes, per CPU.
#[repr(C)]
pub struct StackWindow {
    /// Bytes copied: `WINDOW` or 0.
    len: u64,
    /// See [`opaque`].
    laundry: u64,
    /// The binary search [`find_rule`] runs: here, not on the stack, its bounds are numbers
    /// the verifier knows nothing of, and one halving step is verified once.
    search: Search,
    words: [u64; WINDOW / 8],
}

/// `-EEXIST`: the stack is already stored.
const EEXIST: i32 = -17;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Rule {
    cfa_reg: u8,
    rbp_saved: u8,
    rbp_offset: i16,
    cfa_offset: i32,
}

impl Rule {
    fn bits(self) -> u64 {
        self.cfa_reg as u64
            | (self.rbp_saved as u64) << 8
            | (self.rbp_offset as u16 as u64) << 16
            | (self.cfa_offset as u32 as u64) << 32
    }

    fn from_bits(bits: u64) -> Rule {
        Rule {
            cfa_reg: bits as u8,
            rbp_saved: (bits >> 8) as u8,
            rbp_offset: (bits >> 16) as u16 as i16,
            cfa_offset: (bits >> 32) as u32 as i32,
        }
    }
}

/// A slot of the rule cache. Two CPUs may fill one slot at once; `check` ties the rule to
/// its key, so a slot mixed from two writes is a miss, never a wrong rule.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CachedRule {
    key: u64,
    rule: u64,
    check: u64,
}

const UNKNOWN: Rule = Rule {
    cfa_reg: cfa::UNKNOWN,
    rbp_saved: 0,
    rbp_offset: 0,
    cfa_offset: 0,
};

/// The address is in no executable mapping user space told us about.
const UNMAPPED: u8 = 0xff;
const NOT_MAPPED: Rule = Rule {
    cfa_reg: UNMAPPED,
    ..UNKNOWN
};

/// The walk between two frames, on the probe's stack; `bpf_loop` hands it to [`step`].
#[repr(C)]
struct Walk {
    ip: u64,
    sp: u64,
    bp: u64,
    hash: u64,
    len: u64,
    table: u32,
    table_len: u32,
    /// Bumped by user space at every table change; part of the rule cache's key.
    generation: u64,
    /// The goroutine whose cgo call the walk ended at (`asmcgocall`), 0 if none.
    go_g: u64,
    /// `STACK_WINDOW` holds the user stack from here.
    window_start: u64,
    /// Where the current frame's return address was read (see [`taken_over_return`]).
    ret_slot: u64,
    /// The current pc was taken back from a return probe: a second miss ends the walk.
    retaken: u64,
}

impl Walk {
    /// The user word at `addr`, from `window` when it holds it.
    fn read(&self, window: *mut StackWindow, addr: u64) -> Option<u64> {
        let offset = addr.wrapping_sub(self.window_start);
        // SAFETY: per-CPU scratch, valid for the program's run.
        unsafe {
            if offset & 7 == 0 && offset <= (WINDOW - 8) as u64 && (*window).len != 0 {
                let index = launder(window, offset >> 3) as usize & (WINDOW / 8 - 1);
                return Some((*window).words[index]);
            }
            bpf_probe_read_user(addr as *const u64).ok()
        }
    }
}

/// `value`, through a map: read back, it is a number the verifier knows nothing of. Where it
/// serves as an index, the verifier's search for what the index depends on then stops here;
/// otherwise a pc or a stack pointer would count, and no two frame steps would look alike to
/// prune (four times the instructions to verify).
fn opaque(value: u64) -> u64 {
    match STACK_WINDOW.get_ptr_mut(0) {
        Some(window) => launder(window, value),
        None => 0,
    }
}

/// [`opaque`] with the scratch at hand.
fn launder(window: *mut StackWindow, value: u64) -> u64 {
    // SAFETY: per-CPU scratch, valid for the program's run.
    unsafe {
        write_volatile(&raw mut (*window).laundry, value);
        read_volatile(&(*window).laundry)
    }
}

/// Copies the stack from `sp` up into `STACK_WINDOW`, all or nothing. A stack that ends within
/// the window (the main thread's, near its top) is read frame by frame.
fn copy_window(sp: u64) {
    let Some(window) = STACK_WINDOW.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch; `dst` has room for WINDOW bytes, the helper checks the user side.
    unsafe {
        let dst = (*window).words.as_mut_ptr().cast::<c_void>();
        let copied = raw::bpf_probe_read_user(dst, WINDOW as u32, sp as *const c_void) == 0;
        (*window).len = if copied { WINDOW as u64 } else { 0 };
    }
}

/// The rule for `pc`, from the cache of rules already looked up: the same few hundred return
/// addresses recur in every stack, and a hash lookup is much cheaper than two binary searches.
fn cached_rule(walk: &Walk, pc: u64) -> Rule {
    // User addresses fit in 47 bits; the table generation takes the top bits, so rules of
    // objects since unmapped are never reused.
    let key = pc | (walk.generation << 48);
    let slot = ((pc ^ (pc >> 16)) as u32) & (RULE_CACHE_SLOTS - 1);
    let Some(cached) = RULE_CACHE.get_ptr_mut(slot) else {
        return find_rule(walk.table, walk.table_len, pc);
    };
    // SAFETY: a valid array slot; racy writes are caught by `check`.
    unsafe {
        let (k, r, c) = (
            read_volatile(&(*cached).key),
            read_volatile(&(*cached).rule),
            read_volatile(&(*cached).check),
        );
        if k == key && c == k ^ r {
            return Rule::from_bits(r);
        }
    }
    let rule = find_rule(walk.table, walk.table_len, pc);
    let bits = rule.bits();
    // SAFETY: a valid array slot; racy writes are caught by `check` on read.
    unsafe {
        write_volatile(&mut (*cached).key, key);
        write_volatile(&mut (*cached).rule, bits);
        write_volatile(&mut (*cached).check, key ^ bits);
    }
    rule
}

/// What a stack walk found: the stack's id in `STACKS` (0 if not stored) and, for C code run by
/// a goroutine's cgo call, that goroutine's creation site (`g.gopc`; 0 otherwise).
#[derive(Clone, Copy, Default)]
pub struct Capture {
    pub stack_id: u64,
    pub gopc: u64,
}

/// Walks the current user stack and stores it in `STACKS`.
pub fn capture(ctx: &ProbeContext) -> Capture {
    // SAFETY: a uprobe's context is the user registers, readable directly.
    let regs = unsafe { &*ctx.regs };
    // Generation before table: user space switches the table first and bumps the generation
    // after, so rules cached under a generation always come from its table or a newer one.
    let generation = UNWIND_STATE
        .get(unwind_state::GENERATION)
        .copied()
        .unwrap_or(0) as u64;
    let (table, table_len) = active_table();
    let mut walk = Walk {
        ip: regs.rip,
        sp: regs.rsp,
        bp: regs.rbp,
        hash: 0xcbf2_9ce4_8422_2325,
        len: 0,
        table,
        table_len,
        generation,
        go_g: 0,
        window_start: regs.rsp,
        ret_slot: 0,
        retaken: 0,
    };
    // The frame step is verified again and again until its states repeat. The walk's counters
    // start as numbers the verifier knows nothing of, as they are after a step: starting from
    // known ones cost half as much verifying again (24,000 instructions for C targets, 51,000
    // with Go's cgo paths, against 16,500 for either so). Not `go_g` on C targets: unknown,
    // it would bring the Go stack join back from the dead code.
    walk.hash = opaque(walk.hash);
    walk.len = opaque(0);
    walk.ret_slot = opaque(0);
    walk.retaken = opaque(0);
    if golang::go_target() {
        walk.go_g = opaque(0);
    }
    copy_window(regs.rsp);
    // bpf_loop: the verifier checks one frame step once instead of every unrolled frame.
    // Calls: one per frame, and one more per pc taken back from a return probe.
    // SAFETY: the callback and its context live for the call.
    unsafe {
        bpf_loop(
            (MAX_FRAMES + MAX_RETURN_INSTANCES) as u32,
            step as *mut c_void,
            (&raw mut walk).cast(),
            0,
        )
    };
    let mut gopc = 0;
    if walk.go_g != 0 {
        join_go_stack(&mut walk);
        // Read from the `g` itself: goroutines created before attaching have it too.
        gopc = golang::creation_pc(walk.go_g);
    }
    Capture {
        stack_id: store(&walk),
        gopc,
    }
}

/// Stores the stack the walk left in `SCRATCH`; returns its id (0 if not stored).
fn store(walk: &Walk) -> u64 {
    let Some(trace) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, valid for the program's run.
    let trace = unsafe { &mut *trace };
    trace.len = walk.len as u32;
    trace.truncated = (walk.len as usize >= MAX_FRAMES) as u32;
    if trace.truncated != 0 {
        count(counter::STACKS_TRUNCATED);
    }

    let id = walk.hash | 1; // 0 means "no stack"
    let epoch = UNWIND_STATE
        .get(unwind_state::STACK_EPOCH)
        .copied()
        .unwrap_or(0) as u64;
    let tag = id ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let known = KNOWN_STACKS.get_ptr_mut((id ^ (id >> 32)) as u32 & (KNOWN_STACK_SLOTS - 1));
    if let Some(slot) = known
        // SAFETY: a valid array slot; a racy read is a cache miss at worst.
        && unsafe { read_volatile(slot) } == tag
    {
        return id;
    }
    // Most stacks are known already: a lookup takes no bucket lock, an insert does.
    let stored = STACKS.get_ptr(id).is_some()
        || matches!(
            STACKS.insert(id, trace, BPF_NOEXIST as u64),
            Ok(()) | Err(EEXIST)
        );
    if !stored {
        count(counter::DROP_STACK_MAP_FULL);
        return 0;
    }
    if let Some(slot) = known {
        // SAFETY: a valid array slot; a racy write is a cache miss at worst.
        unsafe { write_volatile(slot, tag) };
    }
    id
}

/// Records the current frame and moves to its caller. Returns 1 to end the walk.
unsafe extern "C" fn step(_: u64, walk: *mut c_void) -> i64 {
    // SAFETY: `walk` is the `Walk` that `capture` handed to bpf_loop, alive for the loop.
    let walk = unsafe { &mut *walk.cast::<Walk>() };
    let (Some(trace), Some(window)) = (SCRATCH.get_ptr_mut(0), STACK_WINDOW.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, valid for the program's run.
    let trace = unsafe { &mut *trace };
    // Frames recorded so far, not the loop's count: a pc taken back from a return probe is
    // looked up at the next call, so that one rule lookup is verified, not two.
    let depth = launder(window, walk.len);
    let index = depth as usize;
    if index >= MAX_FRAMES {
        return 1;
    }
    let ip = walk.ip;
    // The C code of a cgo call returns into asmcgocall, on the thread's g0 stack: the Go frames
    // that made the call come from the capture at `runtime.cgocall`.
    if depth > 0 && golang::go_target() && golang::is_cgo_boundary(ip) {
        walk.go_g = golang::cgo_caller_g(walk.sp);
        return 1;
    }
    // A return address points past its call; the call's own rule is the one that applies.
    let lookup = if depth == 0 { ip } else { ip - 1 };
    let rule = cached_rule(walk, lookup);
    // A caller outside every known executable mapping is a return probe's trampoline (the
    // kernel keeps the real address) or garbage from a broken frame-pointer chain: then stop
    // rather than split one leak over many made-up stacks.
    if rule.cfa_reg == UNMAPPED && depth > 0 {
        if launder(window, walk.retaken) != 0 {
            return 1;
        }
        let Some(original) = taken_over_return(walk.ret_slot) else {
            return 1;
        };
        walk.ip = original;
        walk.retaken = 1;
        return 0;
    }
    walk.retaken = 0;
    trace.pcs[index] = ip;
    walk.hash = (walk.hash ^ ip).wrapping_mul(0x0000_0100_0000_01b3);
    walk.len = depth + 1;

    let (sp, bp) = (walk.sp, walk.bp);
    let (frame, saved_bp) = match rule.cfa_reg {
        cfa::RSP => (sp.wrapping_add(rule.cfa_offset as u64), rule.rbp_saved != 0),
        cfa::RBP => (bp.wrapping_add(rule.cfa_offset as u64), rule.rbp_saved != 0),
        cfa::END => return 1,
        // No CFI: every probe sits on a function's first instruction, so the innermost
        // frame's return address is at RSP; outer frames follow the frame-pointer chain.
        _ if depth == 0 => (sp.wrapping_add(8), false),
        _ if bp == 0 => return 1,
        _ => (bp.wrapping_add(16), true),
    };
    let Some(ret) = walk.read(window, frame.wrapping_sub(8)) else {
        return 1;
    };
    if saved_bp {
        let at = match rule.cfa_reg {
            cfa::RSP | cfa::RBP => frame.wrapping_add(rule.rbp_offset as u64),
            _ => frame.wrapping_sub(16),
        };
        walk.bp = walk.read(window, at).unwrap_or(0);
    }
    // Frames live at rising addresses; anything else is garbage, not a caller.
    if ret == 0 || frame <= sp {
        return 1;
    }
    walk.sp = frame;
    walk.ip = ret;
    walk.ret_slot = frame.wrapping_sub(8);
    0
}

/// Return instances looked at, at most: one per return probe pending on the thread.
const MAX_RETURN_INSTANCES: usize = 8;

/// The return address that a return probe replaced with its trampoline in the stack slot at
/// `slot`, from the kernel's record of it; `None` if no return probe took that slot over.
///
/// Another tracer's return probe on an allocator's first instruction (bpftrace's `uretprobe:`,
/// bcc's memleak) fires before our entry probe when that one sits further in (see leak-user's
/// `probe_site`), and so does a return probe on any function further up the stack: the slot
/// then holds the trampoline, outside every mapping, and the walk would stop there.
fn taken_over_return(slot: u64) -> Option<u64> {
    let offset = |index| UNWIND_STATE.get(index).copied().unwrap_or(0) as u64;
    let utask_at = offset(unwind_state::TASK_UTASK);
    if utask_at == 0 {
        return None;
    }
    // SAFETY: the helper has no preconditions; the task is only read through the helper below.
    let task = unsafe { bpf_get_current_task() };
    let utask = read_kernel(task.wrapping_add(utask_at))?;
    let mut instance =
        read_kernel(utask.wrapping_add(offset(unwind_state::UTASK_RETURN_INSTANCES)))?;
    for _ in 0..MAX_RETURN_INSTANCES {
        if instance == 0 {
            return None;
        }
        // The newest instance for a slot holds the real address even when return probes were
        // chained on it (the kernel copies it over).
        if read_kernel(instance.wrapping_add(offset(unwind_state::RETURN_STACK)))? == slot {
            return read_kernel(instance.wrapping_add(offset(unwind_state::RETURN_ORIG_RET_VADDR)));
        }
        instance = read_kernel(instance.wrapping_add(offset(unwind_state::RETURN_NEXT)))?;
    }
    None
}

/// A kernel word; `None` if it cannot be read.
fn read_kernel(addr: u64) -> Option<u64> {
    if addr == 0 {
        return None;
    }
    // SAFETY: a helper read; a bad address is an error, not a fault.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok()
}

/// Appends the Go stack of the cgo call the walk ended at after the C frames.
fn join_go_stack(walk: &mut Walk) {
    let Some(go) = GO_STACKS.get_ptr(walk.go_g) else {
        return;
    };
    let mut join = Join {
        walk,
        go: go.cast(),
    };
    // SAFETY: the callback and its context live for the call; bpf_loop calls it at most GO_FRAMES times.
    unsafe {
        bpf_loop(
            GO_FRAMES as u32,
            join_step as *mut c_void,
            (&raw mut join).cast(),
            0,
        )
    };
    count(counter::CGO_STACKS_JOINED);
}

struct Join<'a> {
    walk: &'a mut Walk,
    go: *const GoStack,
}

/// Copies Go frame `i` after the C frames. Returns 1 at the end of either stack.
unsafe extern "C" fn join_step(i: u64, join: *mut c_void) -> i64 {
    // SAFETY: `join` is the `Join` that `join_go_stack` handed to bpf_loop, alive for the loop.
    let join = unsafe { &mut *join.cast::<Join<'_>>() };
    // SAFETY: a map value pointer from the lookup in `join_go_stack`, valid for the program's run.
    let go = unsafe { &*join.go };
    let Some(trace) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, valid for the program's run.
    let trace = unsafe { &mut *trace };
    let (src, dst) = (i as usize, join.walk.len as usize);
    if src >= GO_FRAMES || src >= go.len as usize || dst >= MAX_FRAMES {
        return 1;
    }
    let pc = go.pcs[src];
    trace.pcs[dst] = pc;
    join.walk.hash = (join.walk.hash ^ pc).wrapping_mul(0x0000_0100_0000_01b3);
    join.walk.len += 1;
    0
}

/// The mapping table the probes read now: its first index and its length.
fn active_table() -> (u32, u32) {
    let active = UNWIND_STATE.get(unwind_state::ACTIVE).copied().unwrap_or(0) & 1;
    let len = UNWIND_STATE
        .get(unwind_state::LEN0 + active)
        .copied()
        .unwrap_or(0);
    // A mask, not min(): a clamp would hand the verifier a constant, and binary searches over
    // constants are explored path by path instead of pruned.
    (active * MAX_MAPPINGS, len & (MAX_MAPPINGS - 1))
}

/// A binary search's state: find the last entry whose start is <= `pc` among
/// `[base + lo, base + hi)`; `lo` ends one past it.
#[repr(C)]
#[derive(Clone, Copy)]
struct Search {
    pc: u64,
    base: u32,
    lo: u32,
    hi: u32,
    /// Over the mapping table (0) or an object's rows (1).
    rows: u32,
}

/// One halving step of the search in `STACK_WINDOW`.
unsafe extern "C" fn search_step(_: u64, _: *mut c_void) -> i64 {
    let Some(window) = STACK_WINDOW.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, valid for the program's run.
    let s = unsafe { &mut (*window).search };
    if s.lo >= s.hi {
        return 1;
    }
    let mid = (s.lo + s.hi) / 2;
    let start = if s.rows != 0 {
        UNWIND_ROWS.get(s.base + mid).map(|row| row.pc)
    } else {
        UNWIND_MAPPINGS
            .get(s.base + mid)
            .map(|mapping| mapping.start)
    };
    let Some(start) = start else {
        return 1;
    };
    if start <= s.pc {
        s.lo = mid + 1;
    } else {
        s.hi = mid;
    }
    0
}

/// Runs the search `search` for at most `steps` halvings; returns where `lo` ended.
fn search(search: Search, steps: u32) -> Option<u32> {
    let window = STACK_WINDOW.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, valid for the program's run; the callback finds it itself.
    unsafe {
        write_volatile(&raw mut (*window).search, search);
        bpf_loop(steps, search_step as *mut c_void, core::ptr::null_mut(), 0);
        Some(read_volatile(&raw const (*window).search.lo))
    }
}

/// The unwind rule at `pc`: two binary searches (mapping, then row), each a `bpf_loop` so the
/// verifier checks one step instead of every path through the search.
fn find_rule(table: u32, table_len: u32, pc: u64) -> Rule {
    let mapping_search = Search {
        pc,
        base: table,
        lo: 0,
        hi: table_len,
        rows: 0,
    };
    let Some(lo) = search(mapping_search, 11) else {
        return UNKNOWN;
    };
    if lo == 0 {
        return NOT_MAPPED;
    }
    let Some(mapping) = UNWIND_MAPPINGS.get(table + lo - 1) else {
        return UNKNOWN;
    };
    if pc >= mapping.end {
        return NOT_MAPPED;
    }
    if mapping.rows_len == 0 {
        return UNKNOWN;
    }
    let row_search = Search {
        pc: pc.wrapping_sub(mapping.bias),
        base: mapping.rows_start,
        lo: 0,
        hi: mapping.rows_len,
        rows: 1,
    };
    let Some(lo) = search(row_search, 24) else {
        return UNKNOWN;
    };
    if lo == 0 {
        return UNKNOWN;
    }
    match UNWIND_ROWS.get(mapping.rows_start + lo - 1) {
        Some(row) => Rule {
            cfa_reg: row.cfa_reg,
            rbp_saved: row.rbp_saved,
            rbp_offset: row.rbp_offset,
            cfa_offset: row.cfa_offset,
        },
        None => UNKNOWN,
    }
}

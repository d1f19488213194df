//! Allocation bookkeeping: in-flight calls per thread, outstanding blocks, per-stack totals.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    programs::ProbeContext,
};
use leak_common::{
    Allocation, InFlight, StackCounts, call, counter,
    escalation::{EXACT_CALL, EXACT_KIND},
    probe_cookie,
};

use crate::{
    escalation, in_flight,
    maps::{ALLOCS, CLOCK, STACK_TOTALS, STRING_SCRATCH, count},
    sampling, unwind,
};

/// Bytes of a returned string read at once, and how many reads at most: longer strings count
/// as that many bytes.
pub const STRING_CHUNK: usize = 2048;
const STRING_CHUNKS: usize = 8;
/// The size byte sampling weighs a string duplication by, before its length is known.
pub const STRING_WEIGHT: u64 = 64;

fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// How an allocating entry probe is attached.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// An entry probe with a return probe on every call.
    Uprobe,
    /// A uprobe session: the entry decides whether the return probe runs.
    Session,
}

/// Notes an allocating call at its entry. Returns whether its return must be seen (a session
/// skips the return otherwise).
pub fn enter(ctx: &ProbeContext, probe: Probe, kind: u32, size: u64, ptr_arg: u64) -> bool {
    let tid = current_tid();
    if nested(tid, ctx, probe) {
        return false;
    }
    // An unsampled call is still marked in flight: calls nested in it are the allocator's own,
    // and realloc must still release its old block at return. It skips the stack walk and,
    // at return, the record.
    let mode = record_mode(ctx, size);
    if mode == 0 && probe == Probe::Session && !releases_tracked_block(kind, ptr_arg) {
        in_flight::insert(tid, running_mark(ctx, kind));
        return false;
    }
    in_flight::insert(tid, in_flight_call(ctx, kind, size, ptr_arg, mode));
    true
}

/// As [`enter`], for mmap: `tracked` says whether the mapping can hold heap memory.
pub fn enter_mmap(ctx: &ProbeContext, probe: Probe, kind: u32, len: u64, tracked: bool) -> bool {
    let tid = current_tid();
    if nested(tid, ctx, probe) || !tracked {
        return false;
    }
    let mode = record_mode(ctx, len);
    if mode == 0 && probe == Probe::Session {
        in_flight::insert(tid, running_mark(ctx, kind));
        return false;
    }
    in_flight::insert(tid, in_flight_call(ctx, kind, len, 0, mode));
    true
}

#[inline(always)]
fn in_flight_call(ctx: &ProbeContext, kind: u32, size: u64, ptr_arg: u64, mode: u32) -> InFlight {
    let stack = capture(ctx, mode != 0);
    InFlight {
        size,
        ptr_arg,
        stack_id: stack.stack_id,
        kind,
        depth: 0,
        sampled: mode,
        return_pending: 1,
        gopc: stack.gopc,
    }
}

/// The stack of a sampled call; an unsampled one skips the walk.
#[inline(always)]
fn capture(ctx: &ProbeContext, sampled: bool) -> unwind::Capture {
    if sampled {
        unwind::capture(ctx)
    } else {
        unwind::Capture::default()
    }
}

/// Whether the call is nested in another allocator call of the thread (then it is the
/// allocator's own: glibc's realloc calls malloc and free, malloc calls mmap for arenas and
/// large blocks). A nested call under a return probe is counted in the outer record so that
/// the outer return knows its own; a session skips the nested call's return instead.
fn nested(tid: u32, ctx: &ProbeContext, probe: Probe) -> bool {
    let Some(outer) = in_flight::get(tid) else {
        return false;
    };
    // SAFETY: a valid map value pointer, and only this thread touches its own entry.
    let outer = unsafe { &mut *outer };
    let nested = match (probe, outer.return_pending != 0) {
        (Probe::Uprobe, _) => {
            outer.depth += 1;
            true
        }
        (Probe::Session, true) => true,
        (Probe::Session, false) => still_running(outer, ctx),
    };
    if nested {
        count(counter::NESTED_CALLS);
    }
    nested
}

/// The record of a call whose return a session skips: where its return address sits.
fn running_mark(ctx: &ProbeContext, kind: u32) -> InFlight {
    // SAFETY: a uprobe's context is the user registers, readable directly.
    let sp = unsafe { (*ctx.regs).rsp };
    InFlight {
        size: sp,
        // Allocator probes sit before any change of the stack pointer (see leak-user's
        // probe_site): the return address is at the stack pointer.
        ptr_arg: read_user_u64(sp),
        stack_id: 0,
        kind,
        depth: 0,
        sampled: 0,
        return_pending: 0,
        gopc: 0,
    }
}

/// Whether the call `mark` was made by has not returned: a call now is deeper in the stack,
/// and the return address is still in its slot (once the call has returned, the next call
/// from its caller overwrites that slot with its own return address).
fn still_running(mark: &InFlight, ctx: &ProbeContext) -> bool {
    // SAFETY: a uprobe's context is the user registers, readable directly.
    let sp = unsafe { (*ctx.regs).rsp };
    sp < mark.size && read_user_u64(mark.size) == mark.ptr_arg
}

/// Whether a realloc-like call releases a block this run tracks: then its return must be seen
/// even unsampled (the old block is released only if the call succeeds).
fn releases_tracked_block(kind: u32, ptr_arg: u64) -> bool {
    match probe_cookie::kind_call(kind) {
        call::REALLOC | call::REALLOC_COUNT | call::RESIZE | call::EXPAND => {
            // SAFETY: a lookup in a map this program owns; the value is not kept.
            ptr_arg != 0 && unsafe { ALLOCS.get(ptr_arg) }.is_some()
        }
        _ => false,
    }
}

fn read_user_u64(addr: u64) -> u64 {
    // SAFETY: the helper checks the address; a fault reads as 0.
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

/// Whether a call is recorded: 0 not, 1 as a byte sample, `EXACT_CALL` from an escalated
/// site (checked first: such a call counts once and leaves the sampling countdown alone).
#[inline(always)]
fn record_mode(ctx: &ProbeContext, size: u64) -> u32 {
    if sampling::enabled() && escalation::escalated(ctx) {
        return EXACT_CALL;
    }
    sampling::sampled(size) as u32
}

pub fn exit(ret: u64) {
    let tid = current_tid();
    let Some(call) = in_flight::get(tid) else {
        return;
    };
    // SAFETY: a valid map value pointer, and only this thread touches its own entry.
    let call = unsafe {
        if (*call).depth > 0 {
            (*call).depth -= 1;
            return;
        }
        *call
    };
    in_flight::remove(tid);

    match probe_cookie::kind_call(call.kind) {
        call::REALLOC | call::REALLOC_COUNT => {
            // NULL with a non-zero size: the call failed and the old block is still owned.
            // NULL with size 0: glibc freed the old block.
            if ret == 0 && call.size != 0 {
                return;
            }
            if call.ptr_arg != 0 {
                release(call.ptr_arg, false);
            }
            if ret != 0 {
                record(ret, &call, tid);
            }
        }
        call::POSIX_MEMALIGN => {
            // Returns an error number; the block is written through `memptr`.
            if ret as u32 != 0 {
                return;
            }
            // SAFETY: a helper read of user memory; a bad address is an error, not a fault.
            if let Ok(addr) = unsafe { bpf_probe_read_user(call.ptr_arg as *const u64) }
                && addr != 0
            {
                record(addr, &call, tid);
            }
        }
        // Resized in place: as a realloc that kept the address, the block is released and
        // recorded again at this call with what it holds now. xallocx returns the block's real
        // size, at least `size` when it could resize; mi_expand the block or NULL.
        call::RESIZE if ret >= call.size => {
            release(call.ptr_arg, false);
            let mut resized = call;
            resized.size = ret;
            record(call.ptr_arg, &resized, tid);
        }
        call::EXPAND if ret != 0 => {
            release(call.ptr_arg, false);
            record(call.ptr_arg, &call, tid);
        }
        call::RESIZE | call::EXPAND => {}
        call::STRING if ret != 0 => {
            let mut sized = call;
            sized.size = string_size(ret);
            record(ret, &sized, tid);
        }
        call::MMAP => {
            // MAP_FAILED is (void *)-1.
            if ret != u64::MAX {
                count(counter::MMAPS);
                record(ret, &call, tid);
            }
        }
        _ => {
            if ret != 0 {
                record(ret, &call, tid);
            }
        }
    }
}

/// free/munmap from the program. Calls made inside another allocator call are the allocator's
/// own business (realloc releasing the old block is handled at realloc's return).
pub fn release_from_user(addr: u64, unmap: bool) {
    // Inside an allocator call whose return is awaited (realloc's free of the old block) the
    // release is the allocator's own. A session's mark of a call whose return it skips does not
    // count: frees inside malloc release no block the program was given.
    let inside_call = in_flight::get(current_tid())
        // SAFETY: a valid map value pointer, and only this thread touches its own entry.
        .is_some_and(|call| unsafe { (*call).return_pending } != 0);
    if addr == 0 || inside_call {
        return;
    }
    release(addr, unmap);
}

fn record(addr: u64, call: &InFlight, tid: u32) {
    if call.sampled == 0 {
        return;
    }
    let block = Allocation {
        size: call.size,
        timestamp_ns: now(),
        stack_id: call.stack_id,
        tid,
        kind: if call.sampled == EXACT_CALL {
            call.kind | EXACT_KIND
        } else {
            call.kind
        },
        gopc: call.gopc,
    };
    // An address we still hold was freed behind our back (by a path we do not probe): the new
    // block replaces it, and what is outstanding follows (user space counts it from ALLOCS).
    if ALLOCS.insert(addr, block, 0).is_err() {
        count(counter::DROP_ALLOC_MAP_FULL);
        return;
    }
    count_allocation(call.stack_id, call.size);
    count(counter::ALLOCS);
}

/// CLOCK_MONOTONIC to user space's last tick: an array read, where the clock itself costs a
/// TSC read (see `collect::clock` in leak-user).
fn now() -> u64 {
    match CLOCK.get(0) {
        Some(&t) if t != 0 => t,
        // SAFETY: the clock helper has no preconditions.
        _ => unsafe { bpf_ktime_get_ns() },
    }
}

fn release(addr: u64, unmap: bool) {
    // munmap only releases mmap'd blocks. A free is one hash operation: a free of an mmap'd
    // address, the only case a check would catch, is undefined behaviour the program would
    // not survive anyway.
    if unmap {
        match ALLOCS.get_ptr(addr) {
            // SAFETY: a valid map value pointer for the lookup's duration.
            Some(block) if probe_cookie::kind_call(unsafe { (*block).kind }) == call::MMAP => {}
            _ => return,
        }
    } else if sampling::enabled() && ALLOCS.get_ptr(addr).is_none() {
        // Sampled, most frees miss: a lookup misses without taking the bucket's lock.
        return;
    }
    // Absent: allocated before we attached, unsampled, or not ours. Two threads freeing the
    // same block race here; only the one whose delete succeeds counts.
    if ALLOCS.remove(addr).is_ok() {
        count(counter::FREES);
    }
}

/// The bytes a duplicated string holds: its length and the terminating NUL.
fn string_size(addr: u64) -> u64 {
    let Some(buf) = STRING_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, valid for the program's run.
    let buf = unsafe { &mut *buf };
    // Each read takes up to a chunk less one byte and ends it with a NUL; a string that fills
    // the chunk goes on from where the read stopped.
    let mut size = 0;
    for _ in 0..STRING_CHUNKS {
        // SAFETY: a helper read of user memory into per-CPU scratch; a bad address is an error.
        let Ok(read) = (unsafe { bpf_probe_read_user_str_bytes((addr + size) as *const u8, buf) })
        else {
            break;
        };
        let len = read.len() as u64;
        if len < (STRING_CHUNK - 1) as u64 {
            return size + len + 1;
        }
        size += len;
    }
    size
}

/// One more allocation from the stack, in this CPU's counts.
fn count_allocation(stack_id: u64, size: u64) {
    let mut counts = STACK_TOTALS.get_ptr_mut(stack_id);
    if counts.is_none() {
        let _ = STACK_TOTALS.insert(stack_id, StackCounts::default(), BPF_NOEXIST as u64);
        counts = STACK_TOTALS.get_ptr_mut(stack_id);
    }
    let Some(counts) = counts else {
        count(counter::DROP_TOTALS_MAP_FULL);
        return;
    };
    // SAFETY: this CPU's copy; a program does not nest with itself on one CPU.
    unsafe {
        (*counts).allocs += 1;
        (*counts).bytes += size;
    }
}

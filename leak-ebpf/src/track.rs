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

/// Marks one more allocator call nested inside the thread's outer call. Returns true when there
/// was an outer call (then the nested one is not a user allocation: glibc's realloc calls malloc
/// and free, malloc calls mmap for arenas and large blocks).
fn nest(tid: u32) -> bool {
    match in_flight::get(tid) {
        Some(outer) => {
            // SAFETY: a valid map value pointer, and only this thread touches its own entry.
            unsafe { (*outer).depth += 1 };
            count(counter::NESTED_CALLS);
            true
        }
        None => false,
    }
}

pub fn enter(ctx: &ProbeContext, kind: u32, size: u64, ptr_arg: u64) {
    let tid = current_tid();
    if nest(tid) {
        return;
    }
    // An unsampled call is still marked in flight: calls nested in it are the allocator's own,
    // and realloc must still release its old block at return. It skips the stack walk and,
    // at return, the record.
    let mode = record_mode(ctx, tid, size);
    let call = InFlight {
        size,
        ptr_arg,
        stack_id: if mode != 0 { unwind::capture(ctx) } else { 0 },
        kind,
        depth: 0,
        sampled: mode,
        _pad: 0,
    };
    in_flight::insert(tid, call);
}

pub fn enter_mmap(ctx: &ProbeContext, kind: u32, len: u64, tracked: bool) {
    let tid = current_tid();
    if nest(tid) || !tracked {
        return;
    }
    let mode = record_mode(ctx, tid, len);
    let call = InFlight {
        size: len,
        ptr_arg: 0,
        stack_id: if mode != 0 { unwind::capture(ctx) } else { 0 },
        kind,
        depth: 0,
        sampled: mode,
        _pad: 0,
    };
    in_flight::insert(tid, call);
}

/// Whether a call is recorded: 0 not, 1 as a byte sample, `EXACT_CALL` from an escalated
/// site (checked first: such a call counts once and leaves the sampling countdown alone).
#[inline(always)]
fn record_mode(ctx: &ProbeContext, tid: u32, size: u64) -> u32 {
    if sampling::enabled() && escalation::escalated(ctx) {
        return EXACT_CALL;
    }
    sampling::sampled(tid, size) as u32
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
    if addr == 0 || in_flight::get(current_tid()).is_some() {
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

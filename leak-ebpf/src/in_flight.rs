//! Allocator calls between entry and return, per thread. Every malloc/free pair consults it
//! five times, so it is an array slot per thread (tid modulo the slot count, claimed with a
//! compare-and-exchange): the verifier inlines array lookups, where each hash-map operation
//! is a helper call. A thread whose slot another thread holds (tids that collide) spills to
//! the `IN_FLIGHT` hash map; the slot's `spilled` count says when that map must be looked at.
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use leak_common::{InFlight, counter};

use crate::maps::{IN_FLIGHT, IN_FLIGHT_SLOTS, InFlightSlot, SLOT_MASK, count};

fn slot(tid: u32) -> Option<*mut InFlightSlot> {
    // The 16 low bits rotated by three: still one slot per thread id modulo 65,536, but the
    // consecutive ids of a program's threads land 8 slots (512 bytes) apart instead of
    // sharing cache lines that each thread's calls would then take from the other's CPU.
    let low = tid & SLOT_MASK;
    IN_FLIGHT_SLOTS.get_ptr_mut(((low << 3) | (low >> 13)) & SLOT_MASK)
}

/// The thread's call in flight, if any.
pub fn get(tid: u32) -> Option<*mut InFlight> {
    let slot = slot(tid)?;
    // SAFETY: a valid array slot; the owner field is only changed atomically or by its owner.
    unsafe {
        if core::ptr::read_volatile(&(*slot).owner) == tid {
            return Some(&raw mut (*slot).call);
        }
        if core::ptr::read_volatile(&(*slot).spilled) == 0 {
            return None;
        }
    }
    IN_FLIGHT.get_ptr_mut(tid)
}

pub fn insert(tid: u32, call: InFlight) {
    let Some(slot) = slot(tid) else {
        return;
    };
    // SAFETY: as above; the compare-and-exchange makes one thread the slot's owner.
    unsafe {
        let owner = &raw mut (*slot).owner;
        if core::ptr::read_volatile(owner) == tid
            || atomic_cxchg::<u32, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                owner, 0, tid,
            )
            .1
        {
            (*slot).call = call;
            return;
        }
    }
    if IN_FLIGHT.insert(tid, call, 0).is_err() {
        count(counter::DROP_IN_FLIGHT_FULL);
        return;
    }
    // SAFETY: a valid array slot; an atomic add on it races with nothing unsafe.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*slot).spilled, 1) };
}

pub fn remove(tid: u32) {
    let Some(slot) = slot(tid) else {
        return;
    };
    // SAFETY: a valid array slot; the owner word says whether this thread holds it.
    unsafe {
        if core::ptr::read_volatile(&(*slot).owner) == tid {
            core::ptr::write_volatile(&raw mut (*slot).owner, 0);
            return;
        }
    }
    if IN_FLIGHT.remove(tid).is_ok() {
        // SAFETY: a valid array slot; an atomic add on it races with nothing unsafe.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*slot).spilled, u64::MAX)
        };
    }
}

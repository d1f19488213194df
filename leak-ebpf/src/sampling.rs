//! Byte-based sampling, the method of Go's and tcmalloc's heap profilers: a countdown of a
//! random number of bytes drawn from an exponential distribution of mean `SAMPLE_BYTES`; the
//! allocation that crosses zero is sampled. An allocation of size s is thus sampled with
//! probability 1 - exp(-s/R), and user space weighs it by the inverse to estimate the total.
//!
//! The countdown is per CPU rather than per thread (Go's and tcmalloc's are per thread): the
//! exponential distribution has no memory, so what is left of it when an allocation comes is
//! exponential of mean R whichever threads used the rest, and the probability stays
//! 1 - exp(-s/R). A per-CPU array slot is an inlined lookup, where a per-thread hash entry cost
//! a helper call at every allocation. (A thread preempted inside the few instructions of the
//! update can lose the other's change: a miscount of one draw, rare, not a bias.)
use aya_ebpf::helpers::bpf_get_prandom_u32;

use crate::maps::SAMPLE_COUNTDOWN;

/// Mean bytes between samples; 0 records every allocation. Set by user space at load time.
#[unsafe(no_mangle)]
static SAMPLE_BYTES: u64 = 0;

/// True under `--sample-bytes`.
#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: a plain read of a global that user space sets before loading.
    unsafe { core::ptr::read_volatile(&SAMPLE_BYTES) != 0 }
}

/// True when this allocation of `size` bytes is to be recorded.
#[inline(always)]
pub fn sampled(size: u64) -> bool {
    // SAFETY: a plain read of a global that user space sets before loading.
    let mean = unsafe { core::ptr::read_volatile(&SAMPLE_BYTES) };
    if mean == 0 {
        return true;
    }
    let Some(left) = SAMPLE_COUNTDOWN.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's slot of a per-CPU array, valid for the program's run.
    unsafe {
        if *left == 0 {
            *left = draw(mean) as i64;
        }
        *left -= size as i64;
        if *left > 0 {
            return false;
        }
        *left = draw(mean) as i64;
    }
    true
}

/// An exponential variate of mean `mean`: -ln(u) * mean for uniform u, in integer arithmetic
/// (no floating point in BPF): -ln(u) = -log2(u) * ln 2, log2 from the leading bit and a
/// quadratic fit of the mantissa (error below 0.5%).
fn draw(mean: u64) -> u64 {
    // SAFETY: a helper without arguments.
    let r = (unsafe { bpf_get_prandom_u32() } | 1) as u64;
    // Position of the highest set bit, by halving (no clz instruction on BPF).
    let mut msb = 0u64;
    let mut v = r;
    let mut step = 16u64;
    while step > 0 {
        if v >> step != 0 {
            v >>= step;
            msb += step;
        }
        step >>= 1;
    }
    // Mantissa in [0, 1) as Q16, and log2(1 + m) ~= m + 0.3466 m (1 - m).
    let m = ((r << (32 - msb)) & 0xffff_ffff) >> 16;
    let frac = m + ((((m * (65536 - m)) >> 16) * 22716) >> 16);
    let log2_r = (msb << 16) + frac;
    // u = r / 2^32, so -log2(u) = 32 - log2(r).
    let neg_log2_u = (32u64 << 16).saturating_sub(log2_r);
    // * ln 2 (45426 in Q16), back from Q16.
    (((mean * neg_log2_u) >> 16) * 45426) >> 16
}

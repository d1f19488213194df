//! The maps shared with user space. Sizes here are defaults; user space sets the real ones
//! (`--max-allocs`, `--max-stacks`, ...) before loading.
use crate::unwind::{CachedRule, StackWindow};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use leak_common::{
    Allocation, ExecMapping, GoStack, Goroutine, InFlight, MAX_MAPPINGS, StackCounts, StackTrace,
    UnwindRow, counter, go_param, unwind_state,
};

/// CLOCK_MONOTONIC as user space last wrote it (every 10 ms): the allocations' timestamps.
#[map]
pub static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

/// Outstanding allocations by address.
#[map]
pub static ALLOCS: HashMap<u64, Allocation> = HashMap::with_max_entries(1 << 20, 0);

/// Stacks by the hash of their frames.
#[map]
pub static STACKS: HashMap<u64, StackTrace> = HashMap::with_max_entries(1 << 16, BPF_F_NO_PREALLOC);

/// Allocations made per stack, per CPU (see `StackCounts`).
#[map]
pub static STACK_TOTALS: PerCpuHashMap<u64, StackCounts> =
    PerCpuHashMap::with_max_entries(1 << 16, BPF_F_NO_PREALLOC);

/// Allocator calls between entry and return, one slot per thread id modulo the slot count
/// (see `in_flight`).
#[map]
pub static IN_FLIGHT_SLOTS: Array<InFlightSlot> = Array::with_max_entries(SLOT_MASK + 1, 0);

pub const SLOT_MASK: u32 = (1 << 16) - 1;

#[repr(C)]
pub struct InFlightSlot {
    /// The thread whose call this is; 0 when free.
    pub owner: u32,
    pub _pad: u32,
    /// Calls of other threads with this slot's index, kept in `IN_FLIGHT` meanwhile.
    pub spilled: u64,
    pub call: InFlight,
}

/// The calls of threads whose slot was taken. A plain hash: only a thread that dies inside the
/// allocator leaves its entry behind, and a full map is counted (in_flight_map_full).
#[map]
pub static IN_FLIGHT: HashMap<u32, InFlight> =
    HashMap::with_max_entries(1 << 14, BPF_F_NO_PREALLOC);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Room to build one stack: it is larger than the 512-byte BPF stack.
#[map]
pub static SCRATCH: PerCpuArray<StackTrace> = PerCpuArray::with_max_entries(1, 0);

/// The first bytes of the stack being walked (`unwind::WINDOW`).
#[map]
pub static STACK_WINDOW: PerCpuArray<StackWindow> = PerCpuArray::with_max_entries(1, 0);

/// Compact unwind rows of every executable object of the target, one sorted slice per object.
#[map]
pub static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1 << 20, 0);

/// Two tables of `MAX_MAPPINGS` executable mappings each, sorted by start address.
#[map]
pub static UNWIND_MAPPINGS: Array<ExecMapping> = Array::with_max_entries(2 * MAX_MAPPINGS, 0);

#[map]
pub static UNWIND_STATE: Array<u32> = Array::with_max_entries(unwind_state::COUNT, 0);

/// Bytes left before the next sampled allocation on each CPU (`--sample-bytes`; 0: none drawn
/// yet).
#[map]
pub static SAMPLE_COUNTDOWN: PerCpuArray<i64> = PerCpuArray::with_max_entries(1, 0);

/// Escalated call sites by their allocator call's return address (`--always-on`): every call
/// from them is recorded, whatever byte sampling says.
#[map]
pub static ESCALATED: HashMap<u64, u32> =
    HashMap::with_max_entries(leak_common::escalation::MAX_SITES, 0);

/// How many sites `ESCALATED` holds: while 0, no call pays the lookup.
#[map]
pub static ESCALATED_COUNT: Array<u32> = Array::with_max_entries(1, 0);

/// Unwind rules already looked up, direct-mapped by pc: an array lookup the verifier inlines,
/// where a hash lookup is a helper call, on every frame of every stack walk.
#[map]
pub static RULE_CACHE: Array<CachedRule> = Array::with_max_entries(RULE_CACHE_SLOTS, 0);

pub const RULE_CACHE_SLOTS: u32 = 1 << 16;

/// Stack ids known to be in `STACKS`, direct-mapped: most allocations come from stacks seen
/// before, and an inlined array read spares them the hash lookup. A slot holds the id mixed
/// with the stack epoch, so user space voids the whole cache by bumping the epoch.
#[map]
pub static KNOWN_STACKS: Array<u64> = Array::with_max_entries(KNOWN_STACK_SLOTS, 0);

pub const KNOWN_STACK_SLOTS: u32 = 1 << 14;

/// OOM victims (`oom:mark_victim`), a few records at most per kill.
#[map]
pub static OOM_EVENTS: RingBuf = RingBuf::with_byte_size(16 * 4096, 0);

/// Goroutines created while traced and not exited, by `g` address (Go targets).
#[map]
pub static GOROUTINES: HashMap<u64, Goroutine> =
    HashMap::with_max_entries(1 << 17, BPF_F_NO_PREALLOC);

/// The Go stack of each goroutine's latest cgo call, by `g` address. LRU: goroutines exit
/// without telling, and a reused `g` overwrites its entry at its first cgo call.
#[map]
pub static GO_STACKS: LruHashMap<u64, GoStack> = LruHashMap::with_max_entries(1 << 14, 0);

/// Where a duplicated string's length is read (`mi_strdup` and friends), per CPU.
#[map]
pub static STRING_SCRATCH: PerCpuArray<[u8; crate::track::STRING_CHUNK]> =
    PerCpuArray::with_max_entries(1, 0);

/// Room to build one Go stack.
#[map]
pub static GO_SCRATCH: PerCpuArray<GoStack> = PerCpuArray::with_max_entries(1, 0);

/// Addresses in the target's Go runtime (`go_param::*`).
#[map]
pub static GO_PARAMS: Array<u64> = Array::with_max_entries(go_param::COUNT, 0);

#[inline(always)]
pub fn add(index: u32, amount: u64) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it.
        // SAFETY: this CPU's slot of a per-CPU array: no other CPU writes it.
        unsafe { *value += amount };
    }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it.
        // SAFETY: this CPU's slot of a per-CPU array: no other CPU writes it.
        unsafe { *value += 1 };
    }
}

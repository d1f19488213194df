//! Reads a running Go program's goroutines and heap figure through `/proc/PID/mem`, with the
//! addresses and layouts found in its executable. The program runs on meanwhile: a record
//! that reads torn is skipped (it is back at the next interval), never trusted.
use std::collections::HashMap;

use leak_common::Goroutine;

use super::{
    goroutines::{G_DEAD, G_WAITING, decode_goroutine, g_pointers, g_read_len},
    offsets::RuntimeOffsets,
    runtime_vars::{GoroutineLimits, RuntimeVars},
    tracker::LiveGoroutine,
};
use crate::tracee::remote_memory::RemoteMemory;

/// More goroutines than this in `allglen` is a torn read, not a program.
const MAX_GOROUTINES: u64 = 1 << 22;
/// Bytes of `g` records read per sample at most (`allglen` times what one `g` needs, about
/// 400 bytes up to Go 1.27): beyond it (a hostile `allglen`, or offsets placing fields far
/// into the struct) the runtime's list is not read and the probes' view stands.
const MAX_G_BYTES_PER_SAMPLE: u64 = 1 << 30;
/// Frames kept of a parked goroutine's stack: enough to get past the runtime to the program.
const MAX_FRAMES: usize = 32;
/// `_Gidle`: just allocated, not a goroutine yet.
const G_IDLE: u32 = 0;

pub struct GoReader {
    memory: RemoteMemory,
    offsets: RuntimeOffsets,
    vars: RuntimeVars,
    limits: Option<GoroutineLimits>,
    /// Run-time minus link-time address of the executable.
    bias: u64,
}

impl GoReader {
    pub fn new(
        memory: RemoteMemory,
        offsets: RuntimeOffsets,
        vars: RuntimeVars,
        bias: u64,
    ) -> Self {
        let limits = vars.goroutine_limits();
        GoReader {
            memory,
            offsets,
            vars,
            limits,
            bias,
        }
    }

    /// The Go heap in use (what `runtime.MemStats.HeapInuse` says), when located.
    pub fn heap_inuse(&self) -> Option<u64> {
        let stat = self.vars.heap_inuse?;
        let mut bytes = vec![0; usize::from(stat.size)];
        self.memory
            .read(stat.field_addr().wrapping_add(self.bias), &mut bytes)
            .ok()?;
        stat.decode(&bytes)
    }

    /// Live goroutines: every one in the runtime's list when it is located (the bool is then
    /// true), else those the probes saw created (`probed`, by `g` address). States and parked
    /// stacks come from each `g`; creation times from the probes.
    pub fn goroutines(&self, probed: &HashMap<u64, Goroutine>) -> (Vec<LiveGoroutine>, bool) {
        // Without the version's status numbering no record can be validated: the list would
        // read as all torn. The probes' view stands then.
        let all = self.limits.as_ref().and_then(|_| self.all_gs());
        let (gs, complete) = match all {
            Some(gs) => (gs, true),
            None => (probed.keys().copied().collect(), false),
        };
        let mut live = Vec::with_capacity(gs.len());
        for g in gs {
            match self.goroutine(g, probed.get(&g)) {
                Some(Some(goroutine)) => live.push(goroutine),
                Some(None) => {} // dead
                None => {
                    // Unreadable or torn: without the runtime's list, keep what the probes know.
                    if let (false, Some(p)) = (complete, probed.get(&g)) {
                        live.push(LiveGoroutine::probed(g, p));
                    }
                }
            }
        }
        (live, complete)
    }

    /// `g` pointers from `runtime.allgptr`/`allglen`, None when not located or unreadable.
    fn all_gs(&self) -> Option<Vec<u64>> {
        let len = self
            .memory
            .read_u64(self.vars.allglen?.wrapping_add(self.bias))?;
        let array = self
            .memory
            .read_u64(self.vars.allgptr?.wrapping_add(self.bias))?;
        let per_g = u64::try_from(g_read_len(&self.offsets)).unwrap_or(u64::MAX);
        if len > MAX_GOROUTINES || len.saturating_mul(per_g) > MAX_G_BYTES_PER_SAMPLE || array == 0
        {
            return None;
        }
        let mut bytes = vec![0; len as usize * 8];
        self.memory.read(array, &mut bytes).ok()?;
        Some(g_pointers(&bytes))
    }

    /// Some(None) for a dead goroutine, None for one that cannot be read right now.
    fn goroutine(&self, g: u64, probed: Option<&Goroutine>) -> Option<Option<LiveGoroutine>> {
        let limits = self.limits.as_ref()?;
        let mut bytes = vec![0; g_read_len(&self.offsets)];
        self.memory.read(g, &mut bytes).ok()?;
        let record = decode_goroutine(&bytes, &self.offsets, limits)?;
        // `deadextra` (Go 1.25+): the spare g of a thread that calls into Go from C.
        if record.status == G_DEAD
            || record.status == G_IDLE
            || self.vars.status(record.status) == Some("deadextra")
        {
            return Some(None);
        }
        let (state, stack) = if record.status == G_WAITING {
            let reason = self.vars.wait_reason(record.waitreason);
            (
                reason.filter(|r| !r.is_empty()).unwrap_or("waiting"),
                self.parked_stack(
                    record.sched_pc,
                    record.sched_bp,
                    record.stack_lo,
                    record.stack_hi,
                ),
            )
        } else {
            (
                self.vars.status(record.status).unwrap_or("unknown"),
                Vec::new(),
            )
        };
        Some(Some(LiveGoroutine {
            g,
            goid: record.goid,
            gopc: record.gopc,
            startpc: record.startpc,
            // The probes' entry is this goroutine's only if the g was not reused since.
            created_ns: probed
                .filter(|p| p.goid == record.goid)
                .map(|p| p.created_ns),
            state: Some(state.to_owned()),
            stack,
            stack_bytes: Some(record.stack_hi.saturating_sub(record.stack_lo)),
        }))
    }

    /// Return addresses of a parked goroutine, innermost first: where it resumes, then the
    /// frame-pointer chain (Go keeps frame pointers), which must stay inside its stack.
    fn parked_stack(&self, pc: u64, mut bp: u64, lo: u64, hi: u64) -> Vec<u64> {
        let mut stack = vec![pc];
        // `bp` comes from the target: a frame record must fit below `hi` without wrapping.
        let in_stack = |bp: u64| bp >= lo && bp.checked_add(16).is_some_and(|end| end <= hi);
        while stack.len() < MAX_FRAMES && in_stack(bp) {
            let Some(ret) = self.memory.read_u64(bp + 8) else {
                break;
            };
            let Some(next) = self.memory.read_u64(bp) else {
                break;
            };
            if ret == 0 {
                break;
            }
            stack.push(ret);
            // Frames only go up the stack.
            if next <= bp {
                break;
            }
            bp = next;
        }
        stack
    }
}

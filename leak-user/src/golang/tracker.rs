//! Goroutines grouped by where they were created, followed over the run: a site whose count
//! keeps rising is a goroutine leak, the diff of goroutine profiles engineers do by hand.
use std::collections::{BTreeMap, HashMap};

use crate::{
    analysis::History,
    report::model::{CodeLocation, Frame, GoroutineSite, Goroutines},
    symbolize::Symbolizer,
};

/// One live goroutine, from the probes' map and/or the runtime's own records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveGoroutine {
    pub g: u64,
    pub goid: u64,
    /// Return address after the `go` statement's call.
    pub gopc: u64,
    pub startpc: u64,
    /// CLOCK_MONOTONIC at creation, for goroutines created while traced.
    pub created_ns: Option<u64>,
    /// `chan send`, `select`, `running`, ... (None when its record could not be read).
    pub state: Option<String>,
    /// Return addresses of a parked goroutine, innermost first.
    pub stack: Vec<u64>,
    /// Bytes of its stack (`stack.hi - stack.lo`), when read from its `g`.
    pub stack_bytes: Option<u64>,
}

impl LiveGoroutine {
    /// What the probes recorded at its creation (no state, no stack).
    pub fn probed(g: u64, p: &leak_common::Goroutine) -> LiveGoroutine {
        LiveGoroutine {
            g,
            goid: p.goid,
            gopc: p.gopc,
            startpc: p.startpc,
            created_ns: Some(p.created_ns),
            state: None,
            stack: Vec::new(),
            stack_bytes: None,
        }
    }
}

/// Goroutines created by one `go` statement to start one function.
type SiteKey = (u64, u64);

fn history_key((gopc, startpc): SiteKey) -> u64 {
    gopc.rotate_left(17) ^ startpc
}

#[derive(Debug)]
pub struct Tracker {
    history: History,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker {
            history: History::counts(),
        }
    }
}

/// What the probes counted since attaching.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeCounts {
    pub created: u64,
    pub exited: u64,
    pub dropped: u64,
    pub cgo_stacks_joined: u64,
    pub runtime_mmap_bytes: u64,
}

impl Tracker {
    /// Records each site's live count at `t_s` seconds into the run.
    pub fn record(&mut self, t_s: f64, live: &[LiveGoroutine]) {
        let mut counts: HashMap<SiteKey, u64> = HashMap::new();
        for g in live {
            *counts.entry((g.gopc, g.startpc)).or_default() += 1;
        }
        self.history
            .record_values(t_s, counts.into_iter().map(|(k, n)| (history_key(k), n)));
    }

    pub fn report(
        &self,
        live: &[LiveGoroutine],
        counts: ProbeCounts,
        complete: bool,
        now_ns: u64,
        symbolizer: &mut Symbolizer,
    ) -> Goroutines {
        let mut by_site: HashMap<SiteKey, Vec<&LiveGoroutine>> = HashMap::new();
        for g in live {
            by_site.entry((g.gopc, g.startpc)).or_default().push(g);
        }
        let mut sites = Vec::new();
        let mut total = 0;
        for (key, members) in by_site {
            let start = innermost(symbolizer.frames_at(key.1, false));
            // The runtime's own goroutines (GC workers, finalizers, ...) are not the program's,
            // as runtime.NumGoroutine and goroutine profiles count.
            if start
                .as_ref()
                .and_then(|f| f.function.as_deref())
                .is_some_and(is_runtime_internal)
            {
                continue;
            }
            total += members.len() as u64;
            sites.push(self.site(key, &members, start, now_ns, symbolizer));
        }
        sites.sort_by(|a, b| {
            b.live
                .cmp(&a.live)
                .then_with(|| a.created_by.line.cmp(&b.created_by.line))
        });
        Goroutines {
            live: total,
            sites,
            created: counts.created,
            exited: counts.exited,
            dropped: counts.dropped,
            cgo_stacks_joined: counts.cgo_stacks_joined,
            runtime_mmap_bytes: counts.runtime_mmap_bytes,
            coverage: if complete {
                "all"
            } else {
                "created_while_traced"
            },
        }
    }

    fn site(
        &self,
        key: SiteKey,
        members: &[&LiveGoroutine],
        start: Option<Frame>,
        now_ns: u64,
        symbolizer: &mut Symbolizer,
    ) -> GoroutineSite {
        let assessment = self.history.assess(history_key(key));
        let created_by = created_by(key.0, symbolizer);
        let mut states: BTreeMap<String, u64> = BTreeMap::new();
        let mut blocked: HashMap<CodeLocation, u64> = HashMap::new();
        let mut start_function = start.and_then(|f| f.function);
        for g in members {
            let state = g.state.clone().unwrap_or_else(|| "unknown".to_owned());
            *states.entry(state).or_default() += 1;
            if g.stack.is_empty() {
                continue;
            }
            let frames: Vec<Frame> = g
                .stack
                .iter()
                .flat_map(|&pc| symbolizer.frames_at(pc, true))
                .collect();
            if let Some(frame) = frames
                .iter()
                .find(|f| !f.function.as_deref().is_some_and(is_runtime_frame))
            {
                *blocked.entry(location(frame.clone())).or_default() += 1;
            }
            // `go f(x)` starts a compiler-made wrapper (`main.main.gowrap1`); the function the
            // program named is the frame it called.
            if start_function
                .as_deref()
                .is_some_and(|f| f.contains(".gowrap"))
                && let Some(i) = frames
                    .iter()
                    .position(|f| f.function.as_deref() == start_function.as_deref())
                && let Some(inner) = i.checked_sub(1).and_then(|i| frames.get(i))
                && !inner.function.as_deref().is_some_and(is_runtime_frame)
            {
                start_function = inner.function.clone();
            }
        }
        let (blocked_at, blocked_at_count) = blocked
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.line.cmp(&a.0.line)))
            .map_or((None, 0), |(place, n)| (Some(place), n));
        let oldest = members.iter().filter_map(|g| g.created_ns).min();
        GoroutineSite {
            created_by,
            start_function,
            live: members.len() as u64,
            growth_per_s: assessment.growth_bytes_per_s,
            verdict: assessment.verdict,
            states,
            blocked_at,
            blocked_at_count,
            oldest_age_s: oldest.map(|ns| now_ns.saturating_sub(ns) as f64 / 1e9),
        }
    }
}

/// The `go` statement of a goroutine's `gopc` (a return address: its call's line).
pub fn created_by(gopc: u64, symbolizer: &mut Symbolizer) -> CodeLocation {
    innermost(symbolizer.frames_at(gopc, true))
        .map(location)
        .unwrap_or(CodeLocation {
            function: None,
            file: None,
            line: None,
        })
}

/// The function a pc is in (the innermost, when inlined code is expanded).
fn innermost(frames: Vec<Frame>) -> Option<Frame> {
    frames.into_iter().next().filter(|f| f.function.is_some())
}

fn location(frame: Frame) -> CodeLocation {
    CodeLocation {
        function: frame.function,
        file: frame.file,
        line: frame.line,
    }
}

/// Started by the runtime for itself (`runtime.main` runs the program's `main`).
fn is_runtime_internal(function: &str) -> bool {
    function.starts_with("runtime.") && function != "runtime.main"
}

/// Frames of the scheduler and channel machinery, above where the program blocked.
fn is_runtime_frame(function: &str) -> bool {
    function.starts_with("runtime.")
        || function.starts_with("internal/")
        || function.contains(".runtime_")
}

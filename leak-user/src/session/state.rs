//! The tracing state a report is built from: samples of the kernel's maps, the target's memory,
//! the OOM kills seen.
use std::{collections::HashMap, path::Path, time::Instant};

use anyhow::Result;
use aya::Ebpf;
use leak_common::counter;

use super::go_target::GoState;
use crate::{
    analysis::{History, Trend},
    cli::TraceOptions,
    collect::{self, Snapshot},
    escalation::Escalation,
    golang::tracker::ProbeCounts,
    memory,
    oom::watch::Victim,
    reachability,
    report::{
        self, RunInfo,
        model::{EndedBy, Language, Memory, OomKill, Settings},
    },
    symbolize::Symbolizer,
    tracee::{Allocator, TargetProcess, pinned::PinnedProcess},
    uprobe_multi::MultiLinks,
};

/// What the reports are made of: the target, and what was read from it and the kernel's maps
/// so far.
pub(super) struct Session<'a> {
    pub options: &'a TraceOptions,
    pub target: TargetProcess,
    /// Readings of /proc/PID count only while it is still the target.
    pub pinned: PinnedProcess,
    pub language: Language,
    pub allocator: Allocator,
    pub probed: Vec<String>,
    pub settings: Settings,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When the probes were in place.
    pub started: Instant,
    pub history: History,
    /// The target's memory at the last reading: after it exits, what it held last.
    pub memory: Memory,
    pub memory_trend: Trend,
    pub oom_kills: Vec<OomKill>,
    /// Each stack's allocation count at the last sample, to tell idle stacks.
    pub stack_activity: HashMap<u64, u64>,
    pub stacks_evicted: u64,
    /// Go targets whose goroutines are traced.
    pub go: Option<GoState>,
    /// `--always-on`: growing sites escalated to exact tracing.
    pub escalation: Option<Escalation>,
    /// `--reachability`: when to scan, and the last scan.
    pub reach: Option<reachability::Tracker>,
}

impl Session<'_> {
    /// `multi_links`: the allocator's programs loaded for uprobe_multi links, which are not
    /// aya's: their skipped runs count too.
    pub fn sample(&mut self, ebpf: &Ebpf, multi_links: Option<&MultiLinks>) -> Result<Snapshot> {
        let min_age_ns = self.options.min_age.as_nanos().min(u64::MAX as u128) as u64;
        let mut snapshot = collect::snapshot(ebpf, min_age_ns, self.settings.sample_bytes)?;
        snapshot.skipped_runs += multi_links.map_or(0, MultiLinks::skipped_runs);
        let t_s = self.started.elapsed().as_secs_f64();
        // Estimated bytes (the recorded ones unless sampled): under --sample-bytes the growth
        // rate is the site's, and an escalated site's figure goes on without a jump.
        self.history.record_values(
            t_s,
            snapshot.totals.keys().map(|id| {
                let bytes = snapshot.by_stack.get(id).map_or(0, |s| s.bytes);
                (*id, bytes)
            }),
        );
        self.read_memory(t_s, snapshot.outstanding_bytes);
        if let Some(go) = &mut self.go {
            go.sample(ebpf, &self.target, t_s)?;
        }
        Ok(snapshot)
    }

    /// Reads the target's memory and cgroup figures. Gone (exited, killed, a zombie without
    /// figures): the last reading stays, which is what it held.
    pub fn read_memory(&mut self, t_s: f64, native_tracked_bytes: u64) {
        let Ok(process) = memory::process_memory(self.target.pid) else {
            return;
        };
        if process.rss_bytes.is_none() || self.pinned.verify().is_err() {
            return;
        }
        if let Some(anon) = process.anon_bytes.or(process.rss_bytes) {
            self.memory_trend.record(t_s, anon);
        }
        let cgroup = memory::cgroup_of(self.target.pid);
        let go = memory::GoMemory {
            heap_bytes: self.go.as_ref().and_then(|go| go.heap_inuse),
            stack_bytes: self.go.as_ref().and_then(GoState::stack_bytes),
        };
        self.memory = memory::report_memory(
            Some(&process),
            cgroup.as_ref(),
            native_tracked_bytes,
            go,
            self.memory_trend.bytes_per_s(),
        );
    }

    /// Long runs: when the stack map nears full, evicts the stacks that hold nothing and made
    /// no allocation since the last sample (transient call paths), so new leaks still get a
    /// stack. Stacks that hold memory are never evicted.
    pub fn make_room_for_stacks(&mut self, ebpf: &mut Ebpf, snapshot: &Snapshot) -> Result<()> {
        let previous = std::mem::take(&mut self.stack_activity);
        self.stack_activity = snapshot
            .totals
            .iter()
            .map(|(&id, t)| (id, t.total_allocs))
            .collect();
        let capacity = u64::from(self.options.max_stacks);
        if (snapshot.totals.len() as u64) * 10 < capacity * 9 {
            return Ok(());
        }
        let idle: Vec<u64> = snapshot
            .totals
            .iter()
            .filter(|(id, t)| {
                t.outstanding_allocs == 0
                    && !snapshot.by_stack.contains_key(id)
                    && previous.get(id) == Some(&t.total_allocs)
            })
            .map(|(&id, _)| id)
            .collect();
        self.stacks_evicted += collect::evict_stacks(ebpf, &idle)?;
        self.history.forget(&idle);
        for id in &idle {
            self.stack_activity.remove(id);
        }
        Ok(())
    }

    /// A reachability scan now (with `--reachability`), while the target is still the
    /// process it was.
    pub fn scan_reachability(&mut self, ebpf: &Ebpf) {
        let Some(reach) = &mut self.reach else {
            return;
        };
        if self.pinned.verify().is_err() {
            return;
        }
        let at_s = self.started.elapsed().as_secs_f64();
        reach.scan_now(
            self.target.pid,
            ebpf,
            self.options.min_age,
            at_s,
            self.options.quiet,
        );
    }

    /// Records the OOM kills that concern the target: itself (returns true: the run ends) or
    /// another process of its memory cgroup (named in the next report).
    pub fn note_oom_kills(&mut self, victims: &[Victim]) -> bool {
        // First, while the victim may still be readable: its Go heap as it dies.
        if let Some(go) = &mut self.go
            && victims.iter().any(|v| v.victim.pid == self.target.pid)
        {
            go.read_heap_profile_at_kill(self.started.elapsed().as_secs_f64());
        }
        let cgroup = self.memory.cgroup.as_ref().map(|c| c.path.clone());
        let mut target_killed = false;
        // A tracepoint without figures (older kernels): the kernel log has them.
        let logged = if victims.iter().any(|v| v.victim.lacks_figures()) {
            crate::oom::kmsg::read_kmsg_nonblocking()
                .map(|records| crate::oom::kmsg::assemble(&records))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        for victim in victims {
            let mut victim = victim.clone();
            if victim.victim.lacks_figures() {
                victim.victim.complete_from_log(&logged);
            }
            let pid = victim.victim.pid;
            let is_target = pid == self.target.pid
                || Path::new(&format!("/proc/{}/task/{pid}", self.target.pid)).exists();
            let same_cgroup =
                !is_target && cgroup.is_some() && memory::cgroup_of(pid).map(|c| c.path) == cgroup;
            if !is_target && !same_cgroup {
                continue;
            }
            self.oom_kills.push(victim.victim.to_oom_kill(
                victim.marked_at(),
                cgroup.clone(),
                &self.target.comm,
            ));
            if is_target {
                target_killed = true;
            } else if !self.options.quiet {
                eprintln!(
                    "leaktrace: the OOM killer took PID {pid} ({}) in the target's memory cgroup",
                    crate::escape::control_chars(victim.victim.comm.as_deref().unwrap_or("?"))
                );
            }
        }
        target_killed
    }

    pub fn report(
        &self,
        ebpf: &Ebpf,
        snapshot: &Snapshot,
        symbolizer: &mut Symbolizer,
        ended_by: Option<EndedBy>,
        top: usize,
    ) -> report::model::Report {
        let run = RunInfo {
            target: &self.target,
            language: self.language,
            allocator: &self.allocator,
            probed: &self.probed,
            settings: self.settings.clone(),
            started_at: self.started_at,
            duration_s: self.started.elapsed().as_secs_f64(),
            top,
            escalation: self.escalation.as_ref(),
        };
        let stack = |id| match collect::stack(ebpf, id) {
            Ok(trace) => trace,
            Err(error) => {
                log::warn!("{error}");
                None
            }
        };
        let mut report = report::build(&run, snapshot, &self.history, stack, symbolizer, ended_by);
        report.memory = self.memory.clone();
        report.totals.stacks_evicted = self.stacks_evicted;
        report.oom_kills = self.oom_kills.clone();
        if let Some(reach) = &self.reach {
            reach.annotate(&mut report);
        }
        if let Some(go) = &self.go {
            let c = &snapshot.counters;
            let counts = ProbeCounts {
                created: c.get(counter::GOROUTINES_CREATED),
                exited: c.get(counter::GOROUTINES_EXITED),
                dropped: c.get(counter::DROP_GOROUTINE_MAP_FULL),
                cgo_stacks_joined: c.get(counter::CGO_STACKS_JOINED),
                runtime_mmap_bytes: c.get(counter::GO_RUNTIME_MMAP_BYTES),
            };
            report.goroutines = Some(go.tracker.report(
                &go.live,
                counts,
                go.complete,
                snapshot.taken_ns,
                symbolizer,
            ));
            report.go_heap = match (&go.heap_reading, &go.heap_unavailable) {
                (Some(reading), _) => Some(report::go_heap::build(
                    reading,
                    &go.heap_history,
                    symbolizer,
                    top,
                )),
                (None, Some(reason)) => Some(report::go_heap::unavailable(reason.clone())),
                (None, None) => None,
            };
        }
        report
    }
}

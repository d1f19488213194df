//! Building the report from a snapshot, and writing it out.
pub mod flamegraph;
pub mod folded;
pub mod go_heap;
pub mod goroutine_split;
pub mod json;
pub mod model;
pub mod output;
pub mod pprof;
mod reach_text;
pub mod text;
pub mod units;

use chrono::{DateTime, SecondsFormat, Utc};
use leak_common::{StackTrace, counter, probe_cookie};

use crate::{
    analysis::History,
    collect::{Snapshot, StackOutstanding},
    escalation::{self, Escalated, Escalation},
    symbolize::Symbolizer,
    tracee::{Allocator, TargetProcess, catalogue},
};
use model::{DropReasons, EndedBy, Language, Memory, Report, Settings, Site, Target, Totals};

/// What a report says about the run, beside the snapshot.
pub struct RunInfo<'a> {
    pub target: &'a TargetProcess,
    pub language: Language,
    pub allocator: &'a Allocator,
    pub probed: &'a [String],
    pub settings: Settings,
    pub started_at: DateTime<Utc>,
    pub duration_s: f64,
    pub top: usize,
    /// `--always-on`: the escalated call sites.
    pub escalation: Option<&'a Escalation>,
}

pub fn build(
    run: &RunInfo<'_>,
    snapshot: &Snapshot,
    history: &History,
    stack: impl Fn(u64) -> Option<StackTrace>,
    symbolizer: &mut Symbolizer,
    ended_by: Option<EndedBy>,
) -> Report {
    let c = &snapshot.counters;
    let drop_reasons = DropReasons {
        alloc_map_full: c.get(counter::DROP_ALLOC_MAP_FULL),
        stack_map_full: c.get(counter::DROP_STACK_MAP_FULL),
        in_flight_map_full: c.get(counter::DROP_IN_FLIGHT_FULL),
        totals_map_full: c.get(counter::DROP_TOTALS_MAP_FULL),
        kernel_skipped: snapshot.skipped_runs,
    };
    let totals = Totals {
        outstanding_bytes: snapshot.outstanding_bytes,
        outstanding_allocs: snapshot.outstanding_allocs,
        allocs_seen: c.get(counter::ALLOCS),
        frees_seen: c.get(counter::FREES),
        dropped: drop_reasons.alloc_map_full
            + drop_reasons.stack_map_full
            + drop_reasons.in_flight_map_full
            + drop_reasons.kernel_skipped,
        drop_reasons,
        stacks_evicted: 0,
    };

    let mut aged: Vec<_> = snapshot
        .by_stack
        .iter()
        .filter(|(_, s)| s.aged_allocs > 0)
        .collect();
    aged.sort_by(|a, b| b.1.aged_bytes.cmp(&a.1.aged_bytes).then(a.0.cmp(b.0)));
    let sites = aged
        .into_iter()
        .take(run.top)
        .map(|(&id, outstanding)| {
            let assessment = history.assess(id);
            let trace = stack(id);
            let allocator = catalogue::site_name(probe_cookie::kind_entry(outstanding.kind));
            let (mut frames, truncated) = match &trace {
                Some(t) => {
                    let len = (t.len as usize).min(t.pcs.len());
                    (symbolizer.symbolize(&t.pcs[..len]), t.truncated != 0)
                }
                None => (Vec::new(), false),
            };
            // The innermost frame is the probed entry point: call it by the name it was probed
            // under, not an internal alias (`__libc_malloc` in static binaries).
            if let Some(entry) = frames.first_mut() {
                entry.function = Some(allocator.to_owned());
            }
            let kept = snapshot.totals.get(&id).copied().unwrap_or_default();
            Site {
                outstanding_bytes: outstanding.aged_bytes,
                outstanding_allocs: outstanding.aged_allocs,
                oldest_age_s: snapshot.taken_ns.saturating_sub(outstanding.oldest_ns) as f64 / 1e9,
                growth_bytes_per_s: assessment.growth_bytes_per_s,
                verdict: assessment.verdict,
                allocator: allocator.to_owned(),
                frames,
                total_allocs: kept.total_allocs,
                total_bytes: kept.total_bytes,
                truncated,
                estimate_stderr_bytes: (run.settings.sample_bytes > 0)
                    .then_some(outstanding.aged_stderr_bytes),
                goroutine_sites: snapshot
                    .by_creation_site
                    .get(&id)
                    .map(|shares| goroutine_split::split(shares, symbolizer))
                    .unwrap_or_default(),
                escalated: run
                    .escalation
                    .zip(trace.as_ref())
                    .and_then(|(e, t)| e.site(*t.pcs.get(1).filter(|_| t.len > 1)?))
                    .map(|site| site_escalation(site, outstanding)),
                reachability: None,
                stack_id: id,
            }
        })
        .collect();

    Report {
        tool: "leaktrace",
        version: env!("CARGO_PKG_VERSION"),
        is_final: ended_by.is_some(),
        target: Target {
            pid: run.target.pid,
            pid_in_namespace: run.target.pid_in_namespace,
            comm: run.target.comm.clone(),
            exe: run.target.exe.display().to_string(),
            language: run.language,
        },
        started_at: run.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        duration_s: run.duration_s,
        settings: run.settings.clone(),
        totals,
        sites,
        goroutines: None,
        go_heap: None,
        memory: Memory::default(),
        oom_kills: Vec::new(),
        allocator: model::Allocator {
            path: run.allocator.path.clone(),
            name: run.allocator.name.clone(),
            linked_into_executable: run.allocator.linked_into_executable,
            families: run
                .allocator
                .families
                .iter()
                .map(|f| model::AllocatorFamily {
                    name: f.flavour.as_str(),
                    path: f.path.clone(),
                    probed: f.probed.clone(),
                })
                .collect(),
            probed: run.probed.to_vec(),
            missing: run
                .allocator
                .missing
                .iter()
                .map(|s| s.to_string())
                .collect(),
        },
        ended_by,
        reachability: None,
        escalations: run.escalation.map(|e| escalations(e, snapshot)),
    }
}

fn site_escalation(site: &Escalated, outstanding: &StackOutstanding) -> model::SiteEscalation {
    model::SiteEscalation {
        at_s: site.at_s,
        at: site.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        at_unix_ns: site
            .at
            .timestamp_nanos_opt()
            .and_then(|ns| u64::try_from(ns).ok())
            .unwrap_or(0),
        exact_outstanding_bytes: outstanding.exact_bytes,
        exact_outstanding_allocs: outstanding.exact_allocs,
    }
}

/// Every escalated site, with the exact figures of the stack that escalated it.
fn escalations(escalation: &Escalation, snapshot: &Snapshot) -> model::Escalations {
    model::Escalations {
        count: escalation.len(),
        limit: leak_common::escalation::MAX_SITES,
        refused: escalation.refused(),
        after_growing_intervals: escalation::GROWING_INTERVALS,
        sites: escalation
            .sites()
            .into_iter()
            .map(|site| model::EscalatedSite {
                site: site.name.clone(),
                return_address: format!("{:#x}", site.return_address),
                figures: site_escalation(
                    site,
                    &snapshot
                        .by_stack
                        .get(&site.stack_id)
                        .copied()
                        .unwrap_or_default(),
                ),
            })
            .collect(),
    }
}

pub fn now_utc() -> DateTime<Utc> {
    Utc::now()
}

//! The session's side of `--reachability`: when to scan (the final report, every N intervals,
//! SIGUSR1), the last scan's outcome, and the report fields it fills in.
use std::time::Duration;

use aya::Ebpf;

use super::{Heaps, Method, Outcome, scan};
use crate::report::model::{Reachability, Report, SiteReachability};

pub struct Tracker {
    max_pause: Duration,
    heaps: Heaps,
    /// `--reachability-every N`: a scan every N intervals.
    every: Option<u32>,
    intervals: u32,
    scans: u64,
    last: Option<Outcome>,
    /// Seconds into the run when the last scan ended.
    last_at_s: f64,
}

impl Tracker {
    pub fn new(max_pause: Duration, every: Option<u32>, heaps: Heaps) -> Self {
        Tracker {
            max_pause,
            heaps,
            every,
            intervals: 0,
            scans: 0,
            last: None,
            last_at_s: 0.0,
        }
    }

    /// Counts one interval; true when a scan is due.
    pub fn interval_due(&mut self) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        self.intervals += 1;
        if self.intervals >= every {
            self.intervals = 0;
            return true;
        }
        false
    }

    /// Scans the target now. A failed scan is a warning: the run goes on, the last outcome
    /// stays.
    pub fn scan_now(&mut self, pid: u32, ebpf: &Ebpf, min_age: Duration, at_s: f64, quiet: bool) {
        let min_age_ns = min_age.as_nanos().min(u128::from(u64::MAX)) as u64;
        match scan(pid, ebpf, self.max_pause, min_age_ns, self.heaps) {
            Ok(outcome) => {
                self.scans += 1;
                if outcome.method == Method::TwoLivePasses {
                    log::info!(
                        "reachability scan: over --reachability-max-pause {:?} with the target stopped, \
                         it was let go after {:.1} ms and scanned twice running",
                        self.max_pause,
                        outcome.pause.as_secs_f64() * 1e3
                    );
                }
                if !quiet {
                    eprintln!("leaktrace: {}", summary_line(&outcome));
                }
                self.last = Some(outcome);
                self.last_at_s = at_s;
            }
            Err(error) => log::warn!("{error}"),
        }
    }

    /// Fills in the report's reachability fields from the last scan.
    pub fn annotate(&self, report: &mut Report) {
        let Some(outcome) = &self.last else {
            return;
        };
        let t = outcome.totals;
        report.reachability = Some(Reachability {
            scanned_bytes: outcome.scanned_bytes,
            pause_ms: outcome.pause.as_secs_f64() * 1e3,
            duration_ms: outcome.duration.as_secs_f64() * 1e3,
            scans: self.scans,
            consistent: outcome.method == Method::StoppedWorld,
            method: outcome.method.as_str(),
            blocks: outcome.blocks as u64,
            threads: outcome.threads as u64,
            unreachable_bytes: t.unreachable_bytes,
            unreachable_allocs: t.unreachable_allocs,
            indirect_bytes: t.indirect_bytes,
            at_s: self.last_at_s,
        });
        for site in &mut report.sites {
            let lost = outcome
                .per_stack
                .get(&site.stack_id)
                .copied()
                .unwrap_or_default();
            site.reachability = Some(SiteReachability {
                unreachable_bytes: lost.unreachable_bytes,
                unreachable_allocs: lost.unreachable_allocs,
                indirect_bytes: lost.indirect_bytes,
                indirect_allocs: lost.indirect_allocs,
            });
        }
    }
}

/// `reachability scan: 2.0 MiB in 1200 blocks, 12 KiB unreachable (30 blocks, 4 KiB indirect),
/// target paused 3.1 ms`.
fn summary_line(outcome: &Outcome) -> String {
    let t = outcome.totals;
    format!(
        "reachability scan: {} read, {} blocks, {} unreachable ({} blocks, {} indirect), target paused {:.1} ms{}",
        crate::report::units::bytes(outcome.scanned_bytes),
        outcome.blocks,
        crate::report::units::bytes(t.unreachable_bytes),
        t.unreachable_allocs,
        crate::report::units::bytes(t.indirect_bytes),
        outcome.pause.as_secs_f64() * 1e3,
        match outcome.method {
            Method::StoppedWorld => "",
            Method::TwoLivePasses => " (over the bound: two live passes)",
        }
    )
}

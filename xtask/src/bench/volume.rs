//! The volume scenarios of `cargo xtask bench`: not a cost per pair, but whether leaktrace holds
//! up when there is a lot to hold.
//!
//! - **scale** ([`scale`]): `bench/scale.c` makes 1,000,000 allocations that stay outstanding,
//!   20 from each of 50,000 distinct call stacks, under leaktrace (`--max-allocs` and
//!   `--max-stacks` set to fit, no periodic report). Then leaktrace is stopped with SIGINT,
//!   and the bench times its final report (reading the maps, aggregating by stack, symbolizing,
//!   writing the JSON) until the report file is complete, and its exit, and takes its peak RSS
//!   from wait4. Its totals must show every allocation outstanding and nothing dropped.
//! - **soak** ([`soak`]): `bench/soak.c` makes 500,000 malloc/free pairs a second on two threads
//!   for 60 s (`LEAKTRACE_BENCH_SOAK_S` overrides the duration), leaking one block in 1,000,
//!   under leaktrace with its usual 5 s interval. Every allocation of the loop must be seen or
//!   counted as dropped; with nothing dropped, the frees seen and the blocks outstanding must
//!   match the program's own counts.
//!
//! The goals (a report under 1 s, under 200 MiB, the rate sustained) are reported, never
//! enforced; the accounting checks are (they fail the bench).

use std::{
    env,
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    LEAKTRACE_READY, STRAY_ALLOCS, Stopped, Target, Totals, Tracer, leaktrace_command, read_totals,
};
use crate::cmd::say;

/// Distinct call stacks of the scale scenario, and allocations from each.
pub(super) const SCALE_STACKS: u64 = 50_000;
pub(super) const SCALE_PER_STACK: u64 = 20;
/// leaktrace's map sizes for it: room for every allocation and stack, with margin (1.2x and
/// 1.3x; the stack map keeps its default size). Bigger maps take longer to create at attach.
pub(super) const SCALE_MAX_ALLOCS: u64 = 1_200_000;
pub(super) const SCALE_MAX_STACKS: u64 = 65_536;
/// For the target to make its allocations under tracing (a few seconds).
const SCALE_TIMEOUT: Duration = Duration::from_secs(300);
/// Goals of the issue: the final report within 1 s, leaktrace within 200 MiB.
pub(super) const SCALE_REPORT_GOAL_S: f64 = 1.0;
pub(super) const SCALE_RSS_GOAL_MIB: f64 = 200.0;
/// For leaktrace to write its report and exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// The soak's rate (allocations per second, all threads) and threads. On two threads, because
/// one thread under full tracing (about 2.5 us a pair) cannot make 500,000 pairs a second.
pub(super) const SOAK_RATE: u64 = 500_000;
pub(super) const SOAK_THREADS: u64 = 2;
/// Its duration: the 60 s, unless this variable says otherwise (for quick runs).
pub(super) const SOAK_SECONDS_ENV: &str = "LEAKTRACE_BENCH_SOAK_S";
pub(super) const SOAK_GOAL_SECONDS: f64 = 60.0;
/// The rate counts as sustained at this fraction of [`SOAK_RATE`] (the program's deadlines
/// catch up a late batch, so a machine that keeps up lands within a fraction of a percent).
pub(super) const SOAK_RATE_GOAL: f64 = 0.99;
/// leaktrace's interval during the soak: its default, so the periodic map reads are part of it.
pub(super) const SOAK_INTERVAL: &str = "5s";

/// What the scale scenario measured.
pub(super) struct Scale {
    /// From launching leaktrace to its probes being attached.
    pub attach_ms: f64,
    /// The target's time to make its allocations under tracing.
    pub alloc_s: f64,
    /// Bytes the target allocated (all outstanding).
    pub bytes: u64,
    pub stopped: Stopped,
    pub totals: Totals,
}

impl Scale {
    pub fn allocs() -> u64 {
        SCALE_STACKS * SCALE_PER_STACK
    }

    /// Correctness: every allocation outstanding in the report (exactly), nothing dropped.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let t = &self.totals;
        if t.outstanding_allocs != Self::allocs() {
            problems.push(format!(
                "scale: outstanding_allocs {} (expected {})",
                t.outstanding_allocs,
                Self::allocs()
            ));
        }
        if t.outstanding_bytes != self.bytes {
            problems.push(format!(
                "scale: outstanding_bytes {} (expected {})",
                t.outstanding_bytes, self.bytes
            ));
        }
        if t.dropped != 0 {
            problems.push(format!(
                "scale: dropped {} (expected 0; {})",
                t.dropped,
                t.drop_reasons.describe()
            ));
        }
        if self.stopped.report_s.is_none() {
            problems.push("scale: leaktrace exited without a complete report".to_owned());
        }
        problems
    }

    pub fn report_holds(&self) -> Option<bool> {
        self.stopped.report_s.map(|s| s < SCALE_REPORT_GOAL_S)
    }

    pub fn rss_holds(&self) -> bool {
        self.stopped.peak_rss_mib < SCALE_RSS_GOAL_MIB
    }

    pub fn table(&self, out: &mut String) {
        let s = &self.stopped;
        let t = &self.totals;
        let _ = writeln!(
            out,
            "scale: {} outstanding allocations from {} distinct stacks (bench/scale.c), leaktrace --format json --max-allocs {SCALE_MAX_ALLOCS} --max-stacks {SCALE_MAX_STACKS}",
            thousands(Self::allocs()),
            thousands(SCALE_STACKS),
        );
        let _ = writeln!(
            out,
            "  final report (SIGINT to the JSON report written: read the maps, aggregate, symbolize, write): {} (goal < {SCALE_REPORT_GOAL_S} s: {})",
            s.report_s
                .map_or_else(|| "none".to_owned(), |v| format!("{v:.2} s")),
            holds(self.report_holds()),
        );
        let _ = writeln!(
            out,
            "  SIGINT to exit (the report, then detaching the probes): {:.2} s",
            s.exit_s
        );
        let _ = writeln!(
            out,
            "  leaktrace peak RSS {:.1} MiB (goal < {SCALE_RSS_GOAL_MIB} MiB: {}), CPU {:.2} s over the run, attached in {:.0} ms",
            s.peak_rss_mib,
            holds(Some(self.rss_holds())),
            s.cpu_s,
            self.attach_ms,
        );
        let _ = writeln!(
            out,
            "  the target made its allocations in {:.2} s under tracing",
            self.alloc_s
        );
        let _ = writeln!(
            out,
            "  totals: outstanding_allocs {} (expected {}), outstanding_bytes {} (expected {}), dropped {}: {}",
            t.outstanding_allocs,
            Self::allocs(),
            t.outstanding_bytes,
            self.bytes,
            t.dropped,
            if self.problems().is_empty() {
                "ok"
            } else {
                "FAILED"
            }
        );
    }
}

/// What the soak program reported about its loop.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SoakLoop {
    pub allocs: u64,
    pub frees: u64,
    /// Blocks of the loop still live (kept ones plus filled slots).
    pub outstanding: u64,
    pub elapsed_s: f64,
}

impl SoakLoop {
    /// `soak allocs=<n> frees=<n> outstanding=<n> elapsed_s=<f>`.
    fn parse(line: &str) -> Option<Self> {
        let mut out = Self::default();
        let mut found = 0;
        for token in line.split_whitespace().skip(1) {
            let (key, value) = token.split_once('=')?;
            match key {
                "allocs" => out.allocs = value.parse().ok()?,
                "frees" => out.frees = value.parse().ok()?,
                "outstanding" => out.outstanding = value.parse().ok()?,
                "elapsed_s" => out.elapsed_s = value.parse().ok()?,
                _ => continue,
            }
            found += 1;
        }
        (found == 4).then_some(out)
    }
}

/// What the soak scenario measured.
pub(super) struct Soak {
    /// The duration asked for.
    pub seconds: f64,
    pub attach_ms: f64,
    pub result: SoakLoop,
    pub stopped: Stopped,
    pub totals: Totals,
}

impl Soak {
    /// Allocations per second achieved.
    pub fn rate(&self) -> f64 {
        if self.result.elapsed_s > 0.0 {
            self.result.allocs as f64 / self.result.elapsed_s
        } else {
            0.0
        }
    }

    /// Correctness: every allocation of the loop seen or counted as dropped (stray ones of the
    /// program's own aside); with nothing dropped, the frees and the outstanding blocks match.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let t = &self.totals;
        let r = &self.result;
        let accounted = t.allocs_seen + t.dropped;
        if !(r.allocs..=r.allocs + STRAY_ALLOCS).contains(&accounted) {
            problems.push(format!(
                "soak: allocs_seen {} + dropped {} = {accounted}, but the loop made {} allocations",
                t.allocs_seen, t.dropped, r.allocs
            ));
        }
        if t.dropped == 0 {
            if !(r.frees..=r.frees + STRAY_ALLOCS).contains(&t.frees_seen) {
                problems.push(format!(
                    "soak: frees_seen {} (the loop made {} frees)",
                    t.frees_seen, r.frees
                ));
            }
            if !(r.outstanding..=r.outstanding + STRAY_ALLOCS).contains(&t.outstanding_allocs) {
                problems.push(format!(
                    "soak: outstanding_allocs {} (the loop left {} blocks live)",
                    t.outstanding_allocs, r.outstanding
                ));
            }
        }
        problems
    }

    /// The goal: the rate for the whole 60 s, nothing lost uncounted.
    pub fn holds(&self) -> bool {
        self.rate() >= SOAK_RATE_GOAL * SOAK_RATE as f64
            && self.seconds >= SOAK_GOAL_SECONDS
            && self.problems().is_empty()
    }

    pub fn table(&self, out: &mut String) {
        let t = &self.totals;
        let r = &self.result;
        let s = &self.stopped;
        let _ = writeln!(
            out,
            "soak: {} allocations/s (malloc + free, one block in 1,000 kept) on {SOAK_THREADS} threads for {} s (bench/soak.c), leaktrace full tracing, --interval {SOAK_INTERVAL}",
            thousands(SOAK_RATE),
            self.seconds,
        );
        let _ = writeln!(
            out,
            "  achieved {} allocations in {:.1} s: {}/s (goal {}/s for {SOAK_GOAL_SECONDS} s with nothing lost uncounted: {})",
            thousands(r.allocs),
            r.elapsed_s,
            thousands(self.rate().round() as u64),
            thousands(SOAK_RATE),
            holds(Some(self.holds())),
        );
        let _ = writeln!(
            out,
            "  leaktrace: allocs_seen {} + dropped {} = {} of the loop's {}; frees_seen {} of {}; outstanding {} (the loop left {}): {}",
            t.allocs_seen,
            t.dropped,
            t.allocs_seen + t.dropped,
            r.allocs,
            t.frees_seen,
            r.frees,
            t.outstanding_allocs,
            r.outstanding,
            if self.problems().is_empty() {
                "ok"
            } else {
                "FAILED"
            },
        );
        let _ = writeln!(out, "  drop reasons: {}", t.drop_reasons.describe());
        let _ = writeln!(
            out,
            "  leaktrace CPU {:.2} s over the run ({:.1}% of one CPU), peak RSS {:.1} MiB, attached in {:.0} ms",
            s.cpu_s,
            if r.elapsed_s > 0.0 {
                100.0 * s.cpu_s / r.elapsed_s
            } else {
                0.0
            },
            s.peak_rss_mib,
            self.attach_ms,
        );
    }
}

/// Runs the scale scenario.
pub(super) fn scale(exe: &Path, leaktrace: &Path, out_dir: &Path) -> Result<Scale> {
    say!(
        "bench: scale: {} outstanding allocations from {} stacks under leaktrace",
        Scale::allocs(),
        SCALE_STACKS
    );
    let mut target = Target::spawn(
        exe,
        &[SCALE_STACKS.to_string(), SCALE_PER_STACK.to_string()],
        "scale".to_owned(),
    )?;
    let report = out_dir.join("leaktrace-scale.json");
    let mut command = leaktrace_command(leaktrace, target.pid, &report);
    command
        // No periodic report: the final one is the one timed.
        .args(["--interval", "1h", "--max-allocs"])
        .arg(SCALE_MAX_ALLOCS.to_string())
        .arg("--max-stacks")
        .arg(SCALE_MAX_STACKS.to_string());
    let mut tracer = Tracer::start(command, LEAKTRACE_READY)?;
    let started = Instant::now();
    target.send_line()?;
    let done = target.expect("done", SCALE_TIMEOUT)?;
    let alloc_s = started.elapsed().as_secs_f64();
    let field = |key: &str| -> Option<u64> {
        done.split_whitespace()
            .filter_map(|token| token.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse().ok())
    };
    let (Some(allocs), Some(bytes)) = (field("allocs"), field("bytes")) else {
        bail!("scale printed a bad result: {done}");
    };
    if allocs != Scale::allocs() {
        bail!(
            "scale made {allocs} allocations, not {}: {done}",
            Scale::allocs()
        );
    }
    let stopped = tracer.stop_measured(&report, STOP_TIMEOUT)?;
    let totals = read_totals(&report)?;
    target.finish()?;
    let scale = Scale {
        attach_ms: tracer.attach_ms,
        alloc_s,
        bytes,
        stopped,
        totals,
    };
    say!(
        "bench: scale: report {} after SIGINT, exit {:.2} s, peak RSS {:.1} MiB; outstanding_allocs {}, dropped {}",
        stopped
            .report_s
            .map_or_else(|| "none".to_owned(), |v| format!("{v:.2} s")),
        stopped.exit_s,
        stopped.peak_rss_mib,
        totals.outstanding_allocs,
        totals.dropped,
    );
    Ok(scale)
}

/// The soak's duration: [`SOAK_SECONDS_ENV`], else [`SOAK_GOAL_SECONDS`].
fn soak_seconds() -> Result<f64> {
    match env::var(SOAK_SECONDS_ENV) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .with_context(|| {
                format!("{SOAK_SECONDS_ENV} must be a positive number of seconds, not `{value}`")
            }),
        _ => Ok(SOAK_GOAL_SECONDS),
    }
}

/// Runs the soak scenario.
pub(super) fn soak(exe: &Path, leaktrace: &Path, out_dir: &Path) -> Result<Soak> {
    let seconds = soak_seconds()?;
    say!(
        "bench: soak: {SOAK_RATE} allocations/s on {SOAK_THREADS} threads for {seconds} s under leaktrace"
    );
    let mut target = Target::spawn(
        exe,
        &[
            SOAK_RATE.to_string(),
            seconds.to_string(),
            SOAK_THREADS.to_string(),
        ],
        "soak".to_owned(),
    )?;
    let report = out_dir.join("leaktrace-soak.json");
    let mut command = leaktrace_command(leaktrace, target.pid, &report);
    command.args(["--interval", SOAK_INTERVAL]);
    let mut tracer = Tracer::start(command, LEAKTRACE_READY)?;
    target.send_line()?;
    // Time to spare for a machine that cannot keep the rate.
    let line = target.expect("soak ", Duration::from_secs_f64(seconds * 3.0 + 60.0))?;
    let result =
        SoakLoop::parse(&line).with_context(|| format!("soak printed a bad result: {line}"))?;
    let stopped = tracer.stop_measured(&report, STOP_TIMEOUT)?;
    let totals = read_totals(&report)?;
    target.finish()?;
    let soak = Soak {
        seconds,
        attach_ms: tracer.attach_ms,
        result,
        stopped,
        totals,
    };
    say!(
        "bench: soak: {} allocations in {:.1} s ({:.0}/s); allocs_seen {}, dropped {}, frees_seen {}, outstanding {}",
        result.allocs,
        result.elapsed_s,
        soak.rate(),
        totals.allocs_seen,
        totals.dropped,
        totals.frees_seen,
        totals.outstanding_allocs,
    );
    Ok(soak)
}

/// "yes" / "NO" / "unknown".
pub(super) fn holds(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "unknown",
    }
}

/// 1234567 as "1,234,567".
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{SoakLoop, thousands};

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(50_000), "50,000");
    }

    #[test]
    fn soak_line_parses() {
        let r = SoakLoop::parse("soak allocs=30 frees=20 outstanding=10 elapsed_s=1.5").unwrap();
        assert_eq!((r.allocs, r.frees, r.outstanding), (30, 20, 10));
        assert!((r.elapsed_s - 1.5).abs() < 1e-9);
        assert!(SoakLoop::parse("soak allocs=30 frees=20").is_none());
    }
}

//! `target/bench/results.json`: the table's content as `#[derive(Serialize)]` structs, and the
//! `totals` of leaktrace's JSON reports read back with serde_json.

use std::{fs, path::Path};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{
    ESTIMATE_SIGMAS, LIVE_BLOCKS, Mode, Outcome, PEER_SCRIPT, Report, SAMPLE_BYTES_N, TracerRun,
    estimate_sigma, sampled_count_range,
    servers::ServerRow,
    volume::{
        SCALE_MAX_ALLOCS, SCALE_MAX_STACKS, SCALE_REPORT_GOAL_S, SCALE_RSS_GOAL_MIB, SCALE_STACKS,
        SOAK_INTERVAL, SOAK_RATE, SOAK_SECONDS_ENV, SOAK_THREADS, Scale, Soak,
    },
};

/// A measured value as results.json shows it: three decimals, null when not finite.
fn num(v: f64) -> Option<f64> {
    round(v, 1000.0)
}

/// V rounded to 1/SCALE, null when not finite.
fn round(v: f64, scale: f64) -> Option<f64> {
    v.is_finite().then(|| (v * scale).round() / scale)
}

fn opt(v: Option<f64>) -> Option<f64> {
    v.and_then(num)
}

/// A constant or setting as Rust's `Display` writes it: a whole number without `.0`.
fn plain<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// The report's `totals` fields the correctness checks read.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Totals {
    /// An estimate under sampling.
    pub outstanding_bytes: u64,
    /// An estimate under sampling.
    pub outstanding_allocs: u64,
    /// Sampled allocations only, under sampling.
    pub allocs_seen: u64,
    pub frees_seen: u64,
    pub dropped: u64,
    pub drop_reasons: DropReasons,
}

/// The report's `totals.drop_reasons`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct DropReasons {
    pub alloc_map_full: u64,
    pub stack_map_full: u64,
    pub in_flight_map_full: u64,
    pub totals_map_full: u64,
}

impl DropReasons {
    pub fn describe(&self) -> String {
        format!(
            "alloc_map_full {}, stack_map_full {}, in_flight_map_full {}, totals_map_full {}",
            self.alloc_map_full, self.stack_map_full, self.in_flight_map_full, self.totals_map_full
        )
    }
}

/// The part of leaktrace's JSON report the bench reads.
#[derive(Deserialize)]
struct ReportTotals {
    totals: Totals,
}

/// The `totals` the correctness check needs, from leaktrace's JSON report.
pub(super) fn read_totals(report: &Path) -> Result<Totals> {
    let text = fs::read_to_string(report)
        .with_context(|| format!("leaktrace wrote no report to {}", report.display()))?;
    let parsed: ReportTotals = serde_json::from_str(&text)
        .with_context(|| format!("no readable totals in {}", report.display()))?;
    Ok(parsed.totals)
}

#[derive(Serialize)]
pub(super) struct Results<'a> {
    machine: Machine<'a>,
    runs: usize,
    elapsed_s: Option<f64>,
    peer: Peer<'a>,
    sample_bytes: u64,
    scenarios: Vec<Scenario<'a>>,
    added_per_pair: Vec<Added>,
    /// The real workloads: redis and nginx under their load generators.
    real_workloads: &'a [ServerRow],
    scale: ScaleResult,
    soak: SoakResult,
    goals: Vec<Goal>,
    failures: &'a [String],
    peer_warnings: &'a [String],
}

#[derive(Serialize)]
struct Machine<'a> {
    nproc: usize,
    kernel: &'a str,
    cpu: &'a str,
    load_at_start: &'a str,
    load_at_end: &'a str,
}

#[derive(Serialize)]
struct Peer<'a> {
    tracer: Option<&'a str>,
    script: &'a str,
    available: bool,
    unavailable_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Scenario<'a> {
    name: &'a str,
    workload: &'a str,
    program: &'a str,
    allocator: &'a str,
    mode: &'a str,
    threads: u64,
    pairs_per_thread: u64,
    traced: bool,
    ns_per_pair_median: Option<f64>,
    spread: Option<f64>,
    slowdown: Option<f64>,
    ratio_to_floor: Option<f64>,
    peer_to_leaktrace: Option<f64>,
    tracer_cpu_s: Option<f64>,
    tracer_peak_rss_mib: Option<f64>,
    attach_ms: Option<f64>,
    ns_per_pair_runs: Vec<Option<f64>>,
    tracer_cpu_s_runs: Vec<Option<f64>>,
    tracer_peak_rss_mib_runs: Vec<Option<f64>>,
    attach_ms_runs: Vec<Option<f64>>,
    correctness: Option<Correctness>,
}

#[derive(Serialize)]
struct Correctness {
    ok: bool,
    expected: Expected,
    totals: Vec<RunTotals>,
}

/// What a traced mode must see: the gap between allocs and frees, or per sampled run the range
/// of sampled allocations and the truth the estimate must be near.
#[derive(Serialize)]
#[serde(untagged)]
enum Expected {
    Gap { gap: u64 },
    Sampled(Vec<SampledExpected>),
}

#[derive(Serialize)]
struct SampledExpected {
    sampled_min: u64,
    sampled_max: u64,
    outstanding_bytes: u64,
    estimate_sigma_max: Option<f64>,
    #[serde(serialize_with = "plain")]
    sigmas_allowed: f64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RunTotals {
    Report {
        allocs_seen: u64,
        frees_seen: u64,
        outstanding_allocs: u64,
        outstanding_bytes: u64,
        dropped: u64,
        loop_bytes: u64,
        live_bytes: u64,
    },
    Peer {
        outstanding_allocs: u64,
    },
}

#[derive(Serialize)]
struct Added {
    workload: &'static str,
    probes_ns: Option<f64>,
    leaktrace_programs_ns: Option<f64>,
    sampled_programs_ns: Option<f64>,
    peer_ns: Option<f64>,
}

#[derive(Serialize)]
struct Goal {
    goal: u8,
    what: String,
    measured: String,
    holds: Option<bool>,
}

#[derive(Serialize)]
struct ScaleResult {
    allocs: u64,
    stacks: u64,
    bytes: u64,
    max_allocs: u64,
    max_stacks: u64,
    attach_ms: Option<f64>,
    target_alloc_s: Option<f64>,
    report_s: Option<f64>,
    exit_s: Option<f64>,
    tracer_cpu_s: Option<f64>,
    tracer_peak_rss_mib: Option<f64>,
    #[serde(serialize_with = "plain")]
    report_goal_s: f64,
    report_goal_holds: Option<bool>,
    #[serde(serialize_with = "plain")]
    rss_goal_mib: f64,
    rss_goal_holds: bool,
    totals: Totals,
    ok: bool,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct SoakResult {
    rate_goal: u64,
    threads: u64,
    #[serde(serialize_with = "plain")]
    seconds: f64,
    seconds_env: &'static str,
    interval: &'static str,
    loop_allocs: u64,
    loop_frees: u64,
    loop_outstanding: u64,
    elapsed_s: Option<f64>,
    rate: Option<f64>,
    attach_ms: Option<f64>,
    tracer_cpu_s: Option<f64>,
    tracer_peak_rss_mib: Option<f64>,
    totals: Totals,
    goal_holds: bool,
    ok: bool,
    problems: Vec<String>,
}

impl ScaleResult {
    fn of(scale: &Scale) -> Self {
        let s = &scale.stopped;
        let problems = scale.problems();
        ScaleResult {
            allocs: Scale::allocs(),
            stacks: SCALE_STACKS,
            bytes: scale.bytes,
            max_allocs: SCALE_MAX_ALLOCS,
            max_stacks: SCALE_MAX_STACKS,
            attach_ms: num(scale.attach_ms),
            target_alloc_s: num(scale.alloc_s),
            report_s: s.report_s.and_then(num),
            exit_s: num(s.exit_s),
            tracer_cpu_s: num(s.cpu_s),
            tracer_peak_rss_mib: num(s.peak_rss_mib),
            report_goal_s: SCALE_REPORT_GOAL_S,
            report_goal_holds: scale.report_holds(),
            rss_goal_mib: SCALE_RSS_GOAL_MIB,
            rss_goal_holds: scale.rss_holds(),
            totals: scale.totals,
            ok: problems.is_empty(),
            problems,
        }
    }
}

impl SoakResult {
    fn of(soak: &Soak) -> Self {
        let r = &soak.result;
        let s = &soak.stopped;
        let problems = soak.problems();
        SoakResult {
            rate_goal: SOAK_RATE,
            threads: SOAK_THREADS,
            seconds: soak.seconds,
            seconds_env: SOAK_SECONDS_ENV,
            interval: SOAK_INTERVAL,
            loop_allocs: r.allocs,
            loop_frees: r.frees,
            loop_outstanding: r.outstanding,
            elapsed_s: num(r.elapsed_s),
            rate: round(soak.rate(), 10.0),
            attach_ms: num(soak.attach_ms),
            tracer_cpu_s: num(s.cpu_s),
            tracer_peak_rss_mib: num(s.peak_rss_mib),
            totals: soak.totals,
            goal_holds: soak.holds(),
            ok: problems.is_empty(),
            problems,
        }
    }
}

fn run_totals(run: &TracerRun) -> RunTotals {
    match run.outcome {
        Outcome::Report(t) => RunTotals::Report {
            allocs_seen: t.allocs_seen,
            frees_seen: t.frees_seen,
            outstanding_allocs: t.outstanding_allocs,
            outstanding_bytes: t.outstanding_bytes,
            dropped: t.dropped,
            loop_bytes: run.stats.loop_bytes,
            live_bytes: run.stats.live_bytes,
        },
        Outcome::Peer { outstanding } => RunTotals::Peer {
            outstanding_allocs: outstanding,
        },
    }
}

fn expected(scenario: &super::Scenario) -> Expected {
    match scenario.mode {
        Mode::Floor => Expected::Gap { gap: 0 },
        Mode::Sampled => Expected::Sampled(
            scenario
                .tracer
                .iter()
                .map(|r| {
                    let (sampled_min, sampled_max) = sampled_count_range(&r.stats);
                    SampledExpected {
                        sampled_min,
                        sampled_max,
                        outstanding_bytes: r.stats.live_bytes,
                        estimate_sigma_max: num(estimate_sigma(&r.stats)),
                        sigmas_allowed: ESTIMATE_SIGMAS,
                    }
                })
                .collect(),
        ),
        _ => Expected::Gap {
            gap: LIVE_BLOCKS * scenario.workload.threads,
        },
    }
}

impl<'a> Results<'a> {
    pub fn of(report: &'a Report<'a>) -> Self {
        let scenarios = report
            .rows
            .iter()
            .zip(report.scenarios)
            .map(|(row, scenario)| {
                let runs = |f: fn(&TracerRun) -> f64| -> Vec<Option<f64>> {
                    scenario.tracer.iter().map(|r| num(f(r))).collect()
                };
                Scenario {
                    name: &row.name,
                    workload: scenario.workload.slug,
                    program: scenario.workload.program.name(),
                    allocator: scenario.workload.allocator().name(),
                    mode: scenario.mode.key(),
                    threads: scenario.workload.threads,
                    pairs_per_thread: scenario.workload.pairs,
                    traced: scenario.mode != Mode::Untraced,
                    ns_per_pair_median: opt(row.ns_per_pair),
                    spread: opt(row.spread),
                    slowdown: opt(row.slowdown),
                    ratio_to_floor: opt(row.vs_floor),
                    peer_to_leaktrace: opt(row.peer_vs_leaktrace),
                    tracer_cpu_s: opt(row.cpu_s),
                    tracer_peak_rss_mib: opt(row.peak_rss_mib),
                    attach_ms: opt(row.attach_ms),
                    ns_per_pair_runs: scenario.ns_per_pair.iter().map(|v| num(*v)).collect(),
                    tracer_cpu_s_runs: runs(|t| t.cpu_s),
                    tracer_peak_rss_mib_runs: runs(|t| t.peak_rss_mib),
                    attach_ms_runs: runs(|t| t.attach_ms),
                    correctness: (scenario.mode != Mode::Untraced).then(|| Correctness {
                        ok: scenario.problems().is_empty(),
                        expected: expected(scenario),
                        totals: scenario.tracer.iter().map(run_totals).collect(),
                    }),
                }
            })
            .collect();
        Results {
            machine: Machine {
                nproc: report.machine.nproc,
                kernel: &report.machine.kernel,
                cpu: &report.machine.cpu,
                load_at_start: &report.machine.load_at_start,
                load_at_end: &report.load_at_end,
            },
            runs: report.runs,
            elapsed_s: num(report.elapsed_s),
            peer: Peer {
                tracer: report.peer.version.as_deref(),
                script: PEER_SCRIPT,
                available: report.peer.unavailable.is_none(),
                unavailable_reason: report.peer.unavailable.as_deref(),
            },
            sample_bytes: SAMPLE_BYTES_N,
            scenarios,
            added_per_pair: report
                .breakdown()
                .into_iter()
                .map(|(workload, [probes, programs, sampled, peer])| Added {
                    workload,
                    probes_ns: opt(probes),
                    leaktrace_programs_ns: opt(programs),
                    sampled_programs_ns: opt(sampled),
                    peer_ns: opt(peer),
                })
                .collect(),
            real_workloads: report.server_rows,
            scale: ScaleResult::of(report.scale),
            soak: SoakResult::of(report.soak),
            goals: report
                .goals()
                .into_iter()
                .map(|g| Goal {
                    goal: g.number,
                    what: g.what,
                    measured: g.measured,
                    holds: g.holds,
                })
                .collect(),
            failures: report.failures,
            peer_warnings: report.peer_warnings,
        }
    }

    /// The pretty-printed JSON, ending in a newline.
    pub fn to_json(&self) -> Result<String> {
        let mut text = serde_json::to_string_pretty(self).context("serialize results.json")?;
        text.push('\n');
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real report: `leaktrace --format json --duration 1s --min-age 0s run -- /bin/sleep 3`.
    const REPORT: &str = include_str!("../../../harness/testdata/report-sleep.json");

    #[test]
    fn totals_are_read_from_a_real_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        fs::write(&path, REPORT).unwrap();
        let t = read_totals(&path).unwrap();
        assert_eq!(
            (
                t.outstanding_bytes,
                t.outstanding_allocs,
                t.allocs_seen,
                t.frees_seen,
                t.dropped
            ),
            (11996, 137, 200, 63, 0)
        );
        assert_eq!(t.drop_reasons.in_flight_map_full, 0);
        assert!(read_totals(&dir.path().join("missing.json")).is_err());
    }

    /// The shapes the hand-written writer produced, field for field.
    #[test]
    fn correctness_has_the_previous_format() {
        let c = Correctness {
            ok: true,
            expected: Expected::Gap { gap: 128 },
            totals: vec![
                RunTotals::Report {
                    allocs_seen: 5,
                    frees_seen: 3,
                    outstanding_allocs: 2,
                    outstanding_bytes: 200,
                    dropped: 0,
                    loop_bytes: 1000,
                    live_bytes: 200,
                },
                RunTotals::Peer {
                    outstanding_allocs: 7,
                },
            ],
        };
        let previous = r#"{"ok": true, "expected": {"gap": 128}, "totals": [{"allocs_seen": 5, "frees_seen": 3, "outstanding_allocs": 2, "outstanding_bytes": 200, "dropped": 0, "loop_bytes": 1000, "live_bytes": 200}, {"outstanding_allocs": 7}]}"#;
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::from_str::<serde_json::Value>(previous).unwrap()
        );
        let sampled = Expected::Sampled(vec![SampledExpected {
            sampled_min: 1,
            sampled_max: 9,
            outstanding_bytes: 4096,
            estimate_sigma_max: num(1234.56789),
            sigmas_allowed: ESTIMATE_SIGMAS,
        }]);
        let previous = r#"[{"sampled_min": 1, "sampled_max": 9, "outstanding_bytes": 4096, "estimate_sigma_max": 1234.568, "sigmas_allowed": 6}]"#;
        assert_eq!(
            serde_json::to_value(&sampled).unwrap(),
            serde_json::from_str::<serde_json::Value>(previous).unwrap()
        );
    }

    #[test]
    fn numbers_have_three_decimals_and_null_when_not_finite() {
        assert_eq!(num(1.23456), Some(1.235));
        assert_eq!(num(f64::NAN), None);
        assert_eq!(num(f64::INFINITY), None);
        assert_eq!(round(499_999.96, 10.0), Some(500_000.0));
    }
}

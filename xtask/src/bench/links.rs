//! Attaching and detaching, by the kind of link the allocator probes get: uprobe sessions with
//! `uprobe_multi` links (the default where the kernel has them), `uprobe_multi` links with a
//! return probe on every call, and one perf-event link per probe (kernels before 6.6), each
//! forced with leaktrace's hidden `--probe-links`. leaktrace attaches by PID to an idle
//! alloc_loop, then gets SIGINT: the medians of [`RUNS`] interleaved runs of the time from launch
//! to attached, of the probes' own attach (from the unwind tables being in to the allocator
//! probes being attached, as its debug log says), and from SIGINT to the report and to the exit.
use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{
    median,
    runner::{LEAKTRACE_READY, Target, Tracer, leaktrace_command},
    table::write_columns,
};
use crate::cmd::say;

/// Runs per link kind.
const RUNS: usize = 5;
/// Goals of the issue: SIGINT to exit, and the probes' attach, with the default links.
pub(super) const EXIT_GOAL_MS: f64 = 250.0;
pub(super) const ATTACH_GOAL_MS: f64 = 100.0;

const KINDS: [(&str, &str); 3] = [
    ("auto", "sessions + uprobe_multi (default)"),
    ("multi", "uprobe_multi, no sessions"),
    ("per-probe", "one link per probe"),
];

/// One link kind's medians, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(super) struct LinkRow {
    pub kind: &'static str,
    pub launch_to_attached_ms: Option<f64>,
    pub probes_attach_ms: Option<f64>,
    pub sigint_to_report_ms: Option<f64>,
    pub sigint_to_exit_ms: Option<f64>,
}

#[derive(Default)]
struct Runs {
    launch: Vec<f64>,
    probes: Vec<f64>,
    report: Vec<f64>,
    exit: Vec<f64>,
}

/// Measures every link kind on `alloc_loop` (glibc: its 20-odd probes).
pub(super) fn run(alloc_loop: &Path, leaktrace: &Path, out_dir: &Path) -> Result<Vec<LinkRow>> {
    let mut runs: Vec<Runs> = KINDS.iter().map(|_| Runs::default()).collect();
    for round in 1..=RUNS {
        for ((kind, _), runs) in KINDS.iter().zip(&mut runs) {
            one_run(kind, alloc_loop, leaktrace, out_dir, runs)
                .with_context(|| format!("--probe-links {kind}, run {round}"))?;
        }
    }
    Ok(KINDS
        .iter()
        .zip(runs)
        .map(|((_, label), r)| LinkRow {
            kind: label,
            launch_to_attached_ms: median(r.launch),
            probes_attach_ms: median(r.probes),
            sigint_to_report_ms: median(r.report),
            sigint_to_exit_ms: median(r.exit),
        })
        .collect())
}

fn one_run(
    kind: &str,
    alloc_loop: &Path,
    leaktrace: &Path,
    out_dir: &Path,
    runs: &mut Runs,
) -> Result<()> {
    let target = Target::spawn(alloc_loop, &["1".into(), "1".into()], "alloc_loop".into())?;
    let report = out_dir.join(format!("links-{kind}.json"));
    let mut command = leaktrace_command(leaktrace, target.pid, &report);
    command
        .args(["--probe-links", kind])
        .env("RUST_LOG", "leaktrace=debug");
    let mut tracer = Tracer::start(command, LEAKTRACE_READY)?;
    let phase = |name: &str| startup_phase_ms(&tracer.before_ready, name);
    let probes = phase("allocator probes attached")
        .zip(phase("unwind tables installed"))
        .map(|(attached, tables)| attached - tables);
    let stopped = tracer.stop_measured(&report, Duration::from_secs(120))?;
    target.finish()?;
    say!(
        "bench: links {kind}: attached {:.0} ms after launch (probes {}), report {}, exit {:.0} ms after SIGINT",
        tracer.attach_ms,
        probes.map_or("?".to_owned(), |ms| format!("{ms:.1} ms")),
        stopped
            .report_s
            .map_or("?".to_owned(), |s| format!("{:.0} ms", s * 1e3)),
        stopped.exit_s * 1e3
    );
    runs.launch.push(tracer.attach_ms);
    runs.probes.extend(probes);
    runs.report.extend(stopped.report_s.map(|s| s * 1e3));
    runs.exit.push(stopped.exit_s * 1e3);
    Ok(())
}

/// The time of a `startup: PHASE at N ms` debug line of leaktrace.
fn startup_phase_ms(lines: &[String], phase: &str) -> Option<f64> {
    let marker = format!("startup: {phase} at ");
    lines.iter().find_map(|line| {
        let (_, rest) = line.split_once(&marker)?;
        rest.trim_end_matches(" ms").trim().parse().ok()
    })
}

/// The table, and the goals' lines.
pub(super) fn table(rows: &[LinkRow]) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let ms1 = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.kind.to_owned(),
                ms(r.launch_to_attached_ms),
                ms1(r.probes_attach_ms),
                ms(r.sigint_to_report_ms),
                ms(r.sigint_to_exit_ms),
            ]
        })
        .collect();
    let mut out = format!(
        "\nattach and detach by link kind (alloc_loop, glibc; medians of {RUNS} interleaved runs, ms):\n"
    );
    write_columns(
        &mut out,
        &[
            "allocator probes linked as",
            "launch to attached",
            "probes attach",
            "SIGINT to report",
            "SIGINT to exit",
        ],
        &cells,
        |_| false,
    );
    if let Some(default) = rows.first() {
        let goal = |what: &str, value: Option<f64>, bound: f64| {
            let verdict = match value {
                Some(v) if v <= bound => "yes",
                Some(_) => "NO",
                None => "?",
            };
            format!(
                "  {what} within {bound:.0} ms: {} -> {verdict}\n",
                ms1(value)
            )
        };
        out.push_str(&goal(
            "probes attached (default links)",
            default.probes_attach_ms,
            ATTACH_GOAL_MS,
        ));
        out.push_str(&goal(
            "SIGINT to exit, report written (default links)",
            default.sigint_to_exit_ms,
            EXIT_GOAL_MS,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_phases_are_read_from_the_debug_log() {
        // Captured from `RUST_LOG=leaktrace=debug leaktrace --pid N`.
        let lines = vec![
            "[DEBUG] startup: eBPF object loaded at 161.5 ms".to_owned(),
            "[DEBUG] startup: unwind tables installed at 170.2 ms".to_owned(),
            "[DEBUG] allocator probes: 3 uprobe_multi links".to_owned(),
            "[DEBUG] startup: allocator probes attached at 181.9 ms".to_owned(),
        ];
        assert_eq!(
            startup_phase_ms(&lines, "unwind tables installed"),
            Some(170.2)
        );
        assert_eq!(
            startup_phase_ms(&lines, "allocator probes attached"),
            Some(181.9)
        );
        assert_eq!(startup_phase_ms(&lines, "probes attached"), None);
    }
}

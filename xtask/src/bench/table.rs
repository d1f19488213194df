//! The table `cargo xtask bench` prints: per-pair costs, the breakdown, goals, scale and soak.

use std::fmt::Write as _;

use super::{
    ESTIMATE_SIGMAS, LIVE_BLOCKS, LoopStats, Mode, Outcome, Report, SAMPLE_BYTES, Totals,
    estimate_sigma, sampled_count_range, servers, volume,
};

impl Report<'_> {
    pub(super) fn table(&self) -> String {
        let opt = |value: Option<f64>, decimals: usize, suffix: &str| {
            value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}{suffix}"))
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "leaktrace bench: cost per malloc/free pair, median of {} runs; scale and soak ({:.0} s in all)",
            self.runs, self.elapsed_s
        );
        let _ = writeln!(
            out,
            "machine: {} vCPUs, kernel {}, {}; load average {} at the start, {} at the end",
            self.machine.nproc,
            self.machine.kernel,
            self.machine.cpu,
            self.machine.load_at_start,
            self.load_at_end
        );
        let _ = writeln!(out, "peer: {}", self.peer.describe());
        let _ = writeln!(out);
        let header = [
            "scenario",
            "ns/pair",
            "spread",
            "slowdown",
            "vs floor",
            "peer/leaktrace",
            "tracer CPU s",
            "tracer RSS MiB",
            "attach ms",
        ];
        let cells: Vec<[String; 9]> = self
            .rows
            .iter()
            .map(|row| {
                let ns = match row.ns_per_pair {
                    None if row.mode == Mode::Peer && self.peer.unavailable.is_some() => {
                        "unavailable".to_owned()
                    }
                    ns => opt(ns, 1, ""),
                };
                [
                    row.name.clone(),
                    ns,
                    opt(row.spread.map(|s| s * 100.0), 0, "%"),
                    opt(row.slowdown, 1, "x"),
                    opt(row.vs_floor, 2, "x"),
                    opt(row.peer_vs_leaktrace, 1, "x"),
                    opt(row.cpu_s, 2, ""),
                    opt(row.peak_rss_mib, 1, ""),
                    opt(row.attach_ms, 0, ""),
                ]
            })
            .collect();
        let cells: Vec<Vec<String>> = cells.into_iter().map(Vec::from).collect();
        write_columns(&mut out, &header, &cells, |i| {
            self.scenarios[i].workload.slug != self.scenarios[i - 1].workload.slug
        });
        let _ = writeln!(out);
        let _ = writeln!(out, "added per pair:");
        for (workload, [probes, programs, sampled, peer]) in self.breakdown() {
            let _ = writeln!(
                out,
                "  {workload}: probes alone (floor - untraced) {} ns; leaktrace's programs (leaktrace - floor) {} ns, sampled (sampled - floor) {} ns; peer (peer - untraced) {} ns",
                opt(probes, 0, ""),
                opt(programs, 0, ""),
                opt(sampled, 0, ""),
                opt(peer, 0, ""),
            );
        }
        let _ = writeln!(out);
        for note in [
            "ns/pair: wall time of the timed loop / pairs per thread (with N threads: wall time per pair per thread).".to_owned(),
            "spread: (slowest - fastest run) / median; a wide spread means something else used the machine meanwhile.".to_owned(),
            "slowdown: vs the same workload untraced. The probes' in-kernel cost is charged to the workload, so it is in ns/pair.".to_owned(),
            "floor: leaktrace --empty-probes, the same probe sites (malloc entry + return, free past its first instruction, ...) with allocator programs that return at once.".to_owned(),
            "cgo: bench/cgo_loop, the same loop from Go (C.free + C.malloc, two cgo calls a pair). On a Go target leaktrace also probes runtime.cgocall's entry (the Go stack of each cgo call) and goroutine creation/exit; --empty-probes does not empty those, so the cgo floor includes recording the Go stack of every cgo call.".to_owned(),
            format!("sampled: leaktrace --sample-bytes {SAMPLE_BYTES}; every probe still fires, an unsampled call skips the stack walk and the map, the free of an unsampled block is a lookup miss."),
            "vs floor: the median over rounds of ns/pair over that round's floor run, made just before (the machine's speed drifts). peer/leaktrace: the peer's ns/pair over leaktrace's.".to_owned(),
            "tracer CPU s / RSS: the tracer's user+system time (bpftrace's includes compiling its script) and VmHWM, read when the loop ends.".to_owned(),
            "attach ms: from launching the tracer to its probes being attached (leaktrace's `attached` line, the peer's BEGIN line).".to_owned(),
        ] {
            let _ = writeln!(out, "{note}");
        }
        if let Some(why) = &self.peer.unavailable {
            let first = why.lines().next().unwrap_or_default();
            let short: String = first.chars().take(400).collect();
            let more = if short.len() < first.len() {
                " ..."
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "peer unavailable here (full reason in results.json): {short}{more}"
            );
        }
        let _ = writeln!(out);
        servers::table(self.server_rows, &mut out);
        self.scale.table(&mut out);
        let _ = writeln!(out);
        self.soak.table(&mut out);
        let _ = writeln!(out);
        let _ = writeln!(out, "goals:");
        for goal in self.goals() {
            let _ = writeln!(
                out,
                "  {}. {}: {} -> {}",
                goal.number,
                goal.what,
                goal.measured,
                volume::holds(goal.holds)
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "correctness (every traced run):");
        for scenario in self.scenarios.iter().filter(|s| s.mode != Mode::Untraced) {
            let reports: Vec<(Totals, LoopStats)> = scenario
                .tracer
                .iter()
                .filter_map(|r| match r.outcome {
                    Outcome::Report(t) => Some((t, r.stats)),
                    Outcome::Peer { .. } => None,
                })
                .collect();
            let list = |values: Vec<u64>| {
                values
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let ok = scenario.tracer.len() - scenario.problems().len();
            let live = LIVE_BLOCKS * scenario.workload.threads;
            let detail = match scenario.mode {
                Mode::Peer => format!(
                    "outstanding {} (expected {live})",
                    list(
                        scenario
                            .tracer
                            .iter()
                            .filter_map(|r| match r.outcome {
                                Outcome::Peer { outstanding } => Some(outstanding),
                                Outcome::Report(_) => None,
                            })
                            .collect()
                    )
                ),
                Mode::Sampled => format!(
                    "sampled {} (expected {}); estimated outstanding bytes {} vs true {} (sigma <= {}, {ESTIMATE_SIGMAS} sigma allowed); dropped {}",
                    list(reports.iter().map(|(t, _)| t.allocs_seen).collect()),
                    reports
                        .iter()
                        .map(|(_, stats)| {
                            let (low, high) = sampled_count_range(stats);
                            format!("{low}..={high}")
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    list(reports.iter().map(|(t, _)| t.outstanding_bytes).collect()),
                    list(reports.iter().map(|(_, s)| s.live_bytes).collect()),
                    list(
                        reports
                            .iter()
                            .map(|(_, s)| estimate_sigma(s).round() as u64)
                            .collect()
                    ),
                    list(reports.iter().map(|(t, _)| t.dropped).collect()),
                ),
                mode => format!(
                    "allocs_seen {}; frees_seen {}; expected gap {}; outstanding {}; dropped {}",
                    list(reports.iter().map(|(t, _)| t.allocs_seen).collect()),
                    list(reports.iter().map(|(t, _)| t.frees_seen).collect()),
                    if mode == Mode::Floor {
                        "0 (nothing recorded)".to_owned()
                    } else {
                        format!(
                            "{live} ({LIVE_BLOCKS} live x {})",
                            scenario.workload.threads
                        )
                    },
                    list(reports.iter().map(|(t, _)| t.outstanding_allocs).collect()),
                    list(reports.iter().map(|(t, _)| t.dropped).collect()),
                ),
            };
            let _ = writeln!(
                out,
                "  {}: {ok}/{} ok; {detail}",
                scenario.name(),
                scenario.tracer.len()
            );
        }
        let _ = writeln!(
            out,
            "  scale: {}; soak: {}",
            if self.scale.problems().is_empty() {
                "ok"
            } else {
                "FAILED"
            },
            if self.soak.problems().is_empty() {
                "ok"
            } else {
                "FAILED"
            }
        );
        for failure in self.failures {
            let _ = writeln!(out, "  FAILED: {failure}");
        }
        for warning in self.peer_warnings {
            let _ = writeln!(out, "  warning (peer): {warning}");
        }
        out
    }
}

/// A table of columns: the header, a rule, then the rows, with a rule again before each row
/// `new_group(i)` (i > 0) says starts a group. The first column is left-aligned, the rest right.
pub(super) fn write_columns(
    out: &mut String,
    header: &[&str],
    cells: &[Vec<String>],
    new_group: impl Fn(usize) -> bool,
) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let _ = if i == 0 {
                write!(s, "{cell:<w$}")
            } else {
                write!(s, " | {cell:>w$}")
            };
        }
        s.trim_end().to_owned()
    };
    let rule = widths
        .iter()
        .map(|w| "-".repeat(*w))
        .collect::<Vec<_>>()
        .join("-+-");
    let _ = writeln!(out, "{}", line(header));
    let _ = writeln!(out, "{rule}");
    for (i, row) in cells.iter().enumerate() {
        if i > 0 && new_group(i) {
            let _ = writeln!(out, "{rule}");
        }
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&refs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_groups_get_a_rule() {
        let cells = vec![
            vec!["C 1 thread, untraced".to_owned(), "74.8".to_owned()],
            vec!["C 1 thread, leaktrace".to_owned(), "2640.6".to_owned()],
            vec!["redis, untraced".to_owned(), "-".to_owned()],
        ];
        let mut out = String::new();
        write_columns(&mut out, &["scenario", "ns/pair"], &cells, |i| i == 2);
        assert_eq!(
            out,
            "scenario              | ns/pair\n\
             ----------------------+--------\n\
             C 1 thread, untraced  |    74.8\n\
             C 1 thread, leaktrace |  2640.6\n\
             ----------------------+--------\n\
             redis, untraced       |       -\n"
        );
    }
}

//! `cargo xtask bench`: what tracing costs per malloc/free pair.
//!
//! Runs the workload `bench/alloc_loop.c` (each thread frees one of its 64 live blocks and
//! mallocs a new one, `pairs` times) untraced and under the release build of leaktrace, each
//! [`RUNS`] times with the runs interleaved, and reports the medians: ns per pair, slowdown,
//! leaktrace's own CPU time and peak RSS, and how long leaktrace takes to attach. The traced
//! runs double as a correctness check: leaktrace must see every malloc and free of the loop
//! and drop nothing.
//!
//! Prints a table on stdout and writes the same as JSON to `target/bench/results.json`.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{Workspace, cmd, cmd::say, setup};

/// Runs of every scenario; the table shows their median.
const RUNS: usize = 5;
/// Blocks each workload thread keeps live (`LIVE_BLOCKS` in alloc_loop.c).
const LIVE_BLOCKS: u64 = 64;
/// Allocations outside the loop that leaktrace may legitimately see on top of it.
const STRAY_ALLOCS: u64 = 16;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const LOOP_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

const PEERS_NOTE: &str = "peers (bcc memleak, bpftrace: the classic per-event design), sampling \
                          and startup goals are not in this table yet; they come in a later issue";

/// One workload configuration, run untraced and traced.
struct Workload {
    name: &'static str,
    /// For file names.
    slug: &'static str,
    /// Iterations per thread.
    pairs: u64,
    threads: u64,
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "C 1 thread",
        slug: "c-1-thread",
        pairs: 200_000,
        threads: 1,
    },
    Workload {
        name: "C 2 threads",
        slug: "c-2-threads",
        pairs: 100_000,
        threads: 2,
    },
];

/// What one traced run measured about leaktrace itself.
struct TracerRun {
    /// User + system time up to the end of the workload's loop.
    cpu_s: f64,
    /// VmHWM up to the end of the workload's loop.
    peak_rss_mib: f64,
    /// From launching leaktrace to its `leaktrace: attached` line.
    attach_ms: f64,
    totals: Totals,
}

/// The report's `totals` fields the correctness check reads.
#[derive(Debug, Clone, Copy)]
struct Totals {
    allocs_seen: u64,
    frees_seen: u64,
    outstanding_allocs: u64,
    dropped: u64,
}

impl Totals {
    /// Whether leaktrace saw what the workload did: every malloc of the loop, every free of a
    /// block allocated in the loop (the initial blocks predate it, so their frees are not
    /// counted), exactly the last 64 blocks per thread outstanding (give or take the odd stdio
    /// allocation), and nothing dropped.
    fn check(&self, workload: &Workload) -> std::result::Result<(), String> {
        let loop_allocs = workload.pairs * workload.threads;
        let live = LIVE_BLOCKS * workload.threads;
        let gap = self.allocs_seen.saturating_sub(self.frees_seen);
        let mut problems = Vec::new();
        if self.dropped != 0 {
            problems.push(format!("dropped {} (expected 0)", self.dropped));
        }
        if !(loop_allocs..=loop_allocs + STRAY_ALLOCS).contains(&self.allocs_seen) {
            problems.push(format!(
                "allocs_seen {} (expected {loop_allocs})",
                self.allocs_seen
            ));
        }
        if self.frees_seen > self.allocs_seen || !(live..=live + STRAY_ALLOCS).contains(&gap) {
            problems.push(format!(
                "allocs_seen - frees_seen = {gap} (expected {live}: {LIVE_BLOCKS} live blocks x {} thread(s))",
                workload.threads
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// All runs of one scenario (a workload, untraced or traced).
struct Scenario<'a> {
    workload: &'a Workload,
    traced: bool,
    ns_per_pair: Vec<f64>,
    tracer: Vec<TracerRun>,
}

impl Scenario<'_> {
    fn name(&self) -> String {
        let how = if self.traced { "leaktrace" } else { "untraced" };
        format!("{}, {how}", self.workload.name)
    }

    fn tracer_median(&self, field: impl Fn(&TracerRun) -> f64) -> Option<f64> {
        median(self.tracer.iter().map(field).collect())
    }

    fn failures(&self) -> Vec<String> {
        self.tracer
            .iter()
            .enumerate()
            .filter_map(|(i, run)| {
                run.totals
                    .check(self.workload)
                    .err()
                    .map(|problem| format!("{} run {}: {problem}", self.name(), i + 1))
            })
            .collect()
    }
}

/// The machine the numbers come from.
struct Machine {
    nproc: usize,
    kernel: String,
    cpu: String,
}

impl Machine {
    fn read() -> Self {
        let nproc = thread::available_parallelism().map_or(0, usize::from);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .filter_map(|line| line.split_once(':'))
                    .find(|(key, _)| key.trim() == "model name")
                    .map(|(_, value)| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Self { nproc, kernel, cpu }
    }
}

impl Workspace {
    /// `cargo xtask bench`; setup has run. Returns 1 when a correctness check failed.
    pub(crate) fn bench(&self) -> Result<u8> {
        if !setup::is_root() {
            say!("bench: not running as root; leaktrace needs root (or CAP_BPF and CAP_PERFMON)");
        }
        self.build(true)?;
        let leaktrace = self.target.join("release/leaktrace");
        let out_dir = self.target.join("bench");
        fs::create_dir_all(&out_dir)
            .with_context(|| format!("could not create {}", out_dir.display()))?;
        let exe = out_dir.join("alloc_loop");
        let mut gcc = cmd::new("gcc", ["-O2", "-g", "-pthread", "-Wall", "-Wextra", "-o"]);
        gcc.arg(self.short(&exe))
            .arg("bench/alloc_loop.c")
            .current_dir(&self.root);
        cmd::run(&mut gcc)?;

        let machine = Machine::read();
        let started = Instant::now();
        let mut scenarios: Vec<Scenario> = WORKLOADS
            .iter()
            .flat_map(|workload| {
                [false, true].map(|traced| Scenario {
                    workload,
                    traced,
                    ns_per_pair: Vec::new(),
                    tracer: Vec::new(),
                })
            })
            .collect();

        // Warm up (page cache, allocator, CPU frequency); not counted.
        for workload in &WORKLOADS {
            Target::start(&exe, workload)?.run_untraced()?;
        }
        // Interleaved, so drift over the run affects every scenario alike.
        for run in 1..=RUNS {
            for scenario in &mut scenarios {
                let workload = scenario.workload;
                let target = Target::start(&exe, workload)?;
                if scenario.traced {
                    let report = out_dir.join(format!("leaktrace-{}.json", workload.slug));
                    let (ns, tracer) = target.run_traced(&leaktrace, &report)?;
                    let t = tracer.totals;
                    say!(
                        "bench: {} run {run}/{RUNS}: {ns:.1} ns/pair; attach {:.0} ms, CPU {:.2} s, peak RSS {:.1} MiB; allocs_seen {}, frees_seen {} (gap {}, expected {}), outstanding {}, dropped {}",
                        scenario.name(),
                        tracer.attach_ms,
                        tracer.cpu_s,
                        tracer.peak_rss_mib,
                        t.allocs_seen,
                        t.frees_seen,
                        t.allocs_seen.saturating_sub(t.frees_seen),
                        LIVE_BLOCKS * workload.threads,
                        t.outstanding_allocs,
                        t.dropped,
                    );
                    scenario.ns_per_pair.push(ns);
                    scenario.tracer.push(tracer);
                } else {
                    let ns = target.run_untraced()?;
                    say!(
                        "bench: {} run {run}/{RUNS}: {ns:.1} ns/pair",
                        scenario.name()
                    );
                    scenario.ns_per_pair.push(ns);
                }
            }
        }
        say!("bench: done in {:.0} s", started.elapsed().as_secs_f64());

        let rows = rows(&scenarios);
        let failures: Vec<String> = scenarios.iter().flat_map(Scenario::failures).collect();
        print!("{}", render_table(&machine, &rows, &scenarios, &failures));
        let results = out_dir.join("results.json");
        fs::write(
            &results,
            render_json(&machine, &rows, &scenarios, &failures),
        )
        .with_context(|| format!("could not write {}", results.display()))?;
        say!("bench: wrote {}", self.short(&results).display());
        if failures.is_empty() {
            Ok(0)
        } else {
            say!(
                "bench: correctness check failed in {} run(s)",
                failures.len()
            );
            Ok(1)
        }
    }
}

/// One line of the table.
struct Row {
    name: String,
    ns_per_pair: f64,
    slowdown: f64,
    cpu_s: Option<f64>,
    peak_rss_mib: Option<f64>,
    attach_ms: Option<f64>,
}

fn rows(scenarios: &[Scenario]) -> Vec<Row> {
    scenarios
        .iter()
        .map(|scenario| {
            let ns_per_pair = median(scenario.ns_per_pair.clone()).unwrap_or(f64::NAN);
            let untraced = scenarios
                .iter()
                .find(|s| !s.traced && std::ptr::eq(s.workload, scenario.workload))
                .and_then(|s| median(s.ns_per_pair.clone()))
                .unwrap_or(f64::NAN);
            Row {
                name: scenario.name(),
                ns_per_pair,
                slowdown: ns_per_pair / untraced,
                cpu_s: scenario.tracer_median(|t| t.cpu_s),
                peak_rss_mib: scenario.tracer_median(|t| t.peak_rss_mib),
                attach_ms: scenario.tracer_median(|t| t.attach_ms),
            }
        })
        .collect()
}

fn render_table(
    machine: &Machine,
    rows: &[Row],
    scenarios: &[Scenario],
    failures: &[String],
) -> String {
    let opt = |value: Option<f64>, decimals: usize| {
        value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "leaktrace bench: cost per malloc/free pair, median of {RUNS} runs"
    );
    let _ = writeln!(
        out,
        "machine: {} CPUs, kernel {}, {}",
        machine.nproc, machine.kernel, machine.cpu
    );
    let _ = writeln!(out);
    let header = [
        "scenario",
        "ns/pair",
        "slowdown",
        "tracer CPU s",
        "tracer RSS MiB",
        "attach ms",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            [
                row.name.clone(),
                format!("{:.1}", row.ns_per_pair),
                format!("{:.1}x", row.slowdown),
                opt(row.cpu_s, 2),
                opt(row.peak_rss_mib, 1),
                opt(row.attach_ms, 0),
            ]
        })
        .collect();
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
        for (i, cell) in cells.iter().enumerate() {
            if i == 0 {
                let _ = write!(s, "{cell:<w$}", w = widths[i]);
            } else {
                let _ = write!(s, " | {cell:>w$}", w = widths[i]);
            }
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(&header));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "{}", rule.join("-+-"));
    for row in &cells {
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&refs));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "ns/pair: wall time of the timed loop / pairs per thread (with N threads: wall time per pair per thread)."
    );
    let _ = writeln!(
        out,
        "slowdown: vs the same workload untraced. The probes' in-kernel cost is charged to the workload, so it is in ns/pair."
    );
    let _ = writeln!(
        out,
        "tracer CPU s / RSS: leaktrace's user+system time and VmHWM, read when the loop ends (before SIGINT)."
    );
    let _ = writeln!(
        out,
        "attach ms: from launching leaktrace to its `leaktrace: attached` line (not timed in ns/pair)."
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "correctness (leaktrace's totals, every traced run):");
    for scenario in scenarios.iter().filter(|s| s.traced) {
        let t: Vec<Totals> = scenario.tracer.iter().map(|r| r.totals).collect();
        let list = |f: fn(&Totals) -> u64| {
            t.iter()
                .map(|t| f(t).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let ok = scenario.tracer.len() - scenario.failures().len();
        let _ = writeln!(
            out,
            "  {}: {ok}/{} ok; allocs_seen {}; frees_seen {}; expected gap {} ({LIVE_BLOCKS} live x {}); outstanding {}; dropped {}",
            scenario.name(),
            scenario.tracer.len(),
            list(|t| t.allocs_seen),
            list(|t| t.frees_seen),
            LIVE_BLOCKS * scenario.workload.threads,
            scenario.workload.threads,
            list(|t| t.outstanding_allocs),
            list(|t| t.dropped),
        );
    }
    for failure in failures {
        let _ = writeln!(out, "  FAILED: {failure}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "note: {PEERS_NOTE}.");
    out
}

fn render_json(
    machine: &Machine,
    rows: &[Row],
    scenarios: &[Scenario],
    failures: &[String],
) -> String {
    let num = |v: f64| {
        if v.is_finite() {
            format!("{v:.3}")
        } else {
            "null".to_owned()
        }
    };
    let opt = |v: Option<f64>| v.map_or_else(|| "null".to_owned(), num);
    let list = |values: Vec<String>| format!("[{}]", values.join(", "));
    let mut out = String::new();
    let _ = writeln!(out, "{{");
    let _ = writeln!(
        out,
        "  \"machine\": {{\"nproc\": {}, \"kernel\": {}, \"cpu\": {}}},",
        machine.nproc,
        json_str(&machine.kernel),
        json_str(&machine.cpu)
    );
    let _ = writeln!(out, "  \"runs\": {RUNS},");
    let _ = writeln!(out, "  \"scenarios\": [");
    for (i, (row, scenario)) in rows.iter().zip(scenarios).enumerate() {
        let correctness = if scenario.traced {
            let totals = scenario
                .tracer
                .iter()
                .map(|r| {
                    let t = r.totals;
                    format!(
                        "{{\"allocs_seen\": {}, \"frees_seen\": {}, \"outstanding_allocs\": {}, \"dropped\": {}}}",
                        t.allocs_seen, t.frees_seen, t.outstanding_allocs, t.dropped
                    )
                })
                .collect();
            format!(
                "{{\"ok\": {}, \"expected_gap\": {}, \"totals\": {}}}",
                scenario.failures().is_empty(),
                LIVE_BLOCKS * scenario.workload.threads,
                list(totals)
            )
        } else {
            "null".to_owned()
        };
        let runs =
            |f: fn(&TracerRun) -> f64| list(scenario.tracer.iter().map(|r| num(f(r))).collect());
        let _ = writeln!(
            out,
            "    {{\"name\": {}, \"threads\": {}, \"pairs_per_thread\": {}, \"traced\": {}, \
             \"ns_per_pair_median\": {}, \"slowdown\": {}, \"tracer_cpu_s\": {}, \
             \"tracer_peak_rss_mib\": {}, \"attach_ms\": {}, \"ns_per_pair_runs\": {}, \
             \"tracer_cpu_s_runs\": {}, \"tracer_peak_rss_mib_runs\": {}, \"attach_ms_runs\": {}, \
             \"correctness\": {}}}{}",
            json_str(&row.name),
            scenario.workload.threads,
            scenario.workload.pairs,
            scenario.traced,
            num(row.ns_per_pair),
            num(row.slowdown),
            opt(row.cpu_s),
            opt(row.peak_rss_mib),
            opt(row.attach_ms),
            list(scenario.ns_per_pair.iter().map(|v| num(*v)).collect()),
            runs(|t| t.cpu_s),
            runs(|t| t.peak_rss_mib),
            runs(|t| t.attach_ms),
            correctness,
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    let _ = writeln!(out, "  ],");
    let _ = writeln!(
        out,
        "  \"failures\": {},",
        list(failures.iter().map(|f| json_str(f)).collect())
    );
    let _ = writeln!(out, "  \"note\": {}", json_str(PEERS_NOTE));
    let _ = writeln!(out, "}}");
    out
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Reads lines from `source` on a thread; the channel disconnects at EOF.
fn line_reader(source: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line starting with `prefix`; `seen` collects every line read, for errors.
fn wait_for_line(
    lines: &Receiver<String>,
    prefix: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
) -> std::result::Result<String, &'static str> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(RecvTimeoutError::Timeout) => return Err("timed out"),
            Err(RecvTimeoutError::Disconnected) => return Err("its output ended"),
        }
    }
}

/// A running alloc_loop, stopped before its loop.
struct Target {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    pid: u32,
    workload_name: &'static str,
}

impl Target {
    /// Starts the workload and waits for its `ready` line.
    fn start(exe: &Path, workload: &Workload) -> Result<Self> {
        let mut command = Command::new(exe);
        command
            .arg(workload.pairs.to_string())
            .arg(workload.threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start `{}`", cmd::display(&command)))?;
        let stdin = child.stdin.take();
        let stdout = line_reader(child.stdout.take().context("no stdout pipe")?);
        let pid = child.id();
        let mut target = Self {
            child,
            stdin,
            stdout,
            pid,
            workload_name: workload.name,
        };
        target.expect("ready", READY_TIMEOUT)?;
        Ok(target)
    }

    fn expect(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let mut seen = Vec::new();
        wait_for_line(&self.stdout, prefix, timeout, &mut seen).map_err(|why| {
            anyhow::anyhow!(
                "alloc_loop ({}, pid {}) printed no `{prefix}` line: {why}{}",
                self.workload_name,
                self.pid,
                if seen.is_empty() {
                    String::new()
                } else {
                    format!("; it printed: {}", seen.join(" / "))
                }
            )
        })
    }

    /// Sends one line to the workload: the first starts the loop, the second lets it exit.
    fn send_line(&mut self) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("alloc_loop's stdin is closed")?;
        stdin
            .write_all(b"\n")
            .and_then(|()| stdin.flush())
            .context("could not write to alloc_loop")
    }

    /// Starts the loop and returns its ns per pair.
    fn run_loop(&mut self) -> Result<f64> {
        self.send_line()?;
        let line = self.expect("ns_per_pair=", LOOP_TIMEOUT)?;
        let value = &line["ns_per_pair=".len()..];
        value
            .trim()
            .parse()
            .with_context(|| format!("alloc_loop printed a bad result: {line}"))
    }

    /// Lets the workload free its blocks and exit; fails unless it exits 0.
    fn finish(mut self) -> Result<()> {
        self.send_line()?;
        self.stdin = None;
        let status = wait_timeout(&mut self.child, EXIT_TIMEOUT)?;
        if !status.success() {
            bail!(
                "alloc_loop ({}) failed ({})",
                self.workload_name,
                cmd::describe(status)
            );
        }
        Ok(())
    }

    fn run_untraced(mut self) -> Result<f64> {
        let ns = self.run_loop()?;
        self.finish()?;
        Ok(ns)
    }

    /// Attaches leaktrace, runs the loop, measures leaktrace, stops it with SIGINT and reads
    /// its report from `report`.
    fn run_traced(mut self, leaktrace: &Path, report: &Path) -> Result<(f64, TracerRun)> {
        let _ = fs::remove_file(report);
        let mut tracer = Tracer::start(leaktrace, self.pid, report)?;
        let ns = self.run_loop()?;
        let (cpu_s, peak_rss_mib) = tracer.usage()?;
        tracer.stop()?;
        self.finish()?;
        let totals = read_totals(report)?;
        Ok((
            ns,
            TracerRun {
                cpu_s,
                peak_rss_mib,
                attach_ms: tracer.attach_ms,
                totals,
            },
        ))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // Only after an error: finish() has reaped it otherwise.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running leaktrace, attached to a [`Target`].
struct Tracer {
    child: Child,
    stderr: Receiver<String>,
    pid: u32,
    attach_ms: f64,
}

impl Tracer {
    fn start(leaktrace: &Path, pid: u32, report: &Path) -> Result<Self> {
        let mut command = Command::new(leaktrace);
        command
            .arg("--pid")
            .arg(pid.to_string())
            .args(["--interval", "1s", "--min-age", "0s", "--format", "json"])
            .arg("--output")
            .arg(report)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let launched = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start `{}`", cmd::display(&command)))?;
        let stderr = line_reader(child.stderr.take().context("no stderr pipe")?);
        let mut tracer = Self {
            pid: child.id(),
            child,
            stderr,
            attach_ms: 0.0,
        };
        let mut seen = Vec::new();
        if let Err(why) = wait_for_line(
            &tracer.stderr,
            "leaktrace: attached",
            ATTACH_TIMEOUT,
            &mut seen,
        ) {
            let status = match tracer.child.try_wait() {
                Ok(Some(status)) => format!(" ({})", cmd::describe(status)),
                _ => String::new(),
            };
            bail!(
                "`{}` did not attach: {why}{status}; stderr:\n{}",
                cmd::display(&command),
                seen.join("\n")
            );
        }
        tracer.attach_ms = launched.elapsed().as_secs_f64() * 1e3;
        Ok(tracer)
    }

    /// leaktrace's CPU time (user + system, s) and peak RSS (MiB) so far, from /proc.
    fn usage(&self) -> Result<(f64, f64)> {
        let stat_path = format!("/proc/{}/stat", self.pid);
        let stat = fs::read_to_string(&stat_path)
            .with_context(|| format!("could not read {stat_path}: has leaktrace exited?"))?;
        // Fields after the command name, which is in parentheses and may contain spaces:
        // state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("unexpected {stat_path}: {stat}"))
        };
        let (utime, stime) = (ticks(14 - 3)?, ticks(15 - 3)?);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as f64 } else { 100.0 };
        let cpu_s = (utime + stime) as f64 / hz;

        let status_path = format!("/proc/{}/status", self.pid);
        let status = fs::read_to_string(&status_path)
            .with_context(|| format!("could not read {status_path}"))?;
        let hwm_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM in {status_path}"))?;
        Ok((cpu_s, hwm_kib as f64 / 1024.0))
    }

    /// SIGINT, then waits for leaktrace to write its report and exit 0.
    fn stop(&mut self) -> Result<()> {
        let pid = libc::pid_t::try_from(self.pid).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        if unsafe { libc::kill(pid, libc::SIGINT) } != 0 {
            bail!(
                "could not send SIGINT to leaktrace (pid {pid}): {}",
                std::io::Error::last_os_error()
            );
        }
        let status = wait_timeout(&mut self.child, EXIT_TIMEOUT)?;
        if !status.success() {
            let stderr: Vec<String> = self.stderr.try_iter().collect();
            bail!(
                "leaktrace failed ({}); stderr:\n{}",
                cmd::describe(status),
                stderr.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Only after an error: stop() has reaped it otherwise.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("could not wait for a child")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!(
                "pid {} did not exit within {} s",
                child.id(),
                timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The `totals` the correctness check needs, from leaktrace's JSON report.
fn read_totals(report: &Path) -> Result<Totals> {
    let text = fs::read_to_string(report)
        .with_context(|| format!("leaktrace wrote no report to {}", report.display()))?;
    let totals = text
        .find("\"totals\"")
        .map(|at| &text[at..])
        .with_context(|| format!("no totals in {}", report.display()))?;
    // Each key appears once in the totals object, before anything nested.
    let field = |key: &str| -> Result<u64> {
        let quoted = format!("\"{key}\"");
        let rest = totals
            .find(&quoted)
            .map(|at| totals[at + quoted.len()..].trim_start())
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim_start)
            .with_context(|| format!("no totals.{key} in {}", report.display()))?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits
            .parse()
            .with_context(|| format!("bad totals.{key} in {}", report.display()))
    };
    Ok(Totals {
        allocs_seen: field("allocs_seen")?,
        frees_seen: field("frees_seen")?,
        outstanding_allocs: field("outstanding_allocs")?,
        dropped: field("dropped")?,
    })
}

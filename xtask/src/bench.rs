//! `cargo xtask bench`: what tracing costs per malloc/free pair, next to its floor and a peer, and
//! how leaktrace holds up at volume.
//!
//! **Per pair.** Three workloads run the same loop (each thread frees one of its 64 live blocks
//! and mallocs a new one of 16..4096 bytes, `pairs` times): `bench/alloc_loop.c` on one thread
//! and on two, and `bench/cgo_loop`, a Go program doing it through cgo (`C.free`, `C.malloc`)
//! on one goroutine locked to its thread. Each runs in five ways, each [`RUNS`] times with the
//! runs interleaved, and the table shows the medians:
//!
//! - **untraced**;
//! - **floor**: the release build of leaktrace with `--empty-probes`: the same probe sites as
//!   full tracing, with allocator programs that return at once, so only the cost of the uprobes
//!   remains (on a Go target its Go probes, `runtime.cgocall`'s included, still run in full);
//! - **leaktrace**: full tracing;
//! - **sampled**: leaktrace `--sample-bytes 512KiB`: every probe still fires, but an unsampled
//!   call skips the stack walk and the map, and the free of an unsampled block is a miss;
//! - **peer**: `bench/memleak_classic.bt` under bpftrace, the classic per-event design
//!   (malloc entry + return probes, a probe at free's first instruction). bpftrace comes from
//!   Debian's package ([`setup::bpftrace`]); when it is missing or cannot run here, the table says
//!   so instead of failing.
//!
//! The columns are ns per pair, slowdown vs untraced, ratio to the floor (the median of each
//! round's ratio to its own floor run: a VM's speed drifts over minutes), peer/leaktrace, the
//! tracer's own CPU time and peak RSS, and the time from launching the tracer to its probes
//! being attached. The traced runs double as correctness checks: leaktrace must see every malloc
//! and free of the loop and drop nothing; sampled, it must sample about one allocation per
//! 512 KiB of the loop's bytes and estimate the outstanding bytes within its error; the floor must
//! record nothing.
//!
//! **Per allocator.** The one-thread loop also runs linked with jemalloc, tcmalloc (minimal) and
//! mimalloc (`-ljemalloc`, ...), untraced, at its floor, under leaktrace and under the peer (whose
//! probes go on that allocator's library): each allocator's row against its own floor. glibc's
//! row is `C 1 thread`. `LEAKTRACE_BENCH_WORKLOADS=slug,...` runs only the named workloads.
//!
//! **Real workloads** ([`servers`]): redis-server (jemalloc) under redis-benchmark and nginx
//! (one worker, glibc) under wrk, untraced, under leaktrace (full, then sampled, with
//! `--bpf-stats`) and under the peer, in interleaved rounds: throughput ratios, added µs per
//! allocation pair and each program's kernel cost. Their slugs are `redis` and `nginx`.
//!
//! **Attach and detach** ([`links`]): leaktrace on an idle alloc_loop with each kind of link
//! (sessions, `uprobe_multi`, per-probe), the medians of launch to attached, the probes' own
//! attach, and SIGINT to the report and to the exit.
//!
//! **Reachability** ([`reach`]): a `--reachability` scan of a 1 GiB heap of a million blocks,
//! the whole scan stopped and at the default pause bound: the target's pause, MB/s, and the
//! lost blocks found exactly.
//!
//! **At volume** ([`volume`]): *scale* traces `bench/scale.c`, 1,000,000 outstanding allocations
//! from 50,000 distinct stacks, and times leaktrace's final report from SIGINT and measures its
//! peak RSS; *soak* traces `bench/soak.c`, 500,000 allocations a second on two threads for 60 s
//! (`LEAKTRACE_BENCH_SOAK_S` seconds), and checks that every allocation is either seen or counted
//! as dropped.
//!
//! Only the correctness checks (and leaktrace failing to run) make the bench fail; slow numbers
//! and missed goals never do. Prints a table on stdout and writes the same as JSON to
//! `target/bench/results.json`.

mod allocators;
mod links;
mod reach;
mod results;
mod runner;
mod servers;
mod table;
mod volume;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{Workspace, cmd, cmd::say, setup};

use allocators::Allocator;
use results::{Results, Totals, read_totals};
use runner::{LEAKTRACE_READY, Stopped, Target, Tracer, leaktrace_command};

/// Runs of every per-pair scenario; the table shows their median.
const RUNS: usize = 5;
/// Rounds stop early (never below [`MIN_RUNS`]) when another would end past this, so the whole
/// bench (the volume scenarios take another one and a half minutes) stays within about ten
/// minutes on a slow machine.
const TIME_BUDGET: Duration = Duration::from_secs(330);
const MIN_RUNS: usize = 3;
/// Blocks each workload thread keeps live (`LIVE_BLOCKS` in alloc_loop.c).
const LIVE_BLOCKS: u64 = 64;
/// Allocations outside the loop that a tracer may legitimately see on top of it.
const STRAY_ALLOCS: u64 = 16;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const LOOP_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The sampled mode's `--sample-bytes`.
const SAMPLE_BYTES: &str = "512KiB";
const SAMPLE_BYTES_N: u64 = 512 << 10;
/// Sampled runs: how many allocations leaktrace sampled may differ from the loop's bytes / 512 KiB
/// (the expected count) by this many times the count's standard deviation (at most its square
/// root: each allocation is sampled independently).
const SAMPLED_COUNT_SIGMAS: f64 = 5.0;
/// Sampled runs: the estimate of the outstanding bytes may differ from the truth by this many
/// standard errors. The error of the estimator is sqrt(sum of s^2 (1 - p) / p) over the live
/// blocks (p = 1 - exp(-s / R)), at most sqrt(R x live bytes), the bound used. With ~130 KiB live
/// per thread, a sampled live block is rare (one run in four) and stands for ~512 KiB, so the
/// estimate is 0 or a multiple of ~512 KiB: a wide margin keeps false alarms near 1 in 10,000.
const ESTIMATE_SIGMAS: f64 = 6.0;

/// Goal 2: full tracing costs at most this many times the floor per pair.
const FLOOR_RATIO_GOAL: f64 = 1.3;
/// Runs of a scenario that spread wider than this (slowest - fastest over the median) were
/// disturbed by other work on the machine; the goals say so.
const NOISY_SPREAD: f64 = 0.2;
/// Goal 5: from launching leaktrace to its probes being attached.
const ATTACH_GOAL_MS: f64 = 200.0;

/// The peer's script, relative to the workspace root.
const PEER_SCRIPT: &str = "bench/memleak_classic.bt";
/// The line the peer's BEGIN probe prints once every probe is attached.
const PEER_READY: &str = "memleak_classic: attached";

/// The per-pair workload programs; both take `<pairs> <threads>` and speak the same protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    /// `bench/alloc_loop.c`, linked with an allocator.
    AllocLoop(Allocator),
    /// `bench/cgo_loop`: the same loop in Go through cgo.
    CgoLoop,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Self::AllocLoop(Allocator::Glibc) => "alloc_loop",
            Self::AllocLoop(Allocator::Jemalloc) => "alloc_loop-jemalloc",
            Self::AllocLoop(Allocator::Tcmalloc) => "alloc_loop-tcmalloc",
            Self::AllocLoop(Allocator::Mimalloc) => "alloc_loop-mimalloc",
            Self::CgoLoop => "cgo_loop",
        }
    }
}

/// The bench's programs, built into `target/bench`.
struct Exes {
    /// alloc_loop linked with each of [`Allocator::ALL`], in that order.
    alloc_loop: [PathBuf; 4],
    cgo_loop: PathBuf,
    scale: PathBuf,
    soak: PathBuf,
    reach_heap: PathBuf,
}

impl Exes {
    fn of(&self, program: Program) -> &Path {
        match program {
            Program::AllocLoop(allocator) => &self.alloc_loop[allocator as usize],
            Program::CgoLoop => &self.cgo_loop,
        }
    }
}

/// One workload configuration, run in every [`Mode`].
struct Workload {
    name: &'static str,
    /// For file names.
    slug: &'static str,
    program: Program,
    /// Iterations per thread.
    pairs: u64,
    threads: u64,
    /// The modes it runs in: all for the main workloads; the allocator rows skip sampling.
    modes: &'static [Mode],
}

impl Workload {
    /// The allocator under the loop: the one the peer's probes go on.
    fn allocator(&self) -> Allocator {
        match self.program {
            Program::AllocLoop(allocator) => allocator,
            Program::CgoLoop => Allocator::Glibc,
        }
    }
}

/// Limits the per-pair workloads to these slugs (comma-separated), for a quick partial run.
const WORKLOADS_ENV: &str = "LEAKTRACE_BENCH_WORKLOADS";

/// The workloads to run: all, or those [`WORKLOADS_ENV`] names.
fn selected_workloads() -> Result<Vec<&'static Workload>> {
    let Some(wanted) = std::env::var_os(WORKLOADS_ENV).filter(|v| !v.is_empty()) else {
        return Ok(WORKLOADS.iter().collect());
    };
    let wanted = wanted.to_string_lossy().into_owned();
    wanted
        .split(',')
        .map(str::trim)
        // The real workloads' slugs select those ([`servers::selected`]).
        .filter(|slug| !servers::is_slug(slug))
        .map(|slug| {
            WORKLOADS.iter().find(|w| w.slug == slug).with_context(|| {
                let known: Vec<&str> = WORKLOADS
                    .iter()
                    .map(|w| w.slug)
                    .chain(servers::SERVER_WORKLOADS.iter().map(|w| w.slug))
                    .collect();
                format!(
                    "{WORKLOADS_ENV}: no workload `{slug}` (known: {})",
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// The modes of the per-allocator rows: each allocator against its own floor and the peer.
const ALLOCATOR_MODES: &[Mode] = &[Mode::Untraced, Mode::Floor, Mode::Leaktrace, Mode::Peer];

/// The one-thread loop on another allocator (glibc's row is "C 1 thread").
const fn on_allocator(allocator: Allocator, name: &'static str, slug: &'static str) -> Workload {
    Workload {
        name,
        slug,
        program: Program::AllocLoop(allocator),
        pairs: 200_000,
        threads: 1,
        modes: ALLOCATOR_MODES,
    }
}

static WORKLOADS: [Workload; 6] = [
    Workload {
        name: "C 1 thread",
        slug: "c-1-thread",
        program: Program::AllocLoop(Allocator::Glibc),
        pairs: 200_000,
        threads: 1,
        modes: &Mode::ALL,
    },
    Workload {
        name: "C 2 threads",
        slug: "c-2-threads",
        program: Program::AllocLoop(Allocator::Glibc),
        pairs: 100_000,
        threads: 2,
        modes: &Mode::ALL,
    },
    Workload {
        name: "cgo 1 thread",
        slug: "cgo-1-thread",
        program: Program::CgoLoop,
        pairs: 100_000,
        threads: 1,
        modes: &Mode::ALL,
    },
    on_allocator(
        Allocator::Jemalloc,
        "C 1 thread, jemalloc",
        "c-1-thread-jemalloc",
    ),
    on_allocator(
        Allocator::Tcmalloc,
        "C 1 thread, tcmalloc",
        "c-1-thread-tcmalloc",
    ),
    on_allocator(
        Allocator::Mimalloc,
        "C 1 thread, mimalloc",
        "c-1-thread-mimalloc",
    ),
];

/// How a scenario runs the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Untraced,
    /// leaktrace `--empty-probes`: its probe sites, programs that return at once.
    Floor,
    /// leaktrace, full tracing.
    Leaktrace,
    /// leaktrace `--sample-bytes` [`SAMPLE_BYTES`].
    Sampled,
    /// bpftrace running [`PEER_SCRIPT`].
    Peer,
}

impl Mode {
    /// The order of the table, and of the scenarios within a round.
    const ALL: [Self; 5] = [
        Self::Untraced,
        Self::Floor,
        Self::Leaktrace,
        Self::Sampled,
        Self::Peer,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Floor => "floor (empty probes)",
            Self::Leaktrace => "leaktrace",
            Self::Sampled => "leaktrace sampled 512KiB",
            Self::Peer => "peer (bpftrace)",
        }
    }

    /// For JSON and file names.
    fn key(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Floor => "floor",
            Self::Leaktrace => "leaktrace",
            Self::Sampled => "sampled",
            Self::Peer => "peer",
        }
    }

    /// Runs of leaktrace (rather than of nothing or of the peer).
    fn is_leaktrace(self) -> bool {
        matches!(self, Self::Floor | Self::Leaktrace | Self::Sampled)
    }
}

/// What the workload printed after its timed loop.
#[derive(Debug, Clone, Copy, Default)]
struct LoopStats {
    ns_per_pair: f64,
    /// Bytes malloc'd by the loop, all threads.
    loop_bytes: u64,
    /// Bytes of the blocks still live after it (the truth for the sampled estimate).
    live_bytes: u64,
}

impl LoopStats {
    /// `ns_per_pair=<f> loop_bytes=<n> live_bytes=<n>`.
    fn parse(line: &str) -> Option<Self> {
        let mut stats = Self::default();
        let (mut ns, mut loop_bytes, mut live_bytes) = (false, false, false);
        for token in line.split_whitespace() {
            let (key, value) = token.split_once('=')?;
            match key {
                "ns_per_pair" => (stats.ns_per_pair, ns) = (value.parse().ok()?, true),
                "loop_bytes" => (stats.loop_bytes, loop_bytes) = (value.parse().ok()?, true),
                "live_bytes" => (stats.live_bytes, live_bytes) = (value.parse().ok()?, true),
                _ => {}
            }
        }
        (ns && loop_bytes && live_bytes).then_some(stats)
    }
}

/// What one traced run measured about the tracer.
struct TracerRun {
    /// User + system time up to the end of the workload's loop.
    cpu_s: f64,
    /// VmHWM up to the end of the workload's loop.
    peak_rss_mib: f64,
    /// From launching the tracer to its probes being attached.
    attach_ms: f64,
    outcome: Outcome,
    /// What the workload reported about the run's loop.
    stats: LoopStats,
}

/// What a traced run's tracer reported, for the correctness checks.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// The `totals` of leaktrace's report (full tracing or floor).
    Report(Totals),
    /// The blocks the peer still held when stopped (its `@allocs` entries).
    Peer { outstanding: u64 },
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

    /// Sampled runs: nothing dropped, about one allocation per [`SAMPLE_BYTES`] of the loop's
    /// bytes sampled, and the estimate of the outstanding bytes within its error of the truth.
    fn check_sampled(&self, stats: &LoopStats) -> std::result::Result<(), String> {
        let mut problems = Vec::new();
        if self.dropped != 0 {
            problems.push(format!("dropped {} (expected 0)", self.dropped));
        }
        let (low, high) = sampled_count_range(stats);
        if !(low..=high).contains(&self.allocs_seen) {
            problems.push(format!(
                "sampled {} allocations (expected {low}..={high}: loop bytes {} / {SAMPLE_BYTES})",
                self.allocs_seen, stats.loop_bytes
            ));
        }
        if self.frees_seen > self.allocs_seen {
            problems.push(format!(
                "frees_seen {} > allocs_seen {}",
                self.frees_seen, self.allocs_seen
            ));
        }
        let sigma = estimate_sigma(stats);
        let error = self.outstanding_bytes as f64 - stats.live_bytes as f64;
        if error.abs() > ESTIMATE_SIGMAS * sigma {
            problems.push(format!(
                "estimated {} outstanding bytes, truth {} (error {error:.0}, more than {ESTIMATE_SIGMAS} x {sigma:.0})",
                self.outstanding_bytes, stats.live_bytes
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The floor's programs return at once: its report must be empty, or the floor is not one.
    fn check_empty(&self) -> std::result::Result<(), String> {
        if self.allocs_seen == 0 && self.frees_seen == 0 && self.dropped == 0 {
            Ok(())
        } else {
            Err(format!(
                "--empty-probes recorded allocs_seen {}, frees_seen {}, dropped {} (expected all 0)",
                self.allocs_seen, self.frees_seen, self.dropped
            ))
        }
    }
}

/// The range of sampled allocations a sampled run may report: each allocation of s bytes is
/// sampled with probability 1 - exp(-s/R) ~ s/R (s <= 4096 << R), independently, so the count has
/// mean ~ loop bytes / R and a standard deviation below its square root; plus stray allocations.
fn sampled_count_range(stats: &LoopStats) -> (u64, u64) {
    let expected = stats.loop_bytes as f64 / SAMPLE_BYTES_N as f64;
    let slack = SAMPLED_COUNT_SIGMAS * expected.sqrt().max(1.0);
    (
        (expected - slack).max(0.0).floor() as u64,
        (expected + slack).ceil() as u64 + STRAY_ALLOCS,
    )
}

/// The bound on the standard error of the sampled estimate of the live bytes: sqrt(R x live).
fn estimate_sigma(stats: &LoopStats) -> f64 {
    (SAMPLE_BYTES_N as f64 * stats.live_bytes as f64).sqrt()
}

/// All runs of one scenario (a workload in one mode).
struct Scenario<'a> {
    workload: &'a Workload,
    mode: Mode,
    ns_per_pair: Vec<f64>,
    tracer: Vec<TracerRun>,
}

impl Scenario<'_> {
    fn name(&self) -> String {
        format!("{}, {}", self.workload.name, self.mode.label())
    }

    fn ns_median(&self) -> Option<f64> {
        median(self.ns_per_pair.clone())
    }

    fn tracer_median(&self, field: impl Fn(&TracerRun) -> f64) -> Option<f64> {
        median(self.tracer.iter().map(field).collect())
    }

    /// What is wrong with each run, as `name run N: problem`. For leaktrace and the floor these
    /// are failures; for the peer, warnings (it is not ours to fix, but its figures are suspect).
    fn problems(&self) -> Vec<String> {
        let live = LIVE_BLOCKS * self.workload.threads;
        self.tracer
            .iter()
            .enumerate()
            .filter_map(|(i, run)| {
                let checked = match (self.mode, run.outcome) {
                    (Mode::Leaktrace, Outcome::Report(t)) => t.check(self.workload),
                    (Mode::Sampled, Outcome::Report(t)) => t.check_sampled(&run.stats),
                    (Mode::Floor, Outcome::Report(t)) => t.check_empty(),
                    (Mode::Peer, Outcome::Peer { outstanding }) => {
                        if (live..=live + STRAY_ALLOCS).contains(&outstanding) {
                            Ok(())
                        } else {
                            Err(format!(
                                "held {outstanding} blocks when stopped (expected {live})"
                            ))
                        }
                    }
                    (mode, outcome) => Err(format!("{mode:?} run with outcome {outcome:?}")),
                };
                checked
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
    /// The load averages (1, 5, 15 min) when the bench started: anything well above 0 means
    /// other work shares the machine.
    load_at_start: String,
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
        Self {
            nproc,
            kernel,
            cpu,
            load_at_start: load_average(),
        }
    }
}

/// The 1, 5 and 15 minute load averages, from /proc/loadavg.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// The peer: bpftrace and the script it runs, or why it cannot run here.
struct Peer {
    bpftrace: PathBuf,
    script: PathBuf,
    /// `bpftrace --version`.
    version: Option<String>,
    /// Set when bpftrace is missing or a run failed; no further peer runs are made.
    unavailable: Option<String>,
}

impl Peer {
    fn find(root: &Path) -> Self {
        let script = root.join(PEER_SCRIPT);
        let mut peer = Self {
            bpftrace: PathBuf::from("bpftrace"),
            script,
            version: None,
            unavailable: None,
        };
        if !setup::bpftrace() {
            peer.unavailable = Some("bpftrace is not installed and could not be installed".into());
            return peer;
        }
        if let Some(path) = cmd::which("bpftrace") {
            peer.bpftrace = path;
        }
        match cmd::output(&mut cmd::new(
            &peer.bpftrace.to_string_lossy(),
            ["--version"],
        )) {
            Ok(version) => peer.version = Some(version.trim().to_owned()),
            Err(err) => peer.unavailable = Some(format!("`bpftrace --version` failed: {err:#}")),
        }
        peer
    }

    /// "bpftrace v0.17.0 running bench/memleak_classic.bt".
    fn describe(&self) -> String {
        format!(
            "{} running {PEER_SCRIPT}",
            self.version.as_deref().unwrap_or("bpftrace")
        )
    }
}

impl Workspace {
    /// `cargo xtask bench`; setup has run. Returns 1 when a correctness check failed.
    pub(crate) fn bench(&self) -> Result<u8> {
        if !setup::is_root() {
            say!(
                "bench: not running as root; leaktrace and bpftrace need root (or CAP_BPF and CAP_PERFMON)"
            );
        }
        let mut peer = Peer::find(&self.root);
        self.build(true)?;
        let leaktrace = self.target.join("release/leaktrace");
        let out_dir = self.target.join("bench");
        fs::create_dir_all(&out_dir)
            .with_context(|| format!("could not create {}", out_dir.display()))?;
        let exes = self.build_bench_programs(&out_dir)?;

        let machine = Machine::read();
        let started = Instant::now();
        let workloads = selected_workloads()?;
        let mut scenarios: Vec<Scenario> = workloads
            .iter()
            .flat_map(|&workload| {
                workload.modes.iter().map(move |&mode| Scenario {
                    workload,
                    mode,
                    ns_per_pair: Vec::new(),
                    tracer: Vec::new(),
                })
            })
            .collect();

        // Warm up (page cache, allocator, CPU frequency); not counted.
        for &workload in &workloads {
            Target::start(exes.of(workload.program), workload)?.run_untraced()?;
        }
        // Interleaved, so drift over the run affects every scenario alike.
        let mut runs = 0;
        while runs < RUNS {
            let round_started = Instant::now();
            runs += 1;
            for scenario in &mut scenarios {
                self.bench_run(scenario, runs, &exes, &leaktrace, &out_dir, &mut peer)?;
            }
            let ends_at = started.elapsed() + round_started.elapsed();
            if (MIN_RUNS..RUNS).contains(&runs) && ends_at > TIME_BUDGET {
                say!(
                    "bench: stopping after {runs} runs: another would end past {} s",
                    TIME_BUDGET.as_secs()
                );
                break;
            }
        }
        let per_pair_s = started.elapsed().as_secs_f64();
        say!("bench: per-pair scenarios done in {per_pair_s:.0} s");

        let server_scenarios = servers::run(&servers::selected(), &leaktrace, &out_dir, &mut peer)?;
        let server_rows = servers::rows(&server_scenarios);
        say!(
            "bench: real workloads done in {:.0} s",
            started.elapsed().as_secs_f64() - per_pair_s
        );

        let link_rows = links::run(
            exes.of(Program::AllocLoop(Allocator::Glibc)),
            &leaktrace,
            &out_dir,
        )?;

        let scale = volume::scale(&exes.scale, &leaktrace, &out_dir)?;
        let soak = volume::soak(&exes.soak, &leaktrace, &out_dir)?;
        let reach_rows = reach::run(&exes.reach_heap, &leaktrace, &out_dir)?;
        let elapsed_s = started.elapsed().as_secs_f64();
        say!("bench: done in {elapsed_s:.0} s");

        let rows = rows(&scenarios);
        let failures: Vec<String> = scenarios
            .iter()
            .filter(|s| s.mode != Mode::Peer)
            .flat_map(Scenario::problems)
            .chain(
                server_scenarios
                    .iter()
                    .flat_map(servers::ServerScenario::problems),
            )
            .chain(scale.problems())
            .chain(soak.problems())
            .chain(reach_rows.iter().filter_map(reach::ReachRow::problem))
            .collect();
        let peer_warnings: Vec<String> = scenarios
            .iter()
            .filter(|s| s.mode == Mode::Peer)
            .flat_map(Scenario::problems)
            .collect();
        let report = Report {
            machine: &machine,
            runs,
            elapsed_s,
            load_at_end: load_average(),
            rows: &rows,
            scenarios: &scenarios,
            server_rows: &server_rows,
            scale: &scale,
            soak: &soak,
            failures: &failures,
            peer: &peer,
            peer_warnings: &peer_warnings,
        };
        print!("{}", report.table());
        print!("{}", links::table(&link_rows));
        print!("{}", reach::table(&reach_rows));
        let results = out_dir.join("results.json");
        fs::write(&results, Results::of(&report).to_json()?)
            .with_context(|| format!("could not write {}", results.display()))?;
        say!("bench: wrote {}", self.short(&results).display());
        let links_json = out_dir.join("links.json");
        fs::write(&links_json, serde_json::to_string_pretty(&link_rows)?)
            .with_context(|| format!("could not write {}", links_json.display()))?;
        let reach_json = out_dir.join("reachability.json");
        fs::write(&reach_json, serde_json::to_string_pretty(&reach_rows)?)
            .with_context(|| format!("could not write {}", reach_json.display()))?;
        if failures.is_empty() {
            Ok(0)
        } else {
            say!(
                "bench: correctness check failed: {} problem(s)",
                failures.len()
            );
            Ok(1)
        }
    }

    /// Compiles the C workloads with gcc and the cgo one with setup's Go, into `out_dir`.
    fn build_bench_programs(&self, out_dir: &Path) -> Result<Exes> {
        let exes = Exes {
            alloc_loop: Allocator::ALL.map(|allocator| out_dir.join(allocator.exe_name())),
            cgo_loop: out_dir.join("cgo_loop"),
            scale: out_dir.join("scale"),
            soak: out_dir.join("soak"),
            reach_heap: out_dir.join("reach_heap"),
        };
        let loops = Allocator::ALL
            .iter()
            .zip(&exes.alloc_loop)
            .map(|(allocator, exe)| (exe, "bench/alloc_loop.c", allocator.link_flag()));
        for (exe, source, link_flag) in loops.chain([
            (&exes.scale, "bench/scale.c", None),
            (&exes.soak, "bench/soak.c", None),
            (&exes.reach_heap, reach::SOURCE, None),
        ]) {
            let mut gcc = cmd::new("gcc", ["-O2", "-g", "-pthread", "-Wall", "-Wextra", "-o"]);
            gcc.arg(self.short(exe))
                .arg(source)
                .args(link_flag)
                .current_dir(&self.root);
            cmd::run(&mut gcc)?;
        }
        let go = setup::go();
        let mut build = Command::new(&go);
        build
            .args(["build", "-o"])
            .arg(&exes.cgo_loop)
            .arg(".")
            .current_dir(self.root.join("bench/cgo_loop"))
            .env("CGO_ENABLED", "1")
            // go.mod's `go` line is old: never let the go command fetch another toolchain.
            .env("GOTOOLCHAIN", "local");
        cmd::run(&mut build)?;
        Ok(exes)
    }

    /// One run of one scenario; a peer that fails is marked unavailable, not an error.
    fn bench_run(
        &self,
        scenario: &mut Scenario,
        run: usize,
        exes: &Exes,
        leaktrace: &Path,
        out_dir: &Path,
        peer: &mut Peer,
    ) -> Result<()> {
        let workload = scenario.workload;
        let exe = exes.of(workload.program);
        let name = scenario.name();
        let tracer = match scenario.mode {
            Mode::Untraced => {
                let stats = Target::start(exe, workload)?.run_untraced()?;
                say!("bench: {name} run {run}: {:.1} ns/pair", stats.ns_per_pair);
                scenario.ns_per_pair.push(stats.ns_per_pair);
                return Ok(());
            }
            mode @ (Mode::Floor | Mode::Leaktrace | Mode::Sampled) => {
                let report =
                    out_dir.join(format!("leaktrace-{}-{}.json", mode.key(), workload.slug));
                let extra: &[&str] = match mode {
                    Mode::Floor => &["--empty-probes"],
                    Mode::Sampled => &["--sample-bytes", SAMPLE_BYTES],
                    _ => &[],
                };
                Target::start(exe, workload)?.run_leaktrace(leaktrace, &report, extra)?
            }
            Mode::Peer => {
                if peer.unavailable.is_some() {
                    return Ok(());
                }
                match Target::start(exe, workload).and_then(|target| {
                    target.run_peer(&peer.bpftrace, &peer.script, workload.allocator())
                }) {
                    Ok(measured) => measured,
                    Err(err) => {
                        say!("bench: {name} run {run}: the peer failed: {err:#}");
                        say!("bench: no further peer runs");
                        peer.unavailable = Some(format!("{err:#}"));
                        return Ok(());
                    }
                }
            }
        };
        let live = LIVE_BLOCKS * workload.threads;
        let outcome = match (scenario.mode, tracer.outcome) {
            (Mode::Sampled, Outcome::Report(t)) => {
                let (low, high) = sampled_count_range(&tracer.stats);
                format!(
                    "sampled {} (expected {low}..={high}), frees_seen {}, outstanding bytes {} estimated vs {} (sigma <= {:.0}), dropped {}",
                    t.allocs_seen,
                    t.frees_seen,
                    t.outstanding_bytes,
                    tracer.stats.live_bytes,
                    estimate_sigma(&tracer.stats),
                    t.dropped,
                )
            }
            (mode, Outcome::Report(t)) => format!(
                "allocs_seen {}, frees_seen {} (gap {}, expected {}), outstanding {}, dropped {}",
                t.allocs_seen,
                t.frees_seen,
                t.allocs_seen.saturating_sub(t.frees_seen),
                if mode == Mode::Floor { 0 } else { live },
                t.outstanding_allocs,
                t.dropped,
            ),
            (_, Outcome::Peer { outstanding }) => {
                format!("outstanding {outstanding} (expected {live})")
            }
        };
        say!(
            "bench: {name} run {run}: {:.1} ns/pair; attach {:.0} ms, CPU {:.2} s, peak RSS {:.1} MiB; {outcome}",
            tracer.stats.ns_per_pair,
            tracer.attach_ms,
            tracer.cpu_s,
            tracer.peak_rss_mib,
        );
        scenario.ns_per_pair.push(tracer.stats.ns_per_pair);
        scenario.tracer.push(tracer);
        Ok(())
    }
}

/// One line of the table.
struct Row {
    name: String,
    mode: Mode,
    ns_per_pair: Option<f64>,
    /// (slowest run - fastest run) / median: a wide spread means something else used the
    /// machine meanwhile.
    spread: Option<f64>,
    /// vs untraced.
    slowdown: Option<f64>,
    /// vs the floor (traced modes): the median of each round's ratio to that round's floor
    /// run, made just before. The machine's speed drifts over a bench (a VM's neighbours),
    /// and the two medians apart can come from different phases of it.
    vs_floor: Option<f64>,
    /// (largest - smallest) / median of those ratios.
    vs_floor_spread: Option<f64>,
    /// The peer's ns/pair over leaktrace's (peer rows).
    peer_vs_leaktrace: Option<f64>,
    cpu_s: Option<f64>,
    peak_rss_mib: Option<f64>,
    attach_ms: Option<f64>,
}

fn rows(scenarios: &[Scenario]) -> Vec<Row> {
    scenarios
        .iter()
        .map(|scenario| {
            let ns_per_pair = scenario.ns_median();
            let scenario_of = |mode: Mode| {
                scenarios
                    .iter()
                    .find(|s| s.mode == mode && s.workload.slug == scenario.workload.slug)
            };
            let of = |mode: Mode| scenario_of(mode).and_then(Scenario::ns_median);
            let floor_ratios = match (scenario.mode, scenario_of(Mode::Floor)) {
                (Mode::Untraced, _) | (_, None) => Vec::new(),
                (_, Some(floor)) => paired_ratios(&scenario.ns_per_pair, &floor.ns_per_pair),
            };
            let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
            Row {
                name: scenario.name(),
                mode: scenario.mode,
                ns_per_pair,
                spread: spread(&scenario.ns_per_pair),
                slowdown: ratio(ns_per_pair, of(Mode::Untraced)),
                vs_floor: median(floor_ratios.clone()),
                vs_floor_spread: spread(&floor_ratios),
                peer_vs_leaktrace: if scenario.mode == Mode::Peer {
                    ratio(ns_per_pair, of(Mode::Leaktrace))
                } else {
                    None
                },
                cpu_s: scenario.tracer_median(|t| t.cpu_s),
                peak_rss_mib: scenario.tracer_median(|t| t.peak_rss_mib),
                attach_ms: scenario.tracer_median(|t| t.attach_ms),
            }
        })
        .collect()
}

/// Everything the table and the JSON file show.
struct Report<'a> {
    machine: &'a Machine,
    /// Runs per scenario actually made.
    runs: usize,
    elapsed_s: f64,
    /// The load averages when the bench ended.
    load_at_end: String,
    rows: &'a [Row],
    scenarios: &'a [Scenario<'a>],
    /// The real workloads ([`servers`]).
    server_rows: &'a [servers::ServerRow],
    scale: &'a volume::Scale,
    soak: &'a volume::Soak,
    failures: &'a [String],
    peer: &'a Peer,
    peer_warnings: &'a [String],
}

/// One of the goals, as this run measured it.
struct Goal {
    number: u8,
    what: String,
    measured: String,
    holds: Option<bool>,
}

impl Report<'_> {
    /// The median ns/pair of `workload` in `mode`.
    fn ns(&self, workload: &Workload, mode: Mode) -> Option<f64> {
        self.row(workload, mode).and_then(|row| row.ns_per_pair)
    }

    fn row(&self, workload: &Workload, mode: Mode) -> Option<&Row> {
        self.rows
            .iter()
            .zip(self.scenarios)
            .find(|(_, s)| s.mode == mode && s.workload.slug == workload.slug)
            .map(|(row, _)| row)
    }

    /// Per workload: what the probes alone, leaktrace's programs (full and sampled) and the peer
    /// add per pair.
    fn breakdown(&self) -> Vec<(&'static str, [Option<f64>; 4])> {
        self.workloads_run()
            .into_iter()
            .map(|workload| {
                let minus = |a: Mode, b: Mode| Some(self.ns(workload, a)? - self.ns(workload, b)?);
                (
                    workload.name,
                    [
                        minus(Mode::Floor, Mode::Untraced),
                        minus(Mode::Leaktrace, Mode::Floor),
                        minus(Mode::Sampled, Mode::Floor),
                        minus(Mode::Peer, Mode::Untraced),
                    ],
                )
            })
            .collect()
    }

    /// The workloads of this run (all, unless [`WORKLOADS_ENV`] chose some), in table order.
    fn workloads_run(&self) -> Vec<&'static Workload> {
        WORKLOADS
            .iter()
            .filter(|w| self.scenarios.iter().any(|s| s.workload.slug == w.slug))
            .collect()
    }

    /// Goals 2 to 5 of the issue, as measured in this run.
    fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();

        let ratios: Vec<(&str, Option<f64>)> = self
            .workloads_run()
            .into_iter()
            .map(|w| {
                let ratio = self.row(w, Mode::Leaktrace).and_then(|row| row.vs_floor);
                (w.name, ratio)
            })
            .collect();
        // The ratio is only as good as the runs behind it: say when they scatter.
        let widest = self
            .workloads_run()
            .into_iter()
            .filter_map(|w| self.row(w, Mode::Leaktrace)?.vs_floor_spread)
            .fold(0.0, f64::max);
        let caveat = if widest > NOISY_SPREAD {
            format!(
                " (but the rounds' ratios spread up to {:.0}%: disturbed, rerun)",
                widest * 100.0
            )
        } else {
            String::new()
        };
        goals.push(Goal {
            number: 2,
            what: format!("full tracing within {FLOOR_RATIO_GOAL}x the floor per pair"),
            measured: ratios
                .iter()
                .map(|(name, r)| {
                    format!(
                        "{name} {}",
                        r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
                + &caveat,
            holds: ratios
                .iter()
                .map(|(_, r)| r.map(|r| r <= FLOOR_RATIO_GOAL))
                .collect::<Option<Vec<bool>>>()
                .map(|all| all.into_iter().all(|ok| ok)),
        });

        let sampled_ok = self
            .scenarios
            .iter()
            .filter(|s| s.mode == Mode::Sampled)
            .all(|s| !s.tracer.is_empty() && s.problems().is_empty());
        let sampled: Vec<String> = self
            .workloads_run()
            .into_iter()
            .filter(|w| w.modes.contains(&Mode::Sampled))
            .map(|w| {
                let row = self.row(w, Mode::Sampled);
                match (
                    row.and_then(|r| r.ns_per_pair),
                    row.and_then(|r| r.slowdown),
                    row.and_then(|r| r.vs_floor),
                    self.ns(w, Mode::Leaktrace),
                ) {
                    (Some(ns), Some(slowdown), Some(floor), Some(full)) => format!(
                        "{} {ns:.0} ns/pair ({slowdown:.1}x untraced, {floor:.2}x the floor, {:.0}% of full tracing)",
                        w.name,
                        100.0 * ns / full
                    ),
                    _ => format!("{} -", w.name),
                }
            })
            .collect();
        goals.push(Goal {
            number: 3,
            what: format!(
                "the cost of byte sampling (--sample-bytes {SAMPLE_BYTES}) shown, its estimates checked"
            ),
            measured: sampled.join("; "),
            holds: Some(sampled_ok),
        });

        let scale = self.scale;
        goals.push(Goal {
            number: 4,
            what: format!(
                "report of {} outstanding allocations from {} stacks within {} s",
                volume::thousands(volume::Scale::allocs()),
                volume::thousands(volume::SCALE_STACKS),
                volume::SCALE_REPORT_GOAL_S
            ),
            measured: scale.stopped.report_s.map_or_else(
                || "no report".to_owned(),
                |s| format!("{s:.2} s (exit after {:.2} s)", scale.stopped.exit_s),
            ),
            holds: scale
                .report_holds()
                .map(|ok| ok && scale.problems().is_empty()),
        });
        goals.push(Goal {
            number: 4,
            what: format!(
                "leaktrace within {} MiB meanwhile",
                volume::SCALE_RSS_GOAL_MIB
            ),
            measured: format!("peak RSS {:.1} MiB", scale.stopped.peak_rss_mib),
            holds: Some(scale.rss_holds()),
        });
        let soak = self.soak;
        goals.push(Goal {
            number: 4,
            what: format!(
                "{} allocations/s sustained for {} s, nothing lost that is not counted in dropped",
                volume::thousands(volume::SOAK_RATE),
                volume::SOAK_GOAL_SECONDS
            ),
            measured: format!(
                "{}/s for {:.1} s; {} allocations: {} seen + {} dropped",
                volume::thousands(soak.rate().round() as u64),
                soak.result.elapsed_s,
                volume::thousands(soak.result.allocs),
                volume::thousands(soak.totals.allocs_seen),
                volume::thousands(soak.totals.dropped),
            ),
            holds: Some(soak.holds()),
        });

        // Launches of leaktrace with its default map sizes: the medians of the per-pair rows and
        // the soak (scale's bigger maps take longer to create; shown apart).
        let mut attach: Vec<(String, f64)> = self
            .rows
            .iter()
            .filter(|row| row.mode.is_leaktrace())
            .filter_map(|row| Some((row.name.clone(), row.attach_ms?)))
            .collect();
        attach.push(("soak".to_owned(), soak.attach_ms));
        let slowest = attach.iter().max_by(|a, b| a.1.total_cmp(&b.1)).cloned();
        let fastest = attach.iter().map(|a| a.1).min_by(f64::total_cmp);
        goals.push(Goal {
            number: 5,
            what: format!("from launch to attached within {ATTACH_GOAL_MS} ms"),
            measured: match (&slowest, fastest) {
                (Some((name, max)), Some(min)) => format!(
                    "{min:.0} to {max:.0} ms (the medians of the {} leaktrace rows and the soak's launch, default map sizes; slowest: {name}); scale, with maps for {} allocations: {:.0} ms",
                    attach.len() - 1,
                    volume::thousands(volume::SCALE_MAX_ALLOCS),
                    scale.attach_ms
                ),
                _ => "-".to_owned(),
            },
            holds: slowest.map(|(_, max)| max < ATTACH_GOAL_MS),
        });
        goals
    }
}

/// (max - min) / median of `values`, when there are at least two.
/// `a[i] / b[i]` for the runs both have (run i of every scenario is in round i).
fn paired_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a / b).collect()
}

fn spread(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    Some((max - min) / median(values.to_vec())?)
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

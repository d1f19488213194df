//! Goroutine leaks of a Go program (targets/go/goroutines/main.go), built with the recent Go and
//! Go 1.19, plain and stripped: each leak's goroutines are one site of the report's
//! `goroutines` section, at the exact `go` statement, with their exact count, state and the line
//! they block at; a pool that finished is gone, a long-lived pool is `steady`, a leak that goes
//! on is `growing`. One trace per build is shared by the tests of this file.
//!
//! The expectations are checked against the Go runtime's own goroutine dump of the same target
//! (`targets_agree_with_runtime_dump`, no tracer), so that they hold for what Go really does.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use leaktrace_tests::*;

const TARGET: &str = "goroutines";
const FILE: &str = "main.go";

/// A leak of the target: goroutines that block forever.
struct Leak {
    /// The function holding the `go` statement.
    created_in: &'static str,
    /// Marker of the `go` statement.
    go_mark: &'static str,
    /// The function the goroutines run.
    start: &'static str,
    /// How many stay blocked.
    live: u64,
    /// Their state (the runtime's wait reason).
    state: &'static str,
    /// Marker of the line they block at (in `start`).
    block_mark: &'static str,
}

/// 1. The caller returns on its error path before receiving the result.
const PREMATURE: Leak = Leak {
    created_in: "main.fetchChecked",
    go_mark: "premature-go",
    start: "main.fetchChecked.func1",
    live: 7,
    state: "chan send",
    block_mark: "premature-send",
};

/// 2. The caller's `select` timed out (time.After); the worker sends its late result.
const TIMEOUT: Leak = Leak {
    created_in: "main.queryWithTimeout",
    go_mark: "timeout-go",
    start: "main.queryWithTimeout.func1",
    live: 5,
    state: "chan send",
    block_mark: "timeout-send",
};

/// 3. Ten senders, the receiver takes one value and leaves.
const SENDERS: Leak = Leak {
    created_in: "main.firstAnswer",
    go_mark: "senders-go",
    start: "main.firstAnswer.func1",
    live: 9,
    state: "chan send",
    block_mark: "senders-send",
};

/// 4. Consumers ranging over a channel the producer never closes.
const RANGE: Leak = Leak {
    created_in: "main.sumWithConsumers",
    go_mark: "range-go",
    start: "main.sumWithConsumers.func1",
    live: 4,
    state: "chan receive",
    block_mark: "range-recv",
};

/// 8. Leaked before `ready`, so before leaktrace attached: no creation event was ever seen.
const BEFORE_ATTACH: Leak = Leak {
    created_in: "main.startSubscribers",
    go_mark: "nilchan-go",
    start: "main.startSubscribers.func1",
    live: 3,
    state: "chan receive (nil chan)",
    block_mark: "nilchan-recv",
};

const LEAKS: [&Leak; 5] = [&PREMATURE, &TIMEOUT, &SENDERS, &RANGE, &BEFORE_ATTACH];

/// 5. The finishing pool's workers (8, all exited before `done`).
const POOL_CREATED_IN: &str = "main.runPool";
const POOL_START: &str = "main.runPool.func1";
const POOL_WORKERS: u64 = 8;

/// 6. The long-lived pool.
const STEADY_CREATED_IN: &str = "main.startSteadyPool";
const STEADY_START: &str = "main.startSteadyPool.func1";
const STEADY_WORKERS: u64 = 6;

/// 7. The growing leak: one goroutine every 100 ms from `done` on, each waiting in a select.
const GROWING_CREATED_IN: &str = "main.handleRequest";
const GROWING_START: &str = "main.handleRequest.func1";
const GROWING_PER_S: f64 = 10.0;
const GROWING_STATE: &str = "select";

/// The goroutines alive at `done` as runtime.NumGoroutine counts them (the target checks it
/// before `done`): main, the five leaks, the steady pool and its feeder.
const LIVE_AT_DONE: u64 = 1 + 7 + 5 + 9 + 4 + 3 + 6 + 1;

/// After `done`: long enough for four interval samples of the growing and steady sites.
const SETTLE: Duration = Duration::from_millis(4500);

/// The target's stdout up to `done`, the same on every run.
const EXPECTED_OUTPUT: &[&str] = &[
    "ready",
    "premature: 7 of 7 lookups abandoned",
    "timeout: 5 of 5 queries timed out",
    "senders: 1 of 10 answers taken (valid true)",
    "range: sum 4950 with 4 consumers",
    "pool: 8 workers, sum of squares 40425",
    "steady: 6 workers serving",
    "goroutines 36",
    "growing: one goroutine every 100ms",
    "done",
];

fn line(mark: &str) -> u32 {
    go_marked_line(TARGET, mark)
}

static LEAKS_RUN: PerGoBuild<GoTraced> = PerGoBuild::new();

/// The target in its leaks mode, traced from `ready` to SETTLE after `done`.
fn leaks_run(b: GoBuild) -> &'static GoTraced {
    LEAKS_RUN.get(b, || {
        let t = go_trace(&go_build(TARGET, b), &[], SETTLE);
        assert_eq!(
            t.target_lines, EXPECTED_OUTPUT,
            "the target's output under tracing"
        );
        t
    })
}

per_go_build!(
    premature_return,
    timeout_leak,
    senders_one_receiver,
    range_never_closed,
    leaked_before_attach,
    finished_pool_not_reported,
    steady_pool,
    growing_leak,
    goroutine_totals,
    sites_well_formed,
    complete_run_same_output,
);

per_go_toolchain!(
    targets_agree_with_runtime_dump,
    goroutine_profile_opens_in_pprof
);

/// The one site of LEAK: created by its function at its `go` line, started at its function,
/// exactly its count, all in its state, blocked at its line.
fn check_leak(b: GoBuild, leak: &Leak) {
    let r = &leaks_run(b).report;
    let ctx = r.describe();
    let g = r.goroutines();
    let site = g.site_created_at(FILE, line(leak.go_mark));
    let want_created = CodeLocation {
        function: Some(leak.created_in.to_string()),
        file: site.created_by.file.clone(),
        line: Some(u64::from(line(leak.go_mark))),
    };
    assert_eq!(site.created_by, want_created, "created_by\n{ctx}");
    assert_eq!(
        site.start_function.as_deref(),
        Some(leak.start),
        "start_function\n{ctx}"
    );
    assert_eq!(site.live, leak.live, "live\n{ctx}");
    assert_eq!(
        site.states,
        BTreeMap::from([(leak.state.to_string(), leak.live)]),
        "states\n{ctx}"
    );
    let blocked = site
        .blocked_at
        .as_ref()
        .unwrap_or_else(|| panic!("no blocked_at for {}\n{ctx}", site.describe()));
    assert!(blocked.file_is(FILE), "blocked_at file\n{ctx}");
    assert_eq!(
        (blocked.function.as_deref(), blocked.line),
        (Some(leak.start), Some(u64::from(line(leak.block_mark)))),
        "blocked_at\n{ctx}"
    );
}

/// `--format pprof` writes the goroutine profile beside the heap one, and `go tool pprof`
/// reads it: the premature-return site's 7 goroutines, their blocking line and creator.
fn goroutine_profile_opens_in_pprof(toolchain: GoToolchain) {
    let b = GoBuild {
        toolchain,
        variant: GoVariant::Plain,
    };
    let dir = TempDir::new("goroutine-pprof");
    let out = dir.path().join("leaks.pb.gz");
    let out_arg = out.to_string_lossy().into_owned();
    let run = go_trace_with(
        &go_build(TARGET, b),
        &[],
        Duration::from_secs(2),
        &[
            "--format",
            "pprof",
            "--output",
            &out_arg,
            "--interval",
            "1s",
        ],
    );
    let profile = dir.path().join("leaks.goroutines.pb.gz");
    assert!(
        run.finished.stderr.contains("goroutine profile written to"),
        "{}",
        run.finished.stderr
    );
    let text = GoToolchain::Recent.pprof(&["-traces"], &profile);
    assert!(text.contains("Type: goroutine"), "{text}");
    // One trace per site: its count, then the blocking frame, the start function, the creator.
    let trace = text
        .split("-----------+")
        .find(|t| t.contains("main.fetchChecked.func1") && t.contains("main.fetchChecked\n"))
        .unwrap_or_else(|| panic!("no premature-return trace in\n{text}"));
    assert!(trace.contains("chan send 7"), "{trace}");
    let first = trace
        .lines()
        .find(|l| l.contains("main.fetchChecked.func1"))
        .unwrap_or_default();
    assert!(first.trim_start().starts_with("7 "), "count 7: {trace}");
}

/// 7 goroutines blocked in `chan send` at the send of fetchChecked's closure.
fn premature_return(b: GoBuild) {
    check_leak(b, &PREMATURE);
}

/// 5 workers whose caller timed out, blocked in `chan send`.
fn timeout_leak(b: GoBuild) {
    check_leak(b, &TIMEOUT);
}

/// 9 of the 10 senders, blocked in `chan send`: one site for the `go` in the loop.
fn senders_one_receiver(b: GoBuild) {
    check_leak(b, &SENDERS);
}

/// 4 consumers blocked in `chan receive` at their `for ... range` line.
fn range_never_closed(b: GoBuild) {
    check_leak(b, &RANGE);
}

/// 3 goroutines that existed before leaktrace attached: reported like the others, from the
/// runtime's own list of goroutines, blocked in `chan receive (nil chan)`.
fn leaked_before_attach(b: GoBuild) {
    check_leak(b, &BEFORE_ATTACH);
}

/// The pool's 8 workers exited before `done`: no site at their `go` statement or of their
/// function, although they were created while traced.
fn finished_pool_not_reported(b: GoBuild) {
    let r = &leaks_run(b).report;
    let g = r.goroutines();
    let pool_line = line("pool-go");
    for s in &g.sites {
        assert!(
            !s.created_at(FILE, pool_line)
                && s.start_function.as_deref() != Some(POOL_START)
                && s.created_by.function.as_deref() != Some(POOL_CREATED_IN),
            "the finished pool ({POOL_WORKERS} workers, all exited) is reported: {}\n{}",
            s.describe(),
            r.describe()
        );
    }
}

/// 6 workers alive for the whole run, their count constant: `steady`, no growth; most of the
/// time they wait for the next request at their `range` line.
fn steady_pool(b: GoBuild) {
    let r = &leaks_run(b).report;
    let ctx = r.describe();
    let g = r.goroutines();
    let site = g.site_created_at(FILE, line("steady-go"));
    assert_eq!(
        site.created_by.function.as_deref(),
        Some(STEADY_CREATED_IN),
        "{ctx}"
    );
    assert_eq!(site.start_function.as_deref(), Some(STEADY_START), "{ctx}");
    assert_eq!(site.live, STEADY_WORKERS, "live\n{ctx}");
    assert_eq!(
        site.verdict.as_deref(),
        Some("steady"),
        "a pool of constant size, sampled {SETTLE:?} after it started\n{ctx}"
    );
    assert!(
        site.growth_per_s.abs() < 0.5,
        "growth_per_s {} of a constant pool\n{ctx}",
        site.growth_per_s
    );
    if let Some(blocked) = &site.blocked_at {
        assert_eq!(
            (blocked.function.as_deref(), blocked.line),
            (Some(STEADY_START), Some(u64::from(line("steady-recv")))),
            "blocked_at\n{ctx}"
        );
    }
    let feeder = g.site_created_at(FILE, line("feeder-go"));
    assert_eq!(feeder.live, 1, "the pool's feeder\n{ctx}");
}

/// One more goroutine every 100 ms until the end: `growing` at about 10/s, every one waiting in
/// its select, as many as the time since `go` allows.
fn growing_leak(b: GoBuild) {
    let t = leaks_run(b);
    let r = &t.report;
    let ctx = r.describe();
    let g = r.goroutines();
    let site = g.site_created_at(FILE, line("growing-go"));
    assert_eq!(
        site.created_by.function.as_deref(),
        Some(GROWING_CREATED_IN),
        "{ctx}"
    );
    assert_eq!(site.start_function.as_deref(), Some(GROWING_START), "{ctx}");
    assert_eq!(site.verdict.as_deref(), Some("growing"), "{ctx}");
    assert!(
        (GROWING_PER_S * 0.7..=GROWING_PER_S * 1.3).contains(&site.growth_per_s),
        "growth_per_s {} (one goroutine every 100 ms)\n{ctx}",
        site.growth_per_s
    );
    // The leak starts just before `done` and goes on; the report is made between SIGINT and
    // leaktrace's exit.
    let most = (t.go_to_exit.as_secs_f64() * GROWING_PER_S) as u64 + 1;
    let least = ((t.go_to_signal.as_secs_f64() - 0.5) * GROWING_PER_S * 0.8) as u64;
    assert!(
        (least..=most).contains(&site.live),
        "{} live after {:?} (SIGINT) / {:?} (exit) at 10/s: want {least}..={most}\n{ctx}",
        site.live,
        t.go_to_signal,
        t.go_to_exit
    );
    assert_eq!(
        site.states,
        BTreeMap::from([(GROWING_STATE.to_string(), site.live)]),
        "states\n{ctx}"
    );
    let blocked = site.blocked_at.as_ref().expect("blocked_at");
    assert!(blocked.file_is(FILE), "{ctx}");
    assert_eq!(
        (blocked.function.as_deref(), blocked.line),
        (Some(GROWING_START), Some(u64::from(line("growing-select")))),
        "blocked_at\n{ctx}"
    );
    let spawner = g.site_created_at(FILE, line("growing-spawner-go"));
    assert_eq!(spawner.live, 1, "the growing leak's spawner\n{ctx}");
}

/// `live` counts the program's goroutines at the end, as runtime.NumGoroutine does (the
/// runtime's own excluded): those alive at `done`, plus the growing leak and its spawner; the
/// sites add up to it. The target is a Go program.
fn goroutine_totals(b: GoBuild) {
    let r = &leaks_run(b).report;
    let ctx = r.describe();
    assert_eq!(r.target.language, "go", "{ctx}");
    let g = r.goroutines();
    let growing = g.site_created_at(FILE, line("growing-go"));
    assert_eq!(g.live, g.site_sum(), "live vs the sites' sum\n{ctx}");
    assert_eq!(
        g.live,
        LIVE_AT_DONE + growing.live + 1,
        "live: {LIVE_AT_DONE} at done + the growing leak + its spawner\n{ctx}"
    );
}

/// Every site: at least one goroutine, states adding up to its count, a known verdict, a
/// creating function; one site per `go` statement and start function.
fn sites_well_formed(b: GoBuild) {
    let r = &leaks_run(b).report;
    let ctx = r.describe();
    let g = r.goroutines();
    let mut seen = HashMap::new();
    for s in &g.sites {
        assert!(s.live > 0, "empty site: {}\n{ctx}", s.describe());
        assert_eq!(
            s.states.values().sum::<u64>(),
            s.live,
            "states must add up to live: {}\n{ctx}",
            s.describe()
        );
        if let Some(v) = &s.verdict {
            assert!(
                ["growing", "steady", "young"].contains(&v.as_str()),
                "verdict {v:?}\n{ctx}"
            );
        }
        assert!(s.growth_per_s.is_finite(), "{ctx}");
        assert!(
            s.created_by.function.is_some(),
            "creating function unknown: {}\n{ctx}",
            s.describe()
        );
        let key = (s.created_by.clone(), s.start_function.clone());
        assert!(
            seen.insert(key, ()).is_none(),
            "two sites for one `go` statement: {}\n{ctx}",
            s.describe()
        );
    }
}

/// The target's `complete` mode (thousands of short goroutines with growing stacks, a
/// ping-pong, garbage collections) runs to completion under tracing with the same output as
/// without; leaktrace ends when it exits.
fn complete_run_same_output(b: GoBuild) {
    // ready, 3 results, done.
    let r = assert_same_output_traced(&go_build(TARGET, b), 5);
    r.goroutines();
}

/// Without any tracer: the runtime's own dump of the target (runtime.Stack) shows every leak
/// as the tests above expect it (count, state, `created by` function and line, blocking
/// function and line), no goroutine of the finished pool, the steady pool and the growing leak.
fn targets_agree_with_runtime_dump(toolchain: GoToolchain) {
    let exe = go_build(TARGET, GoBuild::plain(toolchain));
    let mut target = Target::spawn(&exe, &["--dump"]);
    target.wait_ready();
    target.go();
    target.wait_done();
    assert_eq!(target.seen, EXPECTED_OUTPUT, "the target's output");
    std::thread::sleep(Duration::from_millis(1050));
    let from = target.seen.len();
    target.send_line("dump");
    target.wait_line("dump-end", TARGET_TIMEOUT);
    let dump = parse_goroutine_dump(&target.seen[from..]);
    target.kill();
    let text = target.seen[from..].join("\n");
    let created_at = |mark: &str| -> Vec<&DumpedGoroutine> {
        dump.iter()
            .filter(|g| {
                g.created_by
                    .as_ref()
                    .is_some_and(|c| c.line == line(mark) && c.file.ends_with(&format!("/{FILE}")))
            })
            .collect()
    };
    for leak in LEAKS {
        let gs = created_at(leak.go_mark);
        assert_eq!(gs.len() as u64, leak.live, "{}\n{text}", leak.go_mark);
        for g in gs {
            let c = g.created_by.as_ref().unwrap();
            assert_eq!(c.function, leak.created_in, "{text}");
            assert_eq!(g.state, leak.state, "{text}");
            let blocked = g.blocked_at().expect("a frame outside the runtime");
            assert_eq!(
                (blocked.function.as_str(), blocked.line),
                (leak.start, line(leak.block_mark)),
                "{text}"
            );
        }
    }
    assert!(created_at("pool-go").is_empty(), "{text}");
    assert!(
        dump.iter()
            .all(|g| g.frames.iter().all(|f| f.function != POOL_START)),
        "{text}"
    );
    let steady = created_at("steady-go");
    assert_eq!(steady.len() as u64, STEADY_WORKERS, "{text}");
    assert!(
        steady.iter().all(
            |g| g.created_by.as_ref().unwrap().function == STEADY_CREATED_IN
                && g.frames.iter().any(|f| f.function == STEADY_START)
        ),
        "{text}"
    );
    assert_eq!(created_at("feeder-go").len(), 1, "{text}");
    assert_eq!(created_at("growing-spawner-go").len(), 1, "{text}");
    let growing = created_at("growing-go");
    assert!(
        (5..=15).contains(&growing.len()),
        "{} growing-leak goroutines about 1 s after done\n{text}",
        growing.len()
    );
    for g in &growing {
        assert_eq!(
            g.created_by.as_ref().unwrap().function,
            GROWING_CREATED_IN,
            "{text}"
        );
        assert_eq!(g.state, GROWING_STATE, "{text}");
        let blocked = g.blocked_at().expect("a frame outside the runtime");
        assert_eq!(
            (blocked.function.as_str(), blocked.line),
            (GROWING_START, line("growing-select")),
            "{text}"
        );
    }
    // runtime.NumGoroutine's count: every goroutine of the dump whose function is not the
    // runtime's own (main runs in runtime.main's goroutine, whose innermost frames are main.*).
    let program = dump
        .iter()
        .filter(|g| g.frames.iter().any(|f| f.function.starts_with("main.")))
        .count() as u64;
    assert_eq!(program, LIVE_AT_DONE + growing.len() as u64 + 1, "{text}");
    let states = tally(dump.iter().map(|g| g.state.as_str()));
    assert_eq!(
        states.get("chan send").copied(),
        Some(PREMATURE.live + TIMEOUT.live + SENDERS.live),
        "{text}"
    );
}

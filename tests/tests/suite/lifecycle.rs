//! How a run starts and ends: `--duration`, SIGINT/SIGTERM, the target exiting, `run -- CMD`;
//! the probes are gone afterwards and an attached target lives on; output options and map sizes.

use std::fs;
use std::thread;
use std::time::Duration;

use leaktrace_tests::*;

/// Allocator entry points whose first bytes the uprobes patch (int3) while attached.
const PROBED_ENTRIES: &[&str] = &[
    "malloc",
    "free",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "valloc",
    "pvalloc",
    "mmap",
    "munmap",
];

fn entry_bytes(target: &Target) -> Vec<(String, Vec<u8>)> {
    PROBED_ENTRIES
        .iter()
        .map(|name| {
            let addr = target.addr(name);
            (name.to_string(), read_process_memory(target.pid, addr, 16))
        })
        .collect()
}

/// The native.c leaks in a final report, exactly.
fn assert_native_leaks(r: &Report) {
    let ctx = r.describe();
    let site = r.site_with("leak_malloc");
    assert_eq!(
        (site.outstanding_bytes, site.outstanding_allocs),
        (10000, 10),
        "{ctx}"
    );
    assert_eq!(site.allocator, "malloc", "{ctx}");
    let f = site.frame("leak_malloc");
    assert!(
        f.file.as_deref().is_some_and(|p| p.ends_with("native.c")),
        "{ctx}"
    );
    assert_eq!(
        f.line,
        Some(u64::from(marked_line("native", "leak_malloc"))),
        "{ctx}"
    );
    site.assert_chain(&["malloc", "leak_malloc", "run_leaks", "main"]);
    let calloc = r.site_with("leak_calloc");
    assert_eq!(
        (calloc.outstanding_bytes, calloc.outstanding_allocs),
        (4000, 4),
        "{ctx}"
    );
    let pvalloc = r.site_with("leak_pvalloc").outstanding_bytes;
    assert_eq!(r.totals.outstanding_allocs, native_leak_allocs(), "{ctx}");
    assert_eq!(
        r.totals.outstanding_bytes,
        native_leak_bytes(pvalloc),
        "{ctx}"
    );
}

/// A run bounded by --duration ends by itself, says so, and leaves the --pid target running.
#[test]
fn duration_ends_run_and_target_lives_on() {
    let built = build("native", Variant::O0);
    let mut s = trace(
        &built,
        &SessionOpts {
            tracer_args: &[
                "--format",
                "json",
                "--duration",
                "2s",
                "--interval",
                "300ms",
                "--min-age",
                "0s",
                "--top",
                "100",
            ],
            ..SessionOpts::default()
        },
    );
    s.finished.assert_success();
    assert!(s.target.alive(), "leaktrace --pid must not stop its target");
    let r = s.finished.report();
    assert!(r.is_final);
    assert_eq!(r.ended_by.as_deref(), Some("duration"), "{}", r.describe());
    assert_eq!(r.target.pid, u64::from(s.target.pid));
    assert!(
        r.target.exe.ends_with(&built.file_name()),
        "target.exe {:?}",
        r.target.exe
    );
    assert!(
        (1.5..=5.0).contains(&r.duration_s),
        "duration_s {}",
        r.duration_s
    );
    assert_native_leaks(&r);
    s.target.kill();
}

/// The target exits on its own mid-run: leaktrace reports what was outstanding at the exit,
/// symbolized (the maps were read before the process went away), and exits 0.
#[test]
fn target_exit_ends_run_with_report() {
    let built = build("native", Variant::O0);
    let Attached { mut target, tracer } = attach_and_go(
        &built.exe,
        &["exit"],
        &[
            "--format",
            "json",
            "--interval",
            "300ms",
            "--min-age",
            "0s",
            "--top",
            "100",
        ],
    );
    // Reap it at once, as a parent would: a zombie still has a /proc entry.
    let status = target.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "target exit status {status:?}"
    );
    let fin = tracer.wait(FINISH_GRACE);
    fin.assert_success();
    let r = fin.report();
    assert_eq!(
        r.ended_by.as_deref(),
        Some("target_exited"),
        "{}",
        r.describe()
    );
    assert!(r.is_final);
    assert_native_leaks(&r);
}

/// SIGINT or SIGTERM mid-run (no --duration): a final report, exit 0; afterwards the probes are
/// gone from the target (its code is as before the attach; no uprobe_events left) and the target
/// still runs.
fn signal_ends_run(sig: i32) {
    let built = build("native", Variant::O0);
    let mut target = Target::spawn(&built.exe, &[]);
    target.wait_ready();
    let before = entry_bytes(&target);
    let mut tracer = Tracer::start(&[
        "--pid".to_string(),
        target.pid.to_string(),
        "--format".into(),
        "json".into(),
        "--interval".into(),
        "300ms".into(),
        "--min-age".into(),
        "0s".into(),
        "--top".into(),
        "100".into(),
    ]);
    tracer.wait_attached(ATTACH_TIMEOUT);
    target.go();
    target.wait_done();
    thread::sleep(Duration::from_millis(1200));
    assert!(
        tracer.running(),
        "leaktrace without --duration ended by itself:\n{}",
        clip(&tracer.stderr_so_far())
    );

    // While attached, the uprobes have patched the entry points in the target's memory.
    let during = entry_bytes(&target);
    assert!(
        before.iter().zip(&during).any(|(b, d)| b.1 != d.1),
        "no allocator entry point is patched while leaktrace is attached: {during:?}"
    );

    tracer.signal(sig);
    let fin = tracer.wait(FINISH_GRACE);
    fin.assert_success();
    let r = fin.report();
    assert!(r.is_final);
    assert_eq!(r.ended_by.as_deref(), Some("signal"), "{}", r.describe());
    assert_native_leaks(&r);

    assert!(target.alive(), "the target died with leaktrace");
    let after = entry_bytes(&target);
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{name} is still patched after leaktrace exited");
    }
    if let Some(events) = uprobe_events_file() {
        let text = fs::read_to_string(&events).unwrap_or_default();
        let libc_path = r.allocator.path.clone();
        let exe = built.exe.to_string_lossy().into_owned();
        for line in text.lines() {
            assert!(
                !line.contains(&exe) && !line.contains(&libc_path),
                "leftover uprobe in {}: {line}",
                events.display()
            );
        }
    }
    target.kill();
}

#[test]
fn sigint_ends_run_with_report_and_detaches() {
    signal_ends_run(libc::SIGINT);
}

#[test]
fn sigterm_ends_run_with_report_and_detaches() {
    signal_ends_run(libc::SIGTERM);
}

/// `run -- CMD`: probes in place before CMD's first malloc (it leaks at once, without waiting),
/// exact leaks; at the end of --duration CMD is still running and leaktrace stops it.
#[test]
fn run_mode_traces_from_the_start() {
    let built = build("native", Variant::O0);
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let fin = run_leaktrace(
        &[
            "--format",
            "json",
            "--duration",
            "3s",
            "--min-age",
            "0s",
            "--interval",
            "300ms",
            "--top",
            "100",
            "run",
            "--",
            &exe,
            "nowait",
        ],
        Duration::from_secs(3) + FINISH_GRACE,
    );
    fin.assert_success();
    let r = fin.report();
    assert_eq!(r.ended_by.as_deref(), Some("duration"), "{}", r.describe());
    assert!(
        r.target.exe.ends_with(&built.file_name()),
        "target.exe {:?}",
        r.target.exe
    );
    assert_native_leaks(&r);
    let pid = u32::try_from(r.target.pid).expect("pid");
    assert!(
        wait_process_gone(pid, Duration::from_secs(5)),
        "leaktrace run left its command (pid {pid}) running"
    );
}

/// Options after `run` work too; a command that exits ends the run with `target_exited`.
#[test]
fn run_mode_options_after_run_and_command_exit() {
    let built = build("native", Variant::O0);
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let fin = run_leaktrace(
        &[
            "run",
            "--format",
            "json",
            "--min-age",
            "0s",
            "--interval",
            "300ms",
            "--top",
            "100",
            "--",
            &exe,
            "nowait",
            "exit",
        ],
        FINISH_GRACE,
    );
    fin.assert_success();
    let r = fin.report();
    assert_eq!(
        r.ended_by.as_deref(),
        Some("target_exited"),
        "{}",
        r.describe()
    );
    assert_native_leaks(&r);
}

/// `--output FILE`: the report goes to the file, not to stdout.
#[test]
fn output_file_holds_the_report() {
    let built = build("native", Variant::O0);
    let out = built.dir.path().join("report.json");
    let out_s = out.to_string_lossy().into_owned();
    let mut s = trace(
        &built,
        &SessionOpts {
            tracer_args: &[
                "--format",
                "json",
                "--duration",
                "2s",
                "--interval",
                "300ms",
                "--min-age",
                "0s",
                "--top",
                "100",
                "--output",
                &out_s,
            ],
            ..SessionOpts::default()
        },
    );
    s.target.kill();
    s.finished.assert_success();
    let text = fs::read_to_string(&out).expect("the --output file");
    let r = Report::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_native_leaks(&r);
    assert!(
        !s.finished.stdout.contains("\"sites\""),
        "the report was written to stdout too:\n{}",
        s.finished.stdout
    );
}

/// `--format text`: a human report naming the leak, not JSON.
#[test]
fn text_format_names_the_leaks() {
    let built = build("native", Variant::O0);
    let mut s = trace(
        &built,
        &SessionOpts {
            tracer_args: &[
                "--format",
                "text",
                "--duration",
                "2s",
                "--interval",
                "300ms",
                "--min-age",
                "0s",
            ],
            ..SessionOpts::default()
        },
    );
    s.target.kill();
    s.finished.assert_success();
    let out = &s.finished.stdout;
    assert!(
        out.contains("leak_malloc"),
        "text report without leak_malloc:\n{out}"
    );
    assert!(
        out.contains("native.c"),
        "text report without file names:\n{out}"
    );
    assert!(
        serde_json::from_str::<serde_json::Value>(out.trim()).is_err(),
        "text output is JSON:\n{out}"
    );
}

/// `--format jsonl` (report-schema.md): one report per interval, one per line, only the last final.
#[test]
fn jsonl_one_report_per_interval() {
    let built = build("native", Variant::O0);
    let mut s = trace(
        &built,
        &SessionOpts {
            tracer_args: &[
                "--format",
                "jsonl",
                "--duration",
                "2s",
                "--interval",
                "300ms",
                "--min-age",
                "0s",
                "--top",
                "100",
            ],
            ..SessionOpts::default()
        },
    );
    s.target.kill();
    s.finished.assert_success();
    let reports: Vec<Report> = s
        .finished
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Report::parse(l).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert!(
        reports.len() >= 3,
        "{} reports in 2 s at 300 ms",
        reports.len()
    );
    let (last, earlier) = reports.split_last().unwrap();
    assert!(last.is_final, "the last line must be final");
    assert_eq!(last.ended_by.as_deref(), Some("duration"));
    assert_native_leaks(last);
    for r in earlier {
        assert!(!r.is_final, "only the last report is final");
        assert_eq!(r.ended_by, None, "ended_by is null while running");
    }
}

/// `--top 3`: the three largest sites, largest first.
#[test]
fn top_keeps_the_largest_sites() {
    let t = trace_report("native", Variant::O0, &["--top", "3"]);
    let r = &t.report;
    let want = ["leak_malloc_large", "leak_mmap", "leak_malloc"];
    assert!(
        r.sites.len() == 3 && r.sites.iter().zip(want).all(|(s, f)| s.has_function(f)),
        "want the 3 largest sites, {want:?}\n{}",
        r.describe()
    );
    assert_eq!(
        r.totals.outstanding_allocs,
        native_leak_allocs(),
        "totals are not cut by --top"
    );
}

/// many.c: 3000 blocks from one stack and 100 blocks from 100 distinct call sites, exactly, with
/// the default map sizes (nothing dropped).
#[test]
fn many_allocations_and_sites_exact() {
    let t = trace_report("many", Variant::O0, &["--top", "1000"]);
    let r = &t.report;
    let ctx = r.describe();
    let many = r.site_with("leak_many");
    assert_eq!(
        (many.outstanding_allocs, many.outstanding_bytes),
        (3000, 48000),
        "{ctx}"
    );
    let fanout = r.sites_with("leak_fanout");
    assert_eq!(fanout.len(), 100, "one site per call site\n{ctx}");
    for s in &fanout {
        assert_eq!(
            (s.outstanding_allocs, s.outstanding_bytes),
            (1, 24),
            "{}",
            s.describe()
        );
    }
    let mut lines: Vec<Option<u64>> = fanout.iter().map(|s| s.frame("leak_fanout").line).collect();
    lines.sort();
    lines.dedup();
    assert_eq!(
        lines.len(),
        100,
        "each call site has its own line: {lines:?}"
    );
    assert_eq!(r.totals.outstanding_allocs, 3100, "{ctx}");
    assert_eq!(r.totals.outstanding_bytes, 48000 + 2400, "{ctx}");
    assert_eq!(r.totals.dropped, 0, "{ctx}");
}

/// `--max-allocs 1024` (the smallest allowed) for 3100 outstanding blocks: the allocation map
/// fills; what does not fit is counted as dropped, not lost silently.
#[test]
fn small_alloc_map_counts_drops() {
    let t = trace_report(
        "many",
        Variant::O0,
        &["--top", "1000", "--max-allocs", "1024"],
    );
    let r = &t.report;
    let ctx = r.describe();
    let untracked = 3100 - 1024;
    assert!(
        r.totals.outstanding_allocs <= 1024,
        "more tracked than the map holds\n{ctx}"
    );
    assert!(
        r.totals.dropped >= untracked,
        "3100 blocks outstanding, at most 1024 tracked: dropped must be >= {untracked}\n{ctx}"
    );
    assert!(
        r.totals.drop_reasons.alloc_map_full >= untracked,
        "drop_reasons.alloc_map_full must be >= {untracked}\n{ctx}"
    );
}

/// `--max-stacks 64` (the smallest allowed) for 101 distinct stacks: the stack map fills; the
/// allocations whose stack could not be kept are counted.
#[test]
fn small_stack_map_counts_drops() {
    let t = trace_report(
        "many",
        Variant::O0,
        &["--top", "1000", "--max-stacks", "64"],
    );
    let r = &t.report;
    let ctx = r.describe();
    assert!(
        r.totals.drop_reasons.stack_map_full >= 101 - 64,
        "101 stacks, room for 64: drop_reasons.stack_map_full must be >= 37\n{ctx}"
    );
    assert!(r.totals.dropped >= 101 - 64, "dropped\n{ctx}");
}

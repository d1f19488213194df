//! `--reachability` (targets/reach.c, targets/reach_load.c): blocks no root reaches are lost,
//! exactly; blocks held only by a global, an interior pointer, another thread's stack, a
//! blocked thread's register or a TLS variable are never called lost, and a pointer left in
//! memory the program freed does not keep a block; a target under load is
//! scanned without a false "lost", a change to its output, or being left stopped.

use std::time::Duration;

use leaktrace_tests::*;

static REACH_O0: SharedTrace = SharedTrace::new();
static REACH_O2: SharedTrace = SharedTrace::new();
static REACH_STATIC: SharedTrace = SharedTrace::new();

fn reach(v: Variant) -> &'static Traced {
    let cell = match v {
        Variant::O0 => &REACH_O0,
        Variant::O2NoFramePointer => &REACH_O2,
        Variant::Static => &REACH_STATIC,
    };
    shared(cell, || {
        trace_report("reach", v, &["--top", "100", "--reachability"])
    })
}

per_variant!(
    overwritten_pointers_leave_blocks_lost,
    pointers_left_in_freed_memory_keep_nothing,
    dropped_parents_lose_children_indirectly,
    held_blocks_are_reachable_from_every_root_kind,
    scan_figures_sum_the_sites,
);

/// The reachability of the one site of FUNC whose blocks are BYTES each, ALLOCS of them.
fn site_reach(r: &Report, func: &str, allocs: u64, bytes_each: u64) -> SiteReachability {
    let site = r
        .sites_with(func)
        .into_iter()
        .find(|s| s.outstanding_allocs == allocs && s.outstanding_bytes == allocs * bytes_each)
        .unwrap_or_else(|| {
            panic!(
                "no {func} site of {allocs} x {bytes_each}\n{}",
                r.describe()
            )
        });
    site.reachability
        .unwrap_or_else(|| panic!("{func}: no reachability\n{}", r.describe()))
}

/// All reach.c loses: overwritten, parents, children, left in freed memory (main, thread).
const LOST_BYTES: u64 = 9 * 1024 + 320 + 1280 + 5 * 80 + 5 * 144;

fn lost(bytes: u64, allocs: u64, indirect_bytes: u64) -> SiteReachability {
    SiteReachability {
        unreachable_bytes: bytes,
        unreachable_allocs: allocs,
        indirect_bytes,
    }
}

/// 10 x 1024 through one global: the 9 overwritten are lost, the last one is not.
fn overwritten_pointers_leave_blocks_lost(v: Variant) {
    let r = &reach(v).report;
    assert_eq!(
        site_reach(r, "lose_overwritten", 10, 1024),
        lost(9 * 1024, 9, 0),
        "{}",
        r.describe()
    );
}

/// Pointers the program left only in memory it freed (glibc's tcache, its bins, the top
/// chunk), in the main arena and in a thread's: the blocks are lost.
fn pointers_left_in_freed_memory_keep_nothing(v: Variant) {
    let r = &reach(v).report;
    assert_eq!(
        site_reach(r, "lose_in_freed", 5, 80),
        lost(5 * 80, 5, 0),
        "{}",
        r.describe()
    );
    assert_eq!(
        site_reach(r, "lose_in_freed", 5, 144),
        lost(5 * 144, 5, 0),
        "{}",
        r.describe()
    );
}

/// 5 parents of 64 bytes dropped, each with its 256-byte child: the parents are definitely
/// lost, the children only through them (indirectly).
fn dropped_parents_lose_children_indirectly(v: Variant) {
    let r = &reach(v).report;
    assert_eq!(site_reach(r, "lose_parent", 5, 64), lost(320, 5, 0));
    assert_eq!(site_reach(r, "lose_parent", 5, 256), lost(1280, 5, 1280));
}

/// A list from a global, a cache in a global array, interior pointers only, pointers only in
/// another thread's stack, in a blocked thread's register, in a TLS variable: none lost.
fn held_blocks_are_reachable_from_every_root_kind(v: Variant) {
    let r = &reach(v).report;
    for (func, allocs, bytes_each) in [
        ("grow_list", 20, 48),
        ("cache_put", 16, 512),
        ("keep_interior", 8, 128),
        ("stack_thread_alloc", 4, 208),
        ("register_thread_alloc", 1, 336),
        ("tls_thread_alloc", 1, 400),
    ] {
        assert_eq!(
            site_reach(r, func, allocs, bytes_each),
            lost(0, 0, 0),
            "{func}\n{}",
            r.describe()
        );
    }
}

/// The top-level figures: one consistent scan, the sum of the sites' losses, a short pause.
fn scan_figures_sum_the_sites(v: Variant) {
    let t = reach(v);
    let scan = t
        .report
        .reachability
        .as_ref()
        .expect("reachability figures");
    assert!(scan.consistent, "{scan:?}");
    assert_eq!(scan.method, "stopped_world");
    assert_eq!(scan.scans, 1);
    assert_eq!(scan.unreachable_bytes, LOST_BYTES);
    assert_eq!(scan.unreachable_allocs, 9 + 5 + 5 + 5 + 5);
    assert_eq!(scan.indirect_bytes, 1280);
    assert!(scan.scanned_bytes > 0);
    assert!(scan.pause_ms > 0.0 && scan.pause_ms <= 200.0, "{scan:?}");
    assert!(scan.duration_ms >= scan.pause_ms, "{scan:?}");
    assert!(
        t.stderr.contains("leaktrace: reachability scan:"),
        "{}",
        t.stderr
    );
}

/// The sum reach_load.c prints: per thread, the values of pushes i with i % 4 != 3.
fn load_sum() -> u64 {
    let (threads, pushes) = (4u64, 100_000u64);
    (0..threads)
        .map(|t| {
            (0..pushes)
                .filter(|i| i % 4 != 3)
                .map(|i| i * threads + t)
                .sum::<u64>()
        })
        .sum()
}

/// Four threads allocating and freeing while scans run every interval: no crash, nothing
/// called lost, the target's output unchanged and the target left running.
#[test]
fn a_target_under_load_is_scanned_without_harm() {
    let built = build("reach_load", Variant::O2NoFramePointer);
    let args = [
        "--format",
        "json",
        "--duration",
        "3s",
        "--interval",
        "100ms",
        "--min-age",
        "0s",
        "--reachability-every",
        "1",
    ];
    let mut session = trace(
        &built,
        &SessionOpts {
            tracer_args: &args,
            ..SessionOpts::default()
        },
    );
    let pid = session.target.pid;
    let want = format!("sum {}", load_sum());
    assert!(
        session.target.seen.contains(&want),
        "want {want}: {:?}",
        session.target.seen
    );
    session.finished.assert_success();
    std::thread::sleep(Duration::from_millis(100));
    assert_ne!(process_state(pid), Some('T'), "target left stopped");
    assert_ne!(process_state(pid), Some('t'), "target left traced");
    session.target.kill();
    let r = session.finished.report();
    let scan = r.reachability.as_ref().expect("reachability figures");
    assert!(scan.scans >= 2, "{scan:?}");
    assert_eq!(scan.unreachable_bytes, 0, "{scan:?}\n{}", r.describe());
    for site in r.sites_with("churn_alloc") {
        assert_eq!(site.reachability.map(|s| s.unreachable_bytes), Some(0));
    }
}

/// SIGUSR1 asks for a scan now, beside the final one.
#[test]
fn sigusr1_asks_for_a_scan() {
    let built = build("reach", Variant::O2NoFramePointer);
    let args = [
        "--format",
        "json",
        "--duration",
        "3s",
        "--min-age",
        "0s",
        "--reachability",
    ];
    let Attached { mut target, tracer } = attach_and_go(&built.exe, &[], &args);
    std::thread::sleep(Duration::from_millis(500));
    tracer.signal(libc::SIGUSR1);
    let finished = tracer.wait(FINISH_GRACE);
    target.kill();
    finished.assert_success();
    let scans = finished
        .stderr
        .matches("leaktrace: reachability scan:")
        .count();
    assert_eq!(scans, 2, "{}", finished.stderr);
    let r = finished.report();
    assert_eq!(r.reachability.as_ref().map(|s| s.scans), Some(2));
    assert_eq!(
        r.reachability.as_ref().map(|s| s.unreachable_bytes),
        Some(LOST_BYTES)
    );
}

/// A pause bound no scan can keep: the target is let go and scanned twice while it runs; the
/// blocks lost in both passes with unchanged contents are the same as with the world stopped
/// (reach.c changes nothing after `done`), and the register-only block (registers read while
/// stopped) is still not lost.
#[test]
fn a_scan_over_its_pause_bound_falls_back_to_two_live_passes() {
    let built = build("reach", Variant::O2NoFramePointer);
    let mut args: Vec<&str> = DEFAULT_TRACER_ARGS.to_vec();
    args.extend([
        "--top",
        "100",
        "--reachability",
        "--reachability-max-pause",
        "1us",
    ]);
    let mut session = trace(
        &built,
        &SessionOpts {
            tracer_args: &args,
            ..SessionOpts::default()
        },
    );
    let pid = session.target.pid;
    session.finished.assert_success();
    assert_ne!(process_state(pid), Some('T'), "target left stopped");
    assert_ne!(process_state(pid), Some('t'), "target left traced");
    session.target.kill();
    let r = session.finished.report();
    let scan = r.reachability.as_ref().expect("reachability figures");
    assert!(!scan.consistent, "{scan:?}");
    assert_eq!(scan.method, "two_live_passes");
    assert_eq!(scan.unreachable_bytes, LOST_BYTES, "{}", r.describe());
    assert_eq!(scan.indirect_bytes, 1280);
    assert_eq!(
        site_reach(&r, "lose_overwritten", 10, 1024),
        lost(9 * 1024, 9, 0)
    );
    assert_eq!(
        site_reach(&r, "register_thread_alloc", 1, 336),
        lost(0, 0, 0)
    );
}

/// A cgo program (targets/go/reach_cgo): C blocks whose only pointers are in a Go heap object
/// are reachable (the Go heap is a root), C blocks dropped are lost.
#[test]
fn cgo_blocks_held_by_the_go_heap_are_reachable_dropped_ones_lost() {
    let exe = go_build("reach_cgo", GoBuild::plain(GoToolchain::Recent));
    let mut args = GO_TRACER_ARGS.to_vec();
    // The Go runtime's mappings make tens of MiB of roots: more than 200 ms for a debug build.
    args.extend(["--reachability", "--reachability-max-pause", "10s"]);
    let run = go_trace_with(&exe, &[], Duration::from_millis(1500), &args);
    run.finished.assert_success();
    let r = run.finished.report();
    assert_eq!(site_reach(&r, "main.keepC", 8, 4096), lost(0, 0, 0));
    assert_eq!(site_reach(&r, "main.dropC", 5, 2048), lost(5 * 2048, 5, 0));
}

/// A thread of the target already traced by someone else (here, this test): the scan cannot
/// stop it and is given up with a warning, every thread it had stopped is let go, and the run
/// ends normally.
#[test]
fn a_thread_traced_by_another_debugger_fails_the_scan_cleanly() {
    let built = build("reach", Variant::O2NoFramePointer);
    let args = [
        "--format",
        "json",
        "--duration",
        "2s",
        "--min-age",
        "0s",
        "--reachability",
    ];
    let Attached { mut target, tracer } = attach_and_go(&built.exe, &[], &args);
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", target.pid))
        .expect("task dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    let last = *tids.last().expect("a thread");
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: seizing (not stopping) a thread of our own child, for the rest of the test.
    let rc = unsafe { libc::ptrace(libc::PTRACE_SEIZE, last, null, null) };
    assert_eq!(rc, 0, "PTRACE_SEIZE: {}", std::io::Error::last_os_error());
    let finished = tracer.wait(FINISH_GRACE);
    finished.assert_success();
    assert!(
        finished
            .stderr
            .contains(&format!("cannot stop thread {last}")),
        "{}",
        finished.stderr
    );
    for tid in tids {
        let stat = std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", target.pid))
            .unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        assert!(
            !matches!(state, Some("t") | Some("T")),
            "thread {tid} left stopped: {stat}"
        );
    }
    assert!(finished.report().reachability.is_none());
    // The thread this test traces must be reaped by it before the target can be.
    // SAFETY: killing our own child, then reaping the thread we trace.
    unsafe {
        libc::kill(target.pid as libc::pid_t, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(last, &mut status, libc::__WALL);
    }
    target.kill();
}

//! Detaching fast: a mimalloc target has about a hundred probed entry points; with one
//! `uprobe_multi` link per program and object (Linux 6.6+) Ctrl-C ends the run within a
//! fraction of a second (per-probe links took 10-50 s here), and the final report still holds
//! the exact leaks.

use std::time::{Duration, Instant};

use leaktrace_tests::*;

/// Generous for a loaded test machine: the bench measures the real figure (~0.25 s).
const EXIT_AFTER_SIGINT: Duration = Duration::from_secs(3);

#[test]
fn mimalloc_target_exits_quickly_after_sigint() {
    let built = build_cxx(Family::Mimalloc);
    let mut target = Target::spawn(&built.exe, &[]);
    target.wait_ready();
    let mut cmd = std::process::Command::new(leaktrace_bin());
    cmd.env("RUST_LOG", "leaktrace=debug")
        .args(["--pid", &target.pid.to_string()])
        .args(["--format", "json", "--interval", "300ms", "--min-age", "0s"]);
    let mut tracer = Tracer::start_command(cmd);
    tracer.wait_attached(ATTACH_TIMEOUT);
    target.go();
    target.wait_done();

    let signalled = Instant::now();
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(FINISH_GRACE);
    let took = signalled.elapsed();
    target.kill();
    finished.assert_success();
    assert!(
        took < EXIT_AFTER_SIGINT,
        "leaktrace took {took:?} to exit after SIGINT (bound {EXIT_AFTER_SIGINT:?})\n{}",
        clip(&finished.stderr)
    );
    // This kernel has uprobe_multi links and uprobe sessions: the fast path was taken, one link
    // per program and object (mimalloc's free and allocating session, libc's munmap and mmap).
    assert!(
        finished
            .stderr
            .contains("allocator probes: 4 uprobe_multi links"),
        "the allocator probes did not go through uprobe_multi links:\n{}",
        clip(&finished.stderr)
    );
    // And the probes worked: `new Obj` five times from leak_new, 120 bytes each.
    let report = finished.report();
    let sites = sites_of(&report, "leak_new");
    let (allocs, bytes) = sites.iter().fold((0, 0), |(a, b), s| {
        (a + s.outstanding_allocs, b + s.outstanding_bytes)
    });
    assert_eq!(
        (allocs, bytes),
        (5, 5 * 120),
        "leak_new: {}",
        report.describe()
    );
}

/// Ctrl-C the moment leaktrace says it is attached (the bench's attach/detach runs do that):
/// the run still ends with its report and exit 0, not killed by the signal.
#[test]
fn sigint_right_after_the_attached_line_still_reports() {
    let built = build_cxx(Family::Glibc);
    let mut target = Target::spawn(&built.exe, &[]);
    target.wait_ready();
    let mut cmd = std::process::Command::new(leaktrace_bin());
    cmd.args(["--pid", &target.pid.to_string()])
        .args(["--format", "json", "--min-age", "0s"]);
    let mut tracer = Tracer::start_command(cmd);
    tracer.wait_attached(ATTACH_TIMEOUT);
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(FINISH_GRACE);
    target.kill();
    finished.assert_success();
    let report = finished.report();
    assert!(report.sites.is_empty(), "{}", report.describe());
}

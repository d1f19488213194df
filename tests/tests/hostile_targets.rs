//! Targets that try to exhaust or mislead leaktrace through the files they map: thousands of
//! distinct executable mappings under a low descriptor limit, a sparse multi-gigabyte file
//! mapped executable. The run must still end with an exact report.

use std::process::Command;
use std::time::{Duration, Instant};

use leaktrace_tests::*;

/// Descriptor limit (soft and hard) leaktrace runs under in the churn test: far below the
/// number of files the target maps.
const NOFILE: &str = "512";

/// `leaktrace --pid` on TARGET under `prlimit --nofile=LIMIT:LIMIT` (prlimit execs leaktrace,
/// so the tracer's PID is leaktrace's).
fn traced_under_nofile_limit(built: &Built, target_args: &[&str]) -> (Target, Finished) {
    let mut target = Target::spawn(&built.exe, target_args);
    target.wait_ready();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg(leaktrace_bin())
        .args(["--pid", &target.pid.to_string()])
        .args(["--format", "json", "--interval", "300ms", "--min-age", "0s"]);
    let mut tracer = Tracer::start_command(cmd);
    tracer.wait_attached(ATTACH_TIMEOUT);
    target.go();
    target.wait_line("done", Duration::from_secs(60));
    let finished = tracer.wait(Duration::from_secs(60));
    (target, finished)
}

fn assert_site(report: &Report, function: &str, allocs: u64, bytes: u64) {
    let site = report.site_with(function);
    assert_eq!(
        (site.outstanding_allocs, site.outstanding_bytes),
        (allocs, bytes),
        "{}",
        site.describe()
    );
    assert_eq!(
        site.frame(function).line,
        Some(u64::from(marked_line("mapfiles", function))),
        "{}",
        site.describe()
    );
}

/// 2 rounds of 3000 distinct files mapped executable, 6000 objects in all, with leaktrace
/// limited to 512 descriptors: it keeps a bounded set of objects open and still symbolizes
/// every leak exactly.
#[test]
fn thousands_of_mapped_files_under_a_low_descriptor_limit() {
    let built = build("mapfiles", Variant::O0);
    let files = TempDir::new("mapfiles-churn");
    let dir = files.path().to_string_lossy().into_owned();
    let (_target, finished) = traced_under_nofile_limit(&built, &[&dir, "2", "3000"]);
    finished.assert_success();
    let report = finished.report();
    let ctx = report.describe();
    // leak_round(0) then leak_round(1): 1 + 2 blocks of 96 bytes from one call site.
    assert_site(&report, "leak_round", 3, 3 * 96);
    assert_site(&report, "leak_after", 3, 3 * 160);
    assert_eq!(report.totals.outstanding_allocs, 6, "{ctx}");
    assert_eq!(report.totals.outstanding_bytes, 3 * 96 + 3 * 160, "{ctx}");
}

/// A 6 GiB sparse file (over the 4 GiB leaktrace reads) mapped executable: refused without
/// being read, and the leaks are reported.
#[test]
fn sparse_multi_gigabyte_file_mapped_executable() {
    sparse_file_run(6 << 30);
}

/// A 3 GiB sparse file (under the cap): mapped lazily, never read whole.
#[test]
fn sparse_file_under_the_size_cap() {
    sparse_file_run(3 << 30);
}

fn sparse_file_run(bytes: u64) {
    let built = build("mapfiles", Variant::O0);
    let files = TempDir::new("mapfiles-sparse");
    let dir = files.path().to_string_lossy().into_owned();
    let started = Instant::now();
    let (_target, finished) =
        traced_under_nofile_limit(&built, &[&dir, "sparse", &bytes.to_string()]);
    finished.assert_success();
    let report = finished.report();
    assert_site(&report, "leak_round", 1, 96);
    assert_site(&report, "leak_after", 3, 3 * 160);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

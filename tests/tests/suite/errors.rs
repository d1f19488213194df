//! Failures: one `leaktrace: error:` line on stderr and exit 1 (exit 2 for command-line syntax,
//! as clap does), never a panic, never a report on stdout.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use leaktrace_tests::*;

const QUICK: Duration = Duration::from_secs(20);

fn assert_no_report(fin: &Finished) {
    assert!(
        !fin.stdout.contains("\"sites\""),
        "a failed run printed a report:\n{}",
        fin.stdout
    );
}

/// A pid that does not exist (above any default pid_max).
#[test]
fn no_such_pid() {
    let fin = run_leaktrace(
        &["--pid", "4194300", "--format", "json", "--duration", "1s"],
        QUICK,
    );
    let line = fin.assert_error();
    assert!(
        line.contains("4194300"),
        "the error must name the pid: {line}"
    );
    assert_no_report(&fin);
}

/// A static executable without libc: nothing to probe.
#[test]
fn target_without_allocator() {
    let built = build_with(
        "nomalloc",
        "nomalloc",
        &[
            "-Wall",
            "-Wextra",
            "-Werror",
            "-static",
            "-nostdlib",
            "-fno-stack-protector",
            "-O2",
            "-g",
        ],
    );
    let mut target = Target::spawn(&built.exe, &[]);
    target.wait_ready();
    let fin = run_leaktrace(
        &[
            "--pid",
            &target.pid.to_string(),
            "--format",
            "json",
            "--duration",
            "1s",
        ],
        QUICK,
    );
    let line = fin.assert_error();
    assert!(
        line.to_lowercase().contains("alloc"),
        "the error must say no allocator/malloc was found: {line}"
    );
    assert_no_report(&fin);
    assert!(target.alive(), "the target must survive a failed attach");
    target.kill();
}

/// `run` of a command without an allocator: the same error, and the command is not left behind.
#[test]
fn run_command_without_allocator() {
    let built = build_with(
        "nomalloc",
        "nomalloc",
        &[
            "-Wall",
            "-Wextra",
            "-Werror",
            "-static",
            "-nostdlib",
            "-fno-stack-protector",
            "-O2",
            "-g",
        ],
    );
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let fin = run_leaktrace(
        &["--format", "json", "--duration", "2s", "run", "--", &exe],
        QUICK,
    );
    let line = fin.assert_error();
    assert!(
        line.to_lowercase().contains("alloc"),
        "the error must say no allocator/malloc was found: {line}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        pids_running(&built.exe).is_empty(),
        "the command outlived the failed run"
    );
}

/// `run` of a command that does not exist.
#[test]
fn run_missing_command() {
    let missing = "/nonexistent/leaktrace-no-such-program";
    let fin = run_leaktrace(
        &["--format", "json", "--duration", "1s", "run", "--", missing],
        QUICK,
    );
    let line = fin.assert_error();
    assert!(
        line.contains(missing),
        "the error must name the command: {line}"
    );
    assert_no_report(&fin);
}

/// An unknown --format value is a usage error: clap's exit code 2.
#[test]
fn bad_format_is_usage_error() {
    let fin = run_leaktrace(&["--pid", "1", "--format", "xml"], QUICK);
    fin.assert_code(2);
    fin.assert_no_panic();
    assert!(
        fin.stderr.contains("xml"),
        "stderr must name the bad value:\n{}",
        clip(&fin.stderr)
    );
    assert_no_report(&fin);
}

/// A pid that is not a number is a usage error too.
#[test]
fn non_numeric_pid_is_usage_error() {
    let fin = run_leaktrace(&["--pid", "abc"], QUICK);
    fin.assert_code(2);
    fin.assert_no_panic();
}

/// A duration humantime cannot parse: rejected (usage error or error line), naming the value.
#[test]
fn bad_duration_is_rejected() {
    let fin = run_leaktrace(&["--pid", "1", "--duration", "forever"], QUICK);
    assert!(
        matches!(fin.code(), Some(1) | Some(2)),
        "exit {} for --duration forever\n{}",
        fin.status,
        clip(&fin.stderr)
    );
    fin.assert_no_panic();
    assert!(
        fin.stderr.contains("forever"),
        "stderr must name the bad value:\n{}",
        clip(&fin.stderr)
    );
    assert_no_report(&fin);
}

/// Neither --pid nor run: nothing to trace, a usage error.
#[test]
fn no_target_is_rejected() {
    let fin = run_leaktrace(&["--format", "json", "--duration", "1s"], QUICK);
    assert!(
        matches!(fin.code(), Some(1) | Some(2)),
        "exit {} without --pid or run\n{}",
        fin.status,
        clip(&fin.stderr)
    );
    fin.assert_no_panic();
    assert!(!fin.stderr.trim().is_empty(), "no message at all");
    assert_no_report(&fin);
}

/// Without root (nobody, no capabilities; the target is nobody's too, so only the missing
/// privilege can stop it): exit 1 with a line that says root / CAP_BPF is needed.
#[test]
fn not_root_is_a_clear_error() {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("setpriv (util-linux) is needed for this test");
    let as_nobody = |program: &Path| {
        let mut c = Command::new(setpriv);
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program);
        c
    };
    let built = build("native", Variant::O0);
    // A copy nobody can surely reach and run.
    let bin = built.dir.path().join("leaktrace");
    fs::copy(leaktrace_bin(), &bin).expect("copy leaktrace");

    let mut target = Target::spawn_command(as_nobody(&built.exe));
    target.wait_ready();
    let mut cmd = as_nobody(&bin);
    cmd.args([
        "--pid",
        &target.pid.to_string(),
        "--format",
        "json",
        "--duration",
        "1s",
    ]);
    let fin = Tracer::start_command(cmd).wait(QUICK);
    let line = fin.assert_error();
    let lower = line.to_lowercase();
    assert!(
        lower.contains("root") || lower.contains("cap_bpf"),
        "the error must say root or CAP_BPF is needed: {line}"
    );
    assert_no_report(&fin);
    target.kill();
}

//! An untrusted target cannot hurt the host or the run: `--output` never follows a symlink,
//! target strings are escaped in text output, one leaktrace per target.
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use leaktrace_tests::*;

const QUICK: Duration = Duration::from_secs(20);

/// `--output` naming a symlink (say, planted by the target in a directory it can write) is
/// refused before anything is attached; the file it points at is untouched. A new file is
/// private (0600).
#[test]
fn output_symlink_is_refused_and_new_files_are_private() {
    let built = build("native", Variant::O0);
    let mut target = Target::spawn(&built.exe, &[]);
    target.wait_ready();
    let pid = target.pid.to_string();
    let precious = built.dir.path().join("precious");
    fs::write(&precious, "keep me").expect("write");
    let link = built.dir.path().join("report.json");
    std::os::unix::fs::symlink(&precious, &link).expect("symlink");
    let link_s = link.to_string_lossy().into_owned();
    let fin = run_leaktrace(
        &[
            "--pid",
            &pid,
            "--format",
            "json",
            "--duration",
            "1s",
            "--output",
            &link_s,
        ],
        QUICK,
    );
    assert_eq!(
        fin.assert_error(),
        format!(
            "leaktrace: error: --output {link_s}: is a symbolic link, which leaktrace does not \
             follow"
        )
    );
    assert!(!fin.stderr.contains(ATTACHED_PREFIX), "{}", fin.stderr);
    assert_eq!(fs::read_to_string(&precious).expect("read"), "keep me");

    let fresh = built.dir.path().join("fresh.json");
    let fresh_s = fresh.to_string_lossy().into_owned();
    let fin = run_leaktrace(
        &[
            "--pid",
            &pid,
            "--format",
            "json",
            "--duration",
            "1s",
            "--output",
            &fresh_s,
        ],
        QUICK,
    );
    fin.assert_success();
    let mode = fs::metadata(&fresh).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    Report::parse(&fs::read_to_string(&fresh).expect("read")).unwrap_or_else(|e| panic!("{e}"));
}

/// A target named with an escape sequence and a newline (its comm and executable path): the
/// text report and the `attached` line show them escaped, never raw.
#[test]
fn target_strings_are_escaped_in_text_output() {
    let built = build_with(
        "native",
        "evil\x1b[2J\nname",
        &["-Wall", "-Wextra", "-Werror", "-pthread", "-O0", "-g"],
    );
    let mut target = Target::spawn(&built.exe, &[]);
    target.wait_ready();
    let pid = target.pid.to_string();
    let fin = run_leaktrace(
        &["--pid", &pid, "--format", "text", "--duration", "1s"],
        QUICK,
    );
    fin.assert_success();
    let escaped = "evil\\x1b[2J\\x0aname";
    for (what, out) in [("report", &fin.stdout), ("stderr", &fin.stderr)] {
        assert!(!out.contains('\x1b'), "raw ESC in the {what}:\n{out}");
        assert!(out.contains(escaped), "no {escaped} in the {what}:\n{out}");
    }
    assert!(
        fin.stderr
            .contains(&format!("leaktrace: attached to {escaped} (pid {pid})")),
        "{}",
        fin.stderr
    );
    assert!(
        !fin.stdout.lines().any(|l| l.starts_with("name")),
        "{}",
        fin.stdout
    );
}

/// Two leaktrace runs on one process: the second says so and exits 1, unless --force; the
/// lock goes with its holder, also when that one is killed (SIGKILL).
#[test]
fn a_second_leaktrace_on_one_target_is_refused() {
    let built = build("native", Variant::O0);
    let mut target = Target::spawn(&built.exe, &[]);
    target.wait_ready();
    let pid = target.pid.to_string();
    let mut first = Tracer::start(&["--pid", &pid, "--quiet", "--format", "json"]);
    let deadline = std::time::Instant::now() + ATTACH_TIMEOUT;
    // --quiet prints no `attached` line: wait for the lock file instead.
    let lock_path = loop {
        let found = fs::read_dir("/run/leaktrace").ok().and_then(|dir| {
            dir.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pid}-")))
            })
        });
        if let Some(path) = found {
            break path;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lock file for {pid}"
        );
        assert!(first.running(), "{}", first.stderr_so_far());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        fs::read_to_string(&lock_path).expect("lock"),
        first.pid.to_string()
    );
    assert_eq!(
        fs::metadata(&lock_path).expect("stat").permissions().mode() & 0o777,
        0o600
    );

    let second = run_leaktrace(&["--pid", &pid, "--duration", "1s"], QUICK);
    assert_eq!(
        second.assert_error(),
        format!(
            "leaktrace: error: PID {pid} is already traced by another leaktrace (pid {}); \
             --force traces it anyway",
            first.pid
        )
    );
    let forced = run_leaktrace(
        &[
            "--pid",
            &pid,
            "--duration",
            "1s",
            "--format",
            "json",
            "--force",
        ],
        QUICK,
    );
    forced.assert_success();

    first.signal(libc::SIGKILL);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while first.running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let third = run_leaktrace(
        &["--pid", &pid, "--duration", "1s", "--format", "json"],
        QUICK,
    );
    third.assert_success();
    assert!(!lock_path.exists(), "the lock file outlived its run");
}

/// An error quoting a name with an escape sequence stays one escaped line.
#[test]
fn errors_escape_what_they_quote() {
    let fin = run_leaktrace(&["run", "--", "/nonexistent/no\x1b[31mred\nfake"], QUICK);
    assert_eq!(
        fin.assert_error(),
        "leaktrace: error: command not found: /nonexistent/no\\x1b[31mred fake"
    );
}

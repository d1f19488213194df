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

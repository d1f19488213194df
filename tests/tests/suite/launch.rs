//! `leaktrace run -- CMD` never leaves its command behind and can drop privileges: `--user`,
//! a command that re-execs itself, one that ignores SIGTERM, SIGKILL of leaktrace, SIGINT
//! during startup and failures after the fork each end with no process left, held or stopped.
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use leaktrace_tests::*;

/// `tests/targets/launched.c`: LEAK_COUNT blocks of LEAK_SIZE from `launched_leak`.
const LEAK_COUNT: u64 = 7;
const LEAK_SIZE: u64 = 3001;

const RUN_ARGS: &[&str] = &[
    "--format",
    "json",
    "--min-age",
    "0s",
    "--interval",
    "300ms",
    "--top",
    "100",
];

/// The `launched pid=...` line the command wrote on (leaktrace's) stderr, as key=value pairs.
fn launched_line(stderr: &str) -> Option<Vec<(String, String)>> {
    // One write(2) by the command, but leaktrace's own lines may be cut around it.
    let start = stderr.find("launched pid=")?;
    let line = stderr[start..].lines().next()?;
    Some(
        line.trim_start_matches("launched ")
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

fn launched_pid(stderr: &str) -> Option<u32> {
    launched_line(stderr)?
        .iter()
        .find(|(k, _)| k == "pid")
        .and_then(|(_, v)| v.parse().ok())
}

/// Waits for the command's `launched` line while leaktrace runs.
fn wait_launched_pid(tracer: &Tracer, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(pid) = launched_pid(&tracer.stderr_so_far()) {
            return pid;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "the command did not start within {timeout:?}:\n{}",
        clip(&tracer.stderr_so_far())
    );
}

/// The children of PID (from /proc/*/stat).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

fn assert_launched_leak(r: &Report) {
    let site = r.site_with("launched_leak");
    assert_eq!(
        (site.outstanding_allocs, site.outstanding_bytes),
        (LEAK_COUNT, LEAK_COUNT * LEAK_SIZE),
        "{}",
        site.describe()
    );
}

fn assert_nothing_left(built: &Built, pids: &[u32]) {
    for &pid in pids {
        assert!(
            wait_process_gone(pid, Duration::from_secs(5)),
            "pid {pid} was left behind (state {:?})",
            process_state(pid)
        );
    }
    assert_eq!(pids_running(&built.exe), Vec::<u32>::new(), "commands left");
}

/// `--user nobody`: the command runs as nobody with nobody's groups and a reset environment
/// (HOME and USER nobody's, the caller's other variables gone), and is traced as usual.
#[test]
fn run_as_user_drops_privileges_and_resets_environment() {
    let built = build("launched", Variant::O0);
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let mut args = RUN_ARGS.to_vec();
    args.extend(["--duration", "2s", "run", "--user", "nobody", "--", &exe]);
    let mut cmd = Command::new(leaktrace_bin());
    cmd.args(&args).env("LEAKTRACE_TEST_SECRET", "hunter2");
    let fin = Tracer::start_command(cmd).wait(Duration::from_secs(2) + FINISH_GRACE);
    fin.assert_success();
    let who = launched_line(&fin.stderr).expect("the command's `launched` line");
    let get = |key: &str| {
        who.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("?")
    };
    assert_eq!(
        [get("uid"), get("gid"), get("groups")],
        ["65534", "65534", "1"]
    );
    assert_eq!(
        [get("home"), get("user"), get("secret")],
        ["/nonexistent", "nobody", "-"]
    );
    assert_launched_leak(&fin.report());
    assert_nothing_left(&built, &[]);
}

/// Without --user the command keeps leaktrace's identity and environment.
#[test]
fn run_without_user_keeps_the_environment() {
    let built = build("launched", Variant::O0);
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let mut cmd = Command::new(leaktrace_bin());
    cmd.args(["--quiet", "--duration", "1s", "run", "--", &exe, "exit"])
        .env("LEAKTRACE_TEST_SECRET", "hunter2");
    let fin = Tracer::start_command(cmd).wait(FINISH_GRACE);
    fin.assert_success();
    let who = launched_line(&fin.stderr).expect("the command's `launched` line");
    assert!(
        who.contains(&("uid".into(), "0".into()))
            && who.contains(&("secret".into(), "hunter2".into())),
        "{who:?}"
    );
}

/// An unknown user, or a command the user may not execute: one error line, exit 1, and
/// nothing left running or held.
#[test]
fn run_as_user_errors_leave_nothing() {
    let built = build("launched", Variant::O0);
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let fin = run_leaktrace(
        &["run", "--user", "no-such-user-here", "--", &exe],
        FINISH_GRACE,
    );
    assert_eq!(
        fin.assert_error(),
        "leaktrace: error: --user: no such user: no-such-user-here"
    );
    // Root can read it, nobody cannot reach it: the exec fails after the fork.
    fs::set_permissions(built.dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
    let fin = run_leaktrace(&["run", "--user", "nobody", "--", &exe], FINISH_GRACE);
    let error = fin.assert_error();
    assert!(
        error.contains(&format!("cannot execute {exe}: Permission denied")),
        "{error}"
    );
    assert_eq!(
        pids_running(&leaktrace_bin()),
        Vec::<u32>::new(),
        "held children left"
    );
    assert_nothing_left(&built, &[]);
}

/// A command that re-execs itself is stopped at its entry point again and continued once the
/// new image's unwind tables are in: its leak, made at once, has its whole stack.
#[test]
fn run_command_that_reexecs_itself_is_traced() {
    let built = build("launched", Variant::O2NoFramePointer);
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let mut args = RUN_ARGS.to_vec();
    args.extend(["--duration", "3s", "run", "--", &exe, "reexec"]);
    let fin = run_leaktrace(&args, Duration::from_secs(3) + FINISH_GRACE);
    fin.assert_success();
    let who = launched_line(&fin.stderr).expect("the re-executed command's `launched` line");
    let r = fin.report();
    assert_eq!(who[0], ("pid".to_owned(), r.target.pid.to_string()));
    assert_eq!(r.ended_by.as_deref(), Some("duration"));
    assert_launched_leak(&r);
    r.site_with("launched_leak")
        .assert_chain(&["malloc", "launched_leak", "main"]);
    assert_nothing_left(&built, &[]);
}

/// A command that ignores SIGTERM is killed (SIGKILL) after the grace period, not waited for
/// forever.
#[test]
fn run_command_ignoring_sigterm_is_killed() {
    let built = build("launched", Variant::O0);
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let started = Instant::now();
    let fin = run_leaktrace(
        &[
            "--quiet",
            "--duration",
            "1s",
            "run",
            "--",
            &exe,
            "ignore-term",
        ],
        FINISH_GRACE,
    );
    fin.assert_success();
    let pid = launched_pid(&fin.stderr).expect("the command's pid");
    assert_nothing_left(&built, &[pid]);
    // 1 s of tracing, 3 s of grace, and startup: far less than forever.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
}

/// SIGKILL of leaktrace kills its command (PR_SET_PDEATHSIG), also a stopped one, as a
/// command is while held at its entry point.
#[test]
fn sigkill_of_leaktrace_kills_its_stopped_command() {
    let built = build("launched", Variant::O0);
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let mut tracer = Tracer::start(&["run", "--", &exe]);
    tracer.wait_attached(ATTACH_TIMEOUT);
    let pid = wait_launched_pid(&tracer, TARGET_TIMEOUT);
    send_signal(pid, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_state(pid) != Some('T') && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(process_state(pid), Some('T'), "the command did not stop");
    // A stop that is not at the entry point is someone else's: leaktrace leaves it alone.
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        process_state(pid),
        Some('T'),
        "leaktrace continued a stopped command"
    );
    tracer.signal(libc::SIGKILL);
    assert_nothing_left(&built, &[pid]);
}

/// SIGINT as early as the command exists (held before its exec, or stopped at its entry
/// point): leaktrace ends and its command with it.
#[test]
fn sigint_during_startup_leaves_nothing() {
    let built = build("launched", Variant::O0);
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let mut tracer = Tracer::start(&["run", "--", &exe]);
    let deadline = Instant::now() + TARGET_TIMEOUT;
    let child = loop {
        if let Some(&child) = children_of(tracer.pid).first() {
            break child;
        }
        assert!(Instant::now() < deadline, "leaktrace forked no command");
        assert!(tracer.running(), "{}", clip(&tracer.stderr_so_far()));
        thread::sleep(Duration::from_millis(1));
    };
    tracer.signal(libc::SIGINT);
    let deadline = Instant::now() + FINISH_GRACE;
    while tracer.running() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!tracer.running(), "leaktrace ignored SIGINT during startup");
    assert_nothing_left(&built, &[child]);
}

/// A failure after the fork (here the kernel refuses a map this large): one error line, and
/// the held command is gone.
#[test]
fn failure_after_the_fork_leaves_nothing() {
    let built = build("launched", Variant::O0);
    let _strays = StrayGuard {
        exe: built.exe.clone(),
    };
    let exe = built.exe.to_string_lossy().into_owned();
    let fin = run_leaktrace(
        &["--max-allocs", "4294967295", "run", "--", &exe],
        FINISH_GRACE,
    );
    let error = fin.assert_error();
    assert!(error.contains("failed to create map `ALLOCS`"), "{error}");
    assert_eq!(
        pids_running(&leaktrace_bin()),
        Vec::<u32>::new(),
        "held children left"
    );
    assert_nothing_left(&built, &[]);
}

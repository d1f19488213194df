//! Harness for the leaktrace integration tests: real eBPF probes on real target programs.
//!
//! A test compiles a C target from `tests/targets/` with gcc into a private temporary directory,
//! starts it, waits for its `ready` line, starts the `leaktrace` binary against it, waits for the
//! `leaktrace: attached` line, lets the target allocate (one line on its stdin), waits for `done`,
//! waits for leaktrace to end and parses its JSON report.
//!
//! Go targets (`tests/targets/go/NAME/main.go`) speak the same protocol; see [`golang`].
//!
//! Every child process is owned by a guard that kills it on drop, so a failing assertion leaves
//! no process and no file behind. The tests need root (they run leaktrace) and run one at a time
//! (`--test-threads=1`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub mod families;
pub mod golang;
pub use families::*;
pub use golang::*;

/// How long leaktrace may take to load and attach its probes.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a target may take to print `ready` / `done`.
pub const TARGET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long leaktrace may take to finish after its `--duration` (or a signal) ended the run.
pub const FINISH_GRACE: Duration = Duration::from_secs(20);

/// The line leaktrace prints on stderr once the probes are in place.
pub const ATTACHED_PREFIX: &str = "leaktrace: attached";
/// The prefix of leaktrace's one error line.
pub const ERROR_PREFIX: &str = "leaktrace: error:";

/// The allocator entry points a site's `allocator` can name.
pub const ALLOCATORS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "mmap",
];

/// What targets/native.c leaks (keep in sync with its `run_leaks`):
/// (leak function, allocator, allocs, bytes per alloc).
pub const NATIVE_LEAKS: &[(&str, &str, u64, u64)] = &[
    ("leak_malloc", "malloc", 10, 1000),
    ("leak_calloc", "calloc", 4, 5 * 200),
    ("leak_realloc_moved", "realloc", 3, 3000),
    ("leak_realloc_inplace", "realloc", 2, 500),
    ("leak_reallocarray", "reallocarray", 2, 25 * 10),
    ("leak_posix_memalign", "posix_memalign", 3, 256),
    ("leak_aligned_alloc", "aligned_alloc", 2, 512),
    ("leak_memalign", "memalign", 2, 100),
    ("leak_valloc", "valloc", 2, 3000),
    ("leak_pvalloc", "pvalloc", 1, 5000),
    ("leak_strdup", "malloc", 3, 100),
    ("leak_mmap", "mmap", 2, 8192),
    ("leak_malloc_large", "malloc", 2, 300000),
    ("leak_inlined", "malloc", 1, 777),
];

/// pvalloc rounds its 5000-byte request up to whole pages: a tracer may count either.
pub const PVALLOC_ROUNDED: u64 = 8192;

/// Blocks native.c leaks.
pub fn native_leak_allocs() -> u64 {
    NATIVE_LEAKS.iter().map(|l| l.2).sum()
}

/// Bytes native.c leaks, with pvalloc's block counted as PVALLOC_BYTES.
pub fn native_leak_bytes(pvalloc_bytes: u64) -> u64 {
    NATIVE_LEAKS
        .iter()
        .map(|&(f, _, n, each)| {
            if f == "leak_pvalloc" {
                pvalloc_bytes
            } else {
                n * each
            }
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Locations
// ---------------------------------------------------------------------------------------------

/// The leaktrace binary: `$LEAKTRACE_BIN`, else `../target/debug/leaktrace` from this crate.
pub fn leaktrace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LEAKTRACE_BIN") {
        return PathBuf::from(p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = manifest.join("../target/debug/leaktrace");
    assert!(
        bin.exists(),
        "leaktrace binary not found at {} (build it with `cargo build -p leak-user` or set LEAKTRACE_BIN)",
        bin.display()
    );
    bin
}

/// The C source of a target in `tests/targets/`.
pub fn target_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("targets")
        .join(format!("{name}.c"))
}

/// The 1-based line of a target's source marked `/* @line MARK */`: the call line a symbolized
/// frame of function MARK must point at.
pub fn marked_line(target: &str, mark: &str) -> u32 {
    let src = fs::read_to_string(target_source(target)).expect("read target source");
    let needle = format!("@line {mark} */");
    let hits: Vec<u32> = src
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&needle))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "marker `{needle}` must be on exactly one line of {target}.c"
    );
    hits[0]
}

// ---------------------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------------------

/// A directory under `std::env::temp_dir()` with a unique name, removed (with its content) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "leaktrace-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        // Readable by other users too: the not-root test runs a target as nobody.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Building targets
// ---------------------------------------------------------------------------------------------

/// How a target is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `-O0 -g`: frame pointers, no optimization.
    O0,
    /// `-O2 -g -fomit-frame-pointer`: unwinding needs the CFI.
    O2NoFramePointer,
    /// `-static -O2 -g`: the allocator is inside the executable.
    Static,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::O0, Variant::O2NoFramePointer, Variant::Static];

    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Variant::O0 => &["-O0", "-g"],
            Variant::O2NoFramePointer => &["-O2", "-g", "-fomit-frame-pointer"],
            Variant::Static => &["-static", "-O2", "-g"],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Variant::O0 => "O0",
            Variant::O2NoFramePointer => "O2-nofp",
            Variant::Static => "static",
        }
    }
}

/// A compiled target in its own temporary directory (removed on drop).
#[derive(Debug)]
pub struct Built {
    pub name: String,
    pub exe: PathBuf,
    pub dir: TempDir,
}

impl Built {
    /// The executable's file name, as it appears at the end of module paths.
    pub fn file_name(&self) -> String {
        self.exe.file_name().unwrap().to_string_lossy().into_owned()
    }
}

/// Compiles `tests/targets/NAME.c` with `gcc -Wall -Wextra -Werror -pthread` and the variant's flags.
pub fn build(name: &str, variant: Variant) -> Built {
    let mut flags = vec!["-Wall", "-Wextra", "-Werror", "-pthread"];
    flags.extend_from_slice(variant.flags());
    build_with(name, &format!("{name}-{}", variant.label()), &flags)
}

/// Compiles `tests/targets/NAME.c` with exactly `flags`, into an executable called `exe_name`.
pub fn build_with(name: &str, exe_name: &str, flags: &[&str]) -> Built {
    let dir = TempDir::new(name);
    let exe = dir.path().join(exe_name);
    let src = target_source(name);
    let out = Command::new("gcc")
        .args(flags)
        .arg("-I")
        .arg(src.parent().unwrap())
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc {flags:?} {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Built {
        name: name.to_string(),
        exe,
        dir,
    }
}

// ---------------------------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------------------------

/// The state letter of /proc/PID/stat (`R`, `S`, `Z`, ...), None when there is no such process.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Alive and not a zombie.
pub fn process_alive(pid: u32) -> bool {
    matches!(process_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Waits until PID is gone (or a zombie nobody reaps).
pub fn wait_process_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    !process_alive(pid)
}

pub fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Reads LEN bytes of PID's memory at ADDR through /proc/PID/mem.
pub fn read_process_memory(pid: u32, addr: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, addr)
        .unwrap_or_else(|e| panic!("read {len} bytes of pid {pid} at {addr:#x}: {e}"));
    buf
}

/// Pids of the processes running EXE (also once EXE is deleted).
pub fn pids_running(exe: &Path) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = exe.to_string_lossy().into_owned();
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| {
                let p = p.to_string_lossy();
                p == want || p.strip_suffix(" (deleted)") == Some(want.as_str())
            })
        })
        .filter(|pid| process_alive(*pid))
        .collect()
}

/// Kills (SIGKILL), on drop, every process still running EXE: for targets that leaktrace itself
/// started (`leaktrace run`), which the test does not own. Declare it after the [`Built`] it
/// guards, so that it runs first.
#[derive(Debug)]
pub struct StrayGuard {
    pub exe: PathBuf,
}

impl Drop for StrayGuard {
    fn drop(&mut self) {
        for pid in pids_running(&self.exe) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// The uprobe_events file of tracefs, when tracefs is mounted.
pub fn uprobe_events_file() -> Option<PathBuf> {
    [
        "/sys/kernel/tracing/uprobe_events",
        "/sys/kernel/debug/tracing/uprobe_events",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Spawns a thread that sends every line of R into a channel.
fn line_pump<R: Read + Send + 'static>(r: R) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------------------------
// The target process
// ---------------------------------------------------------------------------------------------

/// A running target speaking the ready/go/done protocol; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Target {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub pid: u32,
    /// `addr NAME 0x...` lines printed before `ready`: the allocator entry points in this process.
    pub addrs: HashMap<String, u64>,
    /// Every stdout line seen so far.
    pub seen: Vec<String>,
}

impl Target {
    pub fn spawn(exe: &Path, args: &[&str]) -> Target {
        let mut cmd = Command::new(exe);
        cmd.args(args);
        Target::spawn_command(cmd)
    }

    pub fn spawn_command(mut cmd: Command) -> Target {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn target {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let lines = line_pump(child.stdout.take().unwrap());
        let pid = child.id();
        Target {
            child,
            stdin,
            lines,
            pid,
            addrs: HashMap::new(),
            seen: Vec::new(),
        }
    }

    /// Waits for the line WANT; panics on an `error ...` line, on EOF or after TIMEOUT.
    pub fn wait_line(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line == want {
                        return;
                    }
                    if let Some(rest) = line.strip_prefix("addr ") {
                        let mut it = rest.split_whitespace();
                        if let (Some(name), Some(hex)) = (it.next(), it.next()) {
                            let v = u64::from_str_radix(hex.trim_start_matches("0x"), 16)
                                .unwrap_or_else(|_| panic!("bad addr line {line:?}"));
                            self.addrs.insert(name.to_string(), v);
                        }
                    }
                    assert!(
                        !line.starts_with("error"),
                        "target {} failed: {line}",
                        self.pid
                    );
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "target {}: no `{want}` line within {timeout:?} (saw {:?})",
                        self.pid, self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "target {}: stdout closed before `{want}` (status {status:?}, saw {:?})",
                        self.pid, self.seen
                    )
                }
            }
        }
    }

    pub fn wait_ready(&mut self) {
        self.wait_line("ready", TARGET_TIMEOUT);
    }

    /// Lets the target allocate.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("target stdin");
        stdin.write_all(b"go\n").expect("write to target stdin");
        stdin.flush().expect("flush target stdin");
    }

    pub fn wait_done(&mut self) {
        self.wait_line("done", TARGET_TIMEOUT);
    }

    /// Writes LINE and a newline to the target's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("target stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to target stdin");
        stdin.flush().expect("flush target stdin");
    }

    /// Reads stdout up to its end (the target exited, or closed it) into `seen`; panics on an
    /// `error ...` line or after TIMEOUT.
    pub fn wait_eof(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    assert!(
                        !line.starts_with("error"),
                        "target {} failed: {line}",
                        self.pid
                    );
                    self.seen.push(line);
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "target {}: stdout still open after {timeout:?} (saw {:?})",
                    self.pid, self.seen
                ),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// The entry point NAME in this process, as the target printed it.
    pub fn addr(&self, name: &str) -> u64 {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("target printed no address for {name}"))
    }

    pub fn alive(&self) -> bool {
        process_alive(self.pid)
    }

    /// Waits for the target to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// The leaktrace process
// ---------------------------------------------------------------------------------------------

/// A running leaktrace; killed (SIGKILL) on drop. Its stdout is collected and its stderr drained
/// on threads, so it never blocks on a full pipe.
#[derive(Debug)]
pub struct Tracer {
    child: Option<Child>,
    pub pid: u32,
    /// Fed by the stdout thread: the whole of stdout, once the pipe is closed.
    stdout: Receiver<Vec<u8>>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    /// Sends once stderr is closed.
    stderr_closed: Receiver<()>,
    command: String,
}

/// A leaktrace run that ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl Tracer {
    /// Starts `leaktrace ARGS`.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Tracer {
        let mut cmd = Command::new(leaktrace_bin());
        cmd.args(args);
        Tracer::start_command(cmd)
    }

    /// Starts a prepared command (e.g. leaktrace under setpriv).
    pub fn start_command(mut cmd: Command) -> Tracer {
        let command = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
        let pid = child.id();
        let mut out = child.stdout.take().unwrap();
        let (stdout_tx, stdout) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            let _ = stdout_tx.send(buf);
        });
        let err = child.stderr.take().unwrap();
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr_lines);
        let (closed_tx, stderr_closed) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
            let _ = closed_tx.send(());
        });
        Tracer {
            child: Some(child),
            pid,
            stdout,
            stderr_lines,
            stderr_closed,
            command,
        }
    }

    pub fn stderr_so_far(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    /// Waits for the `leaktrace: attached` line on stderr; panics (with what leaktrace said) when
    /// it exits first or does not attach within the timeout.
    pub fn wait_attached(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .stderr_lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with(ATTACHED_PREFIX))
            {
                return;
            }
            let child = self.child.as_mut().expect("tracer child");
            if let Ok(Some(st)) = child.try_wait() {
                // Give the stderr thread a moment to collect the last lines.
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "leaktrace exited ({st}) before attaching: {}\nstderr:\n{}",
                    self.command,
                    clip(&self.stderr_so_far())
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "leaktrace did not print `{ATTACHED_PREFIX}` within {timeout:?}: {}\nstderr:\n{}",
                    self.command,
                    clip(&self.stderr_so_far())
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        send_signal(self.pid, sig);
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits for leaktrace to exit by itself; panics (after killing it) on timeout.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            let child = self.child.as_mut().expect("tracer child");
            if let Ok(Some(st)) = child.try_wait() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "leaktrace still running after {timeout:?}: {}\nstderr:\n{}",
                    self.command,
                    clip(&self.stderr_so_far())
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        // A process leaktrace started (`run`) inherits its stdout/stderr: if it outlives
        // leaktrace, the pipes stay open. Do not wait for them forever.
        let pipes_timeout = Duration::from_secs(5);
        let stdout = self.stdout.recv_timeout(pipes_timeout).unwrap_or_else(|_| {
            panic!(
                "leaktrace exited ({status}) but its stdout is still open after {pipes_timeout:?}: \
                 a process it started is still running? {}\nstderr:\n{}",
                self.command,
                clip(&self.stderr_so_far())
            )
        });
        let _ = self.stderr_closed.recv_timeout(pipes_timeout);
        Finished {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: self.stderr_so_far(),
            command: self.command.clone(),
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Runs `leaktrace ARGS` to completion (for runs that need no target protocol).
pub fn run_leaktrace<S: AsRef<std::ffi::OsStr>>(args: &[S], timeout: Duration) -> Finished {
    Tracer::start(args).wait(timeout)
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics (with everything leaktrace said) unless it exited with CODE.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code(),
            Some(code),
            "leaktrace exit status {} (want {code}): {}\nstderr:\n{}\nstdout:\n{}",
            self.status,
            self.command,
            clip(&self.stderr),
            truncate(&self.stdout, 4000)
        );
    }

    /// Exit 0, no panic: the normal end of a run.
    pub fn assert_success(&self) {
        self.assert_code(0);
        self.assert_no_panic();
    }

    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "leaktrace panicked: {}\nstderr:\n{}",
            self.command,
            clip(&self.stderr)
        );
    }

    /// The lines of stderr starting with `leaktrace: error:`.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with(ERROR_PREFIX))
            .collect()
    }

    /// Exit 1 with exactly one `leaktrace: error:` line and no panic; returns that line.
    pub fn assert_error(&self) -> String {
        self.assert_code(1);
        self.assert_no_panic();
        let lines = self.error_lines();
        assert_eq!(
            lines.len(),
            1,
            "want exactly one `{ERROR_PREFIX}` line: {}\nstderr:\n{}",
            self.command,
            clip(&self.stderr)
        );
        lines[0].to_string()
    }

    /// stdout parsed as exactly one JSON report.
    pub fn report(&self) -> Report {
        Report::parse(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\nstderr:\n{}", self.command, clip(&self.stderr)))
    }
}

/// Stderr for an assertion message: long lines (verifier logs) cut, at most 60 lines.
pub fn clip(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let skip = lines.len().saturating_sub(60);
    let mut out = String::new();
    if skip > 0 {
        let _ = writeln!(out, "[{skip} earlier lines]");
    }
    for l in &lines[skip..] {
        if l.len() > 1500 {
            let _ = writeln!(
                out,
                "{} [... {} bytes cut]",
                truncate(l, 1500),
                l.len() - 1500
            );
        } else {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---------------------------------------------------------------------------------------------
// A whole traced session
// ---------------------------------------------------------------------------------------------

/// The tracer arguments of a quick run: JSON, 2 s, samples every 300 ms, every allocation reported.
pub const DEFAULT_TRACER_ARGS: &[&str] = &[
    "--format",
    "json",
    "--duration",
    "2s",
    "--interval",
    "300ms",
    "--min-age",
    "0s",
];

/// Options of one `--pid` session.
#[derive(Debug, Clone)]
pub struct SessionOpts<'a> {
    /// Arguments for the target program.
    pub target_args: &'a [&'a str],
    /// Arguments for leaktrace besides `--pid N`.
    pub tracer_args: &'a [&'a str],
    /// How long leaktrace may take to end by itself once the target said `done`.
    pub finish_timeout: Duration,
}

impl Default for SessionOpts<'_> {
    fn default() -> Self {
        SessionOpts {
            target_args: &[],
            tracer_args: DEFAULT_TRACER_ARGS,
            finish_timeout: FINISH_GRACE,
        }
    }
}

/// A target traced by `leaktrace --pid`, up to the point where the target said `done`.
#[derive(Debug)]
pub struct Attached {
    pub target: Target,
    pub tracer: Tracer,
}

/// Starts TARGET_EXE, waits for `ready`, starts `leaktrace --pid PID TRACER_ARGS`,
/// waits for `leaktrace: attached`, lets the target allocate and waits for `done`.
pub fn attach_and_go(exe: &Path, target_args: &[&str], tracer_args: &[&str]) -> Attached {
    let mut target = Target::spawn(exe, target_args);
    target.wait_ready();
    let mut args: Vec<String> = vec!["--pid".into(), target.pid.to_string()];
    args.extend(tracer_args.iter().map(|s| s.to_string()));
    let mut tracer = Tracer::start(&args);
    tracer.wait_attached(ATTACH_TIMEOUT);
    target.go();
    target.wait_done();
    Attached { target, tracer }
}

/// A finished `--pid` session: the target (still running unless it exited), what leaktrace did.
#[derive(Debug)]
pub struct Session {
    pub target: Target,
    pub finished: Finished,
}

/// The whole protocol; leaktrace must end by itself (its `--duration`, or the target exiting).
pub fn trace(built: &Built, opts: &SessionOpts) -> Session {
    let Attached { target, tracer } = attach_and_go(&built.exe, opts.target_args, opts.tracer_args);
    let finished = tracer.wait(opts.finish_timeout);
    Session { target, finished }
}

/// A finished, successful `--pid` session whose target (and its build directory) is gone.
#[derive(Debug)]
pub struct Traced {
    pub report: Report,
    /// Where the target executable was.
    pub exe: PathBuf,
    /// The allocator entry points the target printed (see [`Target::addrs`]).
    pub addrs: HashMap<String, u64>,
    pub stderr: String,
}

impl Traced {
    /// The target executable's file name.
    pub fn exe_name(&self) -> String {
        self.exe.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Names of allocator entry points at the same address as NAME in the target (NAME included):
    /// glibc's aligned_alloc *is* memalign, a probe there cannot tell which name was called.
    pub fn aliases(&self, name: &str) -> Vec<String> {
        aliases(&self.addrs, name)
    }
}

/// Builds NAME in VARIANT, traces it with exactly TRACER_ARGS (besides `--pid`), kills the
/// target and returns the report of a successful run.
pub fn traced_report(name: &str, variant: Variant, tracer_args: &[&str]) -> Report {
    let built = build(name, variant);
    let mut session = trace(
        &built,
        &SessionOpts {
            tracer_args,
            ..SessionOpts::default()
        },
    );
    session.target.kill();
    session.finished.assert_success();
    session.finished.report()
}

/// Builds NAME in VARIANT, traces it with the default options (2 s, 300 ms interval, min-age 0)
/// plus EXTRA tracer args, kills the target and returns the report of a successful run.
pub fn trace_report(name: &str, variant: Variant, extra: &[&str]) -> Traced {
    let built = build(name, variant);
    let mut args: Vec<&str> = DEFAULT_TRACER_ARGS.to_vec();
    args.extend_from_slice(extra);
    let mut session = trace(
        &built,
        &SessionOpts {
            tracer_args: &args,
            ..SessionOpts::default()
        },
    );
    session.target.kill();
    session.finished.assert_success();
    let report = session.finished.report();
    Traced {
        report,
        exe: built.exe.clone(),
        addrs: session.target.addrs.clone(),
        stderr: session.finished.stderr.clone(),
    }
}

/// A trace shared by the tests of one test binary: made once, by the first test that needs it.
/// A failure is remembered too, so that each test reports it instead of retrying.
pub type SharedTrace = OnceLock<Result<Traced, String>>;

/// The trace in CELL, made by MAKE on first use; panics with the first attempt's failure.
pub fn shared(cell: &'static SharedTrace, make: impl FnOnce() -> Traced) -> &'static Traced {
    shared_value(cell, make)
}

/// The value in CELL, made by MAKE on first use; panics with the first attempt's failure.
pub fn shared_value<T: Send + Sync>(
    cell: &'static OnceLock<Result<T, String>>,
    make: impl FnOnce() -> T,
) -> &'static T {
    let result = cell.get_or_init(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(make)).map_err(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(non-string panic)".to_string())
        })
    });
    match result {
        Ok(t) => t,
        Err(msg) => panic!("the shared trace failed: {msg}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key)
        .ok_or_else(|| format!("field `{key}` missing in {}", compact(v)))
}

fn u64_field(v: &Value, key: &str) -> Result<u64, String> {
    field(v, key)?
        .as_u64()
        .ok_or_else(|| format!("field `{key}` is not an unsigned integer in {}", compact(v)))
}

fn f64_field(v: &Value, key: &str) -> Result<f64, String> {
    field(v, key)?
        .as_f64()
        .ok_or_else(|| format!("field `{key}` is not a number in {}", compact(v)))
}

fn str_field(v: &Value, key: &str) -> Result<String, String> {
    field(v, key)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("field `{key}` is not a string in {}", compact(v)))
}

fn opt_str_field(v: &Value, key: &str) -> Result<Option<String>, String> {
    match field(v, key)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(format!(
            "field `{key}` is neither string nor null in {}",
            compact(v)
        )),
    }
}

fn bool_field(v: &Value, key: &str) -> Result<bool, String> {
    field(v, key)?
        .as_bool()
        .ok_or_else(|| format!("field `{key}` is not a boolean in {}", compact(v)))
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    truncate(&s, 600).to_string()
}

/// One stack frame of a site.
#[derive(Debug, Clone)]
pub struct Frame {
    pub address: String,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub module: Option<String>,
    pub inlined: bool,
}

impl Frame {
    fn parse(v: &Value) -> Result<Frame, String> {
        let line = match field(v, "line")? {
            Value::Null => None,
            n => Some(
                n.as_u64()
                    .ok_or_else(|| format!("frame line is not an integer: {}", compact(v)))?,
            ),
        };
        Ok(Frame {
            address: str_field(v, "address")?,
            function: opt_str_field(v, "function")?,
            file: opt_str_field(v, "file")?,
            line,
            module: opt_str_field(v, "module")?,
            inlined: bool_field(v, "inlined")?,
        })
    }

    pub fn function(&self) -> &str {
        self.function.as_deref().unwrap_or("?")
    }

    pub fn address_value(&self) -> u64 {
        u64::from_str_radix(self.address.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("frame address {:?} is not 0x-hex", self.address))
    }
}

/// One allocation site (one distinct stack).
#[derive(Debug, Clone)]
pub struct Site {
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
    pub oldest_age_s: f64,
    pub growth_bytes_per_s: f64,
    pub verdict: String,
    pub allocator: String,
    pub frames: Vec<Frame>,
    pub total_allocs: u64,
    pub total_bytes: u64,
    pub truncated: bool,
    pub raw: Value,
}

impl Site {
    fn parse(v: &Value) -> Result<Site, String> {
        let frames = field(v, "frames")?
            .as_array()
            .ok_or_else(|| format!("site frames is not an array: {}", compact(v)))?
            .iter()
            .map(Frame::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Site {
            outstanding_bytes: u64_field(v, "outstanding_bytes")?,
            outstanding_allocs: u64_field(v, "outstanding_allocs")?,
            oldest_age_s: f64_field(v, "oldest_age_s")?,
            growth_bytes_per_s: f64_field(v, "growth_bytes_per_s")?,
            verdict: str_field(v, "verdict")?,
            allocator: str_field(v, "allocator")?,
            frames,
            total_allocs: u64_field(v, "total_allocs")?,
            total_bytes: u64_field(v, "total_bytes")?,
            truncated: bool_field(v, "truncated")?,
            raw: v.clone(),
        })
    }

    /// The function names of the frames, innermost first (`?` for unknown).
    pub fn function_names(&self) -> Vec<&str> {
        self.frames.iter().map(Frame::function).collect()
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.function.as_deref() == Some(name))
    }

    /// Index of the first frame of function NAME.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.frames
            .iter()
            .position(|f| f.function.as_deref() == Some(name))
    }

    /// The first frame of function NAME.
    pub fn frame(&self, name: &str) -> &Frame {
        let i = self
            .position(name)
            .unwrap_or_else(|| panic!("no frame `{name}` in {}", self.describe()));
        &self.frames[i]
    }

    /// Panics unless NAMES appear in this order (not necessarily adjacent) among the frames.
    pub fn assert_chain(&self, names: &[&str]) {
        let fns = self.function_names();
        let mut from = 0;
        for name in names {
            match fns[from..].iter().position(|f| f == name) {
                Some(i) => from += i + 1,
                None => panic!(
                    "call chain {names:?} not found in order (missing `{name}` after frame {from}) in {}",
                    self.describe()
                ),
            }
        }
    }

    /// One line: sizes, allocator, verdict and the function chain.
    pub fn describe(&self) -> String {
        format!(
            "[{} B / {} allocs, {}, {}, truncated={}] {}",
            self.outstanding_bytes,
            self.outstanding_allocs,
            self.allocator,
            self.verdict,
            self.truncated,
            self.frames
                .iter()
                .map(|f| match (&f.file, f.line) {
                    (Some(file), Some(line)) => format!(
                        "{}{} ({}:{line})",
                        f.function(),
                        if f.inlined { "[inl]" } else { "" },
                        file.rsplit('/').next().unwrap_or(file)
                    ),
                    _ => format!("{}{}", f.function(), if f.inlined { "[inl]" } else { "" }),
                })
                .collect::<Vec<_>>()
                .join(" <- ")
        )
    }
}

#[derive(Debug, Clone)]
pub struct Totals {
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
    pub allocs_seen: u64,
    pub frees_seen: u64,
    pub dropped: u64,
    pub alloc_map_full: u64,
    pub stack_map_full: u64,
}

#[derive(Debug, Clone)]
pub struct AllocatorInfo {
    pub path: String,
    pub name: String,
    pub probed: Vec<String>,
    pub missing: Vec<String>,
}

/// A place in Go code: `created_by` and `blocked_at` of a goroutine site. Unknown parts are
/// null in the report, None here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodeLocation {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
}

fn opt_u64_field(v: &Value, key: &str) -> Result<Option<u64>, String> {
    match field(v, key)? {
        Value::Null => Ok(None),
        n => n.as_u64().map(Some).ok_or_else(|| {
            format!(
                "field `{key}` is neither an unsigned integer nor null in {}",
                compact(v)
            )
        }),
    }
}

impl CodeLocation {
    fn parse(v: &Value) -> Result<CodeLocation, String> {
        if !v.is_object() {
            return Err(format!("a code location is not an object: {}", compact(v)));
        }
        Ok(CodeLocation {
            function: opt_str_field(v, "function")?,
            file: opt_str_field(v, "file")?,
            line: opt_u64_field(v, "line")?,
        })
    }

    /// The file is NAME, or a path ending in `/NAME`.
    pub fn file_is(&self, name: &str) -> bool {
        self.file
            .as_deref()
            .is_some_and(|f| f == name || f.ends_with(&format!("/{name}")))
    }

    /// `function (file:line)`, `?` for unknown parts, the file without its directory.
    pub fn describe(&self) -> String {
        let file = self
            .file
            .as_deref()
            .map_or("?", |f| f.rsplit('/').next().unwrap_or(f));
        let line = self.line.map_or("?".to_string(), |l| l.to_string());
        format!(
            "{} ({file}:{line})",
            self.function.as_deref().unwrap_or("?")
        )
    }
}

/// The goroutines created by one `go` statement (one entry of `goroutines.sites`).
#[derive(Debug, Clone)]
pub struct GoroutineSite {
    /// The `go` statement.
    pub created_by: CodeLocation,
    pub start_function: Option<String>,
    /// Goroutines of this site alive at the report.
    pub live: u64,
    pub growth_per_s: f64,
    /// Live goroutines by state (`chan send`, `select`, `running`, ...).
    pub states: BTreeMap<String, u64>,
    /// Where (most of) the blocked ones wait; null when none is blocked.
    pub blocked_at: Option<CodeLocation>,
    /// `growing`, `steady` or `young`, when the report gives one.
    pub verdict: Option<String>,
    pub raw: Value,
}

impl GoroutineSite {
    fn parse(v: &Value) -> Result<GoroutineSite, String> {
        let states = field(v, "states")?
            .as_object()
            .ok_or_else(|| format!("`states` is not an object in {}", compact(v)))?
            .iter()
            .map(|(k, n)| {
                n.as_u64().map(|n| (k.clone(), n)).ok_or_else(|| {
                    format!(
                        "state count `{k}` is not an unsigned integer in {}",
                        compact(v)
                    )
                })
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let blocked_at = match field(v, "blocked_at")? {
            Value::Null => None,
            b => Some(CodeLocation::parse(b)?),
        };
        let verdict = match v.get("verdict") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(format!("goroutine site verdict is {other}")),
        };
        Ok(GoroutineSite {
            created_by: CodeLocation::parse(field(v, "created_by")?)?,
            start_function: opt_str_field(v, "start_function")?,
            live: u64_field(v, "live")?,
            growth_per_s: f64_field(v, "growth_per_s")?,
            states,
            blocked_at,
            verdict,
            raw: v.clone(),
        })
    }

    /// Created at LINE of a file called FILE.
    pub fn created_at(&self, file: &str, line: u32) -> bool {
        self.created_by.file_is(file) && self.created_by.line == Some(u64::from(line))
    }

    /// One line: count, verdict, where created, start function, states, where blocked.
    pub fn describe(&self) -> String {
        format!(
            "[{} live, {:+.2}/s, {}] created by {} start {} states {:?} blocked at {}",
            self.live,
            self.growth_per_s,
            self.verdict.as_deref().unwrap_or("no verdict"),
            self.created_by.describe(),
            self.start_function.as_deref().unwrap_or("?"),
            self.states,
            self.blocked_at
                .as_ref()
                .map_or("-".to_string(), CodeLocation::describe)
        )
    }
}

/// The `goroutines` section of a Go target's report.
#[derive(Debug, Clone)]
pub struct Goroutines {
    /// Goroutines alive at the end.
    pub live: u64,
    pub sites: Vec<GoroutineSite>,
    pub raw: Value,
}

impl Goroutines {
    fn parse(v: &Value) -> Result<Goroutines, String> {
        let sites = field(v, "sites")?
            .as_array()
            .ok_or("`goroutines.sites` is not an array")?
            .iter()
            .map(GoroutineSite::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Goroutines {
            live: u64_field(v, "live")?,
            sites,
            raw: v.clone(),
        })
    }

    /// The sites whose `go` statement is at LINE of a file called FILE.
    pub fn sites_created_at(&self, file: &str, line: u32) -> Vec<&GoroutineSite> {
        self.sites
            .iter()
            .filter(|s| s.created_at(file, line))
            .collect()
    }

    /// The one site created at LINE of FILE; panics (listing all sites) unless exactly one.
    pub fn site_created_at(&self, file: &str, line: u32) -> &GoroutineSite {
        let found = self.sites_created_at(file, line);
        assert_eq!(
            found.len(),
            1,
            "want exactly one goroutine site created at {file}:{line}, found {}:\n{}",
            found.len(),
            self.describe()
        );
        found[0]
    }

    /// Sum of the sites' live goroutines.
    pub fn site_sum(&self) -> u64 {
        self.sites.iter().map(|s| s.live).sum()
    }

    /// Every site, one per line, for assertion messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "goroutines: {} live, {} sites:\n",
            self.live,
            self.sites.len()
        );
        for site in &self.sites {
            let _ = writeln!(s, "  {}", site.describe());
        }
        s
    }
}

/// The JSON report, checked for the fields of the contract while parsing.
#[derive(Debug, Clone)]
pub struct Report {
    pub raw: Value,
    pub is_final: bool,
    pub pid: u64,
    pub exe: String,
    pub language: String,
    pub duration_s: f64,
    pub min_age_s: f64,
    pub interval_s: f64,
    pub ended_by: Option<String>,
    pub totals: Totals,
    pub sites: Vec<Site>,
    pub allocator: AllocatorInfo,
    /// The `goroutines` section: present for Go targets only.
    pub goroutines: Option<Goroutines>,
}

fn string_list(v: &Value, key: &str) -> Result<Vec<String>, String> {
    field(v, key)?
        .as_array()
        .ok_or_else(|| format!("`{key}` is not an array"))?
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{key}` holds a non-string"))
        })
        .collect()
}

impl Report {
    /// Parses TEXT as exactly one JSON object (trailing garbage is an error).
    pub fn parse(text: &str) -> Result<Report, String> {
        let raw: Value = serde_json::from_str(text.trim()).map_err(|e| {
            format!(
                "stdout is not one JSON object ({e}); stdout was:\n{}",
                truncate(text, 4000)
            )
        })?;
        Report::from_value(raw)
    }

    pub fn from_value(raw: Value) -> Result<Report, String> {
        let v = &raw;
        let target = field(v, "target")?;
        let settings = field(v, "settings")?;
        let totals = field(v, "totals")?;
        let reasons = field(totals, "drop_reasons")?;
        let alloc = field(v, "allocator")?;
        let sites = field(v, "sites")?
            .as_array()
            .ok_or("`sites` is not an array")?
            .iter()
            .map(Site::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let goroutines = match v.get("goroutines") {
            None => None,
            Some(g) => Some(Goroutines::parse(g)?),
        };
        let ended_by = match field(v, "ended_by")? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => return Err(format!("ended_by is {other}")),
        };
        let report = Report {
            is_final: bool_field(v, "final")?,
            pid: u64_field(target, "pid")?,
            exe: str_field(target, "exe")?,
            language: str_field(target, "language")?,
            duration_s: f64_field(v, "duration_s")?,
            min_age_s: f64_field(settings, "min_age_s")?,
            interval_s: f64_field(settings, "interval_s")?,
            ended_by,
            totals: Totals {
                outstanding_bytes: u64_field(totals, "outstanding_bytes")?,
                outstanding_allocs: u64_field(totals, "outstanding_allocs")?,
                allocs_seen: u64_field(totals, "allocs_seen")?,
                frees_seen: u64_field(totals, "frees_seen")?,
                dropped: u64_field(totals, "dropped")?,
                alloc_map_full: u64_field(reasons, "alloc_map_full")?,
                stack_map_full: u64_field(reasons, "stack_map_full")?,
            },
            sites,
            allocator: AllocatorInfo {
                path: str_field(alloc, "path")?,
                name: str_field(alloc, "name")?,
                probed: string_list(alloc, "probed")?,
                missing: string_list(alloc, "missing")?,
            },
            goroutines,
            raw,
        };
        Ok(report)
    }

    /// Every site with a frame of function NAME.
    pub fn sites_with(&self, name: &str) -> Vec<&Site> {
        self.sites.iter().filter(|s| s.has_function(name)).collect()
    }

    /// The one site with a frame of function NAME; panics (listing all sites) unless exactly one.
    pub fn site_with(&self, name: &str) -> &Site {
        let found = self.sites_with(name);
        assert_eq!(
            found.len(),
            1,
            "want exactly one site with a frame `{name}`, found {}:\n{}",
            found.len(),
            self.describe()
        );
        found[0]
    }

    /// Sum of outstanding bytes / allocs over the sites with a frame NAME.
    pub fn outstanding_with(&self, name: &str) -> (u64, u64) {
        self.sites_with(name).iter().fold((0, 0), |(b, n), s| {
            (b + s.outstanding_bytes, n + s.outstanding_allocs)
        })
    }

    /// Every site, one per line, for assertion messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "report: ended_by={:?} totals: {} B / {} allocs, allocs_seen={} frees_seen={} dropped={}; allocator {} ({}); {} sites:\n",
            self.ended_by,
            self.totals.outstanding_bytes,
            self.totals.outstanding_allocs,
            self.totals.allocs_seen,
            self.totals.frees_seen,
            self.totals.dropped,
            self.allocator.name,
            self.allocator.path,
            self.sites.len()
        );
        for site in &self.sites {
            let _ = writeln!(s, "  {}", site.describe());
        }
        if let Some(g) = &self.goroutines {
            s.push_str(&g.describe());
        }
        s
    }

    /// The `goroutines` section; panics (with the whole report) when there is none.
    pub fn goroutines(&self) -> &Goroutines {
        self.goroutines.as_ref().unwrap_or_else(|| {
            panic!(
                "no `goroutines` section in the report of a Go target (language {:?}):\n{}",
                self.language,
                self.describe()
            )
        })
    }

    /// No site may have been made inside the allocator: no allocator entry point (or glibc's
    /// `__libc_*` names) among the callers (frames[1..]) of a site.
    pub fn assert_no_nested_allocator_sites(&self) {
        for site in &self.sites {
            // An inlined frame is a wrapper, not a call into the allocator: ld.so's own
            // `calloc` in rtld-malloc.h forwards to libc's calloc.
            for f in site.frames.iter().skip(1).filter(|f| !f.inlined) {
                let name = f.function();
                let inner = name.strip_prefix("__libc_").unwrap_or(name);
                assert!(
                    !ALLOCATORS.contains(&inner) && inner != "free",
                    "site made inside the allocator (`{name}` among its callers):\n  {}\n{}",
                    site.describe(),
                    self.describe()
                );
            }
        }
    }

    /// Sum of the sites' outstanding bytes and allocs.
    pub fn site_sums(&self) -> (u64, u64) {
        self.sites.iter().fold((0, 0), |(b, n), s| {
            (b + s.outstanding_bytes, n + s.outstanding_allocs)
        })
    }
}

/// Entry points that are one function at one address in a target (ADDRS as the target printed
/// them), NAME included.
pub fn aliases(addrs: &HashMap<String, u64>, name: &str) -> Vec<String> {
    let mut v: Vec<String> = match addrs.get(name) {
        None => Vec::new(),
        Some(a) => addrs
            .iter()
            .filter(|(n, addr)| *addr == a && ALLOCATORS.contains(&n.as_str()))
            .map(|(n, _)| n.clone())
            .collect(),
    };
    if !v.iter().any(|n| n == name) {
        v.push(name.to_string());
    }
    v.sort();
    v
}

/// Runs each named check `fn(Variant)` once per build variant, as three tests in a module of
/// the check's name (`o0`, `o2_nofp`, `static_o2`).
#[macro_export]
macro_rules! per_variant {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use $crate::Variant;
            #[test]
            fn o0() {
                super::$check(Variant::O0)
            }
            #[test]
            fn o2_nofp() {
                super::$check(Variant::O2NoFramePointer)
            }
            #[test]
            fn static_o2() {
                super::$check(Variant::Static)
            }
        }
    )*};
}

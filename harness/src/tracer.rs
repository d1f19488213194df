//! The leaktrace process: started, watched for its `attached` line, waited for, its output kept.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::paths::leaktrace_bin;
use crate::process::send_signal;
use crate::report::Report;
use crate::{ATTACHED_PREFIX, ERROR_PREFIX};

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

pub(crate) fn truncate(s: &str, max: usize) -> &str {
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

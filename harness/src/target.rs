//! A target process speaking the ready/go/done protocol on its stdin and stdout.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::TARGET_TIMEOUT;
use crate::lines::line_pump;
use crate::process::process_alive;

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

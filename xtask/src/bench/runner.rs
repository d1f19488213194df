//! Running the workloads and the tracers: the target's ready/loop protocol, leaktrace and the
//! peer started, measured (CPU, peak RSS, attach time) and stopped.

use std::{
    fs,
    io::Write as _,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use leaktrace_harness::line_pump;

use super::{
    ATTACH_TIMEOUT, EXIT_TIMEOUT, LOOP_TIMEOUT, LoopStats, Outcome, PEER_READY, READY_TIMEOUT,
    TracerRun, Workload, allocators::Allocator, read_totals,
};
use crate::cmd;

/// The lines still to come from `lines` until its end (the process exited) or `deadline`.
pub(super) fn drain(lines: &Receiver<String>, deadline: Instant) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.push(line);
    }
    out
}

/// Waits for a line starting with `prefix`; `seen` collects every line read, for errors.
pub(super) fn wait_for_line(
    lines: &Receiver<String>,
    prefix: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
) -> std::result::Result<String, &'static str> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(RecvTimeoutError::Timeout) => return Err("timed out"),
            Err(RecvTimeoutError::Disconnected) => return Err("its output ended"),
        }
    }
}

/// A running bench program (a workload, scale or soak), stopped before its work: it printed
/// `ready` and waits for a line on stdin.
pub(super) struct Target {
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) stdout: Receiver<String>,
    pub(super) pid: u32,
    /// For messages: "alloc_loop (C 1 thread)".
    pub(super) label: String,
}

impl Target {
    /// Starts a per-pair workload and waits for its `ready` line.
    pub(super) fn start(exe: &Path, workload: &Workload) -> Result<Self> {
        Self::spawn(
            exe,
            &[workload.pairs.to_string(), workload.threads.to_string()],
            format!("{} ({})", workload.program.name(), workload.name),
        )
    }

    /// Starts `exe args` and waits for its `ready` line.
    pub(super) fn spawn(exe: &Path, args: &[String], label: String) -> Result<Self> {
        let mut command = Command::new(exe);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start `{}`", cmd::display(&command)))?;
        let stdin = child.stdin.take();
        let stdout = line_pump(child.stdout.take().context("no stdout pipe")?);
        let pid = child.id();
        let mut target = Self {
            child,
            stdin,
            stdout,
            pid,
            label,
        };
        target.expect("ready", READY_TIMEOUT)?;
        Ok(target)
    }

    pub(super) fn expect(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let mut seen = Vec::new();
        wait_for_line(&self.stdout, prefix, timeout, &mut seen).map_err(|why| {
            anyhow::anyhow!(
                "{} (pid {}) printed no `{prefix}` line: {why}{}",
                self.label,
                self.pid,
                if seen.is_empty() {
                    String::new()
                } else {
                    format!("; it printed: {}", seen.join(" / "))
                }
            )
        })
    }

    /// Sends one line to the program: the first starts its work, the second lets it exit.
    pub(super) fn send_line(&mut self) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .with_context(|| format!("the stdin of {} is closed", self.label))?;
        stdin
            .write_all(b"\n")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("could not write to {}", self.label))
    }

    /// Starts the loop and returns what the workload reported about it.
    pub(super) fn run_loop(&mut self) -> Result<LoopStats> {
        self.send_line()?;
        let line = self.expect("ns_per_pair=", LOOP_TIMEOUT)?;
        LoopStats::parse(&line)
            .with_context(|| format!("{} printed a bad result: {line}", self.label))
    }

    /// Lets the program free its blocks and exit; fails unless it exits 0.
    pub(super) fn finish(mut self) -> Result<()> {
        self.send_line()?;
        self.stdin = None;
        let status = wait_timeout(&mut self.child, EXIT_TIMEOUT)?;
        if !status.success() {
            bail!("{} failed ({})", self.label, cmd::describe(status));
        }
        Ok(())
    }

    pub(super) fn run_untraced(mut self) -> Result<LoopStats> {
        let stats = self.run_loop()?;
        self.finish()?;
        Ok(stats)
    }

    /// Starts `tracer`, waits until it is attached, runs the loop, measures the tracer, stops it
    /// with SIGINT while the loop's last blocks are still live, and lets the workload exit.
    /// Returns the loop's figures, the tracer's, and everything the tracer printed on stdout.
    pub(super) fn run_traced(
        mut self,
        tracer: Command,
        ready: Ready,
    ) -> Result<(LoopStats, Usage, Vec<String>)> {
        let mut tracer = Tracer::start(tracer, ready)?;
        let stats = self.run_loop()?;
        let usage = tracer.usage()?;
        let stdout = tracer.stop()?;
        self.finish()?;
        Ok((stats, usage, stdout))
    }

    /// Under leaktrace with `extra` options (`--empty-probes` for the floor, `--sample-bytes`),
    /// which writes its JSON report to `report`.
    pub(super) fn run_leaktrace(
        self,
        leaktrace: &Path,
        report: &Path,
        extra: &[&str],
    ) -> Result<TracerRun> {
        let mut command = leaktrace_command(leaktrace, self.pid, report);
        command.args(["--interval", "1s"]).args(extra);
        let (stats, usage, _) = self.run_traced(command, LEAKTRACE_READY)?;
        let totals = read_totals(report)?;
        Ok(usage.with(Outcome::Report(totals), stats))
    }

    /// Under the peer: bpftrace running `script` on this process and the library of its
    /// allocator.
    pub(super) fn run_peer(
        self,
        bpftrace: &Path,
        script: &Path,
        allocator: Allocator,
    ) -> Result<TracerRun> {
        let library = mapped_allocator(self.pid, allocator)?;
        let mut command = Command::new(bpftrace);
        // -B line: the BEGIN line must not wait in a buffer.
        command
            .args(["-B", "line"])
            .arg(script)
            .arg(self.pid.to_string())
            .arg(library);
        let ready = Ready {
            stream: Stream::Stdout,
            prefix: PEER_READY,
        };
        let (stats, usage, stdout) = self.run_traced(command, ready)?;
        let outstanding = stdout
            .iter()
            .filter(|line| line.starts_with("@allocs["))
            .count() as u64;
        Ok(usage.with(Outcome::Peer { outstanding }, stats))
    }
}

/// `leaktrace --pid PID --min-age 0s --format json --output REPORT` (the report removed first,
/// so that a stale one cannot pass for this run's).
pub(super) fn leaktrace_command(leaktrace: &Path, pid: u32, report: &Path) -> Command {
    let _ = fs::remove_file(report);
    let mut command = Command::new(leaktrace);
    command
        .arg("--pid")
        .arg(pid.to_string())
        .args(["--min-age", "0s", "--format", "json"])
        .arg("--output")
        .arg(report);
    command
}

/// leaktrace's line on stderr once its probes are attached.
pub(super) const LEAKTRACE_READY: Ready = Ready {
    stream: Stream::Stderr,
    prefix: "leaktrace: attached",
};

impl Drop for Target {
    fn drop(&mut self) {
        // Only after an error: finish() has reaped it otherwise.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The library of ALLOCATOR mapped by `pid` (the object that provides malloc and free for
/// alloc_loop).
pub(super) fn mapped_allocator(pid: u32, allocator: Allocator) -> Result<String> {
    let maps_path = format!("/proc/{pid}/maps");
    let maps =
        fs::read_to_string(&maps_path).with_context(|| format!("could not read {maps_path}"))?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| allocator.provides(name))
        })
        .map(str::to_owned)
        .with_context(|| format!("no {} library in {maps_path}", allocator.name()))
}

/// Where a tracer says it is attached.
#[derive(Clone, Copy)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// The line a tracer prints once its probes are attached.
#[derive(Clone, Copy)]
pub(super) struct Ready {
    pub(super) stream: Stream,
    pub(super) prefix: &'static str,
}

/// A tracer's own figures from one run.
pub(super) struct Usage {
    pub(super) cpu_s: f64,
    pub(super) peak_rss_mib: f64,
    pub(super) attach_ms: f64,
}

impl Usage {
    pub(super) fn with(self, outcome: Outcome, stats: LoopStats) -> TracerRun {
        TracerRun {
            cpu_s: self.cpu_s,
            peak_rss_mib: self.peak_rss_mib,
            attach_ms: self.attach_ms,
            outcome,
            stats,
        }
    }
}

/// A running tracer (leaktrace or bpftrace), attached to a [`Target`].
pub(super) struct Tracer {
    pub(super) child: Child,
    /// The program's file name, for messages.
    pub(super) name: String,
    pub(super) stdout: Receiver<String>,
    pub(super) stderr: Receiver<String>,
    pub(super) pid: u32,
    pub(super) attach_ms: f64,
    /// What it printed on the ready line's stream before that line.
    pub(super) before_ready: Vec<String>,
}

impl Tracer {
    pub(super) fn start(mut command: Command, ready: Ready) -> Result<Self> {
        let name = Path::new(command.get_program())
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let launched = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start `{}`", cmd::display(&command)))?;
        let stdout = line_pump(child.stdout.take().context("no stdout pipe")?);
        let stderr = line_pump(child.stderr.take().context("no stderr pipe")?);
        let mut tracer = Self {
            pid: child.id(),
            child,
            name,
            stdout,
            stderr,
            attach_ms: 0.0,
            before_ready: Vec::new(),
        };
        let lines = match ready.stream {
            Stream::Stdout => &tracer.stdout,
            Stream::Stderr => &tracer.stderr,
        };
        let mut seen = Vec::new();
        if let Err(why) = wait_for_line(lines, ready.prefix, ATTACH_TIMEOUT, &mut seen) {
            // Its exit status, and what it said on the other stream too.
            let status = match wait_timeout(&mut tracer.child, Duration::from_secs(1)) {
                Ok(status) => format!(" ({})", cmd::describe(status)),
                Err(_) => String::new(),
            };
            let deadline = Instant::now() + Duration::from_secs(1);
            seen.extend(drain(&tracer.stdout, deadline));
            seen.extend(drain(&tracer.stderr, deadline));
            bail!(
                "`{}` did not attach: {why}{status}; it printed: {}",
                cmd::display(&command),
                seen.join(" / ")
            );
        }
        tracer.attach_ms = launched.elapsed().as_secs_f64() * 1e3;
        tracer.before_ready = seen;
        Ok(tracer)
    }

    /// The tracer's CPU time (user + system, s) and peak RSS (MiB) so far, from /proc.
    pub(super) fn usage(&self) -> Result<Usage> {
        let stat_path = format!("/proc/{}/stat", self.pid);
        let stat = fs::read_to_string(&stat_path)
            .with_context(|| format!("could not read {stat_path}: has {} exited?", self.name))?;
        // Fields after the command name, which is in parentheses and may contain spaces:
        // state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("unexpected {stat_path}: {stat}"))
        };
        let (utime, stime) = (ticks(14 - 3)?, ticks(15 - 3)?);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as f64 } else { 100.0 };
        let cpu_s = (utime + stime) as f64 / hz;

        let status_path = format!("/proc/{}/status", self.pid);
        let status = fs::read_to_string(&status_path)
            .with_context(|| format!("could not read {status_path}"))?;
        let hwm_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM in {status_path}"))?;
        Ok(Usage {
            cpu_s,
            peak_rss_mib: hwm_kib as f64 / 1024.0,
            attach_ms: self.attach_ms,
        })
    }

    /// SIGINT, then waits for the tracer to write its report and exit 0; returns its stdout.
    pub(super) fn stop(&mut self) -> Result<Vec<String>> {
        let pid = libc::pid_t::try_from(self.pid).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        if unsafe { libc::kill(pid, libc::SIGINT) } != 0 {
            bail!(
                "could not send SIGINT to {} (pid {pid}): {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        let status = wait_timeout(&mut self.child, EXIT_TIMEOUT)?;
        if !status.success() {
            let stderr = drain(&self.stderr, Instant::now() + Duration::from_secs(1));
            bail!(
                "{} failed ({}); stderr:\n{}",
                self.name,
                cmd::describe(status),
                stderr.join("\n")
            );
        }
        // The reader thread hands over the rest of the output until EOF.
        Ok(drain(&self.stdout, Instant::now() + Duration::from_secs(5)))
    }

    /// SIGINT, then waits for the tracer (leaktrace) to write its JSON report to `report` and
    /// exit 0, timing both, and takes its resource usage over the whole run from wait4.
    pub(super) fn stop_measured(&mut self, report: &Path, timeout: Duration) -> Result<Stopped> {
        let pid = libc::pid_t::try_from(self.pid).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        if unsafe { libc::kill(pid, libc::SIGINT) } != 0 {
            bail!(
                "could not send SIGINT to {} (pid {pid}): {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        let sent = Instant::now();
        let mut report_s = None;
        loop {
            let mut status = 0;
            // SAFETY: rusage is plain data; all zeros is a valid value.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointers to locals; WNOHANG never blocks.
            let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if reaped < 0 {
                bail!(
                    "could not wait for {} (pid {pid}): {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
            }
            let now = sent.elapsed().as_secs_f64();
            // Seen complete between polls, or only now (then the exit bounds it).
            if report_s.is_none() && report_complete(report) {
                report_s = Some(now);
            }
            if reaped == pid {
                if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                    let stderr = drain(&self.stderr, Instant::now() + Duration::from_secs(1));
                    bail!(
                        "{} failed (wait status {status:#x}); stderr:\n{}",
                        self.name,
                        stderr.join("\n")
                    );
                }
                let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                return Ok(Stopped {
                    report_s,
                    exit_s: now,
                    cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
                    // ru_maxrss is in KiB on Linux.
                    peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
                });
            }
            if sent.elapsed() > timeout {
                bail!(
                    "{} (pid {pid}) did not exit within {} s of SIGINT",
                    self.name,
                    timeout.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// What [`Tracer::stop_measured`] measured.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stopped {
    /// From SIGINT to the report file being complete.
    pub(super) report_s: Option<f64>,
    /// From SIGINT to the exit (after the report: detaching the probes, unloading).
    pub(super) exit_s: f64,
    /// User + system time and peak RSS of the tracer's whole run.
    pub(super) cpu_s: f64,
    pub(super) peak_rss_mib: f64,
}

/// Whether leaktrace's JSON report at `path` is all there: it ends with the top-level object's
/// last field, `ended_by`, and its closing brace.
pub(super) fn report_complete(path: &Path) -> bool {
    if !fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return false;
    }
    fs::read_to_string(path)
        .is_ok_and(|text| text.trim_end().ends_with('}') && text.contains("\"ended_by\""))
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Only after an error: stop() has reaped it otherwise.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(super) fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("could not wait for a child")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!(
                "pid {} did not exit within {} s",
                child.id(),
                timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

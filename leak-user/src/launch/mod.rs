//! `leaktrace run`: start a command held just before `exec`, so the probes are in place before
//! its first allocation. The command is never left behind: it is in its own process group,
//! dies with leaktrace (`PR_SET_PDEATHSIG`), and is killed and reaped on every error path.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use thiserror::Error;

pub mod credentials;

pub use credentials::RunAs;

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("argument contains a NUL byte: {0:?}")]
    NulByte(String),
    #[error("cannot start {command}: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("cannot run {command} as {user}: {source}")]
    Credentials {
        command: String,
        user: String,
        source: io::Error,
    },
    #[error("cannot execute {command}: {source}")]
    Exec { command: String, source: io::Error },
}

/// How the command got to its entry point (see `attach_entry_stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStop {
    Stopped,
    /// It exited (and is reaped) before getting there.
    Exited,
    TimedOut,
}

/// A child that has forked and waits for [`Launched::release`] before it execs.
pub struct Launched {
    pub pid: u32,
    pub program: PathBuf,
    /// File offset of the program's entry point, once its stop probe is attached.
    pub entry_offset: Option<u64>,
    command: String,
    user: Option<String>,
    release: Option<OwnedFd>,
    /// Read end of the pipe the child reports a failed setup or exec on (close-on-exec: EOF
    /// means the exec happened).
    failure: Option<OwnedFd>,
    reaped: bool,
}

/// Where the child failed, written with its errno to the failure pipe.
#[repr(u8)]
enum ChildStage {
    Credentials = 1,
    Exec = 2,
}

/// The program `name` names, searched in PATH like execvp does.
pub fn resolve_program(name: &str) -> Result<PathBuf, LaunchError> {
    let is_executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if is_executable(&path) {
            Ok(std::path::absolute(&path).unwrap_or(path))
        } else {
            Err(LaunchError::NotFound(name.to_owned()))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| LaunchError::NotFound(name.to_owned()))
}

/// Everything the child uses, prepared before the fork: after it, only async-signal-safe calls.
struct ChildPlan {
    path: CString,
    /// The strings `argv` and `envp` point into (their heap buffers never move).
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// None: our own environment.
    envp: Option<Vec<*const libc::c_char>>,
    run_as: Option<RunAs>,
    parent: libc::pid_t,
}

impl ChildPlan {
    fn new(
        program: &Path,
        command: &[String],
        run_as: Option<&RunAs>,
    ) -> Result<Self, LaunchError> {
        let c = |s: &str| CString::new(s).map_err(|_| LaunchError::NulByte(s.to_owned()));
        let args: Vec<CString> = command.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
        let env = run_as.map(|r| r.environment(std::env::vars_os()));
        let pointers = |strings: &[CString]| {
            let mut pointers: Vec<_> = strings.iter().map(|s| s.as_ptr()).collect();
            pointers.push(std::ptr::null());
            pointers
        };
        let argv = pointers(&args);
        let envp = env.as_deref().map(pointers);
        Ok(ChildPlan {
            path: c(&program.to_string_lossy())?,
            _strings: args.into_iter().chain(env.into_iter().flatten()).collect(),
            argv,
            envp,
            run_as: run_as.cloned(),
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
        })
    }

    /// The child's side, between fork and exec; never returns.
    ///
    /// # Safety
    /// Only in the child of a fork: calls nothing but async-signal-safe functions.
    unsafe fn run(&self, release: &OwnedFd, failure: &OwnedFd) -> ! {
        let report = |stage: ChildStage| -> ! {
            // SAFETY: errno of this thread; a write from a local buffer; _exit.
            unsafe {
                let errno = *libc::__errno_location();
                let mut message = [0u8; 5];
                message[0] = stage as u8;
                message[1..].copy_from_slice(&errno.to_ne_bytes());
                libc::write(failure.as_raw_fd(), message.as_ptr().cast(), message.len());
                libc::_exit(127)
            }
        };
        // SAFETY: async-signal-safe calls on data prepared before the fork.
        unsafe {
            // Its own group: a terminal's Ctrl-C goes to leaktrace, which ends the command.
            libc::setpgid(0, 0);
            if let Some(run_as) = &self.run_as
                && (libc::setgroups(run_as.groups.len(), run_as.groups.as_ptr()) != 0
                    || libc::setgid(run_as.gid) != 0
                    || libc::setuid(run_as.uid) != 0)
            {
                report(ChildStage::Credentials);
            }
            // After the credentials change, which clears it. By now leaktrace may be gone
            // already (we would have a new parent): no command without its tracer.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() != self.parent {
                libc::_exit(127);
            }
            let mut byte = 0u8;
            // EOF: leaktrace gave up before releasing us; exit without running the command.
            if libc::read(release.as_raw_fd(), (&raw mut byte).cast(), 1) != 1 {
                libc::_exit(127);
            }
            match &self.envp {
                Some(envp) => libc::execve(self.path.as_ptr(), self.argv.as_ptr(), envp.as_ptr()),
                None => libc::execv(self.path.as_ptr(), self.argv.as_ptr()),
            };
            report(ChildStage::Exec)
        }
    }
}

/// Forks the child that will run `command` (as `run_as` if given), held before its exec.
pub fn launch_paused(command: &[String], run_as: Option<&RunAs>) -> Result<Launched, LaunchError> {
    let name = command
        .first()
        .ok_or_else(|| LaunchError::NotFound(String::new()))?;
    let program = resolve_program(name)?;
    let plan = ChildPlan::new(&program, command, run_as)?;
    let spawn_error = |source| LaunchError::Spawn {
        command: name.clone(),
        source,
    };
    let (release_read, release_write) = pipe().map_err(spawn_error)?;
    let (failure_read, failure_write) = pipe().map_err(spawn_error)?;
    // SAFETY: the child runs only `ChildPlan::run`, async-signal-safe.
    match unsafe { libc::fork() } {
        -1 => Err(spawn_error(io::Error::last_os_error())),
        0 => {
            // Our copy of the write end would keep the pipe open: without it, the read ends
            // (EOF) when leaktrace goes away before releasing us.
            drop(release_write);
            drop(failure_read);
            // SAFETY: in the child of the fork.
            unsafe { plan.run(&release_read, &failure_write) }
        }
        pid => {
            // Also from here, so that signals to the group reach it however the race goes.
            // SAFETY: setpgid on our own child.
            unsafe { libc::setpgid(pid, pid) };
            Ok(Launched {
                pid: pid as u32,
                program,
                entry_offset: None,
                command: name.clone(),
                user: run_as.map(|r| r.user.clone()),
                release: Some(release_write),
                failure: Some(failure_read),
                reaped: false,
            })
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: freshly created descriptors that we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// How long a command gets to end after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

impl Launched {
    /// Lets the child exec the command; an error if it could not (credentials, exec).
    pub fn release(&mut self) -> Result<(), LaunchError> {
        if let Some(fd) = self.release.take() {
            let byte = 1u8;
            // SAFETY: writing one byte from a valid buffer to our pipe.
            if unsafe { libc::write(fd.as_raw_fd(), (&raw const byte).cast(), 1) } != 1 {
                return Err(LaunchError::Spawn {
                    command: self.command.clone(),
                    source: io::Error::last_os_error(),
                });
            }
        }
        let Some(failure) = self.failure.take() else {
            return Ok(());
        };
        let mut message = [0u8; 5];
        // SAFETY: reading into a local buffer; returns at the exec (EOF) or the child's report.
        let read = unsafe { libc::read(failure.as_raw_fd(), message.as_mut_ptr().cast(), 5) };
        if read != 5 {
            return Ok(());
        }
        let mut errno = [0u8; 4];
        errno.copy_from_slice(&message[1..]);
        let source = io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
        let command = self.command.clone();
        Err(match (message[0], &self.user) {
            (stage, Some(user)) if stage == ChildStage::Credentials as u8 => {
                LaunchError::Credentials {
                    command,
                    user: user.clone(),
                    source,
                }
            }
            _ => LaunchError::Exec { command, source },
        })
    }

    /// Waits (up to 10 s) until the command stops at its entry point.
    pub async fn wait_for_entry_stop(&mut self) -> EntryStop {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut status = 0;
            // SAFETY: waiting on our own child.
            let pid = unsafe {
                libc::waitpid(self.pid_t(), &mut status, libc::WUNTRACED | libc::WNOHANG)
            };
            if pid == self.pid_t() {
                if libc::WIFSTOPPED(status) {
                    return EntryStop::Stopped;
                }
                self.reaped = true;
                return EntryStop::Exited;
            }
            if pid < 0 {
                self.reaped = true;
                return EntryStop::Exited;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        EntryStop::TimedOut
    }

    /// Whether the command is stopped at its program's entry point again: it re-executed
    /// itself, and the entry probe stopped the new image so that its unwind tables go in first.
    /// Any other stop (a SIGSTOP from someone) is left alone.
    pub fn stopped_at_entry_again(&self) -> bool {
        let Some(entry_offset) = self.entry_offset else {
            return false;
        };
        // SAFETY: siginfo_t is plain data; zeroed, si_pid stays 0 when nothing is reported.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waiting on our own child for stops only (exits stay for the pidfd and
        // `stop`), without blocking.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WNOHANG,
            )
        };
        // SAFETY: waitid filled in the fields of a child event (or left zeroes).
        if rc != 0 || unsafe { info.si_pid() } == 0 {
            return false;
        }
        self.at_entry_point(entry_offset).unwrap_or(false)
    }

    /// Whether the stopped command's instruction pointer is at (just past the first
    /// instruction of) its program's entry point.
    fn at_entry_point(&self, entry_offset: u64) -> Option<bool> {
        use std::os::unix::fs::MetadataExt as _;
        let inode = std::fs::metadata(&self.program).ok()?.ino();
        let process = procfs::process::Process::new(self.pid_t()).ok()?;
        let entry = process.maps().ok()?.into_iter().find_map(|map| {
            let size = map.address.1 - map.address.0;
            (map.inode == inode && (map.offset..map.offset + size).contains(&entry_offset))
                .then(|| map.address.0 + entry_offset - map.offset)
        })?;
        // `-1 SP PC` for a task stopped outside a system call.
        let syscall = std::fs::read_to_string(format!("/proc/{}/syscall", self.pid)).ok()?;
        let pc = syscall.split_whitespace().nth(2)?.trim_start_matches("0x");
        let pc = u64::from_str_radix(pc, 16).ok()?;
        // The signal is taken after the probed instruction ran (at most 15 bytes on x86-64).
        Some((entry..=entry + 15).contains(&pc))
    }

    /// Continues the command after it stopped at its entry point.
    pub fn resume(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid_t(), libc::SIGCONT) };
    }

    /// Ends the command's process group: SIGTERM (and SIGCONT, should it be stopped), SIGKILL
    /// after `grace`; reaps the command.
    pub fn stop(&mut self, grace: Duration) {
        if self.reaped || self.try_reap() {
            return;
        }
        self.signal_group(libc::SIGTERM);
        self.signal_group(libc::SIGCONT);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.try_reap() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        log::warn!(
            "{} (pid {}) did not end on SIGTERM within {grace:?}: killed",
            self.command,
            self.pid
        );
        self.kill();
    }

    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        self.signal_group(libc::SIGKILL);
        // SAFETY: signalling our own child (also should it have left the group).
        unsafe { libc::kill(self.pid_t(), libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: reaping our own child, which SIGKILL ends at once.
        unsafe { libc::waitpid(self.pid_t(), &mut status, 0) };
        self.reaped = true;
    }

    fn try_reap(&mut self) -> bool {
        let mut status = 0;
        // SAFETY: waiting on our own child without blocking.
        let pid = unsafe { libc::waitpid(self.pid_t(), &mut status, libc::WNOHANG) };
        self.reaped = pid == self.pid_t() || pid < 0;
        self.reaped
    }

    fn signal_group(&self, signal: libc::c_int) {
        // SAFETY: signalling the command's own process group (its pid: see `launch_paused`).
        unsafe { libc::kill(-self.pid_t(), signal) };
    }

    fn pid_t(&self) -> libc::pid_t {
        self.pid as libc::pid_t
    }
}

impl Drop for Launched {
    /// Any path that did not stop the command (an error, held or stopped at its entry point)
    /// kills it: nothing is left held or stopped.
    fn drop(&mut self) {
        self.release.take();
        self.kill();
    }
}

//! `leaktrace run`: start a command held just before `exec`, so the probes are in place before
//! its first allocation.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("argument contains a NUL byte: {0:?}")]
    NulByte(String),
    #[error("cannot start {command}: {source}")]
    Spawn { command: String, source: io::Error },
}

/// A child that has forked and waits for [`Launched::release`] before it execs.
pub struct Launched {
    pub pid: u32,
    pub program: PathBuf,
    release: Option<OwnedFd>,
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

pub fn launch_paused(command: &[String]) -> Result<Launched, LaunchError> {
    let name = command
        .first()
        .ok_or_else(|| LaunchError::NotFound(String::new()))?;
    let program = resolve_program(name)?;
    let c = |s: &str| CString::new(s).map_err(|_| LaunchError::NulByte(s.to_owned()));
    let path = c(&program.to_string_lossy())?;
    let args = command
        .iter()
        .map(|a| c(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let spawn_error = |source| LaunchError::Spawn {
        command: name.clone(),
        source,
    };

    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(spawn_error(io::Error::last_os_error()));
    }
    // SAFETY: freshly created descriptors that we own.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only calls async-signal-safe functions (read, execv, _exit) on data
    // prepared before the fork.
    match unsafe { libc::fork() } {
        -1 => Err(spawn_error(io::Error::last_os_error())),
        0 => unsafe {
            // Our copy of the write end would keep the pipe open: without it, the read ends
            // (EOF) when leaktrace goes away before releasing us, and we exit unrun.
            libc::close(write_end.as_raw_fd());
            let mut byte = 0u8;
            if libc::read(read_end.as_raw_fd(), (&raw mut byte).cast(), 1) == 1 {
                libc::execv(path.as_ptr(), argv.as_ptr());
            }
            libc::_exit(127);
        },
        pid => Ok(Launched {
            pid: pid as u32,
            program,
            release: Some(write_end),
        }),
    }
}

impl Launched {
    /// Lets the child exec the command.
    pub fn release(&mut self) -> io::Result<()> {
        if let Some(fd) = self.release.take() {
            let byte = 1u8;
            // SAFETY: writing one byte from a valid buffer to our pipe.
            if unsafe { libc::write(fd.as_raw_fd(), (&raw const byte).cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Launched {
    /// Continues the command after it stopped at its entry point.
    pub fn resume(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGCONT) };
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // Never released (an error before attach completed): the child exits without running
        // the command once the pipe closes.
        self.release.take();
    }
}

//! The target process pinned before anything about it is read: a pidfd names the process
//! itself, not its number, and its start time (from /proc/PID/stat, read while the pidfd shows
//! it alive) tells whether `/proc/PID` is still that process. A PID reused by another process
//! after the target exited is never inspected, probed or reported as the target.
use std::{
    fs, io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PinError {
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),
    #[error("PID {0} exited (the number may now name another process)")]
    Gone(u32),
    #[error("cannot watch PID {pid}: {source}")]
    Io { pid: u32, source: io::Error },
}

pub struct PinnedProcess {
    pub pid: u32,
    /// Field 22 of /proc/PID/stat: clock ticks after boot.
    pub start_time: u64,
    pidfd: OwnedFd,
}

impl PinnedProcess {
    pub fn open(pid: u32) -> Result<Self, PinError> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::ESRCH) | Some(libc::EINVAL) => PinError::NoSuchProcess(pid),
                _ => PinError::Io { pid, source },
            });
        }
        // SAFETY: a new descriptor we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let start_time = start_time(pid).ok_or(PinError::Gone(pid))?;
        let pinned = PinnedProcess {
            pid,
            start_time,
            pidfd,
        };
        // Alive after the read: the number was still the pidfd's process's when we read it.
        if !pinned.alive() {
            return Err(PinError::Gone(pid));
        }
        Ok(pinned)
    }

    /// Whether `/proc/PID` is still the pinned process (alive or a zombie).
    pub fn verify(&self) -> Result<(), PinError> {
        if start_time(self.pid) == Some(self.start_time) && self.alive() {
            Ok(())
        } else {
            Err(PinError::Gone(self.pid))
        }
    }

    /// A descriptor that becomes readable when the process exits.
    pub fn exit_fd(&self) -> Result<OwnedFd, PinError> {
        self.pidfd.try_clone().map_err(|source| PinError::Io {
            pid: self.pid,
            source,
        })
    }

    fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the pidfd's process can still be signalled.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        rc == 0
    }
}

/// The start time in /proc/PID/stat (field 22, after the parenthesised comm, which may hold
/// spaces and parentheses itself).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // Field 3 (state) is the first after the comm; 22 is the 20th.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_read_past_a_hostile_comm() {
        // Captured from /proc/PID/stat of a process named `a) R 1 2 (b`.
        let stat = "4242 (a) R 1 2 (b) S 1 4242 4242 0 -1 4194560 101 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 2449408 250 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 \
                    0 0 0 0 0 0 0 0 0 0";
        assert_eq!(parse_start_time(stat), Some(987654));
    }

    #[test]
    fn a_process_that_exited_no_longer_verifies() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pinned = PinnedProcess::open(child.id()).expect("pin");
        pinned.verify().expect("alive");
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(matches!(pinned.verify(), Err(PinError::Gone(_))));
        assert!(matches!(
            PinnedProcess::open(4_194_303),
            Err(PinError::NoSuchProcess(4_194_303))
        ));
    }
}

//! Stopping every thread of the target with `PTRACE_SEIZE` + `PTRACE_INTERRUPT`, reading their
//! registers, and letting them go. A target must never stay stopped: [`StoppedWorld`] detaches
//! every thread when dropped, on every path (errors, panics); should leaktrace itself die, the
//! kernel detaches its tracees.
//!
//! Threads created while stopping are caught by listing `/proc/PID/task` again until a listing
//! shows no new thread: a stopped thread creates none.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use thiserror::Error;

/// Thread listings before giving up on a target that keeps creating threads.
const MAX_LISTINGS: usize = 64;
/// Threads stopped at most: beyond, the scan is refused rather than slow.
pub const MAX_THREADS: usize = 100_000;
/// How long a thread that did not stop in time is waited for before detaching it.
const UNSTOPPED_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum StopError {
    #[error("cannot list the threads of PID {pid}: {source}")]
    Tasks { pid: u32, source: std::io::Error },
    #[error("cannot stop thread {tid} (is another debugger attached?): {source}")]
    Seize { tid: u32, source: std::io::Error },
    #[error("thread {tid} did not stop within {waited:?}")]
    Timeout { tid: u32, waited: Duration },
    #[error("the target keeps creating threads: cannot stop them all")]
    Unstable,
    #[error("the target has more than {MAX_THREADS} threads")]
    TooManyThreads,
}

/// One stopped thread.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// Its general-purpose registers, when they could be read.
    pub regs: Option<libc::user_regs_struct>,
    /// A signal that arrived while stopping (a signal-delivery stop), handed back on detach.
    pending_signal: i32,
    /// Seen stopped: only a stopped tracee can be detached.
    confirmed: bool,
}

/// Every thread of a process, stopped.
pub struct StoppedWorld {
    pub threads: BTreeMap<u32, Stopped>,
    pub stopped_at: Instant,
}

impl StoppedWorld {
    /// Stops every thread of `pid`; waits at most `timeout` for each to stop.
    pub fn stop(pid: u32, timeout: Duration) -> Result<Self, StopError> {
        let mut world = StoppedWorld {
            threads: BTreeMap::new(),
            stopped_at: Instant::now(),
        };
        for _ in 0..MAX_LISTINGS {
            let new: Vec<u32> = list_tasks(pid)?
                .into_iter()
                .filter(|tid| !world.threads.contains_key(tid))
                .collect();
            if new.is_empty() {
                return Ok(world);
            }
            if world.threads.len() + new.len() > MAX_THREADS {
                return Err(StopError::TooManyThreads);
            }
            world.stop_threads(&new, timeout)?;
        }
        Err(StopError::Unstable)
    }

    /// Seizes and interrupts all of `tids`, then waits for each to stop. A thread that exited
    /// meanwhile is skipped.
    fn stop_threads(&mut self, tids: &[u32], timeout: Duration) -> Result<(), StopError> {
        let unconfirmed = Stopped {
            regs: None,
            pending_signal: 0,
            confirmed: false,
        };
        let mut seized = Vec::new();
        for &tid in tids {
            match seize_and_interrupt(tid) {
                // Recorded at once: a thread seized is detached on drop, whatever fails next.
                Ok(()) => {
                    self.threads.insert(tid, unconfirmed);
                    seized.push(tid);
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(source) => return Err(StopError::Seize { tid, source }),
            }
        }
        for tid in seized {
            match wait_stopped(tid, timeout)? {
                WaitOutcome::Stopped { signal } => {
                    let stopped = Stopped {
                        regs: registers(tid),
                        pending_signal: signal,
                        confirmed: true,
                    };
                    self.threads.insert(tid, stopped);
                }
                WaitOutcome::Gone => {
                    self.threads.remove(&tid);
                }
            }
        }
        Ok(())
    }

    /// How long the target has been stopped.
    pub fn paused(&self) -> Duration {
        self.stopped_at.elapsed()
    }
}

impl Drop for StoppedWorld {
    fn drop(&mut self) {
        for (&tid, thread) in &self.threads {
            let mut signal = thread.pending_signal;
            // A thread that had not stopped yet (stuck in the kernel) stops at its pending
            // interrupt: wait for it, or it would stay stopped.
            if !thread.confirmed {
                match wait_stopped(tid, UNSTOPPED_GRACE) {
                    Ok(WaitOutcome::Stopped { signal: s }) => signal = s,
                    Ok(WaitOutcome::Gone) => continue,
                    Err(error) => {
                        log::warn!("{error}: it is detached when leaktrace exits");
                        continue;
                    }
                }
            }
            // SAFETY: detaching a thread this thread seized; the signal, if any, is the one
            // its stop reported. A thread that died meanwhile fails with ESRCH: nothing to do.
            unsafe {
                libc::ptrace(
                    libc::PTRACE_DETACH,
                    tid as libc::pid_t,
                    std::ptr::null_mut::<libc::c_void>(),
                    signal as libc::c_long,
                );
            }
        }
    }
}

fn list_tasks(pid: u32) -> Result<Vec<u32>, StopError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|source| StopError::Tasks { pid, source })?;
    Ok(dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

fn seize_and_interrupt(tid: u32) -> std::io::Result<()> {
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: plain ptrace requests on a thread ID, no memory passed.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid as libc::pid_t, null, null) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above, on the thread just seized.
    if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid as libc::pid_t, null, null) } != 0 {
        let error = std::io::Error::last_os_error();
        // SAFETY: undo the seize.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, tid as libc::pid_t, null, null) };
        return Err(error);
    }
    Ok(())
}

enum WaitOutcome {
    /// `signal`: the signal of a signal-delivery stop, to hand back (0 for the interrupt's own
    /// stop and group stops, which the kernel restores by itself on detach).
    Stopped {
        signal: i32,
    },
    Gone,
}

fn wait_stopped(tid: u32, timeout: Duration) -> Result<WaitOutcome, StopError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waiting for a stop of a thread this thread traces, without blocking.
        let rc = unsafe {
            libc::waitpid(
                tid as libc::pid_t,
                &mut status,
                libc::__WALL | libc::WNOHANG,
            )
        };
        if rc == tid as libc::pid_t {
            if libc::WIFSTOPPED(status) {
                let event = status >> 16;
                let signal = if event == 0 {
                    libc::WSTOPSIG(status)
                } else {
                    0
                };
                return Ok(WaitOutcome::Stopped { signal });
            }
            // Exited or killed.
            return Ok(WaitOutcome::Gone);
        }
        if rc < 0 {
            return Ok(WaitOutcome::Gone);
        }
        if Instant::now() >= deadline {
            return Err(StopError::Timeout {
                tid,
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_micros(20));
    }
}

fn registers(tid: u32) -> Option<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain data, filled by the kernel.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: GETREGS of a stopped tracee into a valid struct.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            &mut regs as *mut libc::user_regs_struct,
        )
    };
    (rc == 0).then_some(regs)
}

/// The registers as words, every one a possible pointer.
pub fn register_words(regs: &libc::user_regs_struct) -> [u64; 27] {
    [
        regs.r15,
        regs.r14,
        regs.r13,
        regs.r12,
        regs.rbp,
        regs.rbx,
        regs.r11,
        regs.r10,
        regs.r9,
        regs.r8,
        regs.rax,
        regs.rcx,
        regs.rdx,
        regs.rsi,
        regs.rdi,
        regs.orig_rax,
        regs.rip,
        regs.cs,
        regs.eflags,
        regs.rsp,
        regs.ss,
        regs.fs_base,
        regs.gs_base,
        regs.ds,
        regs.es,
        regs.fs,
        regs.gs,
    ]
}

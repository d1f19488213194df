//! Looking at and signalling processes through /proc and kill(2).

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

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

//! One leaktrace per target: a lock file per process (`/run/leaktrace/PID-STARTTIME.lock`,
//! the start time so that a reused PID is another target) held with flock, which the kernel
//! releases when leaktrace exits however it exits.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use thiserror::Error;

pub const LOCK_DIR: &str = "/run/leaktrace";

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "PID {pid} is already traced by another leaktrace{}; --force traces it anyway",
        holder.map(|h| format!(" (pid {h})")).unwrap_or_default()
    )]
    Held { pid: u32, holder: Option<u32> },
    #[error("cannot take the lock {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not a directory owned by root and private to it", path.display())]
    UnsafeDir { path: PathBuf },
}

/// Held while the file is open; removed on drop.
#[derive(Debug)]
pub struct TargetLock {
    file: File,
    path: PathBuf,
}

impl TargetLock {
    pub fn acquire(pid: u32, start_time: u64) -> Result<Self, LockError> {
        Self::acquire_in(Path::new(LOCK_DIR), pid, start_time)
    }

    fn acquire_in(dir: &Path, pid: u32, start_time: u64) -> Result<Self, LockError> {
        private_dir(dir)?;
        let path = dir.join(format!("{pid}-{start_time}.lock"));
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // A file removed by its previous holder between our open and our flock is not the
        // lock any more: open again.
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(io_error)?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let error = io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(LockError::Held {
                        pid,
                        holder: holder(&mut file),
                    });
                }
                return Err(io_error(error));
            }
            let current = fs::symlink_metadata(&path).ok();
            let ours = file.metadata().map_err(io_error)?;
            if current.is_none_or(|c| c.ino() != ours.ino() || c.dev() != ours.dev()) {
                continue;
            }
            file.set_len(0)
                .and_then(|()| write!(file, "{}", std::process::id()))
                .map_err(io_error)?;
            return Ok(TargetLock { file, path });
        }
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        // Removed while still locked: a waiting opener sees the inode change (above).
        let _ = fs::remove_file(&self.path);
        let _ = self.file.flush();
    }
}

/// The holder's pid, as it wrote it.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// `dir`, created 0700 if missing; refused unless a real directory of root's that nobody
/// else can write (lock files in it are opened as root).
fn private_dir(dir: &Path) -> Result<(), LockError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(LockError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    }
    let meta = fs::symlink_metadata(dir).map_err(|source| LockError::Io {
        path: dir.to_owned(),
        source,
    })?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(LockError::UnsafeDir {
            path: dir.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        std::env::temp_dir().join(format!("leaktrace-lock-{label}-{}", std::process::id()))
    }

    #[test]
    fn a_second_lock_on_one_target_is_refused_until_the_first_goes() {
        let dir = scratch("twice");
        let first = TargetLock::acquire_in(&dir, 42, 1000).expect("first");
        let second = TargetLock::acquire_in(&dir, 42, 1000).expect_err("second");
        assert_eq!(
            second.to_string(),
            format!(
                "PID 42 is already traced by another leaktrace (pid {}); --force traces it \
                 anyway",
                std::process::id()
            )
        );
        TargetLock::acquire_in(&dir, 42, 2000).expect("a reused PID is another target");
        drop(first);
        assert!(!dir.join("42-1000.lock").exists());
        TargetLock::acquire_in(&dir, 42, 1000).expect("free again");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("open");
        fs::create_dir_all(&dir).expect("dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = TargetLock::acquire_in(&dir, 42, 1000).expect_err("refused");
        assert!(matches!(error, LockError::UnsafeDir { .. }), "{error}");
        let _ = fs::remove_dir_all(&dir);
    }
}

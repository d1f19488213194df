//! What /proc tells about the target process.
use std::{
    io,
    path::{Path, PathBuf},
};

use procfs::process::{MMPermissions, MMapPath, Process};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),
    // procfs's message already names the file.
    #[error("cannot inspect PID {pid} ({what}): {source}")]
    Unreadable {
        pid: u32,
        what: &'static str,
        source: procfs::ProcError,
    },
}

/// The process being traced.
#[derive(Debug, Clone)]
pub struct TargetProcess {
    pub pid: u32,
    pub comm: String,
    /// The executable as the target sees it (inside its mount namespace).
    pub exe: PathBuf,
    /// `/proc/PID/root`: prefix for opening the target's files from here (containers).
    pub root: PathBuf,
    /// `LD_PRELOAD` entries, in order.
    pub preload: Vec<String>,
}

/// One file mapped executable into the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedObject {
    pub start: u64,
    pub end: u64,
    /// Offset of `start` in the file.
    pub offset: u64,
    pub dev: (i32, i32),
    pub inode: u64,
    /// The path as the target sees it.
    pub path: PathBuf,
}

impl TargetProcess {
    pub fn inspect(pid: u32) -> Result<Self, ProcessError> {
        let process = open(pid)?;
        let unreadable = |what| move |source| ProcessError::Unreadable { pid, what, source };
        let stat = process.stat().map_err(|e| not_found_or(pid, e, "stat"))?;
        let exe = process.exe().map_err(unreadable("exe"))?;
        let preload = process
            .environ()
            .map(|env| {
                env.get(std::ffi::OsStr::new("LD_PRELOAD"))
                    .map(|value| split_preload(&value.to_string_lossy()))
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        Ok(Self {
            pid,
            comm: stat.comm,
            exe: strip_deleted(&exe),
            root: PathBuf::from(format!("/proc/{pid}/root")),
            preload,
        })
    }

    /// A path under which we can open one of the target's files.
    pub fn host_path(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        self.root.join(relative)
    }

    /// Executable file mappings, in address order.
    pub fn executable_objects(&self) -> Result<Vec<MappedObject>, ProcessError> {
        executable_objects(self.pid)
    }

    pub fn is_alive(&self) -> bool {
        Path::new(&format!("/proc/{}/stat", self.pid)).exists()
    }
}

pub fn executable_objects(pid: u32) -> Result<Vec<MappedObject>, ProcessError> {
    let process = open(pid)?;
    let maps = process.maps().map_err(|e| not_found_or(pid, e, "maps"))?;
    Ok(maps
        .into_iter()
        .filter(|map| map.perms.contains(MMPermissions::EXECUTE))
        .filter_map(|map| match map.pathname {
            MMapPath::Path(path) => Some(MappedObject {
                start: map.address.0,
                end: map.address.1,
                offset: map.offset,
                dev: map.dev,
                inode: map.inode,
                path: strip_deleted(&path),
            }),
            _ => None,
        })
        .collect())
}

fn open(pid: u32) -> Result<Process, ProcessError> {
    Process::new(pid as i32).map_err(|e| not_found_or(pid, e, "stat"))
}

fn not_found_or(pid: u32, error: procfs::ProcError, what: &'static str) -> ProcessError {
    match error {
        procfs::ProcError::NotFound(_) => ProcessError::NoSuchProcess(pid),
        procfs::ProcError::Io(ref e, _) if e.kind() == io::ErrorKind::NotFound => {
            ProcessError::NoSuchProcess(pid)
        }
        source => ProcessError::Unreadable { pid, what, source },
    }
}

/// `LD_PRELOAD` is separated by spaces or colons.
fn split_preload(value: &str) -> Vec<String> {
    value
        .split([' ', ':'])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The kernel appends " (deleted)" to paths of replaced files.
fn strip_deleted(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_lists_split_on_spaces_and_colons() {
        assert_eq!(
            split_preload("/a/libjemalloc.so.2 libfoo.so:/b/libbar.so"),
            vec!["/a/libjemalloc.so.2", "libfoo.so", "/b/libbar.so"]
        );
        assert!(split_preload("").is_empty());
    }

    #[test]
    fn own_process_is_inspected() {
        let me = TargetProcess::inspect(std::process::id()).expect("inspect self");
        assert_eq!(me.exe, std::env::current_exe().expect("current exe"));
        let objects = me.executable_objects().expect("maps");
        assert!(objects.iter().any(|o| o.path == me.exe));
        assert!(
            objects
                .iter()
                .any(|o| o.path.to_string_lossy().contains("libc.so"))
        );
    }

    #[test]
    fn missing_process_is_named() {
        let err = TargetProcess::inspect(4_194_303).expect_err("no such pid");
        assert!(
            matches!(err, ProcessError::NoSuchProcess(4_194_303)),
            "{err}"
        );
    }
}

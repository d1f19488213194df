//! What /proc tells about the target process.
use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use procfs::process::{MMPermissions, MMapPath, Process};
use thiserror::Error;

use super::{
    elf::{ElfError, ElfObject},
    files::{self, FileError, TargetFiles},
};

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
    #[error(transparent)]
    Files(#[from] FileError),
}

/// The process being traced.
#[derive(Debug, Clone)]
pub struct TargetProcess {
    pub pid: u32,
    /// Its PID in its own PID namespace, when that differs from `pid` (containers).
    pub pid_in_namespace: Option<u32>,
    pub comm: String,
    /// The executable's path as `/proc/PID/exe` names it, for the report.
    pub exe: PathBuf,
    /// Where the executable's contents come from.
    pub exe_source: ExeSource,
    /// Opens the target's files, inside its root.
    pub files: Arc<TargetFiles>,
    /// `LD_PRELOAD` entries, in order.
    pub preload: Vec<String>,
}

/// Where the target's executable is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExeSource {
    /// A running process: `/proc/PID/exe`.
    Running,
    /// A command of `run` not started yet (its `/proc/PID/exe` is still leaktrace): the host
    /// path leaktrace resolved itself.
    Program(PathBuf),
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
        let pid_in_namespace = process
            .status()
            .ok()
            .and_then(|status| innermost_pid(pid, status.nspid.as_deref()));
        Ok(Self {
            pid,
            pid_in_namespace,
            comm: stat.comm,
            exe: strip_deleted(&exe),
            exe_source: ExeSource::Running,
            files: Arc::new(TargetFiles::new(pid)?),
            preload,
        })
    }

    /// A command of `run`, held before it executes `program`.
    pub fn launched(pid: u32, program: &Path) -> Result<Self, ProcessError> {
        Ok(Self {
            pid,
            pid_in_namespace: None,
            comm: program
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            exe: program.to_path_buf(),
            exe_source: ExeSource::Program(program.to_path_buf()),
            files: Arc::new(TargetFiles::new(pid)?),
            preload: Vec::new(),
        })
    }

    /// The executable's contents, parsed.
    pub fn open_exe(&self) -> Result<ElfObject, ElfError> {
        let file = match &self.exe_source {
            ExeSource::Running => self.files.open_exe()?,
            ExeSource::Program(program) => files::open_host(program)?,
        };
        ElfObject::from_file(file)
    }

    /// The executable's mappings: those of the file `open_exe` reads.
    pub fn exe_mappings(&self, exe: &ElfObject) -> Result<Vec<MappedObject>, ProcessError> {
        let (_, inode) = exe.file().identity();
        Ok(self
            .executable_objects()?
            .into_iter()
            .filter(|o| o.inode == inode)
            .collect())
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

/// The last `NSpid` value is the PID in the innermost namespace; None when it is `pid`.
fn innermost_pid(pid: u32, nspid: Option<&[i32]>) -> Option<u32> {
    let inner = u32::try_from(*nspid?.last()?).ok()?;
    (inner != pid).then_some(inner)
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
    fn the_innermost_namespace_pid_is_kept_when_it_differs() {
        assert_eq!(innermost_pid(4242, Some(&[4242, 7])), Some(7));
        assert_eq!(innermost_pid(4242, Some(&[4242, 9, 1])), Some(1));
        assert_eq!(innermost_pid(4242, Some(&[4242])), None);
        assert_eq!(innermost_pid(4242, None), None);
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

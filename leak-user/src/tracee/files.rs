//! The one place that opens a target's files. A target may live in its own mount namespace
//! and root (a container), where its paths mean nothing on the host, and whatever it controls
//! (symlinks, FIFOs, huge or replaced files) must not mislead or block leaktrace. So:
//!
//! - a mapped object is opened through `/proc/PID/map_files/START-END` (or `/proc/PID/exe`):
//!   the very file mapped, whatever its path, then checked to be a regular file with the
//!   mapping's device and inode;
//! - any other file is opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` under
//!   the target's root, so absolute symlinks and `..` resolve inside that root, never the
//!   host's;
//! - every open is non-blocking (a FIFO cannot hang us), regular files only, at most
//!   [`MAX_FILE_BYTES`], and the contents are mapped read-only rather than read whole.
use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _, fs::OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use memmap2::Mmap;
use thiserror::Error;

use super::process::MappedObject;

/// Larger files are refused: no executable or shared object a process maps comes near this,
/// and mapping more of a hostile file would only cost address space and page faults.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// Compressed sections (DWARF, `.debug_frame`) larger than this once inflated are refused:
/// the size comes from the file, and a corrupt or hostile header must not make us allocate
/// gigabytes.
pub const MAX_INFLATED_SECTION_BYTES: u64 = 1 << 30;

/// `statfs` magic of overlayfs, where a mapping shows the real file's device but a path
/// opens the overlay's (inodes agree).
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("{path} is {size} bytes, more than the {MAX_FILE_BYTES} leaktrace reads")]
    TooLarge { path: String, size: u64 },
    #[error(
        "{path} is not the mapped file (device {found_dev:x}, inode {found_inode}; \
         the mapping has {want_dev:x}, {want_inode})"
    )]
    NotTheMappedFile {
        path: String,
        found_dev: u64,
        found_inode: u64,
        want_dev: u64,
        want_inode: u64,
    },
    #[error("cannot map {path}: {source}")]
    Map { path: String, source: io::Error },
}

/// Opens the files of one process.
#[derive(Debug)]
pub struct TargetFiles {
    pid: u32,
    /// `/proc/PID/root` as an `O_PATH` descriptor: the target's root, pinned even if it
    /// changes root or exits later.
    root: OwnedFd,
}

impl TargetFiles {
    pub fn new(pid: u32) -> Result<Self, FileError> {
        let path = format!("/proc/{pid}/root");
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| FileError::Open { path, source })?;
        Ok(Self {
            pid,
            root: root.into(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The file behind an executable mapping, verified to be the one mapped. `map_files` needs
    /// CAP_SYS_ADMIN in the target's user namespace; without it, the mapping's path inside the
    /// target's root, if that is still the mapped file.
    pub fn open_mapped(&self, mapping: &MappedObject) -> Result<ObjectFile, FileError> {
        let proc_path = format!(
            "/proc/{}/map_files/{:x}-{:x}",
            self.pid, mapping.start, mapping.end
        );
        let label = mapping.path.display().to_string();
        let file = match open_proc_link(&proc_path, &label) {
            Ok(file) => file,
            Err(by_range) => openat2_in_root(&self.root, &mapping.path).map_err(|_| by_range)?,
        };
        ObjectFile::verified(file, label, Some(mapping))
    }

    /// The target's executable as it runs.
    pub fn open_exe(&self) -> Result<ObjectFile, FileError> {
        let proc_path = format!("/proc/{}/exe", self.pid);
        let file = open_proc_link(&proc_path, &proc_path)?;
        ObjectFile::verified(file, proc_path, None)
    }

    // Not yet called outside tests: for files a target names but has not mapped (the
    // allocator lookup's LD_PRELOAD and DT_NEEDED names) once that lookup opens them here.
    #[allow(dead_code)]
    /// A file by the target's own path, resolved inside its root: symlinks, absolute or not,
    /// and `..` cannot leave it. Symlinks are followed (libraries are often reached through
    /// one; `O_NOFOLLOW` would refuse them) but stay confined; magic links are refused.
    pub fn open_in_root(&self, path: &Path) -> Result<ObjectFile, FileError> {
        let label = path.display().to_string();
        let file = openat2_in_root(&self.root, path).map_err(|source| FileError::Open {
            path: label.clone(),
            source,
        })?;
        ObjectFile::verified(file, label, None)
    }
}

/// A host file leaktrace chose itself (the program of `run -- CMD` before it starts, tests),
/// with the same checks as a target's file.
pub fn open_host(path: &Path) -> Result<ObjectFile, FileError> {
    let label = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| FileError::Open {
            path: label.clone(),
            source,
        })?;
    ObjectFile::verified(file, label, None)
}

/// An opened, verified regular file and its contents mapped read-only.
#[derive(Debug)]
pub struct ObjectFile {
    /// Kept open: the contents and [`ObjectFile::kernel_path`] stay this very file.
    file: File,
    map: Mmap,
    /// The path as the target names it, for messages.
    label: String,
    dev: u64,
    inode: u64,
}

impl ObjectFile {
    fn verified(
        file: File,
        label: String,
        mapping: Option<&MappedObject>,
    ) -> Result<Self, FileError> {
        let meta = file.metadata().map_err(|source| FileError::Open {
            path: label.clone(),
            source,
        })?;
        if !meta.file_type().is_file() {
            return Err(FileError::NotRegular { path: label });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(FileError::TooLarge {
                path: label,
                size: meta.len(),
            });
        }
        if let Some(mapping) = mapping {
            check_identity(&file, &meta, mapping, &label)?;
        }
        // SAFETY: a read-only private mapping of a file we checked is regular. If someone
        // truncates it meanwhile, reads past the new end fault (SIGBUS), as for the target
        // itself; the mapped executables and libraries of a live process are not rewritten in
        // place (ETXTBSY for executables, loaders replace libraries by rename).
        let map = unsafe { Mmap::map(&file) }.map_err(|source| FileError::Map {
            path: label.clone(),
            source,
        })?;
        Ok(Self {
            dev: meta.dev(),
            inode: meta.ino(),
            file,
            map,
            label,
        })
    }

    pub fn data(&self) -> &[u8] {
        &self.map
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// `(device, inode)` of the opened file.
    pub fn identity(&self) -> (u64, u64) {
        (self.dev, self.inode)
    }

    /// A path the kernel resolves to this very file for as long as `self` lives
    /// (`/proc/self/fd/N`): for uprobe attachment, which takes a path and would otherwise
    /// resolve it in leaktrace's root, not the target's.
    pub fn kernel_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// `/proc/PID/map_files/...` and `/proc/PID/exe` are magic links: following them is the
/// point. Non-blocking, so that even a special file cannot stall the open.
fn open_proc_link(proc_path: &str, label: &str) -> Result<File, FileError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(proc_path)
        .map_err(|source| FileError::Open {
            path: format!("{label} ({proc_path})"),
            source,
        })
}

fn openat2_in_root(root: &OwnedFd, path: &Path) -> io::Result<File> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `open_how` is plain integers; all zero is its empty value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid descriptor, NUL-terminated path and an `open_how` of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The opened file must be the mapped one: same inode, and same device unless the file is
/// on overlayfs (see [`OVERLAYFS_SUPER_MAGIC`]).
fn check_identity(
    file: &File,
    meta: &std::fs::Metadata,
    mapping: &MappedObject,
    label: &str,
) -> Result<(), FileError> {
    let want_dev = mapping_device(mapping);
    let same_device = meta.dev() == want_dev || on_overlayfs(file);
    if meta.ino() == mapping.inode && same_device {
        return Ok(());
    }
    Err(FileError::NotTheMappedFile {
        path: label.to_owned(),
        found_dev: meta.dev(),
        found_inode: meta.ino(),
        want_dev,
        want_inode: mapping.inode,
    })
}

/// `/proc/PID/maps` gives the device as major and minor numbers.
fn mapping_device(mapping: &MappedObject) -> u64 {
    let (major, minor) = mapping.dev;
    libc::makedev(major as u32, minor as u32)
}

fn on_overlayfs(file: &File) -> bool {
    let mut stats = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: valid descriptor and a buffer of the right type.
    let done = unsafe { libc::fstatfs(file.as_raw_fd(), stats.as_mut_ptr()) };
    // SAFETY: initialised by a successful fstatfs.
    done == 0 && unsafe { stats.assume_init() }.f_type == OVERLAYFS_SUPER_MAGIC
}

#[cfg(test)]
mod tests {
    use std::{ffi::CString, os::unix::fs::symlink, time::Instant};

    use super::*;
    use crate::tracee::process::executable_objects;

    /// A scratch directory removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(label: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "leaktrace-files-{label}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `TargetFiles` whose root is `dir` (as a chrooted target's would be).
    fn files_rooted_at(dir: &Path) -> TargetFiles {
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .expect("open fake root");
        TargetFiles {
            pid: std::process::id(),
            root: root.into(),
        }
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let scratch = Scratch::new("symlink");
        let root = scratch.0.join("root");
        // The host's /etc/hostname-like file, and the container's own at the same path.
        let host_target = scratch.0.join("host-secret");
        std::fs::write(&host_target, b"host").expect("host file");
        let inside = root.join(host_target.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(inside.parent().expect("parent")).expect("dirs");
        std::fs::write(&inside, b"container").expect("container file");
        std::fs::create_dir_all(root.join("lib")).expect("lib");
        symlink(&host_target, root.join("lib/link")).expect("symlink");

        let files = files_rooted_at(&root);
        let opened = files.open_in_root(Path::new("/lib/link")).expect("open");
        assert_eq!(opened.data(), b"container");
        // `..` cannot climb out either.
        let climbed = files
            .open_in_root(Path::new("/../../../../../../lib/link"))
            .expect("open");
        assert_eq!(climbed.data(), b"container");
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let scratch = Scratch::new("fifo");
        let fifo = CString::new(scratch.0.join("pipe").as_os_str().as_bytes()).expect("path");
        // SAFETY: NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let files = files_rooted_at(&scratch.0);
        let started = Instant::now();
        let err = files.open_in_root(Path::new("/pipe")).expect_err("fifo");
        assert!(matches!(err, FileError::NotRegular { .. }), "{err}");
        assert!(started.elapsed().as_secs() < 2);
    }

    #[test]
    fn directories_are_refused() {
        let scratch = Scratch::new("dir");
        std::fs::create_dir_all(scratch.0.join("lib")).expect("lib");
        let files = files_rooted_at(&scratch.0);
        let err = files.open_in_root(Path::new("/lib")).expect_err("dir");
        assert!(matches!(err, FileError::NotRegular { .. }), "{err}");
    }

    #[test]
    fn magic_links_are_refused_in_root() {
        let scratch = Scratch::new("magic");
        symlink("/proc/self/exe", scratch.0.join("exe")).expect("symlink");
        let files = files_rooted_at(Path::new("/"));
        // Through the fake root the link points at a /proc that is not there.
        assert!(
            files_rooted_at(&scratch.0)
                .open_in_root(Path::new("/exe"))
                .is_err()
        );
        // Through the real root it reaches the magic link, which RESOLVE_NO_MAGICLINKS refuses.
        let err = files
            .open_in_root(Path::new("/proc/self/exe"))
            .expect_err("magic link");
        assert!(matches!(err, FileError::Open { .. }), "{err}");
    }

    #[test]
    fn mapped_objects_are_checked_against_the_mapping() {
        let me = std::process::id();
        let files = TargetFiles::new(me).expect("own root");
        let libc = executable_objects(me)
            .expect("own maps")
            .into_iter()
            .find(|o| o.path.to_string_lossy().contains("libc.so"))
            .expect("libc mapped");
        let opened = files.open_mapped(&libc).expect("libc through map_files");
        assert_eq!(opened.identity().1, libc.inode);
        assert_eq!(&opened.data()[..4], b"\x7fELF");

        let other_inode = MappedObject {
            inode: libc.inode + 1,
            ..libc.clone()
        };
        let err = files.open_mapped(&other_inode).expect_err("wrong inode");
        assert!(matches!(err, FileError::NotTheMappedFile { .. }), "{err}");
    }

    #[test]
    fn the_exe_is_the_running_executable() {
        let files = TargetFiles::new(std::process::id()).expect("own root");
        let exe = files.open_exe().expect("own exe");
        let on_disk = std::fs::metadata(std::env::current_exe().expect("exe")).expect("stat");
        assert_eq!(exe.identity(), (on_disk.dev(), on_disk.ino()));
        let kernel = std::fs::metadata(exe.kernel_path()).expect("fd path");
        assert_eq!(kernel.ino(), on_disk.ino());
    }
}

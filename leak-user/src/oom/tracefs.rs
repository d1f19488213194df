//! Mounting tracefs where nobody has, for as long as attaching the tracepoint needs it:
//! `nosuid,nodev,noexec`, and unmounted again by whoever mounted it.
use std::{ffi::CString, io, path::Path};

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// A tracefs that leaktrace mounted; unmounted on drop. The tracepoint's perf event stays
/// attached without it.
pub struct TracefsMount {
    target: CString,
}

impl TracefsMount {
    /// On [`TRACEFS`].
    pub fn mount() -> io::Result<Self> {
        Self::mount_at(Path::new(TRACEFS))
    }

    fn mount_at(dir: &Path) -> io::Result<Self> {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                dir.display().to_string(),
            ));
        }
        let source = CString::new("tracefs").map_err(io::Error::other)?;
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                source.as_ptr(),
                flags,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        log::info!(
            "mounted tracefs on {} (nosuid,nodev,noexec) to reach oom:mark_victim",
            dir.display()
        );
        Ok(TracefsMount { target })
    }
}

impl Drop for TracefsMount {
    fn drop(&mut self) {
        // Lazily: another process reading it (a second leaktrace) keeps its view until done.
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(self.target.as_ptr(), libc::MNT_DETACH) } != 0 {
            log::warn!(
                "cannot unmount the tracefs leaktrace mounted on {}: {}",
                self.target.to_string_lossy(),
                io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-mount options of each tracefs mounted on `dir`.
    fn tracefs_mounts(dir: &Path) -> Vec<String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let dir = dir.to_string_lossy();
        mountinfo
            .lines()
            .filter(|line| {
                line.split(" - ")
                    .nth(1)
                    .is_some_and(|r| r.starts_with("tracefs "))
            })
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                (fields.get(4) == Some(&dir.as_ref())).then(|| fields[5].to_owned())
            })
            .collect()
    }

    /// Needs root (as the integration tests do): mounts a real tracefs, on a directory of its
    /// own (tracefs may be mounted on /sys/kernel/tracing already).
    #[test]
    fn mounts_nosuid_nodev_noexec_and_unmounts() {
        let dir = std::env::temp_dir().join(format!("leaktrace-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mount point");
        let mounted = TracefsMount::mount_at(&dir).expect("mount tracefs (as root)");
        let during = tracefs_mounts(&dir);
        assert_eq!(during.len(), 1, "{during:?}");
        let options: Vec<&str> = during[0].split(',').collect();
        for flag in ["nosuid", "nodev", "noexec"] {
            assert!(options.contains(&flag), "{options:?}");
        }
        drop(mounted);
        assert_eq!(tracefs_mounts(&dir), Vec::<String>::new());
        let _ = std::fs::remove_dir(&dir);
    }
}

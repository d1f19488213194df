//! Reading the target's memory through `/proc/PID/mem` (Go runtime structures: the goroutine
//! list, the heap statistics, cgo pointers). The target keeps running meanwhile: callers
//! validate what they read and treat a failed read as "not there now", never as fatal.
use std::{fs::File, io, os::unix::fs::FileExt as _, path::PathBuf};

#[derive(Debug)]
pub struct RemoteMemory {
    file: File,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open {path}: {source}")]
pub struct OpenError {
    path: PathBuf,
    source: io::Error,
}

impl RemoteMemory {
    pub fn open(pid: u32) -> Result<Self, OpenError> {
        let path = PathBuf::from(format!("/proc/{pid}/mem"));
        File::open(&path)
            .map(|file| RemoteMemory { file })
            .map_err(|source| OpenError { path, source })
    }

    /// Fills `buf` from `addr`; an unmapped or partly mapped range is an error.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, addr)
    }

    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut bytes = [0; 8];
        self.read(addr, &mut bytes).ok()?;
        Some(u64::from_le_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_memory_and_refuses_unmapped() {
        let value: u64 = 0x1122_3344_5566_7788;
        let memory = RemoteMemory::open(std::process::id()).expect("open");
        assert_eq!(memory.read_u64(&value as *const u64 as u64), Some(value));
        assert_eq!(memory.read_u64(8), None);
        assert!(RemoteMemory::open(0).is_err());
    }
}

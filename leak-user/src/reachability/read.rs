//! Reading the target's memory with `process_vm_readv`: large chunks, and holes (pages unmapped
//! or never backed, `EFAULT`) skipped page by page instead of failing the scan.
use std::io;

/// Bytes per system call for root regions.
pub const CHUNK: usize = 4 << 20;
/// Remote ranges per system call when reading many small blocks (the kernel's `IOV_MAX`).
const IOV_MAX: usize = 1024;
const PAGE: u64 = 4096;

/// Reads `pid`'s memory.
pub struct Reader {
    pid: libc::pid_t,
    /// Bytes read so far.
    pub bytes_read: u64,
}

impl Reader {
    pub fn new(pid: u32) -> Self {
        Reader {
            pid: pid as libc::pid_t,
            bytes_read: 0,
        }
    }

    /// Hands `visit` the readable parts of `[start, end)`, each with its address, in chunks of
    /// at most [`CHUNK`] bytes. Unreadable pages are skipped.
    pub fn each_chunk(
        &mut self,
        start: u64,
        end: u64,
        buf: &mut Vec<u8>,
        mut visit: impl FnMut(u64, &[u8]),
    ) {
        let mut at = start;
        while at < end {
            let want = (end - at).min(CHUNK as u64) as usize;
            buf.resize(want, 0);
            match self.read_ranges(&[(at, want)], buf) {
                Ok(0) | Err(_) => {
                    // A hole: go on at the next page.
                    at = (at / PAGE + 1) * PAGE;
                }
                Ok(n) => {
                    visit(at, &buf[..n]);
                    at += n as u64;
                }
            }
        }
    }

    /// Reads `buf.len()` bytes at `addr`; false unless all of them could be read.
    pub fn read_exact(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        let len = buf.len();
        matches!(self.read_ranges(&[(addr, len)], buf), Ok(n) if n == len)
    }

    /// Reads the blocks `(address, size)` into `out` back to back, many per system call; a block
    /// that cannot be read entirely is read alone, and its unreadable part left zero.
    pub fn read_blocks(&mut self, blocks: &[(u64, usize)], out: &mut Vec<u8>) {
        let total: usize = blocks.iter().map(|b| b.1).sum();
        out.clear();
        out.resize(total, 0);
        let mut offset = 0;
        for group in blocks.chunks(IOV_MAX) {
            let len: usize = group.iter().map(|b| b.1).sum();
            let into = &mut out[offset..offset + len];
            let whole = matches!(self.read_ranges(group, into), Ok(n) if n == len);
            if !whole {
                self.read_one_by_one(group, into);
            }
            offset += len;
        }
    }

    fn read_one_by_one(&mut self, group: &[(u64, usize)], into: &mut [u8]) {
        let mut offset = 0;
        for &(addr, size) in group {
            let part = &mut into[offset..offset + size];
            part.fill(0);
            let mut done = 0;
            while done < size {
                match self.read_ranges(&[(addr + done as u64, size - done)], &mut part[done..]) {
                    Ok(n) if n > 0 => done += n,
                    // Skip to the next page of the block.
                    _ => {
                        done = ((addr + done as u64) / PAGE + 1)
                            .saturating_mul(PAGE)
                            .saturating_sub(addr) as usize
                    }
                }
            }
            offset += size;
        }
    }

    /// One `process_vm_readv` of the remote `ranges` into `buf` (their total length).
    fn read_ranges(&mut self, ranges: &[(u64, usize)], buf: &mut [u8]) -> io::Result<usize> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote: Vec<libc::iovec> = ranges
            .iter()
            .map(|&(addr, len)| libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        // SAFETY: `local` covers `buf`, which outlives the call; remote addresses are only
        // read by the kernel from the other process.
        let n = unsafe {
            libc::process_vm_readv(
                self.pid,
                &local,
                1,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.bytes_read += n as u64;
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_across_an_unmapped_hole() {
        // Three pages, the middle one unmapped.
        // SAFETY: a fresh private anonymous mapping, unmapped at the end.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base_addr = base as u64;
        // SAFETY: the first and last page are ours; the middle one goes.
        unsafe {
            std::ptr::write_bytes(base.cast::<u8>(), 1, 4096);
            std::ptr::write_bytes(base.cast::<u8>().add(8192), 3, 4096);
            libc::munmap(base.cast::<u8>().add(4096).cast(), 4096);
        }
        let mut reader = Reader::new(std::process::id());
        let mut seen = Vec::new();
        let mut buf = Vec::new();
        reader.each_chunk(base_addr, base_addr + 3 * 4096, &mut buf, |at, bytes| {
            seen.push((at - base_addr, bytes.len(), bytes[0]));
        });
        assert_eq!(seen, vec![(0, 4096, 1), (8192, 4096, 3)]);
        let mut out = Vec::new();
        reader.read_blocks(&[(base_addr + 4000, 200), (base_addr + 8192, 16)], &mut out);
        assert_eq!(out.len(), 216);
        assert!(out[..96].iter().all(|&b| b == 1));
        assert!(out[96..200].iter().all(|&b| b == 0));
        assert!(out[200..].iter().all(|&b| b == 3));
        // SAFETY: the rest of the mapping.
        unsafe {
            libc::munmap(base, 4096);
            libc::munmap(base.cast::<u8>().add(8192).cast(), 4096);
        }
    }
}

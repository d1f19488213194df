//! Which modules keep their file open: the most recently used ones, at most a fixed number.
//!
//! A target may map thousands of files over a run (plugins, JITs dumping code to files,
//! hostile churn); one descriptor per file would exhaust ours and end the run without a
//! report. Closed modules are reopened on demand, through the target's mapping, and checked to
//! be the same file (device and inode) as the one first seen.
use std::collections::VecDeque;

/// At most this many objects open, however high the descriptor limit: each costs a descriptor
/// here and one in blazesym's cache, plus an address-space mapping.
const MAX_OPEN: usize = 512;

/// At least this many, however low the limit: a process's main executable and its libraries.
const MIN_OPEN: usize = 16;

/// The share of the descriptor limit open objects may take: the rest is for eBPF maps,
/// programs, perf events, `/proc` reads and the output. Each open object holds two.
const SHARE_OF_LIMIT: u64 = 4;

/// Module indices, least recently used first.
#[derive(Debug)]
pub struct OpenObjects {
    capacity: usize,
    recent: VecDeque<usize>,
}

impl OpenObjects {
    /// A set sized for a process allowed `nofile_limit` descriptors.
    pub fn for_nofile_limit(nofile_limit: u64) -> Self {
        let share = usize::try_from(nofile_limit / SHARE_OF_LIMIT).unwrap_or(MAX_OPEN);
        Self::with_capacity(share.clamp(MIN_OPEN, MAX_OPEN))
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            recent: VecDeque::with_capacity(capacity.saturating_add(1)),
        }
    }

    /// Notes that `module` is open and was just used; returns the module to close to stay
    /// within capacity, if any. Linear in the capacity, which is small.
    pub fn touch(&mut self, module: usize) -> Option<usize> {
        if let Some(at) = self.recent.iter().position(|&m| m == module) {
            self.recent.remove(at);
        }
        self.recent.push_back(module);
        if self.recent.len() > self.capacity {
            return self.recent.pop_front();
        }
        None
    }

    /// Notes that `module` was closed for another reason.
    pub fn forget(&mut self, module: usize) {
        self.recent.retain(|&m| m != module);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_is_closed_first() {
        let mut open = OpenObjects::with_capacity(3);
        assert_eq!(open.touch(0), None);
        assert_eq!(open.touch(1), None);
        assert_eq!(open.touch(2), None);
        // 0 used again: 1 is now the oldest.
        assert_eq!(open.touch(0), None);
        assert_eq!(open.touch(3), Some(1));
        assert_eq!(open.touch(4), Some(2));
        assert_eq!(open.len(), 3);
        open.forget(0);
        assert_eq!(open.touch(5), None);
        assert_eq!(open.len(), 3);
    }

    #[test]
    fn capacity_follows_the_descriptor_limit_within_bounds() {
        assert_eq!(OpenObjects::for_nofile_limit(512).capacity, 128);
        assert_eq!(OpenObjects::for_nofile_limit(20).capacity, MIN_OPEN);
        assert_eq!(OpenObjects::for_nofile_limit(1 << 20).capacity, MAX_OPEN);
        assert_eq!(OpenObjects::for_nofile_limit(u64::MAX).capacity, MAX_OPEN);
    }
}

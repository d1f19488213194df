//! The allocators the per-pair loop is linked with: the same `bench/alloc_loop.c` built four
//! ways, so that each allocator's row is measured against its own floor and the peer.

/// An allocator `alloc_loop` can be linked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Allocator {
    /// glibc's malloc (no extra library).
    Glibc,
    /// Debian's libjemalloc (`-ljemalloc`).
    Jemalloc,
    /// gperftools' tcmalloc, the minimal build (`-ltcmalloc_minimal`).
    Tcmalloc,
    /// Microsoft's mimalloc (`-lmimalloc`).
    Mimalloc,
}

impl Allocator {
    pub(super) const ALL: [Self; 4] = [Self::Glibc, Self::Jemalloc, Self::Tcmalloc, Self::Mimalloc];

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Glibc => "glibc",
            Self::Jemalloc => "jemalloc",
            Self::Tcmalloc => "tcmalloc",
            Self::Mimalloc => "mimalloc",
        }
    }

    /// The linker flag that puts this allocator under the loop, after the source.
    pub(super) fn link_flag(self) -> Option<&'static str> {
        match self {
            Self::Glibc => None,
            Self::Jemalloc => Some("-ljemalloc"),
            Self::Tcmalloc => Some("-ltcmalloc_minimal"),
            Self::Mimalloc => Some("-lmimalloc"),
        }
    }

    /// Whether FILE_NAME (of a mapped object) is the library that provides this allocator's
    /// malloc and free: the object the peer's probes go on.
    pub(super) fn provides(self, file_name: &str) -> bool {
        match self {
            Self::Glibc => file_name.starts_with("libc.so") || file_name.starts_with("libc-"),
            Self::Jemalloc => file_name.starts_with("libjemalloc.so"),
            Self::Tcmalloc => file_name.starts_with("libtcmalloc_minimal.so"),
            Self::Mimalloc => file_name.starts_with("libmimalloc.so"),
        }
    }

    /// The built loop's file name in `target/bench`.
    pub(super) fn exe_name(self) -> &'static str {
        match self {
            Self::Glibc => "alloc_loop",
            Self::Jemalloc => "alloc_loop-jemalloc",
            Self::Tcmalloc => "alloc_loop-tcmalloc",
            Self::Mimalloc => "alloc_loop-mimalloc",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_allocator_recognises_only_its_library() {
        let mapped = [
            "libc.so.6",
            "libjemalloc.so.2",
            "libtcmalloc_minimal.so.4.5.10",
            "libmimalloc.so.2.0",
        ];
        for (allocator, own) in Allocator::ALL.iter().zip(mapped) {
            for file in mapped {
                assert_eq!(
                    allocator.provides(file),
                    file == own,
                    "{allocator:?} {file}"
                );
            }
        }
        assert!(!Allocator::Glibc.provides("libcrypto.so.3"));
    }
}

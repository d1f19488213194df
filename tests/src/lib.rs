//! What the integration tests know about their targets, on top of the shared harness
//! (`leaktrace-harness`, re-exported here): the leaks of `targets/native.c` and the
//! allocator-family builds.

pub mod families;

pub use families::*;
pub use leaktrace_harness::*;

// The suite's own dependencies: this library's unit-test build does not use them.
#[cfg(test)]
use {flate2 as _, libc as _, object as _, prost as _, quick_xml as _, serde_json as _};

/// What targets/native.c leaks (keep in sync with its `run_leaks`):
/// (leak function, allocator, allocs, bytes per alloc).
pub const NATIVE_LEAKS: &[(&str, &str, u64, u64)] = &[
    ("leak_malloc", "malloc", 10, 1000),
    ("leak_calloc", "calloc", 4, 5 * 200),
    ("leak_realloc_moved", "realloc", 3, 3000),
    ("leak_realloc_inplace", "realloc", 2, 500),
    ("leak_reallocarray", "reallocarray", 2, 25 * 10),
    ("leak_posix_memalign", "posix_memalign", 3, 256),
    ("leak_aligned_alloc", "aligned_alloc", 2, 512),
    ("leak_memalign", "memalign", 2, 100),
    ("leak_valloc", "valloc", 2, 3000),
    ("leak_pvalloc", "pvalloc", 1, 5000),
    ("leak_strdup", "malloc", 3, 100),
    ("leak_mmap", "mmap", 2, 8192),
    ("leak_malloc_large", "malloc", 2, 300000),
    ("leak_inlined", "malloc", 1, 777),
];

/// pvalloc rounds its 5000-byte request up to whole pages: a tracer may count either.
pub const PVALLOC_ROUNDED: u64 = 8192;

/// Blocks native.c leaks.
pub fn native_leak_allocs() -> u64 {
    NATIVE_LEAKS.iter().map(|l| l.2).sum()
}

/// Bytes native.c leaks, with pvalloc's block counted as PVALLOC_BYTES.
pub fn native_leak_bytes(pvalloc_bytes: u64) -> u64 {
    NATIVE_LEAKS
        .iter()
        .map(|&(f, _, n, each)| {
            if f == "leak_pvalloc" {
                pvalloc_bytes
            } else {
                n * each
            }
        })
        .sum()
}

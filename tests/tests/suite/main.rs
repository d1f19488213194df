//! The integration suite: one test binary, one module per concern. Every test runs the real
//! leaktrace binary (`$LEAKTRACE_BIN`) with real eBPF probes against real target programs; see
//! the harness in `harness/` (`leaktrace-harness`). Run as root with `--test-threads=1`, or one
//! module with a filter: `cargo test -p leaktrace-tests --test suite native_allocators::`.

mod allocator_families;
mod always_on;
mod containers;
mod detach;
mod dlopen;
mod errors;
mod foreign_return_probes;
mod go_cgo;
mod go_goroutine_sites;
mod go_goroutines;
mod go_heap;
mod hostile_targets;
mod launch;
mod lifecycle;
mod long_runs;
mod musl;
mod native_allocators;
mod oom;
mod outputs;
mod reachability;
mod redis;
mod sampling;
mod security;
mod threads;
mod unwinding;
mod verdicts;

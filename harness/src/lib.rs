//! Harness for the leaktrace integration tests and the bench: real eBPF probes on real target
//! programs.
//!
//! A test compiles a C target from `tests/targets/` with gcc into a private temporary directory,
//! starts it, waits for its `ready` line, starts the `leaktrace` binary against it, waits for the
//! `leaktrace: attached` line, lets the target allocate (one line on its stdin), waits for `done`,
//! waits for leaktrace to end and decodes its JSON report.
//!
//! Go targets (`tests/targets/go/NAME/main.go`) speak the same protocol; see [`golang`].
//!
//! Every child process is owned by a guard that kills it on drop, so a failing assertion leaves
//! no process and no file behind. The tests need root (they run leaktrace) and run one at a time
//! (`--test-threads=1`).

use std::time::Duration;

pub mod build;
pub mod golang;
pub mod lines;
mod macros;
pub mod paths;
pub mod process;
pub mod report;
pub mod session;
pub mod target;
pub mod tempdir;
pub mod tracer;

pub use build::*;
pub use golang::*;
pub use lines::*;
pub use paths::*;
pub use process::*;
pub use report::*;
pub use session::*;
pub use target::*;
pub use tempdir::*;
pub use tracer::*;

/// How long leaktrace may take to load and attach its probes.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a target may take to print `ready` / `done`.
pub const TARGET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long leaktrace may take to finish after its `--duration` (or a signal) ended the run.
pub const FINISH_GRACE: Duration = Duration::from_secs(20);

/// The line leaktrace prints on stderr once the probes are in place.
pub const ATTACHED_PREFIX: &str = "leaktrace: attached";
/// The prefix of leaktrace's one error line.
pub const ERROR_PREFIX: &str = "leaktrace: error:";

/// The allocator entry points a site's `allocator` can name.
pub const ALLOCATORS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "mmap",
];

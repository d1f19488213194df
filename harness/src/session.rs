//! A whole `--pid` session: target started, leaktrace attached, target allocating, report read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::build::{Built, Variant, build};
use crate::report::{Report, aliases};
use crate::target::Target;
use crate::tracer::{Finished, Tracer};
use crate::{ATTACH_TIMEOUT, FINISH_GRACE};

// A whole traced session
// ---------------------------------------------------------------------------------------------

/// The tracer arguments of a quick run: JSON, 2 s, samples every 300 ms, every allocation reported.
pub const DEFAULT_TRACER_ARGS: &[&str] = &[
    "--format",
    "json",
    "--duration",
    "2s",
    "--interval",
    "300ms",
    "--min-age",
    "0s",
];

/// Options of one `--pid` session.
#[derive(Debug, Clone)]
pub struct SessionOpts<'a> {
    /// Arguments for the target program.
    pub target_args: &'a [&'a str],
    /// Arguments for leaktrace besides `--pid N`.
    pub tracer_args: &'a [&'a str],
    /// How long leaktrace may take to end by itself once the target said `done`.
    pub finish_timeout: Duration,
}

impl Default for SessionOpts<'_> {
    fn default() -> Self {
        SessionOpts {
            target_args: &[],
            tracer_args: DEFAULT_TRACER_ARGS,
            finish_timeout: FINISH_GRACE,
        }
    }
}

/// A target traced by `leaktrace --pid`, up to the point where the target said `done`.
#[derive(Debug)]
pub struct Attached {
    pub target: Target,
    pub tracer: Tracer,
}

/// Starts TARGET_EXE, waits for `ready`, starts `leaktrace --pid PID TRACER_ARGS`,
/// waits for `leaktrace: attached`, lets the target allocate and waits for `done`.
pub fn attach_and_go(exe: &Path, target_args: &[&str], tracer_args: &[&str]) -> Attached {
    let mut target = Target::spawn(exe, target_args);
    target.wait_ready();
    let mut args: Vec<String> = vec!["--pid".into(), target.pid.to_string()];
    args.extend(tracer_args.iter().map(|s| s.to_string()));
    let mut tracer = Tracer::start(&args);
    tracer.wait_attached(ATTACH_TIMEOUT);
    target.go();
    target.wait_done();
    Attached { target, tracer }
}

/// A finished `--pid` session: the target (still running unless it exited), what leaktrace did.
#[derive(Debug)]
pub struct Session {
    pub target: Target,
    pub finished: Finished,
}

/// The whole protocol; leaktrace must end by itself (its `--duration`, or the target exiting).
pub fn trace(built: &Built, opts: &SessionOpts) -> Session {
    let Attached { target, tracer } = attach_and_go(&built.exe, opts.target_args, opts.tracer_args);
    let finished = tracer.wait(opts.finish_timeout);
    Session { target, finished }
}

/// A finished, successful `--pid` session whose target (and its build directory) is gone.
#[derive(Debug)]
pub struct Traced {
    pub report: Report,
    /// Where the target executable was.
    pub exe: PathBuf,
    /// The allocator entry points the target printed (see [`Target::addrs`]).
    pub addrs: HashMap<String, u64>,
    pub stderr: String,
}

impl Traced {
    /// The target executable's file name.
    pub fn exe_name(&self) -> String {
        self.exe.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Names of allocator entry points at the same address as NAME in the target (NAME included):
    /// glibc's aligned_alloc *is* memalign, a probe there cannot tell which name was called.
    pub fn aliases(&self, name: &str) -> Vec<String> {
        aliases(&self.addrs, name)
    }
}

/// Builds NAME in VARIANT, traces it with exactly TRACER_ARGS (besides `--pid`), kills the
/// target and returns the report of a successful run.
pub fn traced_report(name: &str, variant: Variant, tracer_args: &[&str]) -> Report {
    let built = build(name, variant);
    let mut session = trace(
        &built,
        &SessionOpts {
            tracer_args,
            ..SessionOpts::default()
        },
    );
    session.target.kill();
    session.finished.assert_success();
    session.finished.report()
}

/// Builds NAME in VARIANT, traces it with the default options (2 s, 300 ms interval, min-age 0)
/// plus EXTRA tracer args, kills the target and returns the report of a successful run.
pub fn trace_report(name: &str, variant: Variant, extra: &[&str]) -> Traced {
    let mut args: Vec<&str> = DEFAULT_TRACER_ARGS.to_vec();
    args.extend_from_slice(extra);
    trace_built(&build(name, variant), &args)
}

/// BUILT traced by PID with TRACER_ARGS to a successful end; the target is killed after.
pub fn trace_built(built: &Built, tracer_args: &[&str]) -> Traced {
    let mut session = trace(
        built,
        &SessionOpts {
            tracer_args,
            ..SessionOpts::default()
        },
    );
    session.target.kill();
    session.finished.assert_success();
    Traced {
        report: session.finished.report(),
        exe: built.exe.clone(),
        addrs: session.target.addrs.clone(),
        stderr: session.finished.stderr.clone(),
    }
}

/// A trace shared by the tests of one test binary: made once, by the first test that needs it.
/// A failure is remembered too, so that each test reports it instead of retrying.
pub type SharedTrace = OnceLock<Result<Traced, String>>;

/// The trace in CELL, made by MAKE on first use; panics with the first attempt's failure.
pub fn shared(cell: &'static SharedTrace, make: impl FnOnce() -> Traced) -> &'static Traced {
    shared_value(cell, make)
}

/// The value in CELL, made by MAKE on first use; panics with the first attempt's failure.
pub fn shared_value<T: Send + Sync>(
    cell: &'static OnceLock<Result<T, String>>,
    make: impl FnOnce() -> T,
) -> &'static T {
    let result = cell.get_or_init(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(make)).map_err(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(non-string panic)".to_string())
        })
    });
    match result {
        Ok(t) => t,
        Err(msg) => panic!("the shared trace failed: {msg}"),
    }
}

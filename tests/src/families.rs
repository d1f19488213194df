//! Harness for the allocator-family tests: targets compiled with g++ or gcc against another
//! allocator (`-ljemalloc`, `-ltcmalloc_minimal`, `-lmimalloc`), the Rust target on
//! tikv-jemallocator (its own Cargo project), and the report's per-family fields.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{
    ATTACH_TIMEOUT, Built, DEFAULT_TRACER_ARGS, FINISH_GRACE, FamilyInfo, Report, Site,
    TARGET_TIMEOUT, Target, TempDir, Traced, Tracer, target_file,
};

/// The allocator a target is linked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Glibc,
    Jemalloc,
    Tcmalloc,
    Mimalloc,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::Glibc,
        Family::Jemalloc,
        Family::Tcmalloc,
        Family::Mimalloc,
    ];

    /// The family's name in the report's `allocator.name` and `families[].name`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Glibc => "glibc",
            Family::Jemalloc => "jemalloc",
            Family::Tcmalloc => "tcmalloc",
            Family::Mimalloc => "mimalloc",
        }
    }

    /// The linker flag that puts this allocator under the program (none for glibc).
    pub fn link_flag(self) -> Option<&'static str> {
        match self {
            Family::Glibc => None,
            Family::Jemalloc => Some("-ljemalloc"),
            Family::Tcmalloc => Some("-ltcmalloc_minimal"),
            Family::Mimalloc => Some("-lmimalloc"),
        }
    }

    /// The file name (up to its version) of the shared object that provides `malloc`.
    pub fn library(self) -> &'static str {
        match self {
            Family::Glibc => "libc.so",
            Family::Jemalloc => "libjemalloc.so",
            Family::Tcmalloc => "libtcmalloc_minimal.so",
            Family::Mimalloc => "libmimalloc.so",
        }
    }

    /// The installed shared object, for LD_PRELOAD.
    pub fn preload_path(self) -> Option<&'static str> {
        match self {
            Family::Glibc => None,
            Family::Jemalloc => Some("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
            Family::Tcmalloc => Some("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
            Family::Mimalloc => Some("/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"),
        }
    }
}

/// Compiles `tests/targets/SOURCE` with COMPILER (`gcc` or `g++`), `-Wall -Wextra -Werror
/// -pthread`, FLAGS before and LIBS after the source, into `EXE_NAME` in a fresh directory.
pub fn compile(
    compiler: &str,
    source: &str,
    exe_name: &str,
    flags: &[&str],
    libs: &[&str],
) -> Built {
    let dir = TempDir::new(exe_name);
    let exe = dir.path().join(exe_name);
    let src = target_file(source);
    let out = Command::new(compiler)
        .args(["-Wall", "-Wextra", "-Werror", "-pthread"])
        .args(flags)
        .arg("-I")
        .arg(target_file(""))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .args(libs)
        .output()
        .unwrap_or_else(|e| panic!("run {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler} {flags:?} {} {libs:?} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Built {
        name: source.to_string(),
        exe,
        dir,
    }
}

/// targets/cxx_alloc.cc built with `g++ -O2 -g`, linked with FAMILY's allocator.
pub fn build_cxx(family: Family) -> Built {
    let libs: Vec<&str> = family.link_flag().into_iter().collect();
    compile(
        "g++",
        "cxx_alloc.cc",
        &format!("cxx_alloc-{}", family.name()),
        &["-O2", "-g"],
        &libs,
    )
}

/// The Rust target's Cargo project.
pub fn rust_jemalloc_project() -> PathBuf {
    target_file("rust_jemalloc")
}

/// Builds targets/rust_jemalloc (once per test binary) with `cargo build --release`, offline
/// first (its crates are fetched by `cargo xtask setup`), online if that fails; returns a copy of
/// the executable in a fresh directory. Its target directory is kept under the workspace's
/// `target/`, so that only the first build compiles jemalloc.
pub fn build_rust_jemalloc() -> Built {
    static EXE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = EXE.get_or_init(cargo_build_rust_jemalloc);
    let exe = built.as_ref().unwrap_or_else(|e| panic!("{e}"));
    let dir = TempDir::new("rust_jemalloc");
    let copy = dir.path().join("rust_jemalloc");
    fs::copy(exe, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", exe.display()));
    Built {
        name: "rust_jemalloc".into(),
        exe: copy,
        dir,
    }
}

fn cargo_build_rust_jemalloc() -> Result<PathBuf, String> {
    let manifest = rust_jemalloc_project().join("Cargo.toml");
    let target_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rust_jemalloc");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let attempt = |offline: bool| {
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--release", "--locked", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir);
        if offline {
            cmd.arg("--offline");
        }
        cmd.output()
    };
    let mut last_error = String::new();
    for offline in [true, false] {
        match attempt(offline) {
            Ok(out) if out.status.success() => {
                return Ok(target_dir.join("release/rust_jemalloc"));
            }
            Ok(out) => last_error = String::from_utf8_lossy(&out.stderr).into_owned(),
            Err(e) => last_error = format!("run cargo: {e}"),
        }
    }
    Err(format!(
        "cargo build of {} failed:\n{last_error}",
        manifest.display()
    ))
}

/// A finished trace of a target that speaks the protocol, with every stdout line it printed
/// before `done` (e.g. jemalloc_api's `xallocx SIZE`).
#[derive(Debug)]
pub struct FamilyTrace {
    pub traced: Traced,
    pub seen: Vec<String>,
}

impl FamilyTrace {
    pub fn report(&self) -> &Report {
        &self.traced.report
    }

    /// The number on the target's `KEY N` line.
    pub fn printed(&self, key: &str) -> u64 {
        let prefix = format!("{key} ");
        self.seen
            .iter()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{key} N` line among {:?}", self.seen))
    }
}

/// Starts BUILT (with ENV added), traces it by PID with the default quick options plus EXTRA,
/// kills it and returns the report of a successful run.
pub fn trace_family(built: &Built, env: &[(&str, &str)], extra: &[&str]) -> FamilyTrace {
    let args: Vec<&str> = DEFAULT_TRACER_ARGS.iter().chain(extra).copied().collect();
    trace_family_with(built, env, &args)
}

/// As [`trace_family`], with TRACER_ARGS instead of the default quick options.
pub fn trace_family_with(built: &Built, env: &[(&str, &str)], tracer_args: &[&str]) -> FamilyTrace {
    let mut cmd = Command::new(&built.exe);
    cmd.envs(env.iter().copied());
    let mut target = Target::spawn_command(cmd);
    target.wait_line("ready", TARGET_TIMEOUT);
    let mut args: Vec<String> = vec!["--pid".into(), target.pid.to_string()];
    args.extend(tracer_args.iter().map(|s| s.to_string()));
    let mut tracer = Tracer::start(&args);
    tracer.wait_attached(ATTACH_TIMEOUT);
    target.go();
    target.wait_done();
    let finished = tracer.wait(FINISH_GRACE);
    target.kill();
    finished.assert_success();
    FamilyTrace {
        traced: Traced {
            report: finished.report(),
            exe: built.exe.clone(),
            addrs: target.addrs.clone(),
            stderr: finished.stderr.clone(),
        },
        seen: target.seen.clone(),
    }
}

/// The report's `allocator.families`; panics when absent.
pub fn families(report: &Report) -> Vec<FamilyInfo> {
    report
        .allocator
        .families
        .clone()
        .unwrap_or_else(|| panic!("no `families` list in the report:\n{}", report.describe()))
}

/// The family named NAME in the report; panics (listing them) when there is none.
pub fn family(report: &Report, name: &str) -> FamilyInfo {
    let all = families(report);
    all.iter()
        .find(|f| f.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no family `{name}` in {all:?}"))
}

/// The report's `allocator.linked_into_executable`; panics when absent.
pub fn linked_into_executable(report: &Report) -> bool {
    report.allocator.linked_into_executable.unwrap_or_else(|| {
        panic!(
            "no boolean `allocator.linked_into_executable`: {:?}",
            report.allocator
        )
    })
}

/// Every site with a frame whose function is NAME or ends with `::NAME` (Rust paths).
pub fn sites_of<'a>(report: &'a Report, name: &str) -> Vec<&'a Site> {
    report
        .sites
        .iter()
        .filter(|s| s.frames.iter().any(|f| function_is(f.function(), name)))
        .collect()
}

/// Whether a frame's FUNCTION is NAME, also as the last segment of a Rust or C++ path.
pub fn function_is(function: &str, name: &str) -> bool {
    function == name
        || function
            .strip_suffix(name)
            .is_some_and(|head| head.ends_with("::"))
}

/// The index of the first frame of SITE whose function is NAME (see [`function_is`]).
pub fn frame_index(site: &Site, name: &str) -> Option<usize> {
    site.frames
        .iter()
        .position(|f| function_is(f.function(), name))
}

/// Counts of sites by allocator name, for assertion messages.
pub fn allocator_names(report: &Report) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in &report.sites {
        *m.entry(s.allocator.clone()).or_insert(0) += 1;
    }
    m
}

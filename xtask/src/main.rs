//! Developer tasks for leaktrace, run as `cargo xtask <task>`.
//!
//! Every task runs `setup` first, so a fresh machine only needs `cargo xtask demo` or
//! `cargo xtask test`.

mod bench;
mod cmd;
mod setup;

use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::cmd::say;

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for leaktrace"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building leaktrace needs (nightly + rust-src, LLVM 22, bpf-linker, gcc,
    /// make); quick and does nothing when all is in place.
    Setup,
    /// Set up, then build leaktrace (`cargo build -p leak-user`).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build in release mode, and trace the bundled leaky demo server (needs root).
    Demo,
    /// Set up, then run all tests (one at a time, real eBPF, needs root), the fuzz targets
    /// briefly, clippy and rustfmt.
    Test,
    /// Set up, build in release mode, and measure what tracing costs per malloc/free pair, and
    /// leaktrace at volume (a million outstanding allocations, a one-minute soak; needs root);
    /// writes target/bench/results.json. LEAKTRACE_BENCH_SOAK_S sets the soak's seconds.
    Bench,
    /// Set up, then fuzz every parser of target data (ELF, `.eh_frame`, `.gopclntab`, inline
    /// trees, buildinfo, moduledata, DWARF offsets, goroutines, kmsg, tracefs, `/proc`) for
    /// SECONDS each, from seeds the tests build; a failure is shrunk and saved under
    /// target/fuzz-failures. `cargo xtask test` runs them briefly.
    Fuzz {
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        seconds: u64,
    },
    /// Set up, then `cargo install` leaktrace.
    Install {
        /// Install into DIR/bin instead of cargo's default (~/.cargo/bin).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let user_path = env::var_os("PATH").unwrap_or_default();
    setup::ensure_cargo_bin_on_path();
    let cli = Cli::parse();
    match run(cli.task, &user_path) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            say!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a task; returns the exit code for xtask. `user_path` is PATH as xtask found it.
fn run(task: Task, user_path: &OsStr) -> Result<u8> {
    setup::run()?;
    let ws = Workspace::locate()?;
    match task {
        Task::Setup => {}
        Task::Build { release } => ws.build(release)?,
        Task::Demo => return ws.demo(),
        Task::Test => ws.test()?,
        Task::Bench => return ws.bench(),
        Task::Fuzz { seconds } => ws.fuzz(seconds)?,
        Task::Install { root } => ws.install(root, user_path)?,
    }
    Ok(0)
}

/// Seconds per fuzz run in `cargo xtask test`: 12 runs (11 targets), under two minutes in all.
const TEST_FUZZ_SECONDS: u64 = 8;

struct Workspace {
    root: PathBuf,
    target: PathBuf,
}

impl Workspace {
    fn locate() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask's manifest directory has no parent")?
            .to_path_buf();
        let target = match env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        Ok(Self { root, target })
    }

    fn cargo<const N: usize>(&self, args: [&str; N]) -> Command {
        let mut command = cmd::new("cargo", args);
        command.current_dir(&self.root);
        command
    }

    /// `target/...` relative to the workspace root when it is inside it, for readable commands.
    fn short<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }

    fn build(&self, release: bool) -> Result<()> {
        let mut build = self.cargo(["build", "-p", "leak-user"]);
        if release {
            build.arg("--release");
        }
        cmd::run(&mut build)?;
        let profile = if release { "release" } else { "debug" };
        say!(
            "built {}",
            self.target.join(profile).join("leaktrace").display()
        );
        Ok(())
    }

    fn demo(&self) -> Result<u8> {
        self.build(true)?;

        let source = self.root.join("demo/leaky.c");
        let out_dir = self.target.join("demo");
        fs::create_dir_all(&out_dir)
            .with_context(|| format!("could not create {}", out_dir.display()))?;
        let leaky = out_dir.join("leaky");
        // -O2 without frame pointers on purpose: leaktrace unwinds with .eh_frame tables.
        let mut gcc = cmd::new("gcc", ["-O2", "-g", "-Wall", "-Wextra", "-o"]);
        gcc.arg(self.short(&leaky))
            .arg(self.short(&source))
            .current_dir(&self.root);
        cmd::run(&mut gcc)?;

        let leaktrace = self.target.join("release/leaktrace");
        let mut trace = Command::new(&leaktrace);
        trace
            .args([
                "--duration",
                "8s",
                "--interval",
                "2s",
                "--min-age",
                "1s",
                "run",
                "--",
            ])
            .arg(self.short(&leaky))
            .current_dir(&self.root);
        say!("running `{}`", cmd::display(&trace));
        let status = cmd::status(&mut trace)?;
        if !status.success() {
            say!("leaktrace exited with {}", cmd::describe(status));
        }
        Ok(cmd::exit_code(status))
    }

    fn test(&self) -> Result<()> {
        cmd::run(&mut self.cargo(["build", "-p", "leak-user"]))?;
        let leaktrace = self.target.join("debug/leaktrace");
        let mut test = self.cargo([
            "test",
            "--workspace",
            "--exclude",
            "leak-ebpf",
            "--",
            // The tests attach real probes and count exact bytes: one at a time.
            "--test-threads=1",
        ]);
        test.env("LEAKTRACE_BIN", &leaktrace);
        // The fuzz targets are unit tests of leaktrace: here each gets a bounded time.
        test.env("LEAKTRACE_FUZZ_SECONDS", TEST_FUZZ_SECONDS.to_string());
        cmd::run(&mut test)?;
        cmd::run(&mut self.cargo([
            "clippy",
            "--workspace",
            "--exclude",
            "leak-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        self.clippy_ebpf()?;
        cmd::run(&mut self.cargo(["fmt", "--all", "--", "--check"]))?;
        say!("test: tests, clippy and rustfmt all passed");
        Ok(())
    }

    /// Clippy on the kernel side, for the target it runs on (every unsafe block documented,
    /// as the workspace lints ask). Needs nightly's clippy, which a minimal nightly lacks:
    /// skipped with a note then.
    fn clippy_ebpf(&self) -> Result<()> {
        let has_clippy = cmd::output(&mut cmd::new(
            "rustup",
            ["run", "nightly", "cargo", "clippy", "--version"],
        ))
        .is_ok();
        if !has_clippy {
            say!(
                "test: nightly has no clippy: leak-ebpf not linted (rustup component add clippy --toolchain nightly)"
            );
            return Ok(());
        }
        let mut clippy = cmd::new(
            "rustup",
            [
                "run",
                "nightly",
                "cargo",
                "clippy",
                "-p",
                "leak-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
                "--",
                "-D",
                "warnings",
            ],
        );
        clippy.current_dir(&self.root);
        cmd::run(&mut clippy)
    }

    /// The fuzz targets alone: unit tests of leaktrace (the parsers are private to the binary),
    /// run one at a time for `seconds` each.
    fn fuzz(&self, seconds: u64) -> Result<()> {
        let mut fuzz = self.cargo([
            "test",
            "-p",
            "leak-user",
            "--bin",
            "leaktrace",
            "--",
            "--test-threads=1",
            "--nocapture",
            "fuzz::targets::",
        ]);
        fuzz.env("LEAKTRACE_FUZZ_SECONDS", seconds.to_string());
        cmd::run(&mut fuzz)?;
        say!("fuzz: no failure in {seconds} s per target");
        Ok(())
    }

    fn install(&self, root: Option<PathBuf>, user_path: &OsStr) -> Result<()> {
        let mut install = self.cargo(["install", "--locked", "--path"]);
        install.arg(self.root.join("leak-user"));
        let bin_dir = match root {
            Some(root) => {
                // Relative to where the user ran xtask, not to the workspace root.
                let root = env::current_dir()
                    .context("could not read the current directory")?
                    .join(root);
                install.arg("--root").arg(&root);
                root.join("bin")
            }
            None => env::var_os("CARGO_INSTALL_ROOT")
                .filter(|dir| !dir.is_empty())
                .map_or_else(setup::cargo_home, PathBuf::from)
                .join("bin"),
        };
        cmd::run(&mut install)?;
        let installed = bin_dir.join("leaktrace");
        say!("installed leaktrace to {}", installed.display());
        install_completions_and_man(&installed, &bin_dir)?;
        if !env::split_paths(user_path).any(|dir| dir == bin_dir) {
            say!(
                "note: {} is not on your PATH; run leaktrace by its full path",
                bin_dir.display()
            );
        }
        Ok(())
    }
}

/// Shell completions and the man page, generated by the installed binary from its clap
/// definitions, under `<root>/share` where shells and man-db look for a `<root>/bin` on PATH.
fn install_completions_and_man(installed: &Path, bin_dir: &Path) -> Result<()> {
    let share = bin_dir
        .parent()
        .map_or_else(|| bin_dir.join("../share"), |root| root.join("share"));
    for (args, dest) in [
        (
            &["generate", "completions", "bash"][..],
            "bash-completion/completions/leaktrace",
        ),
        (
            &["generate", "completions", "zsh"][..],
            "zsh/site-functions/_leaktrace",
        ),
        (
            &["generate", "completions", "fish"][..],
            "fish/vendor_completions.d/leaktrace.fish",
        ),
        (&["generate", "man"][..], "man/man1/leaktrace.1"),
    ] {
        let dest = share.join(dest);
        let out = Command::new(installed)
            .args(args)
            .output()
            .with_context(|| format!("could not run {}", installed.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "`leaktrace {}` failed",
            args.join(" ")
        );
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
        }
        fs::write(&dest, &out.stdout)
            .with_context(|| format!("could not write {}", dest.display()))?;
        say!("installed {}", dest.display());
    }
    Ok(())
}

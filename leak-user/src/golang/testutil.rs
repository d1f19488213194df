//! Builds small Go programs (`testdata/`) with the real toolchains so the readers are tested on
//! what Go actually emits. Toolchains come from the shared harness's lookup (`LEAKTRACE_GO`, a
//! recent Go, 1.27 when the tables were made, and `LEAKTRACE_GO119`, or their default install
//! paths); a missing toolchain fails the test instead of skipping it, so a green run always
//! means the binaries were checked.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The recent Go (`LEAKTRACE_GO`) or Go 1.19 (`LEAKTRACE_GO119`): the harness's lookup.
pub use leaktrace_harness::GoToolchain as Toolchain;

pub const TOOLCHAINS: [Toolchain; 2] = Toolchain::ALL;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Default build: `.symtab` and DWARF present.
    Plain,
    /// `-ldflags='-s -w'`: no `.symtab`, no DWARF.
    Stripped,
    /// `-buildmode=pie -ldflags='-s -w'`.
    PieStripped,
    /// The program plus a cgo file, linked by gcc (external linking): `.text` then starts
    /// with C runtime code before Go's `runtime.text`.
    Cgo,
    /// The same, stripped.
    CgoStripped,
}

pub const LEAKY_MAIN: &str = include_str!("testdata/leaky/main.go");

/// Line of `b := make([]byte, 1024)` in [`LEAKY_MAIN`].
pub const LEAKY_MAKE_LINE: u32 = 14;

const OTHER_GO: &str = include_str!("testdata/leaky/other.go");

const CGO_GO: &str = include_str!("testdata/cgo.go");

/// Line of `C.free(C.malloc(16))` in the cgo file (`cgo.go`) of the cgo variants.
pub const CGO_MALLOC_LINE: u32 = 7;

fn work_root() -> PathBuf {
    std::env::temp_dir().join("leaktrace-go-tests")
}

/// A `go` command with a private cache and no network, toolchain switching or user config.
pub fn go_command(toolchain: Toolchain) -> Command {
    let root = work_root();
    let mut cmd = Command::new(toolchain.go_binary());
    cmd.env_remove("GOROOT")
        .env("GOCACHE", root.join("gocache"))
        .env("GOPATH", root.join("gopath"))
        .env("HOME", root.join("home"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOENV", "off")
        .env("GOOS", "linux")
        .env("GOARCH", "amd64")
        .env("CGO_ENABLED", "0");
    cmd
}

/// A Go program of package main: a name for its build directory and its source files
/// (`go.mod` and, for the cgo variants, a cgo file are added).
pub struct Program {
    pub name: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

/// The program most tests use: [`LEAKY_MAIN`] and a second file.
pub const LEAKY: Program = Program {
    name: "leaky",
    files: &[("main.go", LEAKY_MAIN), ("other.go", OTHER_GO)],
};

type BuildKey = (&'static str, Toolchain, Variant);

static BUILDS: Mutex<Vec<(BuildKey, PathBuf)>> = Mutex::new(Vec::new());

/// Path of the test program built with `toolchain` as `variant`, built once per test process.
pub fn build(toolchain: Toolchain, variant: Variant) -> PathBuf {
    build_program(&LEAKY, toolchain, variant)
}

/// [`build`] for another program.
pub fn build_program(program: &Program, toolchain: Toolchain, variant: Variant) -> PathBuf {
    // Held across the build: concurrent tests wanting the same binary wait for it, and two
    // cores gain nothing from parallel Go builds anyway.
    let mut builds = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let key = (program.name, toolchain, variant);
    if let Some((_, path)) = builds.iter().find(|(built, _)| *built == key) {
        return path.clone();
    }
    let path = build_uncached(program, toolchain, variant);
    builds.push((key, path.clone()));
    path
}

fn build_uncached(program: &Program, toolchain: Toolchain, variant: Variant) -> PathBuf {
    let dir = process_dir().join(format!("{}-{toolchain:?}-{variant:?}", program.name));
    std::fs::create_dir_all(&dir).expect("create build dir");
    let mut files = vec![("go.mod", "module example.com/leaky\n\ngo 1.19\n")];
    files.extend_from_slice(program.files);
    if matches!(variant, Variant::Cgo | Variant::CgoStripped) {
        files.push(("cgo.go", CGO_GO));
    }
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write Go source");
    }
    let out = dir.join(program.name);
    let mut cmd = go_command(toolchain);
    // -trimpath: file names in the tables do not depend on the build directory.
    cmd.current_dir(&dir)
        .args(["build", "-trimpath", "-o"])
        .arg(&out);
    match variant {
        Variant::Plain => {}
        Variant::Stripped => {
            cmd.arg("-ldflags=-s -w");
        }
        Variant::PieStripped => {
            cmd.args(["-buildmode=pie", "-ldflags=-s -w"]);
        }
        Variant::Cgo => {
            cmd.env("CGO_ENABLED", "1");
        }
        Variant::CgoStripped => {
            cmd.env("CGO_ENABLED", "1").arg("-ldflags=-s -w");
        }
    }
    cmd.arg(".");
    let output = cmd.output().expect("run go build");
    assert!(
        output.status.success(),
        "go build ({toolchain:?}, {variant:?}) failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// `go tool objdump -s REGEX binary` output.
pub fn objdump(toolchain: Toolchain, binary: &Path, regex: &str) -> String {
    let output = go_command(toolchain)
        .args(["tool", "objdump", "-s", regex])
        .arg(binary)
        .output()
        .expect("run go tool objdump");
    assert!(
        output.status.success(),
        "go tool objdump failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("objdump output is UTF-8")
}

/// A directory for this test process's builds; those of test processes that are gone are
/// removed first, so repeated runs do not pile up binaries (the Go build cache is kept).
fn process_dir() -> PathBuf {
    let runs = work_root().join("runs");
    if let Ok(entries) = std::fs::read_dir(&runs) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let alive = name
                .to_str()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    runs.join(std::process::id().to_string())
}

/// Reads a built binary.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

//! Compiling the C targets of `tests/targets/` with gcc, one private directory per build.

use std::path::PathBuf;
use std::process::Command;

use crate::paths::target_source;
use crate::tempdir::TempDir;

// Building targets
// ---------------------------------------------------------------------------------------------

/// How a target is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `-O0 -g`: frame pointers, no optimization.
    O0,
    /// `-O2 -g -fomit-frame-pointer`: unwinding needs the CFI.
    O2NoFramePointer,
    /// `-static -O2 -g`: the allocator is inside the executable.
    Static,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::O0, Variant::O2NoFramePointer, Variant::Static];

    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Variant::O0 => &["-O0", "-g"],
            Variant::O2NoFramePointer => &["-O2", "-g", "-fomit-frame-pointer"],
            Variant::Static => &["-static", "-O2", "-g"],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Variant::O0 => "O0",
            Variant::O2NoFramePointer => "O2-nofp",
            Variant::Static => "static",
        }
    }
}

/// A compiled target in its own temporary directory (removed on drop).
#[derive(Debug)]
pub struct Built {
    pub name: String,
    pub exe: PathBuf,
    pub dir: TempDir,
}

impl Built {
    /// The executable's file name, as it appears at the end of module paths.
    pub fn file_name(&self) -> String {
        self.exe.file_name().unwrap().to_string_lossy().into_owned()
    }
}

/// Compiles `tests/targets/NAME.c` with `gcc -Wall -Wextra -Werror -pthread` and the variant's flags.
pub fn build(name: &str, variant: Variant) -> Built {
    let mut flags = vec!["-Wall", "-Wextra", "-Werror", "-pthread"];
    flags.extend_from_slice(variant.flags());
    build_with(name, &format!("{name}-{}", variant.label()), &flags)
}

/// Compiles `tests/targets/NAME.c` with exactly `flags`, into an executable called `exe_name`.
pub fn build_with(name: &str, exe_name: &str, flags: &[&str]) -> Built {
    let dir = TempDir::new(name);
    let exe = dir.path().join(exe_name);
    let src = target_source(name);
    let out = Command::new("gcc")
        .args(flags)
        .arg("-I")
        .arg(src.parent().unwrap())
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc {flags:?} {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Built {
        name: name.to_string(),
        exe,
        dir,
    }
}

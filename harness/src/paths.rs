//! Where things are: the leaktrace binary, the target sources and their `@line` marks.

use std::fs;
use std::path::{Path, PathBuf};

/// The leaktrace binary: `$LEAKTRACE_BIN`, else `target/debug/leaktrace` of the workspace.
pub fn leaktrace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LEAKTRACE_BIN") {
        return PathBuf::from(p);
    }
    let bin = workspace_root().join("target/debug/leaktrace");
    assert!(
        bin.exists(),
        "leaktrace binary not found at {} (build it with `cargo build -p leak-user` or set LEAKTRACE_BIN)",
        bin.display()
    );
    bin
}

/// The workspace: the directory above this crate.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The workspace's `target/` directory (`$CARGO_TARGET_DIR` when set).
pub fn cargo_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A file under `tests/targets/`.
pub fn target_file(relative: &str) -> PathBuf {
    workspace_root().join("tests/targets").join(relative)
}

/// The C source of a target in `tests/targets/`.
pub fn target_source(name: &str) -> PathBuf {
    target_file(&format!("{name}.c"))
}

/// The 1-based line of a target's source marked `/* @line MARK */`: the call line a symbolized
/// frame of function MARK must point at.
pub fn marked_line(target: &str, mark: &str) -> u32 {
    marked_line_in(&format!("{target}.c"), mark)
}

/// The 1-based line of `tests/targets/RELATIVE` marked `/* @line MARK */`.
pub fn marked_line_in(relative: &str, mark: &str) -> u32 {
    let path = target_file(relative);
    let src = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let needle = format!("@line {mark} */");
    let hits: Vec<u32> = src
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&needle))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "marker `{needle}` must be on exactly one line of {relative}"
    );
    hits[0]
}

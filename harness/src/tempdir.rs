//! Private temporary directories (tempfile), removed with their content on drop.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A directory under `std::env::temp_dir()` with a unique name, removed (with its content) on drop.
#[derive(Debug)]
pub struct TempDir {
    dir: tempfile::TempDir,
}

impl TempDir {
    /// A new directory named after LABEL; panics when it cannot be made.
    pub fn new(label: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("leaktrace-test-{label}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temporary directory for {label}: {e}"));
        // Readable by other users too: the not-root test runs a target as nobody.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.path().display()));
        TempDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// NAME inside the directory.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

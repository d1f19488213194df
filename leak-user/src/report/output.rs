//! Where and how reports are written: the final report in every `--format`, the periodic
//! lines of `--format jsonl`, to `--output FILE` or stdout.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::{flamegraph, folded, json, model::Report, pprof, text};
use crate::cli::Format;

#[derive(Debug, Error)]
pub enum OutputError {
    #[error(
        "--format pprof writes gzipped binary data; name a file with --output FILE \
         (or redirect stdout)"
    )]
    BinaryToTerminal,
    #[error("cannot write the report to {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--output {}: is a symbolic link, which leaktrace does not follow", path.display())]
    Symlink { path: PathBuf },
    #[error("cannot write the report to stdout: {0}")]
    Stdout(#[source] io::Error),
    #[error(transparent)]
    Pprof(#[from] pprof::PprofError),
    #[error(transparent)]
    Flamegraph(#[from] flamegraph::FlamegraphError),
}

/// Refuses, before anything is traced, to write binary data to a terminal.
pub fn check(
    format: Format,
    output: Option<&Path>,
    stdout_is_terminal: bool,
) -> Result<(), OutputError> {
    if format == Format::Pprof && output.is_none() && stdout_is_terminal {
        return Err(OutputError::BinaryToTerminal);
    }
    Ok(())
}

/// The final report in `format`.
pub fn render(format: Format, report: &Report) -> Result<Vec<u8>, OutputError> {
    Ok(match format {
        Format::Text => text::render(report).into_bytes(),
        Format::Json => json::render(report).into_bytes(),
        Format::Jsonl => json_line(report).into_bytes(),
        Format::Pprof => pprof::render(report)?,
        Format::Folded => folded::render(report).into_bytes(),
        Format::Svg => flamegraph::render(report)?,
    })
}

/// One report on one line, for `--format jsonl`.
pub fn json_line(report: &Report) -> String {
    // Plain structs of strings and numbers: serializing cannot fail.
    let mut line = serde_json::to_string(report).unwrap_or_else(|e| {
        format!("{{\"tool\":\"leaktrace\",\"error\":\"cannot serialize report: {e}\"}}")
    });
    line.push('\n');
    line
}

/// `--output FILE` or stdout; flushed after every write, so each jsonl line is out as soon as
/// it is made.
pub struct Sink {
    path: Option<PathBuf>,
    file: Option<File>,
}

impl Sink {
    /// Opens (truncates) `--output FILE` now, before anything is attached: a file that cannot
    /// be written ends the run before it starts. The last component is never followed if it
    /// is a symbolic link (a target-writable directory could point it at any file root can
    /// write); a new file is created mode 0600, an existing one keeps its mode.
    pub fn open(path: Option<PathBuf>) -> Result<Self, OutputError> {
        let file = match &path {
            Some(path) => Some(open_no_follow(path)?),
            None => None,
        };
        Ok(Sink { path, file })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        let (Some(path), Some(file)) = (&self.path, &mut self.file) else {
            let mut stdout = io::stdout().lock();
            return stdout
                .write_all(bytes)
                .and_then(|()| stdout.flush())
                .map_err(OutputError::Stdout);
        };
        file.write_all(bytes)
            .and_then(|()| file.flush())
            .map_err(|source| OutputError::File {
                path: path.clone(),
                source,
            })
    }
}

fn open_no_follow(path: &Path) -> Result<File, OutputError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                OutputError::Symlink {
                    path: path.to_owned(),
                }
            } else {
                OutputError::File {
                    path: path.to_owned(),
                    source,
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_to_a_terminal_is_refused() {
        let refused = check(Format::Pprof, None, true).expect_err("refused");
        let message = refused.to_string();
        assert!(message.contains("--output"), "{message}");
        assert!(!message.contains('\n'));
        check(Format::Pprof, None, false).expect("redirected stdout is fine");
        check(Format::Pprof, Some(Path::new("x.pb.gz")), true).expect("a file is fine");
        check(Format::Svg, None, true).expect("text formats are fine");
    }

    #[test]
    fn json_lines_are_single_lines() {
        let mut report = pprof::tests::report(vec![]);
        report.is_final = false;
        let line = json_line(&report);
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["final"], false);
        assert_eq!(value["tool"], "leaktrace");
    }

    #[test]
    fn sink_truncates_then_appends() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("leaktrace-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("out.jsonl");
        std::fs::write(&path, "old content\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut sink = Sink::open(Some(path.clone())).expect("open");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
        sink.write(b"one\n").expect("write");
        sink.write(b"two\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\ntwo\n");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o644, "an existing file keeps its mode");
        let new = dir.join("new.json");
        Sink::open(Some(new.clone())).expect("open");
        assert_eq!(mode(&new), 0o600, "a new file is private");
        let error = Sink::open(Some(dir.join("missing/dir/x")))
            .err()
            .expect("no such dir");
        assert!(error.to_string().contains("missing/dir/x"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sink_does_not_follow_a_symlink() {
        let dir = std::env::temp_dir().join(format!("leaktrace-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let victim = dir.join("precious");
        std::fs::write(&victim, "keep me").expect("write");
        let link = dir.join("report.json");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let error = Sink::open(Some(link.clone())).err().expect("refused");
        assert!(matches!(error, OutputError::Symlink { .. }), "{error}");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

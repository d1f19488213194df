//! The `oom:mark_victim` tracepoint: its record layout, read from the kernel's own format file
//! because the fields differ by version (only `pid` before 6.9 / 6.1.130, then comm, RSS counters,
//! uid, page tables, oom_score_adj), and the decoding of a raw record into an [`OomVictim`].
//!
//! The tracepoint fires right after the SIGKILL, before the `Killed process` log line, and also
//! when the kernel spares an already-exiting task: a `mark_victim` is a kill decision, not always
//! a kill.

use std::path::{Path, PathBuf};

use super::VictimFigures;

/// Failure to read or use the `mark_victim` format.
#[derive(Debug, thiserror::Error)]
pub enum TracepointError {
    #[error(
        "no tracefs with events/oom/mark_victim found (tried {0:?}); mount tracefs on /sys/kernel/tracing"
    )]
    NotFound(Vec<PathBuf>),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("format line {line:?}: {what}")]
    BadLine { line: String, what: &'static str },
    #[error("mark_victim format has no `pid` field")]
    NoPid,
    #[error("field `{field}` has unsupported size {size}")]
    BadSize { field: &'static str, size: usize },
    #[error("record of {len} bytes too short for field `{field}` (needs {needed})")]
    Truncated {
        field: &'static str,
        needed: usize,
        len: usize,
    },
}

/// How a field's bytes are stored in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A number of `size` bytes at `offset`.
    Scalar,
    /// A fixed array (`char comm[16]`).
    Array,
    /// `__data_loc`: a u32 at `offset`, low 16 bits the data's offset from the record start, high
    /// 16 bits its length.
    DataLoc,
    /// `__rel_loc` (5.19+): as `DataLoc`, but the offset counts from the end of this u32.
    RelLoc,
}

/// Where one field lives in a raw record (offsets from `common_type`, the record start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldAt {
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
    pub kind: FieldKind,
}

/// The `mark_victim` fields this kernel has. Only `pid` is always there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkVictimLayout {
    /// Tracepoint id (`ID:` line), for attaching through perf_event_open.
    pub id: Option<u32>,
    pub pid: FieldAt,
    pub comm: Option<FieldAt>,
    pub total_vm: Option<FieldAt>,
    pub anon_rss: Option<FieldAt>,
    pub file_rss: Option<FieldAt>,
    pub shmem_rss: Option<FieldAt>,
    pub uid: Option<FieldAt>,
    pub pgtables: Option<FieldAt>,
    pub oom_score_adj: Option<FieldAt>,
}

/// One OOM victim as the tracepoint reported it. Sizes are in kB, as the kernel records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomVictim {
    pub pid: u32,
    pub comm: Option<String>,
    pub figures: VictimFigures,
}

const FORMAT_REL: &str = "events/oom/mark_victim/format";

impl MarkVictimLayout {
    /// Reads this kernel's format file: tracefs from `/proc/self/mountinfo`, then the usual places.
    pub fn from_system() -> Result<Self, TracepointError> {
        let mut dirs: Vec<PathBuf> = tracefs_mounts(Path::new("/proc/self/mountinfo"));
        for d in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
            if !dirs.iter().any(|p| p == Path::new(d)) {
                dirs.push(PathBuf::from(d));
            }
        }
        let mut tried = Vec::new();
        for dir in dirs {
            let path = dir.join(FORMAT_REL);
            match std::fs::read_to_string(&path) {
                Ok(text) => return Self::parse(&text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => tried.push(path),
                Err(source) => return Err(TracepointError::Io { path, source }),
            }
        }
        Err(TracepointError::NotFound(tried))
    }

    /// Parses the text of `events/oom/mark_victim/format`.
    pub fn parse(format: &str) -> Result<Self, TracepointError> {
        let mut id = None;
        let mut fields: Vec<(String, FieldAt)> = Vec::new();
        for line in format.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("ID:") {
                id = v.trim().parse().ok();
            } else if line.starts_with("field:") {
                fields.push(parse_field(line)?);
            }
        }
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, f)| *f);
        let layout = Self {
            id,
            pid: get("pid").ok_or(TracepointError::NoPid)?,
            comm: get("comm"),
            total_vm: get("total_vm"),
            anon_rss: get("anon_rss"),
            file_rss: get("file_rss"),
            shmem_rss: get("shmem_rss"),
            uid: get("uid"),
            pgtables: get("pgtables"),
            oom_score_adj: get("oom_score_adj"),
        };
        layout.check()?;
        Ok(layout)
    }

    /// Rejects layouts `decode` could not honour, once, instead of on every record.
    fn check(&self) -> Result<(), TracepointError> {
        let scalars = [
            ("pid", Some(self.pid)),
            ("total_vm", self.total_vm),
            ("anon_rss", self.anon_rss),
            ("file_rss", self.file_rss),
            ("shmem_rss", self.shmem_rss),
            ("uid", self.uid),
            ("pgtables", self.pgtables),
            ("oom_score_adj", self.oom_score_adj),
        ];
        for (field, f) in scalars {
            if let Some(f) = f
                && (f.kind != FieldKind::Scalar || !matches!(f.size, 1 | 2 | 4 | 8))
            {
                return Err(TracepointError::BadSize {
                    field,
                    size: f.size,
                });
            }
        }
        if let Some(c) = self.comm
            && matches!(c.kind, FieldKind::DataLoc | FieldKind::RelLoc)
            && c.size != 4
        {
            return Err(TracepointError::BadSize {
                field: "comm",
                size: c.size,
            });
        }
        Ok(())
    }

    #[cfg(test)]
    /// Bytes a record must have for every fixed field: what a BPF program should copy out.
    pub fn fixed_size(&self) -> usize {
        [
            Some(self.pid),
            self.comm,
            self.total_vm,
            self.anon_rss,
            self.file_rss,
            self.shmem_rss,
            self.uid,
            self.pgtables,
            self.oom_score_adj,
        ]
        .into_iter()
        .flatten()
        .map(|f| f.offset.saturating_add(f.size))
        .max()
        .unwrap_or(0)
    }

    /// Decodes a raw record (starting at `common_type`, as a tracepoint program's context or a
    /// perf/ftrace ring-buffer event body). Fields this kernel lacks are `None`; so is a
    /// `comm` whose dynamic data lies outside `record`.
    pub fn decode(&self, record: &[u8]) -> Result<OomVictim, TracepointError> {
        let pid = read_int(record, self.pid, "pid")?;
        let opt = |f: Option<FieldAt>, name| f.map(|f| read_int(record, f, name)).transpose();
        let unsigned = |v: Option<i128>| v.and_then(|v| u64::try_from(v).ok());
        Ok(OomVictim {
            pid: u32::try_from(pid).unwrap_or(0),
            comm: self.comm.and_then(|f| read_str(record, f)),
            figures: VictimFigures {
                total_vm_kb: unsigned(opt(self.total_vm, "total_vm")?),
                anon_rss_kb: unsigned(opt(self.anon_rss, "anon_rss")?),
                file_rss_kb: unsigned(opt(self.file_rss, "file_rss")?),
                shmem_rss_kb: unsigned(opt(self.shmem_rss, "shmem_rss")?),
                uid: opt(self.uid, "uid")?.and_then(|v| u32::try_from(v).ok()),
                pgtables_kb: unsigned(opt(self.pgtables, "pgtables")?),
                oom_score_adj: opt(self.oom_score_adj, "oom_score_adj")?
                    .and_then(|v| i64::try_from(v).ok()),
            },
        })
    }
}

/// `field:<type> <name>[N];\toffset:N;\tsize:N;\tsigned:N;`
fn parse_field(line: &str) -> Result<(String, FieldAt), TracepointError> {
    let bad = |what| TracepointError::BadLine {
        line: line.to_owned(),
        what,
    };
    let mut parts = line.split(';').map(str::trim);
    let decl = parts
        .next()
        .and_then(|d| d.strip_prefix("field:"))
        .ok_or_else(|| bad("no field declaration"))?;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in parts {
        if let Some(v) = part.strip_prefix("offset:") {
            offset = v.parse::<usize>().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.parse::<usize>().ok();
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v == "1";
        }
    }
    let offset = offset.ok_or_else(|| bad("no offset"))?;
    let size = size.ok_or_else(|| bad("no size"))?;
    let name_token = decl
        .rsplit(char::is_whitespace)
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("no field name"))?;
    let (name, is_array) = match name_token.split_once('[') {
        Some((n, _)) => (n, true),
        None => (name_token, false),
    };
    let kind = if decl.starts_with("__data_loc ") {
        FieldKind::DataLoc
    } else if decl.starts_with("__rel_loc ") {
        FieldKind::RelLoc
    } else if is_array {
        FieldKind::Array
    } else {
        FieldKind::Scalar
    };
    let field = FieldAt {
        offset,
        size,
        signed,
        kind,
    };
    Ok((name.to_owned(), field))
}

/// Little-endian is what x86-64 and arm64 (little-endian) write; the tool targets those.
fn read_int(record: &[u8], f: FieldAt, field: &'static str) -> Result<i128, TracepointError> {
    if f.size == 0 || f.size > 8 {
        return Err(TracepointError::BadSize {
            field,
            size: f.size,
        });
    }
    let end = f.offset.saturating_add(f.size);
    let bytes = record
        .get(f.offset..end)
        .ok_or(TracepointError::Truncated {
            field,
            needed: end,
            len: record.len(),
        })?;
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    let raw = u64::from_le_bytes(buf);
    Ok(if f.signed {
        let shift = 64 - 8 * f.size as u32;
        i128::from(((raw << shift) as i64) >> shift)
    } else {
        i128::from(raw)
    })
}

fn read_str(record: &[u8], f: FieldAt) -> Option<String> {
    let bytes = match f.kind {
        FieldKind::Array | FieldKind::Scalar => {
            record.get(f.offset..f.offset.checked_add(f.size)?)?
        }
        FieldKind::DataLoc | FieldKind::RelLoc => {
            let loc_end = f.offset.checked_add(4)?;
            let loc = u32::from_le_bytes(record.get(f.offset..loc_end)?.try_into().ok()?);
            let mut start = (loc & 0xffff) as usize;
            let len = (loc >> 16) as usize;
            if f.kind == FieldKind::RelLoc {
                start = start.checked_add(loc_end)?;
            }
            record.get(start..start.checked_add(len)?)?
        }
    };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// tracefs mount points (and debugfs ones + `/tracing`) listed in a mountinfo file.
fn tracefs_mounts(mountinfo: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(mountinfo) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        // `<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fstype> ...`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(mount_point), Some(fs)) = (left.split(' ').nth(4), right.split(' ').next())
        else {
            continue;
        };
        let mount_point = mount_point.replace("\\040", " ");
        match fs {
            "tracefs" => out.push((false, PathBuf::from(mount_point))),
            "debugfs" => out.push((true, Path::new(&mount_point).join("tracing"))),
            _ => {}
        }
    }
    // A directly mounted tracefs beats the debugfs automount (stable sort keeps mount order).
    out.sort_by_key(|(debugfs, _)| *debugfs);
    out.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cat /sys/kernel/tracing/events/oom/mark_victim/format` on 6.18.
    const FORMAT_6_18: &str = include_str!("testdata/mark_victim-format-6.18.txt");
    /// The `mark_victim` record the 6.18 kernel wrote when it killed `memhog` (pid 3457) in a 32M
    /// memcg, read from the tracing ring buffer (`per_cpu/cpu0/trace_pipe_raw`, 80 bytes with the
    /// ring buffer's padding). The text trace of the same event:
    /// `mark_victim: pid=3457 comm=memhog total-vm=35372kB anon-rss=32512kB file-rss:860kB
    /// shmem-rss:0kB uid=0 pgtables=108kB oom_score_adj=0`.
    const RECORD_6_18: &[u8] = include_bytes!("testdata/mark_victim-record-6.18.bin");

    /// Before 6.9 (and 6.1.130) the event carried only the pid.
    const FORMAT_OLD: &str = "name: mark_victim
ID: 512
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;

print fmt: \"pid=%d\", REC->pid
";

    fn at(offset: usize, size: usize, signed: bool, kind: FieldKind) -> FieldAt {
        FieldAt {
            offset,
            size,
            signed,
            kind,
        }
    }

    #[test]
    fn parses_the_6_18_format() {
        let l = MarkVictimLayout::parse(FORMAT_6_18).expect("layout");
        assert_eq!(l.id, Some(609));
        assert_eq!(l.pid, at(8, 4, true, FieldKind::Scalar));
        assert_eq!(l.comm, Some(at(12, 4, false, FieldKind::DataLoc)));
        assert_eq!(l.total_vm, Some(at(16, 8, false, FieldKind::Scalar)));
        assert_eq!(l.anon_rss, Some(at(24, 8, false, FieldKind::Scalar)));
        assert_eq!(l.file_rss, Some(at(32, 8, false, FieldKind::Scalar)));
        assert_eq!(l.shmem_rss, Some(at(40, 8, false, FieldKind::Scalar)));
        assert_eq!(l.uid, Some(at(48, 4, false, FieldKind::Scalar)));
        assert_eq!(l.pgtables, Some(at(56, 8, false, FieldKind::Scalar)));
        assert_eq!(l.oom_score_adj, Some(at(64, 2, true, FieldKind::Scalar)));
        assert_eq!(l.fixed_size(), 66);
    }

    #[test]
    fn decodes_the_captured_6_18_record() {
        let l = MarkVictimLayout::parse(FORMAT_6_18).expect("layout");
        let v = l.decode(RECORD_6_18).expect("decode");
        assert_eq!(
            v,
            OomVictim {
                pid: 3457,
                comm: Some("memhog".to_owned()),
                figures: VictimFigures {
                    total_vm_kb: Some(35372),
                    anon_rss_kb: Some(32512),
                    file_rss_kb: Some(860),
                    shmem_rss_kb: Some(0),
                    uid: Some(0),
                    pgtables_kb: Some(108),
                    oom_score_adj: Some(0),
                },
            }
        );
        // Without the dynamic area the comm is unknown, the rest still decodes.
        let short = l.decode(&RECORD_6_18[..66]).expect("decode");
        assert_eq!((short.pid, short.comm), (3457, None));
        assert!(matches!(
            l.decode(&RECORD_6_18[..40]),
            Err(TracepointError::Truncated {
                field: "shmem_rss",
                ..
            })
        ));
    }

    #[test]
    fn negative_oom_score_adj_is_sign_extended() {
        let l = MarkVictimLayout::parse(FORMAT_6_18).expect("layout");
        let mut rec = RECORD_6_18.to_vec();
        rec[64..66].copy_from_slice(&(-998i16).to_le_bytes());
        assert_eq!(
            l.decode(&rec).expect("decode").figures.oom_score_adj,
            Some(-998)
        );
    }

    #[test]
    fn old_format_has_only_pid() {
        let l = MarkVictimLayout::parse(FORMAT_OLD).expect("layout");
        assert_eq!(l.id, Some(512));
        assert_eq!(l.pid, at(8, 4, true, FieldKind::Scalar));
        assert_eq!(
            (l.comm, l.total_vm, l.uid, l.oom_score_adj),
            (None, None, None, None)
        );
        let mut rec = vec![0u8; 12];
        rec[8..12].copy_from_slice(&4242i32.to_le_bytes());
        let v = l.decode(&rec).expect("decode");
        assert_eq!((v.pid, v.comm, v.figures.anon_rss_kb), (4242, None, None));
    }

    #[test]
    fn rel_loc_and_fixed_array_comm() {
        let rel = "ID: 1\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:__rel_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;\n";
        let l = MarkVictimLayout::parse(rel).expect("layout");
        assert_eq!(l.comm.map(|c| c.kind), Some(FieldKind::RelLoc));
        let mut rec = vec![0u8; 16];
        rec[8..12].copy_from_slice(&7i32.to_le_bytes());
        // data right after the u32 (relative offset 0), 3 bytes "ab\0"
        rec[12..16].copy_from_slice(&(3u32 << 16).to_le_bytes());
        rec.extend_from_slice(b"ab\0");
        assert_eq!(l.decode(&rec).expect("decode").comm.as_deref(), Some("ab"));

        let arr = "\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n";
        let l = MarkVictimLayout::parse(arr).expect("layout");
        assert_eq!(l.comm, Some(at(12, 16, false, FieldKind::Array)));
        let mut rec = vec![0u8; 28];
        rec[12..18].copy_from_slice(b"java\0x");
        assert_eq!(
            l.decode(&rec).expect("decode").comm.as_deref(),
            Some("java")
        );
    }

    #[test]
    fn rejects_broken_formats() {
        assert!(matches!(
            MarkVictimLayout::parse("ID: 1\n"),
            Err(TracepointError::NoPid)
        ));
        assert!(matches!(
            MarkVictimLayout::parse("\tfield:int pid;\tsize:4;\tsigned:1;\n"),
            Err(TracepointError::BadLine { .. })
        ));
        assert!(matches!(
            MarkVictimLayout::parse("\tfield:int pid;\toffset:8;\tsize:3;\tsigned:1;\n"),
            Err(TracepointError::BadSize { field: "pid", .. })
        ));
    }

    /// An offset at the top of `usize` parses; sizes and decoding do not overflow.
    #[test]
    fn huge_offsets_neither_overflow_nor_read() {
        let format = FORMAT_6_18.replace("offset:8;", "offset:18446744073709551615;");
        let l = MarkVictimLayout::parse(&format).expect("layout");
        assert_eq!(l.pid.offset, usize::MAX);
        assert_eq!(l.fixed_size(), usize::MAX);
        assert!(matches!(
            l.decode(RECORD_6_18),
            Err(TracepointError::Truncated { field: "pid", .. })
        ));
    }

    #[test]
    fn hand_built_layout_with_bad_size_errors_instead_of_panicking() {
        let mut l = MarkVictimLayout::parse(FORMAT_OLD).expect("layout");
        l.pid.size = 16;
        assert!(matches!(
            l.decode(&[0; 64]),
            Err(TracepointError::BadSize { field: "pid", .. })
        ));
        l.pid = at(usize::MAX, 4, true, FieldKind::Scalar);
        assert!(matches!(
            l.decode(&[0; 64]),
            Err(TracepointError::Truncated { .. })
        ));
        l.pid = at(8, 4, true, FieldKind::Scalar);
        l.comm = Some(at(usize::MAX - 1, 4, false, FieldKind::RelLoc));
        assert_eq!(l.decode(&[0; 64]).expect("decode").comm, None);
    }

    #[test]
    fn finds_tracefs_in_mountinfo() {
        let dir = std::env::temp_dir().join(format!("leaktrace-tp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let mi = dir.join("mountinfo");
        std::fs::write(
            &mi,
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
             50 23 0:12 / /sys/kernel/debug rw - debugfs debugfs rw\n\
             51 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw\n",
        )
        .expect("write");
        let found = tracefs_mounts(&mi);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            found,
            vec![
                PathBuf::from("/sys/kernel/tracing"),
                PathBuf::from("/sys/kernel/debug/tracing")
            ]
        );
    }

    #[test]
    fn reads_this_kernels_format_when_tracefs_is_mounted() {
        match MarkVictimLayout::from_system() {
            Ok(l) => assert!(l.pid.size == 4),
            Err(TracepointError::NotFound(_)) | Err(TracepointError::Io { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

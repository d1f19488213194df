//! OOM kills as the kernel logs them in `/dev/kmsg`.
//!
//! The `oom:mark_victim` tracepoint carries no cgroup, no constraint and (before 6.9) nothing but
//! the pid; the kernel log has all of that, so the two sources complement each other. One kill
//! prints, in this order (mm/oom_kill.c):
//!
//! 1. `<comm> invoked oom-killer: gfp_mask=..., order=N, oom_score_adj=N` (rate-limited)
//! 2. stack, `memory: usage NkB, limit NkB, failcnt N` (memcg OOM), task table (rate-limited)
//! 3. `oom-kill:constraint=...,task=<comm>,pid=<pid>,uid=<uid>` (rate-limited)
//! 4. `Out of memory: Killed process ...` / `Memory cgroup out of memory: Killed process ...`
//!    (never rate-limited; before 5.1 a `Kill process <pid> (<comm>) score N or sacrifice child`
//!    line came first and the `Killed process` line had no prefix)
//! 5. later, from the reaper thread: `oom_reaper: reaped process <pid> (<comm>), now ...`
//!
//! The rate limit is 10 kills per 5 s: captured on 6.18, the 11th and later kills of a burst print
//! line 4 alone (see `testdata/kmsg-6.18-memcg-ratelimited.txt`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::VictimFigures;

/// Failure to make sense of one `/dev/kmsg` record.
#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    #[error("kmsg record without ';' between header and message: {0:?}")]
    NoMessage(String),
    #[error("kmsg record header {header:?}: {what}")]
    BadHeader { header: String, what: &'static str },
    #[cfg(test)]
    #[error("continuation line before any record: {0:?}")]
    OrphanContinuation(String),
}

/// One `/dev/kmsg` record: `<prio>,<seq>,<usec>,<flags>[,...];<message>` plus ` KEY=value` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// `prio >> 3`. 0 is the kernel; user space writing to `/dev/kmsg` cannot use 0, which is why
    /// only facility-0 records are trusted as OOM-killer output.
    pub facility: u32,
    /// `prio & 7` (3 = err, 4 = warning, 6 = info).
    pub level: u8,
    /// 64-bit sequence number; a jump means records were overwritten before we read them.
    pub seq: u64,
    /// Microseconds since boot, on the printk clock (`local_clock`, which stops during suspend like
    /// `CLOCK_MONOTONIC`).
    pub usec: u64,
    /// `-`, or on old kernels `c` / `+` for fragments of a continued line.
    pub flag: char,
    /// The message with the kernel's `\xNN` escapes decoded.
    pub message: String,
    /// Dictionary lines (`SUBSYSTEM=acpi`, `DEVICE=...`), escapes decoded.
    pub dict: Vec<(String, String)>,
}

impl KmsgRecord {
    /// Parses what one `read(2)` of `/dev/kmsg` returns (one record, trailing newline optional).
    pub fn parse(raw: &[u8]) -> Result<Self, KmsgError> {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.trim_end_matches('\n').split('\n');
        let first = lines.next().unwrap_or_default();
        let mut record = Self::parse_first_line(first)?;
        for line in lines {
            record.push_dict_line(line);
        }
        Ok(record)
    }

    fn parse_first_line(line: &str) -> Result<Self, KmsgError> {
        let (header, message) = line
            .split_once(';')
            .ok_or_else(|| KmsgError::NoMessage(line.to_owned()))?;
        let bad = |what| KmsgError::BadHeader {
            header: header.to_owned(),
            what,
        };
        // Further comma-separated header fields may be added by future kernels: ignored.
        let mut fields = header.split(',');
        let prio: u32 = fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("priority is not a number"))?;
        let seq: u64 = fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("sequence is not a number"))?;
        let usec: u64 = fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("timestamp is not a number"))?;
        let flag = fields
            .next()
            .and_then(|f| f.chars().next())
            .ok_or_else(|| bad("no flags field"))?;
        Ok(Self {
            facility: prio >> 3,
            level: (prio & 7) as u8,
            seq,
            usec,
            flag,
            message: unescape(message),
            dict: Vec::new(),
        })
    }

    fn push_dict_line(&mut self, line: &str) {
        let line = line.strip_prefix(' ').unwrap_or(line);
        if line.is_empty() {
            return;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        self.dict.push((unescape(key), unescape(value)));
    }
}

#[cfg(test)]
/// Splits text as `cat /dev/kmsg` prints it (records one after the other, dictionary lines
/// starting with a space) into records. For fixtures and saved logs.
pub fn parse_stream(text: &str) -> Result<Vec<KmsgRecord>, KmsgError> {
    let mut records: Vec<KmsgRecord> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if line.starts_with(' ') {
            match records.last_mut() {
                Some(record) => record.push_dict_line(line),
                None => return Err(KmsgError::OrphanContinuation(line.to_owned())),
            }
        } else {
            records.push(KmsgRecord::parse_first_line(line)?);
        }
    }
    Ok(records)
}

/// Decodes the `\xNN` escapes `/dev/kmsg` uses for non-printable bytes and for `\` itself.
fn unescape(s: &str) -> String {
    if !s.contains("\\x") {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = bytes
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Large enough for any record: the kernel fails a read whose buffer cannot hold the next record
/// (EINVAL), and records with their dictionary stay below 8 KiB (`CONSOLE_EXT_LOG_MAX`).
const READ_BUF: usize = 16 * 1024;

/// Records returned by one drain at most: a process that writes to `/dev/kmsg` as fast as we
/// read must not keep us reading (and growing the batch) forever; the rest comes next drain.
const MAX_RECORDS_PER_DRAIN: usize = 1 << 14;

/// A non-blocking reader of `/dev/kmsg`, kept open so that each drain returns only new records.
#[derive(Debug)]
pub struct KmsgReader {
    file: File,
    buf: Vec<u8>,
    /// Times the kernel said records were overwritten before we read them (EPIPE).
    pub overwritten: u64,
    /// Records that did not parse (skipped).
    pub malformed: u64,
}

impl KmsgReader {
    /// Opens at the oldest record still in the ring buffer. Needs CAP_SYSLOG when
    /// `kernel.dmesg_restrict` is 1.
    pub fn open() -> io::Result<Self> {
        Self::open_path(Path::new("/dev/kmsg"))
    }

    #[cfg(test)]
    /// Opens past the newest record, so that only what the kernel logs from now on is read: the
    /// way to see only the OOM kills that happen during a run.
    pub fn open_at_end() -> io::Result<Self> {
        let mut reader = Self::open()?;
        io::Seek::seek(&mut reader.file, io::SeekFrom::End(0))?;
        Ok(reader)
    }

    fn open_path(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self {
            file,
            buf: vec![0; READ_BUF],
            overwritten: 0,
            malformed: 0,
        })
    }

    /// Every record available now, up to [`MAX_RECORDS_PER_DRAIN`]; returns when the kernel
    /// has no more (EAGAIN). Records lost to ring-buffer overwrite (EPIPE) are skipped and
    /// counted in `overwritten`.
    pub fn read_available(&mut self) -> io::Result<Vec<KmsgRecord>> {
        let mut records = Vec::new();
        while records.len() < MAX_RECORDS_PER_DRAIN {
            match self.file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => match self.buf.get(..n).map(KmsgRecord::parse) {
                    Some(Ok(record)) => records.push(record),
                    _ => self.malformed += 1,
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => self.overwritten += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(records)
    }
}

/// Every record in the kernel's ring buffer now, oldest first (no follow mode).
pub fn read_kmsg_nonblocking() -> io::Result<Vec<KmsgRecord>> {
    KmsgReader::open()?.read_available()
}

/// Maps printk timestamps (µs since boot) to wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootClock {
    wall: DateTime<Utc>,
    usec: u64,
}

impl BootClock {
    /// A reference point: the wall time `wall` was `usec_since_boot` on the printk clock.
    pub fn new(wall: DateTime<Utc>, usec_since_boot: u64) -> Self {
        Self {
            wall,
            usec: usec_since_boot,
        }
    }

    /// Reference from `CLOCK_MONOTONIC`, which like the printk clock does not count suspend: the
    /// right choice on machines that may have been suspended since boot.
    pub fn from_monotonic() -> io::Result<Self> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let wall = Utc::now();
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let usec = (ts.tv_sec.max(0) as u64)
            .saturating_mul(1_000_000)
            .saturating_add((ts.tv_nsec.max(0) as u64) / 1_000);
        Ok(Self::new(wall, usec))
    }

    #[cfg(test)]
    /// Reference from `/proc/uptime` (`CLOCK_BOOTTIME`, 10 ms resolution). Off by the time spent
    /// in suspend, if any; prefer [`BootClock::from_monotonic`].
    pub fn from_uptime() -> io::Result<Self> {
        let text = std::fs::read_to_string("/proc/uptime")?;
        let wall = Utc::now();
        Self::from_uptime_text(&text, wall)
    }

    #[cfg(test)]
    fn from_uptime_text(text: &str, wall: DateTime<Utc>) -> io::Result<Self> {
        let secs: f64 = text
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("/proc/uptime: {text:?}"),
                )
            })?;
        Ok(Self::new(wall, (secs * 1e6) as u64))
    }

    /// The wall time of an event `usec` after boot.
    pub fn wall_time(&self, usec: u64) -> DateTime<Utc> {
        let delta = i64::try_from(self.usec.abs_diff(usec)).unwrap_or(i64::MAX);
        let delta = chrono::TimeDelta::microseconds(delta);
        let t = if usec <= self.usec {
            self.wall.checked_sub_signed(delta)
        } else {
            self.wall.checked_add_signed(delta)
        };
        t.unwrap_or(self.wall)
    }
}

/// What the oom_reaper logged about a victim after the kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaped {
    /// `oom_reaper: reaped process ..., now anon-rss:NkB, file-rss:NkB, shmem-rss:NkB`.
    Reaped {
        usec: u64,
        anon_rss_kb: Option<u64>,
        file_rss_kb: Option<u64>,
        shmem_rss_kb: Option<u64>,
    },
    /// `oom_reaper: unable to reap pid:N (comm)`: the memory was pinned (mmap_lock held, ...).
    Unable { usec: u64 },
}

/// One OOM kill, assembled from the lines the kernel logged for it. Fields whose line was
/// rate-limited away (or that an older kernel does not print) are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomEvent {
    pub pid: u32,
    pub comm: String,
    /// µs since boot of the `Killed process` line; [`BootClock::wall_time`] converts it.
    pub time_usec: u64,
    /// kmsg sequence number of the `Killed process` line: identifies the kill across reads.
    pub seq: u64,
    /// `CONSTRAINT_NONE`, `CONSTRAINT_CPUSET`, `CONSTRAINT_MEMORY_POLICY`, `CONSTRAINT_MEMCG`.
    pub constraint: Option<String>,
    /// Not a memory-cgroup OOM (the kernel's `global_oom`, which includes cpuset and mempolicy
    /// constraints). False when nothing said so: pre-5.1 logs with the header lines lost.
    pub global: bool,
    /// The memcg whose limit was hit.
    pub oom_memcg: Option<String>,
    /// The victim's memcg.
    pub task_memcg: Option<String>,
    /// From the `Killed process` line (`oom_score_adj` 5.8+); the uid, before 5.1, from the
    /// `oom-kill:` summary.
    pub figures: VictimFigures,
    /// The task whose allocation failed (not necessarily the victim).
    pub invoked_by: Option<String>,
    /// From `memory: usage NkB, limit NkB, failcnt N` (memcg OOMs only).
    pub memcg_usage_kb: Option<u64>,
    pub memcg_limit_kb: Option<u64>,
    /// Set when a later `oom_reaper` line names this pid.
    pub reaped: Option<Reaped>,
    /// Killed as a member of a cgroup with `memory.oom.group` set (the path), not chosen alone.
    pub oom_group: Option<String>,
}

/// The kill-wide lines printed before the victim line.
#[derive(Debug, Default, Clone)]
struct Header {
    invoked_by: Option<String>,
    constraint: Option<String>,
    global: Option<bool>,
    oom_memcg: Option<String>,
    memcg_usage_kb: Option<u64>,
    memcg_limit_kb: Option<u64>,
    oom_group: Option<String>,
}

/// What the `oom-kill:` summary (or pre-4.19 `Task in ...` line) said about the chosen victim.
#[derive(Debug, Clone)]
struct VictimHint {
    pid: Option<u32>,
    task_memcg: Option<String>,
    uid: Option<u32>,
}

/// Events kept at most; a machine OOM-killing in a loop must not grow our memory without bound.
const MAX_EVENTS: usize = 4096;

/// Turns a stream of kmsg records into [`OomEvent`]s, one per `Killed process` line. Feed it every
/// record in order (it keeps state across calls, so records may come in several reads).
#[derive(Debug, Default)]
pub struct OomAssembler {
    header: Option<Header>,
    /// The header of the kill just finished: a `memory.oom.group` line revives it for the other
    /// members of the group, which the kernel kills (and logs) right after the chosen victim.
    closed: Option<Header>,
    victim: Option<VictimHint>,
    last_seq: Option<u64>,
    events: Vec<OomEvent>,
    /// Oldest events dropped to stay within the cap.
    pub dropped_events: u64,
}

impl OomAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes one record; returns the kill it completed, if it was a `Killed process` line.
    pub fn push(&mut self, record: &KmsgRecord) -> Option<&OomEvent> {
        if let Some(last) = self.last_seq {
            if record.seq <= last {
                // Already seen (overlapping reads).
                return None;
            }
            if last.checked_add(1) != Some(record.seq) {
                // Records were lost: header lines held now may belong to a kill whose victim line
                // was lost, and must not be pinned on the next victim.
                self.header = None;
                self.closed = None;
                self.victim = None;
            }
        }
        self.last_seq = Some(record.seq);
        if record.facility != 0 {
            return None;
        }
        self.line(&record.message, record.usec, record.seq)
    }

    #[cfg(test)]
    /// Every kill seen so far, oldest first.
    pub fn events(&self) -> &[OomEvent] {
        &self.events
    }

    pub fn into_events(self) -> Vec<OomEvent> {
        self.events
    }

    fn line(&mut self, msg: &str, usec: u64, seq: u64) -> Option<&OomEvent> {
        if let Some(invoker) = parse_invoked(msg) {
            self.closed = None;
            self.header = Some(Header {
                invoked_by: Some(invoker),
                ..Header::default()
            });
            self.victim = None;
        } else if let Some((usage, limit)) = parse_memcg_usage(msg) {
            let h = self.header.get_or_insert_with(Header::default);
            if h.memcg_usage_kb.is_none() {
                h.memcg_usage_kb = Some(usage);
                h.memcg_limit_kb = Some(limit);
            }
        } else if let Some(s) = parse_summary(msg) {
            let h = self.header.get_or_insert_with(Header::default);
            h.constraint = s.constraint;
            h.global = s.global.or(h.global);
            h.oom_memcg = s.oom_memcg.or(h.oom_memcg.take());
            self.victim = Some(VictimHint {
                pid: s.pid,
                task_memcg: s.task_memcg,
                uid: s.uid,
            });
        } else if let Some((task_memcg, oom_memcg)) = parse_task_in(msg) {
            let h = self.header.get_or_insert_with(Header::default);
            h.global = Some(false);
            h.oom_memcg = Some(oom_memcg);
            self.victim = Some(VictimHint {
                pid: None,
                task_memcg: Some(task_memcg),
                uid: None,
            });
        } else if let Some(group) = parse_group(msg) {
            let mut h = self
                .header
                .take()
                .or_else(|| self.closed.take())
                .unwrap_or_default();
            h.oom_group = Some(group);
            self.header = Some(h);
        } else if let Some(prefix) = parse_sacrifice(msg) {
            let h = self.header.get_or_insert_with(Header::default);
            h.global = global_from_prefix(prefix).or(h.global);
        } else if let Some(k) = parse_killed(msg) {
            return Some(self.finish_kill(k, usec, seq));
        } else if parse_skip(msg) {
            self.end_victim();
        } else if let Some((pid, reaped)) = parse_reaper(msg, usec)
            && let Some(e) = self.events.iter_mut().rev().find(|e| e.pid == pid)
        {
            e.reaped.get_or_insert(reaped);
        }
        None
    }

    /// A victim line closes the victim part of a kill; the header part stays only while a
    /// `memory.oom.group` kill goes on killing the other members of the group.
    fn end_victim(&mut self) {
        self.victim = None;
        if self.header.as_ref().is_none_or(|h| h.oom_group.is_none()) {
            self.closed = self.header.take();
        }
    }

    fn finish_kill(&mut self, k: Killed<'_>, usec: u64, seq: u64) -> &OomEvent {
        let header = self.header.clone().unwrap_or_default();
        // The summary names the chosen task; a different pid on the victim line is another member
        // of an oom.group (or, pre-5.1, a sacrificed child): its memcg/uid are unknown.
        let victim = self
            .victim
            .take()
            .filter(|v| v.pid.is_none_or(|p| p == k.pid));
        let global = global_from_prefix(k.prefix)
            .or(header.global)
            .unwrap_or(false);
        let event = OomEvent {
            pid: k.pid,
            comm: k.comm.to_owned(),
            time_usec: usec,
            seq,
            constraint: header.constraint,
            global,
            oom_memcg: header.oom_memcg,
            task_memcg: victim.as_ref().and_then(|v| v.task_memcg.clone()),
            figures: VictimFigures {
                uid: k.figures.uid.or(victim.and_then(|v| v.uid)),
                ..k.figures
            },
            invoked_by: header.invoked_by,
            memcg_usage_kb: header.memcg_usage_kb,
            memcg_limit_kb: header.memcg_limit_kb,
            reaped: None,
            oom_group: header.oom_group,
        };
        self.end_victim();
        if self.events.len() >= MAX_EVENTS {
            self.events.remove(0);
            self.dropped_events += 1;
        }
        self.events.push(event);
        let last = self.events.len() - 1;
        &self.events[last]
    }
}

/// All kills in a batch of records (a convenience over [`OomAssembler`]).
pub fn assemble<'a>(records: impl IntoIterator<Item = &'a KmsgRecord>) -> Vec<OomEvent> {
    let mut assembler = OomAssembler::new();
    for record in records {
        assembler.push(record);
    }
    assembler.into_events()
}

/// `Out of memory...` is a global (non-memcg) OOM, `Memory cgroup out of memory` is not; a bare
/// `Killed process` line (pre-5.1) says nothing.
fn global_from_prefix(prefix: &str) -> Option<bool> {
    if prefix.starts_with("Memory cgroup out of memory") {
        Some(false)
    } else if prefix.starts_with("Out of memory") {
        Some(true)
    } else {
        None
    }
}

/// `<comm> invoked oom-killer: gfp_mask=..., order=N, oom_score_adj=N` -> comm.
fn parse_invoked(msg: &str) -> Option<String> {
    msg.split_once(" invoked oom-killer: ")
        .map(|(comm, _)| comm.to_owned())
}

/// `memory: usage 32768kB, limit 32768kB, failcnt 19` -> (usage, limit) in kB.
fn parse_memcg_usage(msg: &str) -> Option<(u64, u64)> {
    let rest = msg.strip_prefix("memory: usage ")?;
    let (usage, rest) = rest.split_once("kB, limit ")?;
    let (limit, _) = rest.split_once("kB")?;
    Some((usage.trim().parse().ok()?, limit.trim().parse().ok()?))
}

#[derive(Debug, Default)]
struct Summary {
    constraint: Option<String>,
    global: Option<bool>,
    oom_memcg: Option<String>,
    task_memcg: Option<String>,
    pid: Option<u32>,
    uid: Option<u32>,
}

/// `oom-kill:constraint=C,nodemask=N,cpuset=S,mems_allowed=M,{global_oom|oom_memcg=P},task_memcg=P,
/// task=<comm>,pid=N,uid=N`. Parsed from the right: paths, comm, node lists may hold commas, the
/// trailing fields and the first one cannot.
fn parse_summary(msg: &str) -> Option<Summary> {
    let rest = msg.strip_prefix("oom-kill:")?;
    let mut s = Summary::default();
    let (rest, uid) = rest.rsplit_once(",uid=")?;
    s.uid = uid.trim().parse().ok();
    let (rest, pid) = rest.rsplit_once(",pid=")?;
    s.pid = pid.trim().parse().ok();
    let (mut rest, _comm) = rest.rsplit_once(",task=")?;
    if let Some((head, path)) = rest.rsplit_once(",task_memcg=") {
        s.task_memcg = Some(path.to_owned());
        rest = head;
    }
    if let Some((head, path)) = rest.rsplit_once(",oom_memcg=") {
        s.oom_memcg = Some(path.to_owned());
        s.global = Some(false);
        rest = head;
    } else if let Some(head) = rest.strip_suffix(",global_oom") {
        s.global = Some(true);
        rest = head;
    }
    s.constraint = rest
        .strip_prefix("constraint=")
        .map(|c| c.split(',').next().unwrap_or(c).to_owned());
    if s.constraint.as_deref() == Some("CONSTRAINT_MEMCG") {
        s.global = Some(false);
    }
    Some(s)
}

/// Pre-4.19: `Task in <task memcg> killed as a result of limit of <oom memcg>`.
fn parse_task_in(msg: &str) -> Option<(String, String)> {
    let rest = msg.strip_prefix("Task in ")?;
    let (task, oom) = rest.split_once(" killed as a result of limit of ")?;
    Some((task.to_owned(), oom.to_owned()))
}

/// `Tasks in <path> are going to be killed due to memory.oom.group set`.
fn parse_group(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("Tasks in ")?;
    let (path, _) = rest.split_once(" are going to be killed due to memory.oom.group set")?;
    Some(path.to_owned())
}

/// Pre-5.1: `<prefix>: Kill process <pid> (<comm>) score N or sacrifice child` -> prefix.
fn parse_sacrifice(msg: &str) -> Option<&str> {
    if !msg.ends_with(" or sacrifice child") {
        return None;
    }
    let (prefix, _) = msg.split_once(": Kill process ")?;
    Some(prefix)
}

/// `<prefix>: OOM victim <pid> (<comm>) is already exiting. Skip killing the task`.
fn parse_skip(msg: &str) -> bool {
    msg.contains(": OOM victim ") && msg.ends_with("is already exiting. Skip killing the task")
}

#[derive(Debug, Default)]
struct Killed<'a> {
    prefix: &'a str,
    pid: u32,
    comm: &'a str,
    figures: VictimFigures,
}

/// `[<prefix>: ]Killed process <pid> (<comm>) total-vm:NkB, anon-rss:NkB, file-rss:NkB,
/// shmem-rss:NkB, UID:N pgtables:NkB oom_score_adj:N` (fields after file-rss by kernel version).
fn parse_killed(msg: &str) -> Option<Killed<'_>> {
    let (prefix, rest) = if let Some(rest) = msg.strip_prefix("Killed process ") {
        ("", rest)
    } else {
        let (prefix, rest) = msg.split_once(": Killed process ")?;
        (prefix, rest)
    };
    let (pid, rest) = rest.split_once(" (")?;
    // comm may contain spaces and parentheses ("Web Content", "(sd-pam)").
    let (comm, stats) = match rest.rfind(") total-vm:") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (rest.strip_suffix(')')?, ""),
    };
    let mut k = Killed {
        prefix,
        pid: pid.trim().parse().ok()?,
        comm,
        ..Killed::default()
    };
    for (key, value) in stat_fields(stats) {
        match key {
            "total-vm" => k.figures.total_vm_kb = kb(value),
            "anon-rss" => k.figures.anon_rss_kb = kb(value),
            "file-rss" => k.figures.file_rss_kb = kb(value),
            "shmem-rss" => k.figures.shmem_rss_kb = kb(value),
            "UID" => k.figures.uid = value.parse().ok(),
            "pgtables" => k.figures.pgtables_kb = kb(value),
            "oom_score_adj" => k.figures.oom_score_adj = value.parse().ok(),
            _ => {}
        }
    }
    Some(k)
}

/// `oom_reaper: reaped process <pid> (<comm>), now anon-rss:NkB, ...` or
/// `oom_reaper: unable to reap pid:<pid> (<comm>)`.
fn parse_reaper(msg: &str, usec: u64) -> Option<(u32, Reaped)> {
    let rest = msg.strip_prefix("oom_reaper: ")?;
    if let Some(rest) = rest.strip_prefix("reaped process ") {
        let (pid, rest) = rest.split_once(" (")?;
        let stats = rest.rfind("), now ").map_or("", |i| &rest[i + 7..]);
        let (mut anon, mut file, mut shmem) = (None, None, None);
        for (key, value) in stat_fields(stats) {
            match key {
                "anon-rss" => anon = kb(value),
                "file-rss" => file = kb(value),
                "shmem-rss" => shmem = kb(value),
                _ => {}
            }
        }
        let reaped = Reaped::Reaped {
            usec,
            anon_rss_kb: anon,
            file_rss_kb: file,
            shmem_rss_kb: shmem,
        };
        return Some((pid.trim().parse().ok()?, reaped));
    }
    let rest = rest.strip_prefix("unable to reap pid:")?;
    let (pid, _) = rest.split_once(" (")?;
    Some((pid.trim().parse().ok()?, Reaped::Unable { usec }))
}

/// `key:value` pairs separated by `, ` or ` `.
fn stat_fields(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split([',', ' '])
        .filter_map(|tok| tok.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
}

fn kb(value: &str) -> Option<u64> {
    value.strip_suffix("kB").unwrap_or(value).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One memcg kill captured on 6.18 (`memhog` in a 32M v1 memcg), every record of it.
    const MEMCG_KILL: &str = include_str!("testdata/kmsg-6.18-memcg-kill.txt");
    /// 13 kills in a row in a 16M memcg on 6.18: the last three were rate-limited to the victim
    /// line only.
    const RATELIMITED: &str = include_str!("testdata/kmsg-6.18-memcg-ratelimited.txt");
    /// A 6.18 record with dictionary lines.
    const DICT: &str = include_str!("testdata/kmsg-6.18-dict.txt");

    const MEMCG: &str = "/process_api/5a10f742627aa8c687901111449221da/lt_oom_scratch";

    #[test]
    fn parses_a_raw_record() {
        let r = KmsgRecord::parse(b"3,416,2454663929,-;Memory cgroup out of memory: Killed process 3457 (memhog) total-vm:35372kB\n")
            .expect("record");
        assert_eq!(
            (r.facility, r.level, r.seq, r.usec),
            (0, 3, 416, 2454663929)
        );
        assert_eq!(r.flag, '-');
        assert!(r.message.starts_with("Memory cgroup out of memory"));
        assert!(r.dict.is_empty());
    }

    #[test]
    fn parses_dictionary_lines_and_extra_header_fields() {
        let records = parse_stream(DICT).expect("stream");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].seq, 187);
        assert_eq!(
            records[0].dict,
            vec![
                ("SUBSYSTEM".to_owned(), "acpi".to_owned()),
                ("DEVICE".to_owned(), "+acpi:PNP0A08:00".to_owned())
            ]
        );
        let raw = KmsgRecord::parse(b"12,7,5,-,caller=T1;a\\x5cb\\x0a\n SUBSYSTEM=x\n").expect("r");
        assert_eq!((raw.facility, raw.level), (1, 4));
        assert_eq!(raw.message, "a\\b\n");
        assert_eq!(raw.dict.len(), 1);
    }

    #[test]
    fn rejects_malformed_records() {
        assert!(matches!(
            KmsgRecord::parse(b"no header"),
            Err(KmsgError::NoMessage(_))
        ));
        assert!(matches!(
            KmsgRecord::parse(b"x,1,2,-;m"),
            Err(KmsgError::BadHeader { .. })
        ));
        assert!(matches!(
            KmsgRecord::parse(b"6,1;m"),
            Err(KmsgError::BadHeader { .. })
        ));
        assert!(matches!(
            parse_stream(" KEY=v\n"),
            Err(KmsgError::OrphanContinuation(_))
        ));
    }

    #[test]
    fn assembles_the_captured_memcg_kill() {
        let records = parse_stream(MEMCG_KILL).expect("fixture");
        assert_eq!(records.len(), 78);
        let events = assemble(&records);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.pid, e.comm.as_str()), (3457, "memhog"));
        assert_eq!((e.time_usec, e.seq), (2454663929, 416));
        assert_eq!(e.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert!(!e.global);
        assert_eq!(e.oom_memcg.as_deref(), Some(MEMCG));
        assert_eq!(e.task_memcg.as_deref(), Some(MEMCG));
        assert_eq!(e.figures.total_vm_kb, Some(35372));
        assert_eq!(e.figures.anon_rss_kb, Some(32512));
        assert_eq!(e.figures.file_rss_kb, Some(860));
        assert_eq!(e.figures.shmem_rss_kb, Some(0));
        assert_eq!(e.figures.pgtables_kb, Some(108));
        assert_eq!(e.figures.oom_score_adj, Some(0));
        assert_eq!(e.figures.uid, Some(0));
        assert_eq!(e.invoked_by.as_deref(), Some("memhog"));
        assert_eq!(
            (e.memcg_usage_kb, e.memcg_limit_kb),
            (Some(32768), Some(32768))
        );
        assert_eq!(e.reaped, None);
        assert_eq!(e.oom_group, None);
    }

    #[test]
    fn ratelimited_kills_get_no_stale_header() {
        let records = parse_stream(RATELIMITED).expect("fixture");
        let events = assemble(&records);
        assert_eq!(events.len(), 13);
        let pids: Vec<u32> = events.iter().map(|e| e.pid).collect();
        assert_eq!(pids, (3782..=3794).collect::<Vec<_>>());
        for e in &events {
            assert_eq!(e.comm, "leaky-hog");
            assert!(!e.global, "the prefix says memcg even without header");
            assert_eq!(e.figures.oom_score_adj, Some(500));
            assert!(e.figures.anon_rss_kb.is_some());
        }
        for e in &events[..10] {
            assert_eq!(e.invoked_by.as_deref(), Some("leaky-hog"));
            assert_eq!(e.memcg_limit_kb, Some(16384));
            assert_eq!(e.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
            assert!(
                e.task_memcg
                    .as_deref()
                    .is_some_and(|p| p.ends_with("/lt_oom_scratch2"))
            );
        }
        for e in &events[10..] {
            assert_eq!(e.invoked_by, None);
            assert_eq!(e.memcg_limit_kb, None);
            assert_eq!(e.constraint, None);
            assert_eq!(e.task_memcg, None);
            assert_eq!(
                e.figures.uid,
                Some(0),
                "UID comes from the victim line itself"
            );
        }
        assert_eq!(events[12].time_usec, 2479190904);
    }

    #[test]
    fn feeding_in_chunks_and_overlapping_reads_gives_the_same_events() {
        let records = parse_stream(RATELIMITED).expect("fixture");
        let mut a = OomAssembler::new();
        let mut emitted = 0;
        for chunk in records.chunks(37) {
            for r in chunk {
                emitted += usize::from(a.push(r).is_some());
            }
            // A reader re-delivering the previous chunk must not duplicate kills.
            for r in chunk {
                assert!(a.push(r).is_none());
            }
        }
        assert_eq!(emitted, 13);
        assert_eq!(a.events(), assemble(&records).as_slice());
    }

    #[test]
    fn sequence_gap_drops_header_of_the_lost_kill() {
        let records = parse_stream(concat!(
            "4,1,1000,-;a invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n",
            "6,2,2000,-;memory: usage 100kB, limit 100kB, failcnt 3\n",
            // seq 3..=9 lost, including that kill's victim line
            "3,10,10000,-;Memory cgroup out of memory: Killed process 9 (b) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:5 pgtables:4kB oom_score_adj:0\n",
        ))
        .expect("records");
        let events = assemble(&records);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].invoked_by, None);
        assert_eq!(events[0].memcg_limit_kb, None);
    }

    /// The largest sequence number, then any other: no overflow, and what follows is a gap.
    #[test]
    fn sequence_at_the_top_of_its_range_does_not_overflow() {
        let records = parse_stream(concat!(
            "4,18446744073709551615,1000,-;a invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n",
            "3,0,10000,-;Memory cgroup out of memory: Killed process 9 (b) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:5 pgtables:4kB oom_score_adj:0\n",
        ))
        .expect("records");
        // seq 0 after u64::MAX reads as already seen: nothing is assembled, nothing panics.
        assert!(assemble(&records).is_empty());
    }

    #[test]
    fn global_kill_and_reaper_from_kernel_facts_formats() {
        let records = parse_stream(concat!(
            "4,1,1000,-;stress invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0\n",
            "6,2,2000,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0-1,global_oom,task_memcg=/user.slice/user-1000.slice/session-2.scope,task=Web Content,pid=27368,uid=1000\n",
            "3,3,3000,-;Out of memory: Killed process 27368 (Web Content) total-vm:6686908kB, anon-rss:647056kB, file-rss:0kB, shmem-rss:7452kB, UID:1000 pgtables:5304kB oom_score_adj:300\n",
            "6,4,4000,-;some unrelated line\n",
            "6,5,5000,-;oom_reaper: reaped process 27368 (Web Content), now anon-rss:0kB, file-rss:0kB, shmem-rss:6836kB\n",
        ))
        .expect("records");
        let events = assemble(&records);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert!(e.global);
        assert_eq!(e.comm, "Web Content");
        assert_eq!(e.constraint.as_deref(), Some("CONSTRAINT_NONE"));
        assert_eq!(e.oom_memcg, None);
        assert_eq!(
            e.task_memcg.as_deref(),
            Some("/user.slice/user-1000.slice/session-2.scope")
        );
        assert_eq!(
            (
                e.figures.uid,
                e.figures.oom_score_adj,
                e.figures.pgtables_kb
            ),
            (Some(1000), Some(300), Some(5304))
        );
        assert_eq!((e.memcg_usage_kb, e.memcg_limit_kb), (None, None));
        assert_eq!(
            e.reaped,
            Some(Reaped::Reaped {
                usec: 5000,
                anon_rss_kb: Some(0),
                file_rss_kb: Some(0),
                shmem_rss_kb: Some(6836)
            })
        );
    }

    #[test]
    fn pre_5_1_sacrifice_child_format() {
        let records = parse_stream(concat!(
            "4,1,1000,-;stress invoked oom-killer: gfp_mask=0x14000c0(GFP_KERNEL), nodemask=(null), order=0, oom_score_adj=939\n",
            "6,2,2000,-;Task in /kubepods/pod1/c1 killed as a result of limit of /kubepods/pod1\n",
            "6,3,3000,-;memory: usage 102400kB, limit 102400kB, failcnt 57\n",
            "3,4,4000,-;Memory cgroup out of memory: Kill process 32308 (stress) score 1718 or sacrifice child\n",
            "3,5,5000,-;Killed process 32308 (stress) total-vm:110644kB, anon-rss:99620kB, file-rss:192kB, shmem-rss:0kB\n",
            "6,6,6000,-;oom_reaper: reaped process 32308 (stress), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB\n",
            "3,7,7000,-;Out of memory: Kill process 2279 (Web Content) score 426 or sacrifice child\n",
            "3,8,8000,-;Killed process 2280 (Web Content) total-vm:5606512kB, anon-rss:1694156kB, file-rss:0kB, shmem-rss:0kB\n",
            "6,9,9000,-;oom_reaper: unable to reap pid:2280 (Web Content)\n",
        ))
        .expect("records");
        let events = assemble(&records);
        assert_eq!(events.len(), 2);
        let (a, b) = (&events[0], &events[1]);
        assert_eq!((a.pid, a.comm.as_str(), a.global), (32308, "stress", false));
        assert_eq!(a.oom_memcg.as_deref(), Some("/kubepods/pod1"));
        assert_eq!(a.task_memcg.as_deref(), Some("/kubepods/pod1/c1"));
        assert_eq!(a.memcg_limit_kb, Some(102400));
        assert_eq!(
            (
                a.figures.uid,
                a.figures.pgtables_kb,
                a.figures.oom_score_adj
            ),
            (None, None, None)
        );
        assert!(matches!(
            a.reaped,
            Some(Reaped::Reaped {
                anon_rss_kb: Some(0),
                ..
            })
        ));
        // The second kill had no header: global comes from the "Kill process" prefix.
        assert_eq!(
            (b.pid, b.global, b.invoked_by.as_deref()),
            (2280, true, None)
        );
        assert_eq!(b.figures.anon_rss_kb, Some(1694156));
        assert_eq!(b.reaped, Some(Reaped::Unable { usec: 9000 }));
    }

    #[test]
    fn oom_group_members_share_the_header_not_the_victim_details() {
        let records = parse_stream(concat!(
            "4,1,1000,-;java invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n",
            "6,2,2000,-;memory: usage 524288kB, limit 524288kB, failcnt 10\n",
            "6,3,3000,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods.slice/pod,task_memcg=/kubepods.slice/pod/c,task=java,pid=100,uid=1001\n",
            "3,4,4000,-;Memory cgroup out of memory: Killed process 100 (java) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:1001 pgtables:4kB oom_score_adj:0\n",
            "6,5,5000,-;Tasks in /kubepods.slice/pod/c are going to be killed due to memory.oom.group set\n",
            "3,6,6000,-;Memory cgroup out of memory: Killed process 101 (sidecar) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:1001 pgtables:4kB oom_score_adj:0\n",
            "6,7,7000,-;Memory cgroup out of memory: OOM victim 102 (x) is already exiting. Skip killing the task\n",
            "4,8,8000,-;other invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n",
            "3,9,9000,-;Memory cgroup out of memory: Killed process 200 (other) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0\n",
        ))
        .expect("records");
        let events = assemble(&records);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0].task_memcg.as_deref(),
            Some("/kubepods.slice/pod/c")
        );
        assert_eq!(events[0].oom_group, None);
        let member = &events[1];
        assert_eq!(member.pid, 101);
        assert_eq!(member.oom_memcg.as_deref(), Some("/kubepods.slice/pod"));
        assert_eq!(member.invoked_by.as_deref(), Some("java"));
        assert_eq!(member.task_memcg, None);
        assert_eq!(member.oom_group.as_deref(), Some("/kubepods.slice/pod/c"));
        // A new header ends the group.
        assert_eq!(events[2].invoked_by.as_deref(), Some("other"));
        assert_eq!(events[2].oom_group, None);
        assert_eq!(events[2].oom_memcg, None);
    }

    #[test]
    fn user_space_cannot_forge_a_kill() {
        // Facility 1 (user): what `echo ... > /dev/kmsg` produces.
        let forged = KmsgRecord::parse(b"11,1,1000,-;Out of memory: Killed process 1 (init) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB\n")
            .expect("record");
        assert_eq!(forged.facility, 1);
        assert!(assemble(&[forged]).is_empty());
    }

    #[test]
    fn summary_with_commas_in_lists_and_paths() {
        let s = parse_summary("oom-kill:constraint=CONSTRAINT_CPUSET,nodemask=0-1,3,cpuset=a,b,mems_allowed=0,2,oom_memcg=/x,y,task_memcg=/x,y/z,task=a,b,pid=7,uid=8")
            .expect("summary");
        assert_eq!(s.constraint.as_deref(), Some("CONSTRAINT_CPUSET"));
        assert_eq!(s.oom_memcg.as_deref(), Some("/x,y"));
        assert_eq!(s.task_memcg.as_deref(), Some("/x,y/z"));
        assert_eq!((s.pid, s.uid, s.global), (Some(7), Some(8), Some(false)));
    }

    #[test]
    fn boot_clock_maps_usec_to_wall_time() {
        let wall = DateTime::parse_from_rfc3339("2026-11-23T20:10:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let clock = BootClock::from_uptime_text("2500.00 4900.00\n", wall).expect("uptime");
        assert_eq!(
            clock.wall_time(2454663929).to_rfc3339(),
            "2026-11-23T20:09:14.663929+00:00"
        );
        assert_eq!(
            clock.wall_time(2_500_500_000).timestamp_micros(),
            wall.timestamp_micros() + 500_000
        );
        assert!(BootClock::from_uptime_text("garbage", wall).is_err());
        let now = BootClock::from_monotonic().expect("monotonic");
        let up = BootClock::from_uptime().expect("uptime");
        // Same machine, no suspend: both references agree closely.
        let diff = now.wall_time(1).signed_duration_since(up.wall_time(1));
        assert!(diff.num_milliseconds().abs() < 1000, "{diff:?}");
    }

    #[test]
    fn reads_live_kmsg_when_permitted() {
        let mut reader = match KmsgReader::open() {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
                ) =>
            {
                return;
            }
            Err(e) => panic!("open /dev/kmsg: {e}"),
        };
        let records = reader.read_available().expect("read");
        assert!(!records.is_empty());
        assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(reader.malformed, 0);
        let mut at_end = KmsgReader::open_at_end().expect("open at end");
        let fresh = at_end.read_available().expect("read");
        assert!(fresh.len() < records.len());
    }
}

//! What the target holds as the kernel accounts it, and how close its memory cgroup is to the
//! limit that would get it OOM-killed: a leak matters as much as the headroom it eats.
//!
//! Readers take a filesystem root internally (`/` in production) so that tests run against
//! captured `/proc` and cgroupfs trees.

use std::io;
use std::path::{Component, Path, PathBuf};

use procfs::FromRead;
use procfs::ProcessCGroups;
use procfs::process::{MountInfos, Process};

use crate::report::model::{CgroupUsage, Memory};

/// Failure to read a process's memory figures.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("/proc of pid {pid}: {source}")]
    Proc {
        pid: u32,
        #[source]
        source: procfs::ProcError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot parse {text:?}")]
    Parse { path: PathBuf, text: String },
}

/// Resident memory of a process, in bytes, from `/proc/PID/status` (`None`: not reported, as for
/// a zombie or a kernel thread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    /// `VmRSS`.
    pub rss_bytes: Option<u64>,
    /// `RssAnon`: heap, stacks, private mappings; where leaks show up.
    pub anon_bytes: Option<u64>,
    /// `RssFile`.
    pub file_bytes: Option<u64>,
    /// `RssShmem`.
    pub shmem_bytes: Option<u64>,
}

/// Reads `/proc/PID/status`.
pub fn process_memory(pid: u32) -> Result<ProcessMemory, MemoryError> {
    process_memory_at(Path::new("/proc"), pid)
}

fn process_memory_at(proc_root: &Path, pid: u32) -> Result<ProcessMemory, MemoryError> {
    let err = |source| MemoryError::Proc { pid, source };
    let status = Process::new_with_root(proc_root.join(pid.to_string()))
        .and_then(|p| p.status())
        .map_err(err)?;
    let bytes = |kb: Option<u64>| kb.and_then(|kb| kb.checked_mul(1024));
    Ok(ProcessMemory {
        rss_bytes: bytes(status.vmrss),
        anon_bytes: bytes(status.rssanon),
        file_bytes: bytes(status.rssfile),
        shmem_bytes: bytes(status.rssshmem),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// A process's memory cgroup and its counters. Every figure is `None` when its file is absent (the
/// v2 root cgroup has no `memory.current` / `memory.max`) or says "no limit".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMemory {
    pub version: CgroupVersion,
    /// As in `/proc/PID/cgroup` (relative to our cgroup namespace).
    pub path: String,
    /// The cgroup's directory on this machine.
    pub dir: PathBuf,
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    pub usage_bytes: Option<u64>,
    /// This cgroup's own limit: v1 `memory.limit_in_bytes`, v2 `memory.max`.
    pub limit_bytes: Option<u64>,
    /// The tightest limit of this cgroup and its ancestors (v1 also `hierarchical_memory_limit`,
    /// which sees ancestors outside our namespace): a parent's limit OOM-kills as well.
    pub effective_limit_bytes: Option<u64>,
    /// The least `limit - usage` over this cgroup and its visible ancestors: bytes the process can
    /// still grow by before some limit is hit.
    pub headroom_bytes: Option<u64>,
    /// OOM kills in this cgroup: v1 `memory.oom_control` `oom_kill`, v2 `memory.events`
    /// `oom_kill` (hierarchical; `memory.events.local` has the cgroup's own).
    pub oom_kill: Option<u64>,
    /// v2 `memory.events` `oom`: the limit was hit and reclaim failed (kills may not follow). v1
    /// has no such counter.
    pub oom_events: Option<u64>,
    /// Times usage hit the limit: v1 `memory.failcnt`, v2 `memory.events` `max`.
    pub limit_hits: Option<u64>,
}

impl CgroupMemory {
    /// Seconds until the tightest limit is reached at `growth_bytes_per_s`.
    pub fn time_to_limit(&self, growth_bytes_per_s: f64) -> Option<f64> {
        let headroom = self.headroom_bytes?;
        time_to_limit(0, headroom, growth_bytes_per_s)
    }
}

/// Seconds until `usage` reaches `limit` growing at `growth_bytes_per_s`: `None` when it does not
/// grow (or the rate is not a number), `0` when already there.
pub fn time_to_limit(usage: u64, limit: u64, growth_bytes_per_s: f64) -> Option<f64> {
    if !growth_bytes_per_s.is_finite() || growth_bytes_per_s <= 0.0 {
        return None;
    }
    if usage >= limit {
        return Some(0.0);
    }
    Some((limit - usage) as f64 / growth_bytes_per_s)
}

/// The process's memory cgroup, v1 (`memory` controller) or v2; `None` when there is none or it
/// cannot be read.
pub fn cgroup_of(pid: u32) -> Option<CgroupMemory> {
    try_cgroup_of(pid).ok().flatten()
}

/// As [`cgroup_of`], with the reason when reading fails.
pub fn try_cgroup_of(pid: u32) -> Result<Option<CgroupMemory>, MemoryError> {
    cgroup_of_at(Path::new("/"), pid)
}

/// The report's `memory` object; `go_heap_bytes` is for the Go runtime reader to fill.
/// `growth_bytes_per_s` is the process's anonymous memory growth over the run.
/// What the Go runtime holds of a Go target's anonymous memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoMemory {
    /// Bytes in in-use heap spans (`HeapInuse`).
    pub heap_bytes: Option<u64>,
    /// Bytes of the goroutines' stacks.
    pub stack_bytes: Option<u64>,
}

pub fn report_memory(
    process: Option<&ProcessMemory>,
    cgroup: Option<&CgroupMemory>,
    native_tracked_bytes: u64,
    go: GoMemory,
    growth_bytes_per_s: Option<f64>,
) -> Memory {
    let anon = process.and_then(|p| p.anon_bytes);
    let go_heap_bytes = go.heap_bytes;
    Memory {
        rss_bytes: process.and_then(|p| p.rss_bytes),
        anon_bytes: anon,
        go_heap_bytes,
        go_stack_bytes: go.stack_bytes,
        cgroup_limit_bytes: cgroup.and_then(|c| c.effective_limit_bytes),
        file_bytes: process.and_then(|p| p.file_bytes),
        shmem_bytes: process.and_then(|p| p.shmem_bytes),
        native_tracked_bytes,
        unexplained_bytes: anon.map(|a| {
            a.saturating_sub(native_tracked_bytes)
                .saturating_sub(go_heap_bytes.unwrap_or(0))
                .saturating_sub(go.stack_bytes.unwrap_or(0))
        }),
        cgroup: cgroup.map(|c| CgroupUsage {
            path: c.path.clone(),
            version: match c.version {
                CgroupVersion::V1 => "v1",
                CgroupVersion::V2 => "v2",
            },
            usage_bytes: c.usage_bytes,
            limit_bytes: c.effective_limit_bytes,
            oom_kills: c.oom_kill,
        }),
        growth_bytes_per_s,
        time_to_limit_s: cgroup
            .zip(growth_bytes_per_s)
            .and_then(|(c, g)| c.time_to_limit(g)),
    }
}

/// v1 prints "no limit" as `PAGE_COUNTER_MAX * PAGE_SIZE` (9223372036854771712 with 4 KiB pages,
/// less with larger pages); no real limit comes near 2^62 bytes.
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

fn cgroup_of_at(root: &Path, pid: u32) -> Result<Option<CgroupMemory>, MemoryError> {
    let proc_err = |source| MemoryError::Proc { pid, source };
    let cgroups =
        ProcessCGroups::from_file(root.join(format!("proc/{pid}/cgroup"))).map_err(proc_err)?;
    // Paths in /proc/PID/cgroup and mount roots in our mountinfo are both relative to our cgroup
    // namespace, so our own mount table is the one to resolve them with.
    let mounts = MountInfos::from_file(root.join("proc/self/mountinfo")).map_err(proc_err)?;

    // v1 first: in hybrid mode the v2 hierarchy is mounted too but has no memory controller.
    if let Some(cg) = cgroups
        .0
        .iter()
        .find(|c| c.controllers.iter().any(|x| x == "memory"))
    {
        for m in mounts
            .iter()
            .filter(|m| m.fs_type == "cgroup" && m.super_options.contains_key("memory"))
        {
            if let Some(dir) = cgroup_dir(root, &m.root, &m.mount_point, &cg.pathname)
                && dir.is_dir()
            {
                let mount_dir = host_path(root, &m.mount_point);
                return read_v1(&cg.pathname, dir, &mount_dir).map(Some);
            }
        }
    }
    if let Some(cg) = cgroups
        .0
        .iter()
        .find(|c| c.hierarchy == 0 && c.controllers.is_empty())
    {
        for m in mounts.iter().filter(|m| m.fs_type == "cgroup2") {
            let mount_dir = host_path(root, &m.mount_point);
            let controllers = read_trimmed(&mount_dir.join("cgroup.controllers"))?;
            if !controllers.is_some_and(|c| c.split_whitespace().any(|x| x == "memory")) {
                continue;
            }
            if let Some(dir) = cgroup_dir(root, &m.root, &m.mount_point, &cg.pathname)
                && dir.is_dir()
            {
                return read_v2(&cg.pathname, dir, &mount_dir).map(Some);
            }
        }
    }
    Ok(None)
}

/// `mount_point` under the filesystem root `root`.
fn host_path(root: &Path, mount_point: &Path) -> PathBuf {
    root.join(mount_point.strip_prefix("/").unwrap_or(mount_point))
}

/// The directory of cgroup `path` in a hierarchy mounted at `mount_point` showing its subtree
/// `mount_root` (not `/` for a container's bind mount). `None` for a cgroup outside that subtree
/// (the kernel shows such paths as `/../..` relative to our namespace).
fn cgroup_dir(root: &Path, mount_root: &str, mount_point: &Path, path: &str) -> Option<PathBuf> {
    let rel = if mount_root == "/" {
        path
    } else {
        let rest = path.strip_prefix(mount_root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    let rel = Path::new(rel.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(host_path(root, mount_point).join(rel))
}

/// The counters and the limits of `dir` and its ancestors up to the hierarchy root.
fn read_v1(path: &str, dir: PathBuf, mount_dir: &Path) -> Result<CgroupMemory, MemoryError> {
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let limit = read_u64(&dir.join("memory.limit_in_bytes"))?.filter(|&l| l < V1_UNLIMITED_FLOOR);
    let (mut effective, headroom) = walk_limits(&dir, mount_dir, |d| {
        let limit = read_u64(&d.join("memory.limit_in_bytes"))?;
        let usage = read_u64(&d.join("memory.usage_in_bytes"))?;
        Ok((limit.filter(|&l| l < V1_UNLIMITED_FLOOR), usage))
    })?;
    let hierarchical = read_key(&dir.join("memory.stat"), "hierarchical_memory_limit")?
        .filter(|&l| l < V1_UNLIMITED_FLOOR);
    effective = min_some(effective, hierarchical);
    Ok(CgroupMemory {
        version: CgroupVersion::V1,
        path: path.to_owned(),
        usage_bytes: usage,
        limit_bytes: limit,
        effective_limit_bytes: effective,
        headroom_bytes: headroom,
        oom_kill: read_key(&dir.join("memory.oom_control"), "oom_kill")?,
        oom_events: None,
        limit_hits: read_u64(&dir.join("memory.failcnt"))?,
        dir,
    })
}

fn read_v2(path: &str, dir: PathBuf, mount_dir: &Path) -> Result<CgroupMemory, MemoryError> {
    let max = |d: &Path| read_u64(&d.join("memory.max"));
    let limit = max(&dir)?;
    let (effective, headroom) = walk_limits(&dir, mount_dir, |d| {
        Ok((max(d)?, read_u64(&d.join("memory.current"))?))
    })?;
    let events = dir.join("memory.events");
    Ok(CgroupMemory {
        version: CgroupVersion::V2,
        path: path.to_owned(),
        usage_bytes: read_u64(&dir.join("memory.current"))?,
        limit_bytes: limit,
        effective_limit_bytes: effective,
        headroom_bytes: headroom,
        oom_kill: read_key(&events, "oom_kill")?,
        oom_events: read_key(&events, "oom")?,
        limit_hits: read_key(&events, "max")?,
        dir,
    })
}

type LimitUsage = (Option<u64>, Option<u64>);

/// (tightest limit, least headroom) over `dir` and its ancestors inside `mount_dir`.
fn walk_limits(
    dir: &Path,
    mount_dir: &Path,
    read: impl Fn(&Path) -> Result<LimitUsage, MemoryError>,
) -> Result<LimitUsage, MemoryError> {
    let (mut effective, mut headroom) = (None, None);
    for level in dir.ancestors().take_while(|a| a.starts_with(mount_dir)) {
        let (limit, usage) = read(level)?;
        effective = min_some(effective, limit);
        if let (Some(limit), Some(usage)) = (limit, usage) {
            headroom = min_some(headroom, Some(limit.saturating_sub(usage)));
        }
    }
    Ok((effective, headroom))
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// File content, trimmed; `None` when the file does not exist.
fn read_trimmed(path: &Path) -> Result<Option<String>, MemoryError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MemoryError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A one-number file; v2's `max` (no limit) reads as `None`.
fn read_u64(path: &Path) -> Result<Option<u64>, MemoryError> {
    match read_trimmed(path)? {
        None => Ok(None),
        Some(s) if s == "max" => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| MemoryError::Parse {
            path: path.to_owned(),
            text: s,
        }),
    }
}

/// The value of `key` in a `key value` per line file (`memory.events`, `memory.stat`, ...).
fn read_key(path: &Path, key: &str) -> Result<Option<u64>, MemoryError> {
    let Some(text) = read_trimmed(path)? else {
        return Ok(None);
    };
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(' ')
            && k == key
        {
            return v.trim().parse().map(Some).map_err(|_| MemoryError::Parse {
                path: path.to_owned(),
                text: line.to_owned(),
            });
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory tree of files, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(files: &[(&str, &str)]) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let root = std::env::temp_dir().join(format!(
                "leaktrace-memory-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            for (path, text) in files {
                let p = root.join(path);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).expect("mkdir");
                }
                std::fs::write(&p, text).expect("write");
            }
            Tree(root)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    macro_rules! v1 {
        ($name:literal) => {
            include_str!(concat!("testdata/v1-6.18/", $name))
        };
    }

    const BASE: &str = "sys/fs/cgroup/memory/process_api/5a10f742627aa8c687901111449221da";
    const CG_PATH: &str = "/process_api/5a10f742627aa8c687901111449221da/lt_cap_parent/child";

    /// Captured on 6.18 (cgroup v1 + an unused v2 mount, hybrid): pid 5639 holding 10 MiB in
    /// `lt_cap_parent/child` (64M limit) under `lt_cap_parent` (256M) under our unlimited cgroup.
    fn v1_tree() -> Tree {
        let parent = format!("{BASE}/lt_cap_parent");
        let child = format!("{parent}/child");
        let mut files = vec![
            ("proc/5639/status".to_owned(), v1!("proc-pid-status")),
            ("proc/5639/cgroup".to_owned(), v1!("proc-pid-cgroup")),
            ("proc/self/mountinfo".to_owned(), v1!("proc-self-mountinfo")),
            (
                "sys/fs/cgroup/unified/cgroup.controllers".to_owned(),
                "hugetlb\n",
            ),
        ];
        let per_level = [
            (
                BASE.to_owned(),
                [
                    v1!("base-memory.usage_in_bytes"),
                    v1!("base-memory.limit_in_bytes"),
                    v1!("base-memory.oom_control"),
                    v1!("base-memory.failcnt"),
                    v1!("base-memory.stat"),
                ],
            ),
            (
                parent,
                [
                    v1!("parent-memory.usage_in_bytes"),
                    v1!("parent-memory.limit_in_bytes"),
                    v1!("parent-memory.oom_control"),
                    v1!("parent-memory.failcnt"),
                    v1!("parent-memory.stat"),
                ],
            ),
            (
                child,
                [
                    v1!("child-memory.usage_in_bytes"),
                    v1!("child-memory.limit_in_bytes"),
                    v1!("child-memory.oom_control"),
                    v1!("child-memory.failcnt"),
                    v1!("child-memory.stat"),
                ],
            ),
        ];
        let names = [
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
            "memory.oom_control",
            "memory.failcnt",
            "memory.stat",
        ];
        for (dir, texts) in &per_level {
            for (name, text) in names.iter().zip(texts) {
                files.push((format!("{dir}/{name}"), text));
            }
        }
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        Tree::new(&refs)
    }

    #[test]
    fn process_memory_from_captured_status() {
        let tree = v1_tree();
        let m = process_memory_at(&tree.0.join("proc"), 5639).expect("status");
        assert_eq!(
            m,
            ProcessMemory {
                rss_bytes: Some(11424 * 1024),
                anon_bytes: Some(10336 * 1024),
                file_bytes: Some(1088 * 1024),
                shmem_bytes: Some(0),
            }
        );
        assert!(matches!(
            process_memory_at(&tree.0.join("proc"), 1),
            Err(MemoryError::Proc { pid: 1, .. })
        ));
    }

    #[test]
    fn process_memory_of_ourselves() {
        let m = process_memory(std::process::id()).expect("own status");
        assert!(m.rss_bytes.is_some_and(|r| r > 0));
        assert!(m.anon_bytes.is_some());
    }

    #[test]
    fn v1_cgroup_from_captured_tree() {
        let tree = v1_tree();
        let cg = cgroup_of_at(&tree.0, 5639).expect("read").expect("cgroup");
        assert_eq!(cg.version, CgroupVersion::V1);
        assert_eq!(cg.path, CG_PATH);
        assert_eq!(cg.dir, tree.0.join(format!("{BASE}/lt_cap_parent/child")));
        assert_eq!(cg.usage_bytes, Some(10747904));
        assert_eq!(cg.limit_bytes, Some(64 << 20));
        assert_eq!(cg.effective_limit_bytes, Some(64 << 20));
        // child: 64M - 10747904; parent: 256M - 11010048; base: unlimited.
        assert_eq!(cg.headroom_bytes, Some((64 << 20) - 10747904));
        assert_eq!(cg.oom_kill, Some(0));
        assert_eq!(cg.oom_events, None);
        assert_eq!(cg.limit_hits, Some(0));
        let t = cg.time_to_limit(1048576.0).expect("growing");
        assert!((t - 56360960.0 / 1048576.0).abs() < 1e-9);

        let m = process_memory_at(&tree.0.join("proc"), 5639).expect("status");
        let report = report_memory(
            Some(&m),
            Some(&cg),
            1 << 20,
            GoMemory::default(),
            Some(1048576.0),
        );
        assert_eq!(report.rss_bytes, Some(11424 * 1024));
        assert_eq!(report.anon_bytes, Some(10336 * 1024));
        assert_eq!(report.cgroup_limit_bytes, Some(64 << 20));
        assert_eq!(report.go_heap_bytes, None);
        assert_eq!(report.unexplained_bytes, Some(10336 * 1024 - (1 << 20)));
        let t = report.time_to_limit_s.expect("growing");
        assert!((t - 56360960.0 / 1048576.0).abs() < 1e-9);

        // A Go target: anon = native tracked + Go heap spans + goroutine stacks + the rest.
        let go = GoMemory {
            heap_bytes: Some(4 << 20),
            stack_bytes: Some(64 << 10),
        };
        let report = report_memory(Some(&m), None, 1 << 20, go, None);
        assert_eq!(
            (report.go_heap_bytes, report.go_stack_bytes),
            (Some(4 << 20), Some(64 << 10))
        );
        assert_eq!(
            report.unexplained_bytes,
            Some(10336 * 1024 - (1 << 20) - (4 << 20) - (64 << 10))
        );
    }

    #[test]
    fn v1_unlimited_cgroup_and_counters_after_an_oom_kill() {
        let tree = Tree::new(&[
            ("proc/7/cgroup", "4:memory:/a\n0::/\n"),
            (
                "proc/self/mountinfo",
                "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n",
            ),
            // The unlimited base cgroup of the 6.18 capture ...
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                v1!("base-memory.limit_in_bytes"),
            ),
            // ... over the 32M cgroup right after the kernel OOM-killed `memhog` in it.
            (
                "sys/fs/cgroup/memory/a/memory.limit_in_bytes",
                v1!("oomed-memory.limit_in_bytes"),
            ),
            (
                "sys/fs/cgroup/memory/a/memory.usage_in_bytes",
                v1!("oomed-memory.usage_in_bytes"),
            ),
            (
                "sys/fs/cgroup/memory/a/memory.oom_control",
                v1!("oomed-memory.oom_control"),
            ),
            (
                "sys/fs/cgroup/memory/a/memory.failcnt",
                v1!("oomed-memory.failcnt"),
            ),
        ]);
        let cg = cgroup_of_at(&tree.0, 7).expect("read").expect("cgroup");
        assert_eq!(cg.limit_bytes, Some(32 << 20));
        assert_eq!(cg.usage_bytes, Some(229376));
        assert_eq!(cg.oom_kill, Some(1));
        assert_eq!(cg.limit_hits, Some(19));
        assert_eq!(cg.effective_limit_bytes, Some(32 << 20));

        let root = cgroup_of_at(
            &Tree::new(&[
                ("proc/7/cgroup", "4:memory:/\n"),
                (
                    "proc/self/mountinfo",
                    "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
                ),
                (
                    "sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "9223372036854710272\n",
                ),
            ])
            .0,
            7,
        )
        .expect("read")
        .expect("cgroup");
        assert_eq!((root.limit_bytes, root.effective_limit_bytes), (None, None));
        assert_eq!(root.headroom_bytes, None);
    }

    fn v2_tree(mountinfo_line: &str, cgroup_line: &str) -> Tree {
        Tree::new(&[
            ("proc/9/cgroup", cgroup_line),
            ("proc/self/mountinfo", mountinfo_line),
            (
                "sys/fs/cgroup/cgroup.controllers",
                "cpuset cpu io memory hugetlb pids rdma misc\n",
            ),
            ("sys/fs/cgroup/system.slice/memory.max", "1073741824\n"),
            ("sys/fs/cgroup/system.slice/memory.current", "1000000000\n"),
            ("sys/fs/cgroup/system.slice/app.service/memory.max", "max\n"),
            (
                "sys/fs/cgroup/system.slice/app.service/memory.current",
                "52428800\n",
            ),
            (
                "sys/fs/cgroup/system.slice/app.service/memory.events",
                "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n",
            ),
        ])
    }

    #[test]
    fn v2_cgroup_limit_from_an_ancestor() {
        let tree = v2_tree(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
            "0::/system.slice/app.service\n",
        );
        let cg = cgroup_of_at(&tree.0, 9).expect("read").expect("cgroup");
        assert_eq!(cg.version, CgroupVersion::V2);
        assert_eq!(cg.path, "/system.slice/app.service");
        assert_eq!(cg.usage_bytes, Some(52428800));
        assert_eq!(cg.limit_bytes, None, "memory.max is `max`");
        assert_eq!(cg.effective_limit_bytes, Some(1 << 30));
        assert_eq!(cg.headroom_bytes, Some((1 << 30) - 1000000000));
        assert_eq!(
            (cg.oom_kill, cg.oom_events, cg.limit_hits),
            (Some(2), Some(3), Some(12))
        );
    }

    #[test]
    fn v2_container_mount_of_a_subtree() {
        // A container's view: the host's /kubepods/pod1 subtree bind-mounted at /sys/fs/cgroup.
        let tree = v2_tree(
            "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/kubepods/pod1/system.slice/app.service\n",
        );
        let cg = cgroup_of_at(&tree.0, 9).expect("read").expect("cgroup");
        assert_eq!(
            cg.dir,
            tree.0.join("sys/fs/cgroup/system.slice/app.service")
        );
        let outside = v2_tree(
            "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/../other\n",
        );
        assert_eq!(cgroup_of_at(&outside.0, 9).expect("read"), None);
    }

    #[test]
    fn v2_without_memory_controller_is_no_memory_cgroup() {
        // The hybrid layout of the 6.18 machine, without the v1 memory hierarchy.
        let tree = Tree::new(&[
            ("proc/9/cgroup", "0::/\n"),
            (
                "proc/self/mountinfo",
                "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
            ),
            ("sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n"),
        ]);
        assert_eq!(cgroup_of_at(&tree.0, 9).expect("read"), None);
    }

    #[test]
    fn malformed_counter_is_an_error() {
        let tree = v2_tree(
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/system.slice/app.service\n",
        );
        std::fs::write(
            tree.0
                .join("sys/fs/cgroup/system.slice/app.service/memory.current"),
            "lots",
        )
        .expect("write");
        assert!(matches!(
            cgroup_of_at(&tree.0, 9),
            Err(MemoryError::Parse { .. })
        ));
    }

    #[test]
    fn our_own_cgroup_reads_without_error() {
        if let Some(cg) = try_cgroup_of(std::process::id()).expect("read own cgroup") {
            assert!(cg.path.starts_with('/'));
            assert!(cg.dir.is_dir());
        }
    }

    #[test]
    fn time_to_limit_cases() {
        assert_eq!(time_to_limit(100, 1100, 10.0), Some(100.0));
        assert_eq!(time_to_limit(1100, 1100, 10.0), Some(0.0));
        assert_eq!(time_to_limit(2000, 1100, 10.0), Some(0.0));
        assert_eq!(time_to_limit(100, 1100, 0.0), None);
        assert_eq!(time_to_limit(100, 1100, -5.0), None);
        assert_eq!(time_to_limit(100, 1100, f64::NAN), None);
        assert_eq!(time_to_limit(100, 1100, f64::INFINITY), None);
    }
}

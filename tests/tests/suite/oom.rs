//! A leaking target in a fresh child memory cgroup with a small limit, traced until the kernel's
//! OOM killer takes it: the final report names the kill and the leaking site with what it held,
//! and `leaktrace oom --pid` finds the kill in the kernel log afterwards.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use leaktrace_tests::*;

const LIMIT: u64 = 48 << 20;
const MIB: u64 = 1 << 20;

/// A child of our own memory cgroup (v1 `memory.limit_in_bytes`, or v2 `memory.max`), removed on
/// drop, also when the test fails.
struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    fn new(limit: u64) -> Cgroup {
        let own = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
        let name = format!("leaktrace-oom-test-{}", std::process::id());
        let v1 = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, path)| path.to_owned()));
        let (dir, limit_file) = match v1 {
            Some(path) if Path::new("/sys/fs/cgroup/memory").is_dir() => (
                Path::new("/sys/fs/cgroup/memory")
                    .join(path.trim_start_matches('/'))
                    .join(&name),
                "memory.limit_in_bytes",
            ),
            _ => {
                let path = own
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .expect("a cgroup v2 path");
                (
                    Path::new("/sys/fs/cgroup")
                        .join(path.trim_start_matches('/'))
                        .join(&name),
                    "memory.max",
                )
            }
        };
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cgroup = Cgroup { dir };
        fs::write(cgroup.dir.join(limit_file), limit.to_string())
            .unwrap_or_else(|e| panic!("set {limit_file}: {e}"));
        cgroup
    }

    fn add(&self, pid: u32) {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                send_signal(pid, libc::SIGKILL);
                wait_process_gone(pid, Duration::from_secs(5));
            }
        }
        // The kernel frees the cgroup once its last task is reaped.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

#[test]
fn oom_kill_of_the_target_ends_the_trace_with_what_it_held() {
    let built = build("oom", Variant::O0);
    let cgroup = Cgroup::new(LIMIT);
    let mut target = Target::spawn(&built.exe, &[]);
    target.wait_ready();
    cgroup.add(target.pid);
    let pid = target.pid.to_string();
    let mut tracer = Tracer::start(&[
        "--pid",
        &pid,
        "--format",
        "json",
        "--min-age",
        "0s",
        "--interval",
        "300ms",
    ]);
    tracer.wait_attached(Duration::from_secs(20));
    target.go();
    let finished = tracer.wait(Duration::from_secs(60));
    finished.assert_success();
    let json: serde_json::Value = serde_json::from_str(&finished.stdout).expect("one JSON report");

    assert_eq!(json["ended_by"], "oom_killed", "{}", clip(&finished.stderr));
    let kills = json["oom_kills"].as_array().expect("oom_kills");
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert_eq!(kills[0]["pid"].as_u64(), Some(target.pid as u64));
    assert_eq!(kills[0]["source"], "tracepoint");
    let anon_kb = kills[0]["anon_rss_kb"]
        .as_u64()
        .expect("anon_rss_kb on 6.x");
    assert!(
        anon_kb * 1024 > LIMIT / 2,
        "anon-rss {anon_kb} kB at the kill"
    );

    let report = finished.report();
    let site = report.site_with("leak_megabyte");
    assert_eq!(site.allocator, "malloc");
    assert_eq!(site.outstanding_bytes % MIB, 0, "{}", site.describe());
    assert_eq!(site.outstanding_bytes, site.outstanding_allocs * MIB);
    // It held most of the limit when it was killed (the rest: the binary, libc, page tables).
    assert!(
        site.outstanding_bytes > LIMIT / 2 && site.outstanding_bytes <= LIMIT,
        "{}",
        site.describe()
    );
    assert!(site.has_function("main"));
    let cgroup_limit = json["memory"]["cgroup_limit_bytes"].as_u64();
    assert_eq!(cgroup_limit, Some(LIMIT));

    // The kernel log has the kill too, with its constraint and cgroup.
    let listing = run_leaktrace(
        &["oom", "--pid", &pid, "--format", "json"],
        Duration::from_secs(20),
    );
    listing.assert_success();
    let listed: serde_json::Value = serde_json::from_str(&listing.stdout).expect("JSON list");
    let listed = listed.as_array().expect("array of kills");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["pid"].as_u64(), Some(target.pid as u64));
    assert_eq!(listed[0]["comm"], built.file_name());
    assert_eq!(listed[0]["constraint"], "CONSTRAINT_MEMCG");
    let memcg = listed[0]["task_memcg"].as_str().expect("task_memcg");
    assert!(
        memcg.ends_with(&format!("leaktrace-oom-test-{}", std::process::id())),
        "{memcg}"
    );
    drop(target);
    drop(cgroup);
}

/// A Go program whose Go heap grows in the cgroup until the OOM killer takes it: the final
/// report carries the runtime's heap profile read at the kill or just before, the growing
/// site holding most of the limit.
#[test]
fn oom_kill_of_a_go_target_carries_its_go_heap() {
    let exe = go_build("goheap", GoBuild::plain(GoToolchain::Recent));
    let cgroup = Cgroup::new(LIMIT);
    let mut target = Target::spawn(&exe, &["oom"]);
    target.wait_ready();
    cgroup.add(target.pid);
    let pid = target.pid.to_string();
    let mut tracer = Tracer::start(&["--pid", &pid, "--format", "json", "--interval", "300ms"]);
    tracer.wait_attached(Duration::from_secs(20));
    target.go();
    let finished = tracer.wait(Duration::from_secs(60));
    finished.assert_success();
    let report = finished.report();
    assert_eq!(
        report.ended_by.as_deref(),
        Some("oom_killed"),
        "{}",
        clip(&finished.stderr)
    );
    let heap = report
        .go_heap
        .as_ref()
        .expect("go_heap in the final report");
    let grow = heap
        .sites
        .iter()
        .find(|s| s.frames.first().map(Frame::function) == Some("main.growLeak"))
        .unwrap_or_else(|| panic!("no main.growLeak site in {:?}", heap.sites));
    // Read at the kill when the dying process could still be read, else just before.
    assert!(heap.at_oom_kill.is_some(), "{heap:?}");
    // Estimates of 512 KiB blobs: most of the limit was theirs when the kill came.
    assert!(
        grow.inuse_bytes as u64 > LIMIT / 4 && grow.inuse_bytes as u64 <= 2 * LIMIT,
        "{} bytes in use at main.growLeak (read at the kill: {:?})",
        grow.inuse_bytes,
        heap.at_oom_kill
    );
}

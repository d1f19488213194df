//! The report as data: exactly the JSON contract of `shared/report-schema.md` (field names are a
//! contract: add, never rename or drop). The text renderer reads the same structure.
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    /// False for the periodic reports, true for the one written when the run ends.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub target: Target,
    /// RFC 3339.
    pub started_at: String,
    pub duration_s: f64,
    pub settings: Settings,
    pub totals: Totals,
    pub sites: Vec<Site>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<Goroutines>,
    /// Go targets: the runtime's own heap profile (never counted in `totals` or `sites`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_heap: Option<GoHeap>,
    pub memory: Memory,
    pub oom_kills: Vec<OomKill>,
    /// Extension: the allocator the probes were attached to.
    pub allocator: Allocator,
    /// Extension: why the run ended, null while running.
    pub ended_by: Option<EndedBy>,
    /// Extension: `--always-on` runs only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalations: Option<Escalations>,
    /// The last `--reachability` scan's figures; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachability: Option<Reachability>,
}

/// A reachability scan's figures (`--reachability`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reachability {
    /// Root and block bytes read by the last scan.
    pub scanned_bytes: u64,
    /// How long the last scan stopped the target.
    pub pause_ms: f64,
    pub duration_ms: f64,
    /// Scans run so far.
    pub scans: u64,
    /// Extension: the last scan ran with the target stopped throughout; false when that would
    /// have outrun `--reachability-max-pause` and two passes over the running target decided.
    pub consistent: bool,
    /// Extension: `stopped_world` or `two_live_passes`.
    pub method: &'static str,
    /// Extension: the blocks and threads of the last scan.
    pub blocks: u64,
    pub threads: u64,
    /// Extension: over every site (blocks older than `--min-age`).
    pub unreachable_bytes: u64,
    pub unreachable_allocs: u64,
    pub indirect_bytes: u64,
    /// Extension: seconds since the start of the run when the last scan ended.
    pub at_s: f64,
}

/// A site's blocks no root reaches, as of the last scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SiteReachability {
    /// Definitely and indirectly lost together.
    pub unreachable_bytes: u64,
    pub unreachable_allocs: u64,
    /// Of them, reachable only from lost blocks.
    pub indirect_bytes: u64,
    /// Extension.
    pub indirect_allocs: u64,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// `--duration` reached.
    Duration,
    /// SIGINT or SIGTERM.
    Signal,
    TargetExited,
    OomKilled,
}

/// What the target is written in, as far as tracing it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Any native program (C, C++, Rust, ...).
    C,
    Go,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// As the host sees it.
    pub pid: u32,
    /// In the target's own PID namespace, when that differs (containers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_in_namespace: Option<u32>,
    pub comm: String,
    pub exe: String,
    pub language: Language,
}

#[derive(Debug, Clone, Serialize)]
pub struct Allocator {
    /// The object whose entry points were probed (as the target sees its path).
    pub path: String,
    /// The flavour of the object providing `malloc`: `glibc`, `musl`, `jemalloc`, `tcmalloc`,
    /// `mimalloc` or `unknown`.
    pub name: String,
    pub probed: Vec<String>,
    /// Entry points the allocator does not export: skipped, not an error.
    pub missing: Vec<String>,
    /// Extension: the C heap is linked into the executable (a static binary).
    pub linked_into_executable: bool,
    /// Extension: every allocator probed, by object (a Rust program's jemalloc in its
    /// executable beside libc's malloc, say).
    pub families: Vec<AllocatorFamily>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AllocatorFamily {
    /// `glibc`, `musl`, `jemalloc`, `tcmalloc`, `mimalloc` or `unknown`.
    pub name: &'static str,
    /// The object, as the target sees its path.
    pub path: String,
    /// The symbols probed there.
    pub probed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub min_age_s: f64,
    pub interval_s: f64,
    pub sample_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Everything outstanding, of any age.
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
    pub allocs_seen: u64,
    pub frees_seen: u64,
    /// Allocations not tracked (or tracked without a stack) because a map was full.
    pub dropped: u64,
    pub drop_reasons: DropReasons,
    /// Extension: stacks removed from the kernel's full stack map to make room, none of them
    /// holding memory (long runs: the map stays bounded and nothing outstanding is lost).
    pub stacks_evicted: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DropReasons {
    pub alloc_map_full: u64,
    pub stack_map_full: u64,
    /// Extension: allocator calls lost because the per-thread in-flight map was full.
    pub in_flight_map_full: u64,
    /// Extension: per-stack totals that could not be kept.
    pub totals_map_full: u64,
    /// Extension: probe runs the kernel skipped because another BPF program was running on
    /// that CPU (another tracer on the same functions): allocator calls not seen.
    pub kernel_skipped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    /// Of allocations older than `min_age_s`.
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
    pub oldest_age_s: f64,
    pub growth_bytes_per_s: f64,
    /// `growing`, `steady` or `young`.
    pub verdict: Verdict,
    /// Entry point of the innermost frame: `malloc`, `calloc`, ...
    pub allocator: String,
    pub frames: Vec<Frame>,
    /// Extension: every allocation ever made from this stack, freed or not.
    pub total_allocs: u64,
    pub total_bytes: u64,
    /// Extension: the stack was cut at the deepest frame kept.
    pub truncated: bool,
    /// Extension: with `--sample-bytes`, the standard error of `outstanding_bytes` (an
    /// estimate then); null when every allocation is recorded.
    pub estimate_stderr_bytes: Option<f64>,
    /// Go targets with cgo: `outstanding_bytes` split by the creation site (`go` statement) of
    /// the goroutine that allocated them, largest first. Bytes allocated outside any goroutine
    /// (C threads, the runtime's system stack) are in none; omitted when no byte is in one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub goroutine_sites: Vec<NativeByGoroutineSite>,
    /// Extension (`--always-on`): the site's call site was escalated to exact tracing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalated: Option<SiteEscalation>,
    /// With `--reachability`, after a scan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachability: Option<SiteReachability>,
    /// The kernel's stack id: joins the site to per-stack results.
    #[serde(skip)]
    pub stack_id: u64,
}

#[cfg(test)]
impl Site {
    /// A site for unit tests to start from (`Site { verdict, ..Site::example() }`): 1 KiB in
    /// one young allocation from `malloc`, no stack, none of the optional parts.
    pub fn example() -> Site {
        Site {
            outstanding_bytes: 1024,
            outstanding_allocs: 1,
            oldest_age_s: 1.0,
            growth_bytes_per_s: 0.0,
            verdict: Verdict::Young,
            allocator: "malloc".into(),
            frames: Vec::new(),
            total_allocs: 1,
            total_bytes: 1024,
            truncated: false,
            estimate_stderr_bytes: None,
            goroutine_sites: Vec::new(),
            escalated: None,
            reachability: None,
            stack_id: 0,
        }
    }
}

#[cfg(test)]
impl Escalations {
    /// One site escalated 4 s into the run, for unit tests.
    pub fn one_site(site: &str, exact_bytes: u64, exact_allocs: u64, refused: u64) -> Self {
        Escalations {
            count: 1,
            limit: 64,
            refused,
            after_growing_intervals: 3,
            sites: vec![EscalatedSite {
                site: site.into(),
                return_address: "0x401136".into(),
                figures: SiteEscalation {
                    at_s: 4.0,
                    at: "2026-11-23T13:00:04.000000Z".into(),
                    at_unix_ns: 1_795_438_804_000_000_000,
                    exact_outstanding_bytes: exact_bytes,
                    exact_outstanding_allocs: exact_allocs,
                },
            }],
        }
    }
}

/// The native bytes of a site that goroutines created at one `go` statement allocated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NativeByGoroutineSite {
    /// The `go` statement, as `goroutines.sites[].created_by` names it.
    pub created_by: CodeLocation,
    pub outstanding_bytes: u64,
    /// Extension: the allocations holding them.
    pub outstanding_allocs: u64,
}

/// An escalated site's exact figures: the blocks it made since `at` (of any age) and still
/// holds, counted one by one; `outstanding_bytes` adds the sampled estimate of older ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteEscalation {
    /// Seconds into the run.
    pub at_s: f64,
    /// RFC 3339, microseconds.
    pub at: String,
    /// The same instant in nanoseconds since the Unix epoch (CLOCK_REALTIME): an allocation
    /// that starts later is traced exactly.
    pub at_unix_ns: u64,
    pub exact_outstanding_bytes: u64,
    pub exact_outstanding_allocs: u64,
}

/// Extension (`--always-on`): the call sites traced exactly, in the order they were escalated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Escalations {
    pub count: u32,
    /// The most sites traced exactly at once.
    pub limit: u32,
    /// Sites that kept growing while the set was full: they stay sampled.
    pub refused: u64,
    /// Consecutive growing intervals that escalate a site.
    pub after_growing_intervals: u32,
    pub sites: Vec<EscalatedSite>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EscalatedSite {
    /// `function file:line`, as in the metrics' `site` label.
    pub site: String,
    /// `0x...`: the allocator call's return address the kernel side recognises the site by.
    pub return_address: String,
    #[serde(flatten)]
    pub figures: SiteEscalation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Growing,
    Steady,
    Young,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// `0x...` hex.
    pub address: String,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    /// True for a function inlined into the next frame (same address).
    pub inlined: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Goroutines {
    /// Goroutines alive at the report (the runtime's own, like its GC workers, excluded).
    pub live: u64,
    /// Most goroutines first.
    pub sites: Vec<GoroutineSite>,
    /// Extension: goroutines created / exited while traced (the probes' counts).
    pub created: u64,
    pub exited: u64,
    /// Extension: goroutines not tracked because the kernel's map was full.
    pub dropped: u64,
    /// Extension: native stacks joined to the Go stack of the cgo call that made them.
    pub cgo_stacks_joined: u64,
    /// Extension: bytes the Go runtime mapped through libc's mmap (`x_cgo_mmap`) while traced:
    /// Go memory, never reported as native.
    pub runtime_mmap_bytes: u64,
    /// Extension: `all` when every goroutine was read from the runtime's list (`allgs`),
    /// `created_while_traced` when only those the probes saw could be read (stripped
    /// binaries whose goroutine list cannot be located).
    pub coverage: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct GoroutineSite {
    /// The `go` statement.
    pub created_by: CodeLocation,
    pub start_function: Option<String>,
    pub live: u64,
    pub growth_per_s: f64,
    /// Extension: `growing` (the count keeps rising: a goroutine leak), `steady`, `young`.
    pub verdict: Verdict,
    /// Live goroutines by state: the wait reason of blocked ones (`chan send`, `select`, ...),
    /// else `running`, `runnable`, `syscall`.
    pub states: std::collections::BTreeMap<String, u64>,
    /// Where most of the blocked ones wait: the innermost frame outside the runtime.
    pub blocked_at: Option<CodeLocation>,
    /// Extension: how many of them wait at `blocked_at`.
    pub blocked_at_count: u64,
    /// Extension: age of the oldest one, when it was created while traced.
    pub oldest_age_s: Option<f64>,
}

/// The Go runtime's heap profile (what `pprof heap` shows), as of the last completed GC.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GoHeap {
    pub source: &'static str,
    /// `runtime.MemProfileRate`: one allocation sampled per this many bytes on average.
    pub sample_rate_bytes: i64,
    /// The runtime's heap profile cycle the figures are as of.
    pub gc_cycle: u32,
    /// Sums over every site (estimates, scaled as `runtime/pprof` scales them).
    pub inuse_bytes: i64,
    pub inuse_objects: i64,
    /// Largest `inuse_bytes` first; `frames[0]` is the innermost Go frame.
    pub sites: Vec<GoHeapSite>,
    /// Extension: seconds into the run of the reading these figures come from.
    pub read_at_s: f64,
    /// Extension: true when read as the OOM killer took the target.
    pub at_oom_kill: bool,
    /// Extension: why there is no profile (`sites` empty then): the runtime keeps none, or
    /// the figures leaktrace could not find for this Go release.
    pub unavailable: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GoHeapSite {
    pub inuse_bytes: i64,
    pub inuse_objects: i64,
    pub alloc_bytes: i64,
    pub alloc_objects: i64,
    pub frames: Vec<Frame>,
    /// Extension: bytes of each object allocated there.
    pub object_size_bytes: u64,
    /// Extension: growth of `inuse_bytes` between readings, and its verdict (as native sites).
    pub growth_bytes_per_s: f64,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CodeLocation {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl CodeLocation {
    /// `main.serve main.go:80`: a label value (pprof, metrics), the file without its directory,
    /// `?` for what is unknown.
    pub fn label(&self) -> String {
        let function = self.function.as_deref().unwrap_or("?");
        let file = self
            .file
            .as_deref()
            .map_or("?", |f| f.rsplit('/').next().unwrap_or(f));
        match self.line {
            Some(line) => format!("{function} {file}:{line}"),
            None => format!("{function} {file}"),
        }
    }
}

/// What the process held at the last reading (its last one before it exited or was killed).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    pub rss_bytes: Option<u64>,
    pub anon_bytes: Option<u64>,
    pub go_heap_bytes: Option<u64>,
    /// Extension: Go targets: the goroutines' stacks (part of anon, beside the Go heap).
    pub go_stack_bytes: Option<u64>,
    /// The tightest memory-cgroup limit over the target's cgroup and its ancestors.
    pub cgroup_limit_bytes: Option<u64>,
    /// Extension: the rest of RSS.
    pub file_bytes: Option<u64>,
    pub shmem_bytes: Option<u64>,
    /// Extension: native allocations leaktrace tracks (made since it attached).
    pub native_tracked_bytes: u64,
    /// Extension: anonymous memory that neither the tracked native allocations nor the Go heap
    /// and goroutine stacks explain (allocator overhead and free lists, thread stacks, the Go
    /// runtime's own structures, allocations made before attaching).
    pub unexplained_bytes: Option<u64>,
    /// Extension: the target's memory cgroup.
    pub cgroup: Option<CgroupUsage>,
    /// Extension: growth of the process's anonymous memory over the run.
    pub growth_bytes_per_s: Option<f64>,
    /// Extension: when the cgroup limit is reached at that growth (null: no limit, or not
    /// growing).
    pub time_to_limit_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CgroupUsage {
    pub path: String,
    /// `v1` or `v2`.
    pub version: &'static str,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// OOM kills counted by the cgroup (hierarchical on v2).
    pub oom_kills: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OomKill {
    pub pid: u32,
    pub comm: String,
    pub time: String,
    pub source: String,
    pub cgroup: Option<String>,
    pub anon_rss_kb: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON contract's strings, whatever the variants are called.
    #[test]
    fn ended_by_and_language_serialize_to_the_contract_strings() {
        let ended_by = [
            EndedBy::Duration,
            EndedBy::Signal,
            EndedBy::TargetExited,
            EndedBy::OomKilled,
        ];
        assert_eq!(
            serde_json::to_string(&ended_by).expect("json"),
            r#"["duration","signal","target_exited","oom_killed"]"#
        );
        assert_eq!(
            serde_json::to_string(&[Language::C, Language::Go]).expect("json"),
            r#"["c","go"]"#
        );
    }
}

//! The JSON report, decoded with serde into structs mirroring `leak-user/src/report/model.rs`:
//! optional fields are Options, fields no test reads are ignored.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use crate::ALLOCATORS;
use crate::tracer::truncate;

/// One stack frame of a site.
#[derive(Debug, Clone, Deserialize)]
pub struct Frame {
    pub address: String,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub module: Option<String>,
    pub inlined: bool,
}

impl Frame {
    pub fn function(&self) -> &str {
        self.function.as_deref().unwrap_or("?")
    }

    pub fn address_value(&self) -> u64 {
        u64::from_str_radix(self.address.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("frame address {:?} is not 0x-hex", self.address))
    }
}

/// One allocation site (one distinct stack).
#[derive(Debug, Clone, Deserialize)]
pub struct Site {
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
    pub oldest_age_s: f64,
    pub growth_bytes_per_s: f64,
    pub verdict: String,
    pub allocator: String,
    pub frames: Vec<Frame>,
    pub total_allocs: u64,
    pub total_bytes: u64,
    pub truncated: bool,
    /// The standard error of a sampled site's estimate (sampled runs only).
    pub estimate_stderr_bytes: Option<f64>,
    /// Go targets with cgo: the bytes by creation site of the goroutine that allocated them.
    #[serde(default)]
    pub goroutine_sites: Vec<NativeByGoroutineSite>,
    /// With `--reachability`: the site's blocks no root reaches.
    #[serde(default)]
    pub reachability: Option<SiteReachability>,
}

/// The native bytes of a site that goroutines created at one `go` statement allocated.
#[derive(Debug, Clone, Deserialize)]
pub struct NativeByGoroutineSite {
    pub created_by: CodeLocation,
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
}

/// A site's `reachability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SiteReachability {
    pub unreachable_bytes: u64,
    pub unreachable_allocs: u64,
    pub indirect_bytes: u64,
}

/// The report's top-level `reachability`: the last scan's figures.
#[derive(Debug, Clone, Deserialize)]
pub struct Reachability {
    pub scanned_bytes: u64,
    pub pause_ms: f64,
    pub duration_ms: f64,
    pub scans: u64,
    pub consistent: bool,
    /// `stopped_world` or `two_live_passes`.
    pub method: String,
    pub unreachable_bytes: u64,
    pub unreachable_allocs: u64,
    pub indirect_bytes: u64,
}

impl Site {
    /// The function names of the frames, innermost first (`?` for unknown).
    pub fn function_names(&self) -> Vec<&str> {
        self.frames.iter().map(Frame::function).collect()
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.function.as_deref() == Some(name))
    }

    /// Index of the first frame of function NAME.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.frames
            .iter()
            .position(|f| f.function.as_deref() == Some(name))
    }

    /// The first frame of function NAME.
    pub fn frame(&self, name: &str) -> &Frame {
        let i = self
            .position(name)
            .unwrap_or_else(|| panic!("no frame `{name}` in {}", self.describe()));
        &self.frames[i]
    }

    /// Panics unless NAMES appear in this order (not necessarily adjacent) among the frames.
    pub fn assert_chain(&self, names: &[&str]) {
        let fns = self.function_names();
        let mut from = 0;
        for name in names {
            match fns[from..].iter().position(|f| f == name) {
                Some(i) => from += i + 1,
                None => panic!(
                    "call chain {names:?} not found in order (missing `{name}` after frame {from}) in {}",
                    self.describe()
                ),
            }
        }
    }

    /// One line: sizes, allocator, verdict and the function chain.
    pub fn describe(&self) -> String {
        format!(
            "[{} B / {} allocs, {}, {}, truncated={}] {}",
            self.outstanding_bytes,
            self.outstanding_allocs,
            self.allocator,
            self.verdict,
            self.truncated,
            self.frames
                .iter()
                .map(|f| match (&f.file, f.line) {
                    (Some(file), Some(line)) => format!(
                        "{}{} ({}:{line})",
                        f.function(),
                        if f.inlined { "[inl]" } else { "" },
                        file.rsplit('/').next().unwrap_or(file)
                    ),
                    _ => format!("{}{}", f.function(), if f.inlined { "[inl]" } else { "" }),
                })
                .collect::<Vec<_>>()
                .join(" <- ")
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Totals {
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
    pub allocs_seen: u64,
    pub frees_seen: u64,
    pub dropped: u64,
    pub drop_reasons: DropReasons,
    /// Stacks evicted from a full stack map.
    pub stacks_evicted: Option<u64>,
}

/// Why events were dropped (`totals.drop_reasons`).
#[derive(Debug, Clone, Deserialize)]
pub struct DropReasons {
    pub alloc_map_full: u64,
    pub stack_map_full: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AllocatorInfo {
    pub path: String,
    pub name: String,
    pub probed: Vec<String>,
    pub missing: Vec<String>,
    pub linked_into_executable: Option<bool>,
    /// The allocator families that were probed.
    pub families: Option<Vec<FamilyInfo>>,
}

/// One entry of `allocator.families`: an allocator family that was probed.
#[derive(Debug, Clone, Deserialize)]
pub struct FamilyInfo {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub probed: Vec<String>,
}

/// A place in Go code: `created_by` and `blocked_at` of a goroutine site. Unknown parts are
/// null in the report, None here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct CodeLocation {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
}

impl CodeLocation {
    /// The file is NAME, or a path ending in `/NAME`.
    pub fn file_is(&self, name: &str) -> bool {
        self.file
            .as_deref()
            .is_some_and(|f| f == name || f.ends_with(&format!("/{name}")))
    }

    /// `function (file:line)`, `?` for unknown parts, the file without its directory.
    pub fn describe(&self) -> String {
        let file = self
            .file
            .as_deref()
            .map_or("?", |f| f.rsplit('/').next().unwrap_or(f));
        let line = self.line.map_or("?".to_string(), |l| l.to_string());
        format!(
            "{} ({file}:{line})",
            self.function.as_deref().unwrap_or("?")
        )
    }
}

/// The goroutines created by one `go` statement (one entry of `goroutines.sites`).
#[derive(Debug, Clone, Deserialize)]
pub struct GoroutineSite {
    /// The `go` statement.
    pub created_by: CodeLocation,
    pub start_function: Option<String>,
    /// Goroutines of this site alive at the report.
    pub live: u64,
    pub growth_per_s: f64,
    /// Live goroutines by state (`chan send`, `select`, `running`, ...).
    pub states: BTreeMap<String, u64>,
    /// Where (most of) the blocked ones wait; null when none is blocked.
    pub blocked_at: Option<CodeLocation>,
    /// `growing`, `steady` or `young`, when the report gives one.
    pub verdict: Option<String>,
}

impl GoroutineSite {
    /// Created at LINE of a file called FILE.
    pub fn created_at(&self, file: &str, line: u32) -> bool {
        self.created_by.file_is(file) && self.created_by.line == Some(u64::from(line))
    }

    /// One line: count, verdict, where created, start function, states, where blocked.
    pub fn describe(&self) -> String {
        format!(
            "[{} live, {:+.2}/s, {}] created by {} start {} states {:?} blocked at {}",
            self.live,
            self.growth_per_s,
            self.verdict.as_deref().unwrap_or("no verdict"),
            self.created_by.describe(),
            self.start_function.as_deref().unwrap_or("?"),
            self.states,
            self.blocked_at
                .as_ref()
                .map_or("-".to_string(), CodeLocation::describe)
        )
    }
}

/// The `goroutines` section of a Go target's report.
#[derive(Debug, Clone, Deserialize)]
pub struct Goroutines {
    /// Goroutines alive at the end.
    pub live: u64,
    pub sites: Vec<GoroutineSite>,
}

impl Goroutines {
    /// The sites whose `go` statement is at LINE of a file called FILE.
    pub fn sites_created_at(&self, file: &str, line: u32) -> Vec<&GoroutineSite> {
        self.sites
            .iter()
            .filter(|s| s.created_at(file, line))
            .collect()
    }

    /// The one site created at LINE of FILE; panics (listing all sites) unless exactly one.
    pub fn site_created_at(&self, file: &str, line: u32) -> &GoroutineSite {
        let found = self.sites_created_at(file, line);
        assert_eq!(
            found.len(),
            1,
            "want exactly one goroutine site created at {file}:{line}, found {}:\n{}",
            found.len(),
            self.describe()
        );
        found[0]
    }

    /// Sum of the sites' live goroutines.
    pub fn site_sum(&self) -> u64 {
        self.sites.iter().map(|s| s.live).sum()
    }

    /// Every site, one per line, for assertion messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "goroutines: {} live, {} sites:\n",
            self.live,
            self.sites.len()
        );
        for site in &self.sites {
            let _ = writeln!(s, "  {}", site.describe());
        }
        s
    }
}

/// The report's `go_heap`: the runtime's own heap profile read from the target.
#[derive(Debug, Clone, Deserialize)]
pub struct GoHeap {
    pub source: String,
    pub sample_rate_bytes: i64,
    pub gc_cycle: u32,
    pub inuse_bytes: i64,
    pub inuse_objects: i64,
    pub sites: Vec<GoHeapSite>,
    /// Why there is no profile (extension).
    pub unavailable: Option<String>,
    /// Read as the OOM killer took the target (extension).
    pub at_oom_kill: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GoHeapSite {
    pub inuse_bytes: i64,
    pub inuse_objects: i64,
    pub alloc_bytes: i64,
    pub alloc_objects: i64,
    pub frames: Vec<Frame>,
    /// `growing`, `steady` or `young` (extension).
    pub verdict: Option<String>,
}

impl GoHeapSite {
    /// Function names, innermost first.
    pub fn functions(&self) -> Vec<&str> {
        self.frames.iter().map(Frame::function).collect()
    }
}

/// The JSON report, checked for the fields of the contract while parsing.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    #[serde(rename = "final")]
    pub is_final: bool,
    pub target: TargetInfo,
    pub settings: Settings,
    pub duration_s: f64,
    pub ended_by: Option<String>,
    pub totals: Totals,
    pub sites: Vec<Site>,
    pub allocator: AllocatorInfo,
    /// The `goroutines` section: present for Go targets only.
    pub goroutines: Option<Goroutines>,
    /// The Go runtime's heap profile: Go targets only.
    pub go_heap: Option<GoHeap>,
    /// What the process held at the last reading.
    pub memory: Option<Memory>,
    /// With `--reachability`, after a scan.
    #[serde(default)]
    pub reachability: Option<Reachability>,
}

/// The report's `target`.
#[derive(Debug, Clone, Deserialize)]
pub struct TargetInfo {
    pub pid: u64,
    pub exe: String,
    pub language: String,
    /// The target's PID in its own PID namespace, when it differs.
    pub pid_in_namespace: Option<u64>,
}

/// The report's `memory`.
#[derive(Debug, Clone, Deserialize)]
pub struct Memory {
    pub rss_bytes: Option<u64>,
    pub cgroup: Option<CgroupUsage>,
}

/// `memory.cgroup`: the target's memory cgroup.
#[derive(Debug, Clone, Deserialize)]
pub struct CgroupUsage {
    pub path: String,
    /// `v1` or `v2`.
    pub version: String,
    pub usage_bytes: Option<u64>,
}

/// The report's `settings`.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub min_age_s: f64,
    pub interval_s: f64,
    pub sample_bytes: Option<u64>,
}

impl Report {
    /// Parses TEXT as exactly one JSON object (trailing garbage is an error).
    pub fn parse(text: &str) -> Result<Report, String> {
        let raw: Value = serde_json::from_str(text.trim()).map_err(|e| {
            format!(
                "stdout is not one JSON object ({e}); stdout was:\n{}",
                truncate(text, 4000)
            )
        })?;
        Report::from_value(raw)
    }

    /// Decodes a report already parsed as JSON.
    pub fn from_value(raw: Value) -> Result<Report, String> {
        Report::deserialize(&raw).map_err(|e| {
            format!(
                "the report does not match the contract ({e}): {}",
                truncate(&raw.to_string(), 4000)
            )
        })
    }

    /// Every site with a frame of function NAME.
    pub fn sites_with(&self, name: &str) -> Vec<&Site> {
        self.sites.iter().filter(|s| s.has_function(name)).collect()
    }

    /// The one site with a frame of function NAME; panics (listing all sites) unless exactly one.
    pub fn site_with(&self, name: &str) -> &Site {
        let found = self.sites_with(name);
        assert_eq!(
            found.len(),
            1,
            "want exactly one site with a frame `{name}`, found {}:\n{}",
            found.len(),
            self.describe()
        );
        found[0]
    }

    /// Sum of outstanding bytes / allocs over the sites with a frame NAME.
    pub fn outstanding_with(&self, name: &str) -> (u64, u64) {
        self.sites_with(name).iter().fold((0, 0), |(b, n), s| {
            (b + s.outstanding_bytes, n + s.outstanding_allocs)
        })
    }

    /// Every site, one per line, for assertion messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "report: ended_by={:?} totals: {} B / {} allocs, allocs_seen={} frees_seen={} dropped={}; allocator {} ({}); {} sites:\n",
            self.ended_by,
            self.totals.outstanding_bytes,
            self.totals.outstanding_allocs,
            self.totals.allocs_seen,
            self.totals.frees_seen,
            self.totals.dropped,
            self.allocator.name,
            self.allocator.path,
            self.sites.len()
        );
        for site in &self.sites {
            let _ = writeln!(s, "  {}", site.describe());
        }
        if let Some(g) = &self.goroutines {
            s.push_str(&g.describe());
        }
        s
    }

    /// The `goroutines` section; panics (with the whole report) when there is none.
    pub fn goroutines(&self) -> &Goroutines {
        self.goroutines.as_ref().unwrap_or_else(|| {
            panic!(
                "no `goroutines` section in the report of a Go target (language {:?}):\n{}",
                self.target.language,
                self.describe()
            )
        })
    }

    /// No site may have been made inside the allocator: no allocator entry point (or glibc's
    /// `__libc_*` names) among the callers (frames[1..]) of a site.
    pub fn assert_no_nested_allocator_sites(&self) {
        for site in &self.sites {
            // An inlined frame is a wrapper, not a call into the allocator: ld.so's own
            // `calloc` in rtld-malloc.h forwards to libc's calloc.
            for f in site.frames.iter().skip(1).filter(|f| !f.inlined) {
                let name = f.function();
                let inner = name.strip_prefix("__libc_").unwrap_or(name);
                assert!(
                    !ALLOCATORS.contains(&inner) && inner != "free",
                    "site made inside the allocator (`{name}` among its callers):\n  {}\n{}",
                    site.describe(),
                    self.describe()
                );
            }
        }
    }

    /// Sum of the sites' outstanding bytes and allocs.
    pub fn site_sums(&self) -> (u64, u64) {
        self.sites.iter().fold((0, 0), |(b, n), s| {
            (b + s.outstanding_bytes, n + s.outstanding_allocs)
        })
    }
}

/// Entry points that are one function at one address in a target (ADDRS as the target printed
/// them), NAME included.
pub fn aliases(addrs: &HashMap<String, u64>, name: &str) -> Vec<String> {
    let mut v: Vec<String> = match addrs.get(name) {
        None => Vec::new(),
        Some(a) => addrs
            .iter()
            .filter(|(n, addr)| *addr == a && ALLOCATORS.contains(&n.as_str()))
            .map(|(n, _)| n.clone())
            .collect(),
    };
    if !v.iter().any(|n| n == name) {
        v.push(name.to_string());
    }
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real report: `leaktrace --format json --duration 1s --min-age 0s run -- /bin/sleep 3`.
    const REPORT: &str = include_str!("../testdata/report-sleep.json");

    #[test]
    fn a_real_report_decodes() {
        let r = Report::parse(REPORT).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.is_final);
        assert_eq!(r.target.exe, "/bin/sleep");
        assert_eq!(r.target.language, "c");
        assert_eq!(r.target.pid_in_namespace, None);
        assert_eq!(r.ended_by.as_deref(), Some("duration"));
        assert_eq!(r.settings.sample_bytes, Some(0));
        assert_eq!(
            (r.totals.outstanding_bytes, r.totals.outstanding_allocs),
            (11996, 137)
        );
        assert_eq!(r.totals.drop_reasons.alloc_map_full, 0);
        assert_eq!(r.allocator.name, "glibc");
        assert_eq!(r.sites.len(), 10);
        assert_eq!(r.site_sums(), (11764, 110));
        let first = &r.sites[0].frames[0];
        assert_eq!(first.function(), "malloc");
        assert_eq!(first.line, Some(3281));
        assert_eq!(first.address_value(), 0x7f3c_5477_5930);
        assert!(r.goroutines.is_none());
        r.assert_no_nested_allocator_sites();
    }

    #[test]
    fn a_report_missing_a_contract_field_is_an_error() {
        let mut v: Value = serde_json::from_str(REPORT).unwrap();
        v["totals"].as_object_mut().unwrap().remove("allocs_seen");
        let e = Report::from_value(v).unwrap_err();
        assert!(e.contains("allocs_seen"), "{e}");
        assert!(Report::parse("{} trailing").is_err());
    }
}

//! `--metrics-addr`: OpenMetrics for Prometheus, updated at every interval sample.
//!
//! Series (all prefixed `leaktrace_`):
//! - `outstanding_bytes{site,verdict}` and `outstanding_allocations{site,verdict}`: the
//!   `--top` call sites holding allocations older than `--min-age`, named by their innermost
//!   function outside the allocator and its `file:line`; one more series, `site="other"`,
//!   holds everything else outstanding (smaller sites and younger allocations), so the series
//!   add up to all outstanding memory and their number stays bounded.
//! - `allocations_seen_total`, `frees_seen_total`, `dropped_allocations_total{reason}`.
//! - `target_rss_bytes`, `oom_kills_total`.
//! - With `--reachability`: `unreachable_bytes`, `unreachable_allocations`,
//!   `indirectly_lost_bytes`, `reachability_scanned_bytes`, `reachability_pause_seconds`,
//!   `reachability_scans_total`.
//! - Go targets: `goroutines{site,verdict}`, live goroutines per creation site (`go`
//!   statement `function file:line`), the `--top` largest plus `site="other"`.
mod http;
mod reachability;

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

pub use http::{bind, serve};

use crate::report::model::{Report, Site, Verdict};

/// Longest `site` label value.
const MAX_SITE_NAME: usize = 128;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabels {
    site: String,
    verdict: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

pub struct Metrics {
    registry: Arc<Registry>,
    top: usize,
    site_bytes: Family<SiteLabels, Gauge>,
    site_allocs: Family<SiteLabels, Gauge>,
    allocs_seen: Counter,
    frees_seen: Counter,
    dropped: Family<ReasonLabels, Counter>,
    rss: Gauge,
    oom_kills: Counter,
    goroutines: Family<SiteLabels, Gauge>,
    reachability: reachability::ReachabilityMetrics,
}

impl Metrics {
    /// Metrics for the `top` largest sites (plus `other`).
    pub fn new(top: usize) -> Self {
        let mut registry = Registry::with_prefix("leaktrace");
        let site_bytes = Family::<SiteLabels, Gauge>::default();
        let site_allocs = Family::<SiteLabels, Gauge>::default();
        let allocs_seen = Counter::default();
        let frees_seen = Counter::default();
        let dropped = Family::<ReasonLabels, Counter>::default();
        let rss = Gauge::default();
        let oom_kills = Counter::default();
        let goroutines = Family::<SiteLabels, Gauge>::default();
        registry.register(
            "goroutines",
            "Live goroutines per creation site (Go targets; site=\"other\": the rest)",
            goroutines.clone(),
        );
        registry.register_with_unit(
            "outstanding",
            "Bytes held by allocations older than --min-age, per call site (site=\"other\": \
             everything else outstanding)",
            Unit::Bytes,
            site_bytes.clone(),
        );
        registry.register(
            "outstanding_allocations",
            "Allocations older than --min-age not yet freed, per call site (site=\"other\": \
             everything else outstanding)",
            site_allocs.clone(),
        );
        registry.register(
            "allocations_seen",
            "Allocations traced",
            allocs_seen.clone(),
        );
        registry.register("frees_seen", "Frees traced", frees_seen.clone());
        registry.register(
            "dropped_allocations",
            "Allocations not tracked (or without a stack) because a kernel map was full",
            dropped.clone(),
        );
        registry.register_with_unit(
            "target_rss",
            "Resident memory of the target",
            Unit::Bytes,
            rss.clone(),
        );
        registry.register(
            "oom_kills",
            "OOM kills of the target seen",
            oom_kills.clone(),
        );
        let reachability = reachability::ReachabilityMetrics::register(&mut registry);
        Metrics {
            reachability,
            registry: Arc::new(registry),
            top,
            site_bytes,
            site_allocs,
            allocs_seen,
            frees_seen,
            dropped,
            rss,
            oom_kills,
            goroutines,
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// Everything from one report (periodic or final).
    pub fn update(&self, report: &Report) {
        // Sites come and go: only the current ones have series.
        self.site_bytes.clear();
        self.site_allocs.clear();
        for series in site_series(report, self.top) {
            let labels = SiteLabels {
                site: series.site,
                verdict: series.verdict.to_owned(),
            };
            self.site_bytes
                .get_or_create(&labels)
                .set(gauge(series.bytes));
            self.site_allocs
                .get_or_create(&labels)
                .set(gauge(series.allocs));
        }
        let totals = &report.totals;
        advance(&self.allocs_seen, totals.allocs_seen);
        advance(&self.frees_seen, totals.frees_seen);
        let reasons = &totals.drop_reasons;
        for (reason, value) in [
            ("alloc_map_full", reasons.alloc_map_full),
            ("stack_map_full", reasons.stack_map_full),
            ("in_flight_map_full", reasons.in_flight_map_full),
            ("kernel_skipped", reasons.kernel_skipped),
            ("totals_map_full", reasons.totals_map_full),
        ] {
            let labels = ReasonLabels {
                reason: reason.to_owned(),
            };
            advance(&self.dropped.get_or_create(&labels), value);
        }
        if let Some(rss) = report.memory.rss_bytes {
            self.rss.set(gauge(rss));
        }
        advance(&self.oom_kills, report.oom_kills.len() as u64);
        self.reachability.update(report);
        self.goroutines.clear();
        if let Some(goroutines) = &report.goroutines {
            let mut shown = 0;
            for site in goroutines.sites.iter().take(self.top) {
                let place = &site.created_by;
                let name = format!(
                    "{} {}:{}",
                    place.function.as_deref().unwrap_or("??"),
                    place
                        .file
                        .as_deref()
                        .map_or("??", |f| f.rsplit('/').next().unwrap_or(f)),
                    place.line.unwrap_or(0)
                );
                let labels = SiteLabels {
                    site: name.chars().take(MAX_SITE_NAME).collect(),
                    verdict: verdict_name(site.verdict).to_owned(),
                };
                let gauge_ = self.goroutines.get_or_create(&labels);
                gauge_.set(gauge_.get() + gauge(site.live));
                shown += site.live;
            }
            let other = SiteLabels {
                site: "other".to_owned(),
                verdict: "mixed".to_owned(),
            };
            self.goroutines
                .get_or_create(&other)
                .set(gauge(goroutines.live.saturating_sub(shown)));
        }
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Brings a counter up to a total the kernel keeps (counters never go down).
fn advance(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// One `site` series.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Series {
    site: String,
    verdict: &'static str,
    bytes: u64,
    allocs: u64,
}

/// The `top` largest sites, merged by name (two stacks can end in the same line), then `other`.
fn site_series(report: &Report, top: usize) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for site in report.sites.iter().take(top) {
        let name = site_name(site, &report.target.exe);
        let verdict = verdict_name(site.verdict);
        match series.iter_mut().find(|s| s.site == name) {
            Some(s) => {
                s.bytes = s.bytes.saturating_add(site.outstanding_bytes);
                s.allocs = s.allocs.saturating_add(site.outstanding_allocs);
                if severity(verdict) > severity(s.verdict) {
                    s.verdict = verdict;
                }
            }
            None => series.push(Series {
                site: name,
                verdict,
                bytes: site.outstanding_bytes,
                allocs: site.outstanding_allocs,
            }),
        }
    }
    let shown_bytes: u64 = series.iter().map(|s| s.bytes).sum();
    let shown_allocs: u64 = series.iter().map(|s| s.allocs).sum();
    series.push(Series {
        site: "other".to_owned(),
        verdict: "mixed",
        bytes: report.totals.outstanding_bytes.saturating_sub(shown_bytes),
        allocs: report
            .totals
            .outstanding_allocs
            .saturating_sub(shown_allocs),
    });
    series
}

fn verdict_name(verdict: Verdict) -> &'static str {
    crate::report::pprof::verdict_name(verdict)
}

fn severity(verdict: &str) -> u8 {
    match verdict {
        "growing" => 2,
        "steady" => 1,
        _ => 0,
    }
}

/// A short name for a site: its innermost function outside the allocator, and `file:line`.
///
/// The allocator's frames are the innermost one (the probed entry point) and the frames right
/// above it in the same object (glibc's `strdup` above `malloc`), unless that object is the
/// target's executable (a statically linked allocator).
pub fn site_name(site: &Site, exe: &str) -> String {
    let frames = &site.frames;
    let allocator_module = frames.first().and_then(|f| f.module.as_deref());
    let skip = match allocator_module {
        Some(module) if module != exe => frames
            .iter()
            .take_while(|f| f.module.as_deref() == Some(module))
            .count(),
        _ => 1,
    };
    // Past the allocator; only the allocator's own frames when there is nothing past it.
    let callers = match frames.get(skip..) {
        Some(callers) if !callers.is_empty() => callers,
        _ => frames.as_slice(),
    };
    let name = match callers.iter().find(|f| f.function.is_some()) {
        Some(frame) => {
            let function = frame.function.as_deref().unwrap_or_default();
            match (frame.file.as_deref(), frame.line) {
                (Some(file), Some(line)) => format!("{function} {}:{line}", basename(file)),
                (Some(file), None) => format!("{function} {}", basename(file)),
                _ => function.to_owned(),
            }
        }
        None => match callers.first() {
            Some(frame) => match frame.module.as_deref() {
                Some(module) => format!("{} ({})", frame.address, basename(module)),
                None => frame.address.clone(),
            },
            None => "unknown".to_owned(),
        },
    };
    if name.chars().count() > MAX_SITE_NAME {
        let kept: String = name.chars().take(MAX_SITE_NAME - 3).collect();
        format!("{kept}...")
    } else {
        name
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{Frame, Verdict};

    const LIBC: &str = "/lib/libc.so.6";
    const EXE: &str = "/opt/leaky";

    fn frame(function: Option<&str>, file: Option<&str>, line: u32, module: &str) -> Frame {
        Frame {
            address: "0x401136".into(),
            function: function.map(str::to_owned),
            file: file.map(str::to_owned),
            line: file.map(|_| line),
            module: Some(module.to_owned()),
            inlined: false,
        }
    }

    fn site(bytes: u64, verdict: Verdict, frames: Vec<Frame>) -> Site {
        Site {
            outstanding_bytes: bytes,
            outstanding_allocs: bytes / 100,
            oldest_age_s: 1.0,
            growth_bytes_per_s: 0.0,
            verdict,
            allocator: "malloc".into(),
            frames,
            total_allocs: 0,
            total_bytes: 0,
            truncated: false,
            estimate_stderr_bytes: None,
            reachability: None,
            stack_id: 0,
        }
    }

    fn malloc() -> Frame {
        frame(Some("malloc"), Some("malloc.c"), 3281, LIBC)
    }

    #[test]
    fn names_skip_the_allocator() {
        let direct = site(
            100,
            Verdict::Growing,
            vec![
                malloc(),
                frame(Some("leak"), Some("/src/leaky.c"), 12, EXE),
                frame(Some("main"), Some("/src/leaky.c"), 30, EXE),
            ],
        );
        assert_eq!(site_name(&direct, EXE), "leak leaky.c:12");
        let strdup = site(
            100,
            Verdict::Growing,
            vec![
                malloc(),
                frame(Some("strdup"), Some("strdup.c"), 42, LIBC),
                frame(Some("log_name"), None, 0, EXE),
            ],
        );
        assert_eq!(site_name(&strdup, EXE), "log_name");
        let static_exe = site(
            100,
            Verdict::Growing,
            vec![
                frame(Some("malloc"), None, 0, EXE),
                frame(Some("leak"), Some("leaky.c"), 12, EXE),
            ],
        );
        assert_eq!(site_name(&static_exe, EXE), "leak leaky.c:12");
        let unknown = site(
            100,
            Verdict::Young,
            vec![frame(None, None, 0, LIBC), frame(None, None, 0, EXE)],
        );
        assert_eq!(site_name(&unknown, EXE), "0x401136 (leaky)");
        assert_eq!(site_name(&site(1, Verdict::Young, vec![]), EXE), "unknown");
        let long = "x".repeat(300);
        let long = site(
            1,
            Verdict::Young,
            vec![malloc(), frame(Some(&long), None, 0, EXE)],
        );
        assert_eq!(site_name(&long, EXE).chars().count(), MAX_SITE_NAME);
    }

    fn report() -> Report {
        let leak = |line| frame(Some("leak"), Some("leaky.c"), line, EXE);
        let mut report = crate::report::pprof::tests::report(vec![
            site(5000, Verdict::Steady, vec![malloc(), leak(12)]),
            site(3000, Verdict::Growing, vec![malloc(), leak(12)]),
            site(1000, Verdict::Young, vec![malloc(), leak(20)]),
            site(500, Verdict::Young, vec![malloc(), leak(30)]),
        ]);
        report.totals.outstanding_bytes = 10_000;
        report.totals.outstanding_allocs = 100;
        report.totals.allocs_seen = 1234;
        report.totals.frees_seen = 1000;
        report.totals.drop_reasons.stack_map_full = 7;
        report.memory.rss_bytes = Some(1 << 20);
        report
    }

    #[test]
    fn top_sites_merge_and_the_rest_is_other() {
        let series = site_series(&report(), 3);
        let got: Vec<_> = series
            .iter()
            .map(|s| (s.site.as_str(), s.verdict, s.bytes, s.allocs))
            .collect();
        assert_eq!(
            got,
            [
                ("leak leaky.c:12", "growing", 8000, 80),
                ("leak leaky.c:20", "young", 1000, 10),
                ("other", "mixed", 1000, 10),
            ]
        );
    }

    #[test]
    fn encodes_openmetrics() {
        let metrics = Metrics::new(2);
        metrics.update(&report());
        let mut report = report();
        report.totals.allocs_seen = 2000;
        report.sites.truncate(1);
        metrics.update(&report);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).expect("encode");
        for line in [
            "# TYPE leaktrace_outstanding_bytes gauge",
            "# UNIT leaktrace_outstanding_bytes bytes",
            "leaktrace_outstanding_bytes{site=\"leak leaky.c:12\",verdict=\"steady\"} 5000",
            "leaktrace_outstanding_bytes{site=\"other\",verdict=\"mixed\"} 5000",
            "leaktrace_outstanding_allocations{site=\"leak leaky.c:12\",verdict=\"steady\"} 50",
            "leaktrace_allocations_seen_total 2000",
            "leaktrace_frees_seen_total 1000",
            "leaktrace_dropped_allocations_total{reason=\"stack_map_full\"} 7",
            "leaktrace_dropped_allocations_total{reason=\"alloc_map_full\"} 0",
            "leaktrace_target_rss_bytes 1048576",
            "leaktrace_oom_kills_total 0",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        // The sites of the first update are gone.
        assert!(!text.contains("leaky.c:20"), "{text}");
    }
}

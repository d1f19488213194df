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
//! - `--always-on`: `escalated_sites`, `escalations_refused_total`, and per escalated site
//!   `escalated_exact_outstanding_bytes{site}` / `escalated_exact_outstanding_allocations{site}`
//!   (exact figures since its escalation; at most 64 sites).
//! - With `--reachability`: `site_unreachable_bytes{site,verdict}` over the `--top` sites,
//!   `unreachable_bytes`, `unreachable_allocations`,
//!   `indirectly_lost_bytes`, `reachability_scanned_bytes`, `reachability_pause_seconds`,
//!   `reachability_scans_total`.
//! - Go targets: `goroutines{site,verdict}`, live goroutines per creation site (`go`
//!   statement `function file:line`), the `--top` largest plus `site="other"`; with cgo,
//!   `native_by_goroutine_site_bytes{created_by}` (see [`goroutine_native`]).
//! - Go targets: `go_heap_inuse_bytes{site,verdict}`, the runtime's heap profile in use per
//!   allocation site (innermost Go frame `function file:line`), the `--top` largest plus
//!   `site="other"`.
mod goroutine_native;
mod http;
mod reachability;

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

pub use http::{bind, serve};

use crate::report::model::{Escalations, Frame, Report, Site, Verdict};

/// Longest `site` label value.
const MAX_SITE_NAME: usize = 128;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabels {
    site: String,
    verdict: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CreatedByLabels {
    created_by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EscalatedLabels {
    site: String,
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
    site_unreachable: Family<SiteLabels, Gauge>,
    allocs_seen: Counter,
    frees_seen: Counter,
    dropped: Family<ReasonLabels, Counter>,
    rss: Gauge,
    oom_kills: Counter,
    goroutines: Family<SiteLabels, Gauge>,
    native_by_goroutine_site: Family<CreatedByLabels, Gauge>,
    escalation: EscalationMetrics,
    reachability: reachability::ReachabilityMetrics,
    go_heap: Family<SiteLabels, Gauge>,
}

/// `--always-on`'s escalated sites.
#[derive(Default)]
struct EscalationMetrics {
    sites: Gauge,
    refused: Counter,
    exact_bytes: Family<EscalatedLabels, Gauge>,
    exact_allocs: Family<EscalatedLabels, Gauge>,
}

impl EscalationMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "escalated_sites",
            "Call sites traced exactly since their sampled estimate kept growing (--always-on)",
            self.sites.clone(),
        );
        registry.register(
            "escalations_refused",
            "Growing call sites left sampled because the escalated set was full",
            self.refused.clone(),
        );
        registry.register_with_unit(
            "escalated_exact_outstanding",
            "Bytes an escalated call site allocated since its escalation and still holds, exact",
            Unit::Bytes,
            self.exact_bytes.clone(),
        );
        registry.register(
            "escalated_exact_outstanding_allocations",
            "Allocations an escalated call site made since its escalation and still holds, exact",
            self.exact_allocs.clone(),
        );
    }

    fn update(&self, escalations: &Escalations) {
        self.sites.set(i64::from(escalations.count));
        advance(&self.refused, escalations.refused);
        self.exact_bytes.clear();
        self.exact_allocs.clear();
        for site in &escalations.sites {
            let labels = EscalatedLabels {
                site: site.site.chars().take(MAX_SITE_NAME).collect(),
            };
            let figures = &site.figures;
            self.exact_bytes
                .get_or_create(&labels)
                .set(gauge(figures.exact_outstanding_bytes));
            self.exact_allocs
                .get_or_create(&labels)
                .set(gauge(figures.exact_outstanding_allocs));
        }
    }
}

impl Metrics {
    /// Metrics for the `top` largest sites (plus `other`).
    pub fn new(top: usize) -> Self {
        let mut registry = Registry::with_prefix("leaktrace");
        let site_bytes = Family::<SiteLabels, Gauge>::default();
        let site_allocs = Family::<SiteLabels, Gauge>::default();
        let site_unreachable = Family::<SiteLabels, Gauge>::default();
        let allocs_seen = Counter::default();
        let frees_seen = Counter::default();
        let dropped = Family::<ReasonLabels, Counter>::default();
        let rss = Gauge::default();
        let oom_kills = Counter::default();
        let goroutines = Family::<SiteLabels, Gauge>::default();
        let go_heap = Family::<SiteLabels, Gauge>::default();
        registry.register_with_unit(
            "go_heap_inuse",
            "Go heap in use per allocation site, from the runtime's heap profile as of the last \
             GC (Go targets; site=\"other\": the rest)",
            Unit::Bytes,
            go_heap.clone(),
        );
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
        registry.register_with_unit(
            "site_unreachable",
            "Bytes of a call site's blocks older than --min-age that no root reached at the last \
             --reachability scan (definitely and indirectly lost)",
            Unit::Bytes,
            site_unreachable.clone(),
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
        let native_by_goroutine_site = Family::<CreatedByLabels, Gauge>::default();
        registry.register_with_unit(
            "native_by_goroutine_site",
            "Native bytes of the top call sites by the creation site of the goroutine that \
             allocated them (Go targets with cgo)",
            Unit::Bytes,
            native_by_goroutine_site.clone(),
        );
        let escalation = EscalationMetrics::default();
        escalation.register(&mut registry);
        let reachability = reachability::ReachabilityMetrics::register(&mut registry);
        Metrics {
            reachability,
            escalation,
            registry: Arc::new(registry),
            top,
            site_bytes,
            site_allocs,
            site_unreachable,
            allocs_seen,
            frees_seen,
            dropped,
            rss,
            oom_kills,
            goroutines,
            native_by_goroutine_site,
            go_heap,
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
        self.site_unreachable.clear();
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
            if let Some(unreachable) = series.unreachable {
                self.site_unreachable
                    .get_or_create(&labels)
                    .set(gauge(unreachable));
            }
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
        self.native_by_goroutine_site.clear();
        for (created_by, bytes) in goroutine_native::series(report, self.top) {
            let labels = CreatedByLabels {
                created_by: created_by.chars().take(MAX_SITE_NAME).collect(),
            };
            self.native_by_goroutine_site
                .get_or_create(&labels)
                .set(gauge(bytes));
        }
        if let Some(escalations) = &report.escalations {
            self.escalation.update(escalations);
        }
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
        self.update_go_heap(report);
    }

    fn update_go_heap(&self, report: &Report) {
        self.go_heap.clear();
        let Some(heap) = report.go_heap.as_ref().filter(|h| h.unavailable.is_none()) else {
            return;
        };
        let mut shown = 0;
        for site in heap.sites.iter().take(self.top) {
            let name = site
                .frames
                .first()
                .map_or("[no stack]".to_owned(), |frame| {
                    format!(
                        "{} {}:{}",
                        frame.function.as_deref().unwrap_or("??"),
                        frame
                            .file
                            .as_deref()
                            .map_or("??", |f| f.rsplit('/').next().unwrap_or(f)),
                        frame.line.unwrap_or(0)
                    )
                });
            let labels = SiteLabels {
                site: crate::escape::control_chars(&name)
                    .chars()
                    .take(MAX_SITE_NAME)
                    .collect(),
                verdict: verdict_name(site.verdict).to_owned(),
            };
            let series = self.go_heap.get_or_create(&labels);
            series.set(series.get().saturating_add(site.inuse_bytes.max(0)));
            shown += site.inuse_bytes.max(0);
        }
        let other = SiteLabels {
            site: "other".to_owned(),
            verdict: "mixed".to_owned(),
        };
        self.go_heap
            .get_or_create(&other)
            .set((heap.inuse_bytes - shown).max(0));
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
    /// After a `--reachability` scan: the bytes no root reaches.
    unreachable: Option<u64>,
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
                s.unreachable = match (s.unreachable, site.reachability) {
                    (Some(a), Some(b)) => Some(a.saturating_add(b.unreachable_bytes)),
                    (a, b) => a.or(b.map(|r| r.unreachable_bytes)),
                };
                if severity(verdict) > severity(s.verdict) {
                    s.verdict = verdict;
                }
            }
            None => series.push(Series {
                site: name,
                verdict,
                bytes: site.outstanding_bytes,
                allocs: site.outstanding_allocs,
                unreachable: site.reachability.map(|r| r.unreachable_bytes),
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
        unreachable: None,
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
    frames_name(&site.frames, exe)
}

/// [`site_name`] of a stack's frames, innermost first.
pub fn frames_name(frames: &[Frame], exe: &str) -> String {
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
        _ => frames,
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
    use crate::report::model::Verdict;

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
            ..Site::example()
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
    fn native_bytes_by_goroutine_creation_site_over_the_top_sites() {
        use crate::report::model::{CodeLocation, NativeByGoroutineSite};
        let by = |function: &str, line, bytes| NativeByGoroutineSite {
            created_by: CodeLocation {
                function: Some(function.into()),
                file: Some("/src/app/main.go".into()),
                line: Some(line),
            },
            outstanding_bytes: bytes,
            outstanding_allocs: 1,
        };
        let mut report = report();
        report.sites[0].goroutine_sites =
            vec![by("main.serve", 80, 3000), by("main.poll", 9, 2000)];
        report.sites[1].goroutine_sites = vec![by("main.serve", 80, 1000)];
        // Beyond --top 2: not counted.
        report.sites[2].goroutine_sites = vec![by("main.batch", 7, 1000)];
        let metrics = Metrics::new(2);
        metrics.update(&report);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).expect("encode");
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("leaktrace_native_by_goroutine_site_bytes{"))
            .collect();
        assert_eq!(
            series.len(),
            2,
            "want main.serve and main.poll only in\n{text}"
        );
        for line in [
            "leaktrace_native_by_goroutine_site_bytes{created_by=\"main.serve main.go:80\"} 4000",
            "leaktrace_native_by_goroutine_site_bytes{created_by=\"main.poll main.go:9\"} 2000",
        ] {
            assert!(series.contains(&line), "{line:?} missing in\n{text}");
        }
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

    #[test]
    fn a_scanned_site_has_its_unreachable_series() {
        use crate::report::model::SiteReachability;
        let metrics = Metrics::new(2);
        let mut report = report();
        report.sites[0].reachability = Some(SiteReachability {
            unreachable_bytes: 3000,
            unreachable_allocs: 30,
            indirect_bytes: 1000,
            indirect_allocs: 10,
        });
        metrics.update(&report);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).expect("encode");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("leaktrace_site_unreachable_bytes{"))
            .collect();
        // Only the scanned site: the others' figures are unknown, not 0.
        assert_eq!(
            lines,
            ["leaktrace_site_unreachable_bytes{site=\"leak leaky.c:12\",verdict=\"growing\"} 3000"],
            "{text}"
        );
    }

    #[test]
    fn escalated_sites_have_their_exact_series() {
        let metrics = Metrics::new(2);
        let mut report = report();
        report.escalations = Some(Escalations::one_site("leak leaky.c:12", 6400, 100, 2));
        metrics.update(&report);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).expect("encode");
        for line in [
            "leaktrace_escalated_sites 1",
            "leaktrace_escalations_refused_total 2",
            "leaktrace_escalated_exact_outstanding_bytes{site=\"leak leaky.c:12\"} 6400",
            "leaktrace_escalated_exact_outstanding_allocations{site=\"leak leaky.c:12\"} 100",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
    }

    #[test]
    fn go_heap_sites_are_series() {
        use crate::report::model::{GoHeap, GoHeapSite};
        let metrics = Metrics::new(1);
        let mut report = report();
        let site = |bytes, line| GoHeapSite {
            inuse_bytes: bytes,
            inuse_objects: 1,
            alloc_bytes: bytes,
            alloc_objects: 1,
            frames: vec![frame(Some("main.fill"), Some("/src/main.go"), line, EXE)],
            object_size_bytes: 64,
            growth_bytes_per_s: 10.0,
            verdict: Verdict::Growing,
        };
        report.go_heap = Some(GoHeap {
            inuse_bytes: 3500,
            sites: vec![site(3000, 9), site(500, 12)],
            ..GoHeap::default()
        });
        metrics.update(&report);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).expect("encode");
        for line in [
            "# UNIT leaktrace_go_heap_inuse_bytes bytes",
            "leaktrace_go_heap_inuse_bytes{site=\"main.fill main.go:9\",verdict=\"growing\"} 3000",
            "leaktrace_go_heap_inuse_bytes{site=\"other\",verdict=\"mixed\"} 500",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
    }
}

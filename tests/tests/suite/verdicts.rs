//! Verdicts and ages: a bounded cache is `steady`, a linear leak `growing`, a run too short for
//! 2 s of samples leaves everything `young`; `--min-age` hides allocations younger than it.
//! targets/verdict.c fills a 32 x 256-byte cache at once, then leaks 64 bytes every 50 ms;
//! targets/paused_leak.c leaks 3 MiB over 8 s and stops, next to a cache filled in 2 s, a
//! churning pool and a 58 B/s creep.

use leaktrace_tests::*;

const CACHE_ALLOCS: u64 = 32;
const CACHE_BYTES: u64 = 32 * 256;
const LINEAR_EACH: u64 = 64;
/// 64 bytes every 50 ms.
const LINEAR_RATE: f64 = 64.0 * 20.0;

static VERDICT_RUN: SharedTrace = SharedTrace::new();

/// verdict.c traced for 4 s, sampled every 500 ms (8 samples), every allocation reported.
fn verdict_run() -> &'static Traced {
    shared(&VERDICT_RUN, || {
        trace_built(
            &build("verdict", Variant::O0),
            &[
                "--format",
                "json",
                "--duration",
                "4s",
                "--interval",
                "500ms",
                "--min-age",
                "0s",
                "--top",
                "100",
            ],
        )
    })
}

/// The cache filled once and left alone: 32 blocks, steady, no growth.
#[test]
fn bounded_cache_is_steady() {
    let r = &verdict_run().report;
    let ctx = r.describe();
    let site = r.site_with("cache_insert");
    assert_eq!(
        (site.outstanding_allocs, site.outstanding_bytes),
        (CACHE_ALLOCS, CACHE_BYTES),
        "{ctx}"
    );
    assert_eq!(site.verdict, "steady", "{ctx}");
    assert!(
        site.growth_bytes_per_s.abs() < 100.0,
        "cache growth_bytes_per_s {} should be ~0\n{ctx}",
        site.growth_bytes_per_s
    );
    site.assert_chain(&["cache_insert", "cache_fill", "main"]);
}

/// `--duration 4s` traces for 4 s from the attach: the cache, filled right after
/// `leaktrace: attached`, is about 4 s old in the final report (not 4 s minus the time leaktrace
/// spent loading its programs before attaching).
#[test]
fn duration_window_starts_at_attach() {
    let r = &verdict_run().report;
    let site = r.site_with("cache_insert");
    assert!(
        site.oldest_age_s >= 3.2,
        "the cache was filled right after the attach of a 4 s run, yet it is only {:.2} s old \
         in the final report (duration_s {:.2}): the traced window is shorter than --duration\n{}",
        site.oldest_age_s,
        r.duration_s,
        r.describe()
    );
}

/// One block every 50 ms for the whole run: growing, at about 1280 bytes/s.
#[test]
fn linear_leak_is_growing() {
    let r = &verdict_run().report;
    let ctx = r.describe();
    let site = r.site_with("leak_linear");
    assert_eq!(site.verdict, "growing", "{ctx}");
    assert_eq!(
        site.outstanding_bytes,
        site.outstanding_allocs * LINEAR_EACH,
        "{ctx}"
    );
    // 4 s from the attach at one block per 50 ms is 80, and a few more while the final
    // snapshot is taken (up to 0.3 s); sleeping overshoots, so fewer, but not half.
    assert!(
        (40..=86).contains(&site.outstanding_allocs),
        "leak_linear outstanding_allocs {} for 4 s at 20/s\n{ctx}",
        site.outstanding_allocs
    );
    assert!(
        (LINEAR_RATE * 0.4..=LINEAR_RATE * 2.0).contains(&site.growth_bytes_per_s),
        "growth_bytes_per_s {} (the leak grows {LINEAR_RATE} B/s)\n{ctx}",
        site.growth_bytes_per_s
    );
    // Nothing of it is ever freed; the kernel's running total is read just after the
    // outstanding blocks, while the target keeps leaking, so it may be one or two ahead.
    assert!(
        (site.outstanding_allocs..=site.outstanding_allocs + 2).contains(&site.total_allocs),
        "nothing of it is ever freed: total {} vs outstanding {}\n{ctx}",
        site.total_allocs,
        site.outstanding_allocs
    );
    site.assert_chain(&["leak_linear", "run_forever", "main"]);
}

/// The growing leak ranks by bytes like any other site, and the run ended by its duration.
#[test]
fn verdict_run_totals() {
    let r = &verdict_run().report;
    let ctx = r.describe();
    assert_eq!(r.ended_by.as_deref(), Some("duration"), "{ctx}");
    assert_eq!(
        r.sites.len(),
        2,
        "only the cache and the linear leak\n{ctx}"
    );
    // The leak goes on while the report is made: allow the one block of a snapshot race.
    let (bytes, allocs) = r.site_sums();
    assert!(
        r.totals.outstanding_allocs.abs_diff(allocs) <= 1
            && r.totals.outstanding_bytes.abs_diff(bytes) <= LINEAR_EACH,
        "the sites (min-age 0) must add up to the totals\n{ctx}"
    );
    assert!(
        (r.settings.interval_s - 0.5).abs() < 1e-6,
        "interval_s {}",
        r.settings.interval_s
    );
}

/// A 2 s run (the default 5 s interval, sampled for the verdicts every 0.5 s) has less than 2 s
/// of history: every site is young.
#[test]
fn short_run_is_young() {
    let r = traced_report(
        "native",
        Variant::O0,
        &[
            "--format",
            "json",
            "--duration",
            "2s",
            "--min-age",
            "0s",
            "--top",
            "100",
        ],
    );
    let ctx = r.describe();
    assert!(!r.sites.is_empty(), "{ctx}");
    for site in &r.sites {
        assert_eq!(
            site.verdict,
            "young",
            "with < 3 samples: {}\n{ctx}",
            site.describe()
        );
    }
    assert_eq!(r.site_with("leak_malloc").outstanding_bytes, 10000, "{ctx}");
    assert!(
        (r.settings.interval_s - 5.0).abs() < 1e-6,
        "default interval_s {}",
        r.settings.interval_s
    );
}

/// `--min-age 1500ms` on the linear leak: the blocks of the last 1.5 s are outstanding (totals)
/// but not in the site; the cache (filled at the start) is all there.
#[test]
fn min_age_hides_young_allocations() {
    let r = traced_report(
        "verdict",
        Variant::O0,
        &[
            "--format",
            "json",
            "--duration",
            "3500ms",
            "--interval",
            "500ms",
            "--min-age",
            "1500ms",
            "--top",
            "100",
        ],
    );
    let ctx = r.describe();
    assert!(
        (r.settings.min_age_s - 1.5).abs() < 1e-6,
        "min_age_s {}",
        r.settings.min_age_s
    );
    let cache = r.site_with("cache_insert");
    assert_eq!(
        (cache.outstanding_allocs, cache.outstanding_bytes),
        (CACHE_ALLOCS, CACHE_BYTES),
        "{ctx}"
    );
    let linear = r.site_with("leak_linear");
    assert!(
        linear.outstanding_allocs < linear.total_allocs,
        "allocations younger than 1.5 s must not be in the site\n{ctx}"
    );
    // The blocks left out are those of the last 1.5 s: 20 a second, so about 30 (a sleep of
    // 50 ms takes a little longer, and the sampling instant is not exact).
    let young = linear.total_allocs - linear.outstanding_allocs;
    assert!(
        (24..=33).contains(&young),
        "{young} leak_linear blocks left out as younger than 1.5 s; 20 are made a second\n{ctx}"
    );
    assert!(linear.outstanding_allocs > 0, "{ctx}");
    assert_eq!(
        linear.outstanding_bytes,
        linear.outstanding_allocs * LINEAR_EACH,
        "{ctx}"
    );
    for site in &r.sites {
        assert!(
            site.oldest_age_s >= 1.5,
            "oldest_age_s below min-age: {}\n{ctx}",
            site.describe()
        );
    }
    let (_, site_allocs) = r.site_sums();
    assert!(
        r.totals.outstanding_allocs > site_allocs,
        "totals count every age, the sites only the old ones\n{ctx}"
    );
    // Same snapshot: every block of both stacks, of any age (one block of race allowed).
    assert!(
        r.totals
            .outstanding_allocs
            .abs_diff(CACHE_ALLOCS + linear.total_allocs)
            <= 1,
        "totals.outstanding_allocs {} vs cache + leak_linear.total_allocs {}\n{ctx}",
        r.totals.outstanding_allocs,
        CACHE_ALLOCS + linear.total_allocs
    );
}

/// `--min-age` longer than the run: no site, but the totals still hold everything outstanding.
#[test]
fn min_age_longer_than_run_reports_no_site() {
    let r = traced_report(
        "native",
        Variant::O0,
        &[
            "--format",
            "json",
            "--duration",
            "2s",
            "--interval",
            "300ms",
            "--min-age",
            "1m",
        ],
    );
    let ctx = r.describe();
    assert!(r.sites.is_empty(), "nothing is a minute old\n{ctx}");
    assert_eq!(
        r.totals.outstanding_allocs,
        native_leak_allocs(),
        "native.c's blocks\n{ctx}"
    );
    assert!(
        [native_leak_bytes(5000), native_leak_bytes(PVALLOC_ROUNDED)]
            .contains(&r.totals.outstanding_bytes),
        "native.c's bytes (pvalloc counted as requested or rounded)\n{ctx}"
    );
    assert_eq!(r.settings.min_age_s, 60.0);
}

const PAUSED_LEAK_BYTES: u64 = 256 * 12288;
const PAUSED_LEAK_RATE: f64 = PAUSED_LEAK_BYTES as f64 / 8.0;
const EARLY_CACHE_BYTES: u64 = 64 * 4096;
const CREEP_EACH: u64 = 58;

static PAUSED_RUN: SharedTrace = SharedTrace::new();

/// paused_leak.c traced for 12 s with the default interval (5 s), every allocation reported.
fn paused_run() -> &'static Traced {
    shared(&PAUSED_RUN, || {
        trace_built(
            &build("paused_leak", Variant::O0),
            &[
                "--format",
                "json",
                "--duration",
                "12s",
                "--min-age",
                "0s",
                "--top",
                "100",
            ],
        )
    })
}

/// 3 MiB over the first 8 s, nothing in the last 4: a leak that paused is still `growing`, at
/// about its rate while it ran (the robust slope over the run).
#[test]
fn paused_leak_is_growing() {
    let r = &paused_run().report;
    let ctx = r.describe();
    assert_eq!(r.ended_by.as_deref(), Some("duration"), "{ctx}");
    assert!((r.settings.interval_s - 5.0).abs() < 1e-6, "{ctx}");
    let site = r.site_with("leak_paused");
    assert_eq!(
        (site.outstanding_allocs, site.outstanding_bytes),
        (256, PAUSED_LEAK_BYTES),
        "the first leaked {:.1} s before the end of a {:.1} s run\n{ctx}",
        site.oldest_age_s,
        r.duration_s
    );
    assert_eq!(site.verdict, "growing", "{ctx}");
    assert!(
        (PAUSED_LEAK_RATE * 0.5..=PAUSED_LEAK_RATE * 1.2).contains(&site.growth_bytes_per_s),
        "growth_bytes_per_s {} (it leaked {PAUSED_LEAK_RATE} B/s for 8 s)\n{ctx}",
        site.growth_bytes_per_s
    );
    site.assert_chain(&["leak_paused", "run_shapes", "main"]);
}

/// 256 KiB in the first 2 s, then 10 s flat: a cache that filled is `steady`, with no growth.
#[test]
fn early_cache_is_steady() {
    let r = &paused_run().report;
    let ctx = r.describe();
    let site = r.site_with("cache_fill");
    assert_eq!(
        (site.outstanding_allocs, site.outstanding_bytes),
        (64, EARLY_CACHE_BYTES),
        "{ctx}"
    );
    assert_eq!(site.verdict, "steady", "{ctx}");
    assert_eq!(site.growth_bytes_per_s, 0.0, "{ctx}");
}

/// A pool churning by tens of KiB and 58 bytes a second next to 3 MiB: both `steady`.
#[test]
fn churn_and_creep_are_steady() {
    let r = &paused_run().report;
    let ctx = r.describe();
    assert_eq!(r.site_with("pool_churn").verdict, "steady", "{ctx}");
    let creep = r.site_with("creep");
    assert_eq!(creep.verdict, "steady", "{ctx}");
    // One a second from the target's start, a moment after the attach, until the final
    // snapshot a moment after the 12 s: 11 to 13.
    assert_eq!(
        creep.outstanding_bytes,
        creep.outstanding_allocs * CREEP_EACH,
        "{ctx}"
    );
    assert!((11..=13).contains(&creep.outstanding_allocs), "{ctx}");
}

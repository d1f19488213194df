//! `--sample-bytes`: allocations are sampled by bytes and reported figures are unbiased
//! estimates with their standard error. targets/sampled.c leaks 100000 x 1000 bytes.

use leaktrace_tests::*;

const TRUE_BYTES: f64 = 100_000.0 * 1000.0;
const MEAN: f64 = 65536.0;

#[test]
fn sampled_bytes_are_unbiased_estimates_within_their_error() {
    let traced = trace_report(
        "sampled",
        Variant::O2NoFramePointer,
        &["--sample-bytes", "64KiB"],
    );
    let r = &traced.report;
    assert_eq!(r.settings.sample_bytes, Some(65536));
    let site = r.site_with("leak_kilobyte");
    let stderr = site
        .estimate_stderr_bytes
        .expect("estimate_stderr_bytes on a sampled site");

    // Each 1000-byte block is sampled with p = 1 - exp(-1000/65536): about 1514 of them.
    let p = -(-1000.0 / MEAN).exp_m1();
    let expected_stderr = (TRUE_BYTES * 1000.0 * (1.0 - p) / p).sqrt();
    assert!(
        (stderr / expected_stderr - 1.0).abs() < 0.2,
        "stated error {stderr:.0} B, expected about {expected_stderr:.0} B"
    );
    // Within four standard errors (fails by chance about once in 16000 runs).
    let estimate = site.outstanding_bytes as f64;
    assert!(
        (estimate - TRUE_BYTES).abs() < 4.0 * expected_stderr,
        "estimated {estimate} B of {TRUE_BYTES} B (stderr {expected_stderr:.0})"
    );
    let per_block = estimate / site.outstanding_allocs as f64;
    assert!((per_block - 1000.0).abs() < 1.0, "{per_block} B per block");

    // Only the sampled ones reached the map and had their stack walked.
    let seen = r.totals.allocs_seen;
    let expected_samples = 100_000.0 * p;
    assert!(
        (seen as f64) < 2.0 * expected_samples && seen > 0,
        "{seen} allocations recorded, about {expected_samples:.0} expected"
    );
    assert!(site.has_function("main"));
}

/// targets/nested_sampled.c: calls nested in other allocator calls (realloc, blocks glibc maps
/// and unmaps inside malloc and free, posix_memalign, strdup, calloc), then 4000 x 1000 leaked
/// bytes. With uprobe sessions an unsampled call's return is not probed at all, so the calls
/// nested in it are told apart by the stack: none may be recorded on its own, and every
/// sampled block freed must be seen freed.
fn assert_nested_calls_stay_out(family: Family, links: &str) {
    const LEAKED_BYTES: f64 = 4000.0 * 1000.0;
    const SAMPLE_MEAN: f64 = 4096.0;
    let built = compile(
        "gcc",
        "nested_sampled.c",
        &format!("nested_sampled-{}", family.name()),
        &["-O2", "-g"],
        &[],
    );
    let preload: Vec<(&str, &str)> = family
        .preload_path()
        .map(|lib| ("LD_PRELOAD", lib))
        .into_iter()
        .collect();
    // Long enough for the target's work on a loaded machine: the run ends at its duration.
    let traced = trace_family_with(
        &built,
        &preload,
        &[
            "--format",
            "json",
            "--duration",
            "6s",
            "--min-age",
            "0s",
            "--sample-bytes",
            "4KiB",
            "--probe-links",
            links,
        ],
    );
    let report = traced.report();
    for site in &report.sites {
        assert!(
            site.has_function("leak_kept"),
            "{links} links, {}: a site that is not leak_kept's: {:?}\n{}",
            family.name(),
            site.frames
                .iter()
                .map(|f| format!("{} {}", f.address, f.module.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>(),
            report.describe()
        );
    }
    let site = report.site_with("leak_kept");
    let p = -(-1000.0 / SAMPLE_MEAN).exp_m1();
    let stderr = (LEAKED_BYTES * 1000.0 * (1.0 - p) / p).sqrt();
    let estimate = site.outstanding_bytes as f64;
    assert!(
        (estimate - LEAKED_BYTES).abs() < 4.0 * stderr,
        "{links} links, {}: estimated {estimate} B of {LEAKED_BYTES} B (stderr {stderr:.0})",
        family.name()
    );
}

#[test]
fn sessions_keep_nested_calls_out_on_glibc() {
    assert_nested_calls_stay_out(Family::Glibc, "auto");
}

#[test]
fn sessions_keep_nested_calls_out_on_jemalloc() {
    assert_nested_calls_stay_out(Family::Jemalloc, "auto");
}

#[test]
fn multi_links_without_sessions_keep_nested_calls_out() {
    assert_nested_calls_stay_out(Family::Jemalloc, "multi");
}

#[test]
fn per_probe_links_keep_nested_calls_out() {
    assert_nested_calls_stay_out(Family::Glibc, "per-probe");
}

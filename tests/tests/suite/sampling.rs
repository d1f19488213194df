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

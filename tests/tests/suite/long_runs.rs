//! Long runs keep the kernel's stack map bounded: when it nears full, stacks that hold nothing
//! and are idle are evicted, so a leak that starts late still gets its stack.
//! targets/churn.c makes ~128 transient call paths, then leaks 10 x 100 bytes from a new one.

use leaktrace_tests::*;

#[test]
fn idle_stacks_make_room_for_a_late_leak() {
    let r = traced_report(
        "churn",
        Variant::O0,
        &[
            "--format",
            "json",
            "--duration",
            "3500ms",
            "--interval",
            "300ms",
            "--min-age",
            "0s",
            "--max-stacks",
            "64",
        ],
    );
    let site = r.site_with("leak_late");
    assert_eq!(
        (site.outstanding_bytes, site.outstanding_allocs),
        (1000, 10)
    );
    site.assert_chain(&["leak_late", "main"]);
    let evicted = r.totals.stacks_evicted.expect("stacks_evicted");
    assert!(evicted > 0, "no stack evicted\n{}", r.describe());
    assert_eq!(r.totals.outstanding_allocs, 10, "{}", r.describe());
}

//! Every allocator entry point of a C target, with exact leaks (targets/native.c), and a target
//! whose allocations are all released again (targets/transient.c). Each check runs against the
//! three builds: `-O0 -g`, `-O2 -g -fomit-frame-pointer` and `-static -O2 -g`. One trace per
//! build and target is shared by the tests of this file.

use leaktrace_tests::*;

static NATIVE_O0: SharedTrace = SharedTrace::new();
static NATIVE_O2: SharedTrace = SharedTrace::new();
static NATIVE_STATIC: SharedTrace = SharedTrace::new();
static TRANSIENT_O0: SharedTrace = SharedTrace::new();
static TRANSIENT_O2: SharedTrace = SharedTrace::new();
static TRANSIENT_STATIC: SharedTrace = SharedTrace::new();

fn native(v: Variant) -> &'static Traced {
    let cell = match v {
        Variant::O0 => &NATIVE_O0,
        Variant::O2NoFramePointer => &NATIVE_O2,
        Variant::Static => &NATIVE_STATIC,
    };
    shared(cell, || trace_report("native", v, &["--top", "100"]))
}

fn transient(v: Variant) -> &'static Traced {
    let cell = match v {
        Variant::O0 => &TRANSIENT_O0,
        Variant::O2NoFramePointer => &TRANSIENT_O2,
        Variant::Static => &TRANSIENT_STATIC,
    };
    shared(cell, || trace_report("transient", v, &["--top", "100"]))
}

per_variant!(
    malloc,
    calloc,
    realloc_moved,
    realloc_inplace,
    reallocarray,
    posix_memalign,
    aligned_alloc,
    memalign,
    valloc,
    pvalloc,
    strdup,
    mmap,
    malloc_large,
    native_totals,
    native_report_metadata,
    every_site_is_well_formed,
    allocator_frame_named_after_entry_point,
    transient_never_reported,
    transient_counters_consistent,
);

/// The one site of LEAK_FN: exact counts, its allocator, frames[0] the allocator itself and the
/// leak function's frame symbolized to the marked line of native.c.
fn check_leak(t: &Traced, leak_fn: &str, allocator: &str, allocs: u64, bytes_each: u64) -> Site {
    let r = &t.report;
    let site = r.site_with(leak_fn);
    let ctx = r.describe();
    let names = t.aliases(allocator);
    assert!(
        names.contains(&site.allocator),
        "{leak_fn}: allocator {:?}, want one of {names:?}\n{ctx}",
        site.allocator
    );
    assert_eq!(
        site.outstanding_allocs, allocs,
        "{leak_fn}: outstanding_allocs\n{ctx}"
    );
    assert_eq!(
        site.outstanding_bytes,
        allocs * bytes_each,
        "{leak_fn}: outstanding_bytes\n{ctx}"
    );
    assert_eq!(
        site.total_allocs, allocs,
        "{leak_fn}: total_allocs (all leaked)\n{ctx}"
    );
    assert_eq!(
        site.total_bytes,
        allocs * bytes_each,
        "{leak_fn}: total_bytes (all leaked)\n{ctx}"
    );
    assert!(!site.frames.is_empty(), "{leak_fn}: no frames\n{ctx}");
    let f = site.frame(leak_fn);
    let file = f.file.as_deref().unwrap_or("");
    assert!(
        file.ends_with("native.c"),
        "{leak_fn}: frame file {:?}\n{ctx}",
        f.file
    );
    assert_eq!(
        f.line,
        Some(u64::from(marked_line("native", leak_fn))),
        "{leak_fn}: frame line (the allocation call)\n{ctx}"
    );
    assert!(
        site.has_function("main"),
        "{leak_fn}: no `main` frame\n{ctx}"
    );
    site.clone()
}

fn malloc(v: Variant) {
    let t = native(v);
    let site = check_leak(t, "leak_malloc", "malloc", 10, 1000);
    assert_eq!(
        site.function_names()[1],
        "leak_malloc",
        "{}",
        site.describe()
    );
}

fn calloc(v: Variant) {
    check_leak(native(v), "leak_calloc", "calloc", 4, 1000);
}

/// The block moved: the old one (a malloc of 16 bytes) is released, the new one counted at
/// realloc's stack with the new size. The freed blocker is not reported either.
fn realloc_moved(v: Variant) {
    check_leak(native(v), "leak_realloc_moved", "realloc", 3, 3000);
}

/// Shrunk in place (same address): still the old block released, the new size counted.
fn realloc_inplace(v: Variant) {
    check_leak(native(v), "leak_realloc_inplace", "realloc", 2, 500);
}

/// glibc's reallocarray tail-calls realloc: counted once, as reallocarray, not twice.
fn reallocarray(v: Variant) {
    check_leak(native(v), "leak_reallocarray", "reallocarray", 2, 250);
}

fn posix_memalign(v: Variant) {
    check_leak(native(v), "leak_posix_memalign", "posix_memalign", 3, 256);
}

fn aligned_alloc(v: Variant) {
    check_leak(native(v), "leak_aligned_alloc", "aligned_alloc", 2, 512);
}

fn memalign(v: Variant) {
    check_leak(native(v), "leak_memalign", "memalign", 2, 100);
}

fn valloc(v: Variant) {
    check_leak(native(v), "leak_valloc", "valloc", 2, 3000);
}

/// The size counted is the request (5000) or pvalloc's page-rounded size (8192).
fn pvalloc(v: Variant) {
    let t = native(v);
    let site = t.report.site_with("leak_pvalloc");
    let bytes_each = if site.outstanding_bytes == PVALLOC_ROUNDED {
        PVALLOC_ROUNDED
    } else {
        5000
    };
    check_leak(t, "leak_pvalloc", "pvalloc", 1, bytes_each);
}

/// strdup mallocs inside libc: the site is malloc's, with a strdup frame between malloc and
/// leak_strdup.
fn strdup(v: Variant) {
    let t = native(v);
    let site = check_leak(t, "leak_strdup", "malloc", 3, 100);
    let pos_leak = site.position("leak_strdup").unwrap();
    assert!(
        site.frames[1..pos_leak]
            .iter()
            .any(|f| f.function().contains("strdup")),
        "no strdup frame between malloc and leak_strdup: {}",
        site.describe()
    );
}

/// Two anonymous mappings kept (8192 bytes each); a third, unmapped again, is not counted.
fn mmap(v: Variant) {
    let t = native(v);
    let (bytes, allocs) = t.report.outstanding_with("leak_mmap");
    assert_eq!(
        (bytes, allocs),
        (2 * 8192, 2),
        "leak_mmap sites\n{}",
        t.report.describe()
    );
    check_leak(t, "leak_mmap", "mmap", 2, 8192);
}

/// Above the mmap threshold malloc maps the block itself: one malloc site with the requested
/// size, and no mmap site for malloc's own mapping.
fn malloc_large(v: Variant) {
    check_leak(native(v), "leak_malloc_large", "malloc", 2, 300000);
}

/// Totals: everything outstanding is exactly what native.c leaked, the sites add up to it, and
/// nothing was dropped or counted from inside the allocator.
fn native_totals(v: Variant) {
    let t = native(v);
    let r = &t.report;
    let ctx = r.describe();
    let pvalloc_bytes = r.site_with("leak_pvalloc").outstanding_bytes;
    let want_allocs = native_leak_allocs();
    let want_bytes = native_leak_bytes(pvalloc_bytes);
    assert_eq!(
        r.totals.outstanding_allocs, want_allocs,
        "totals.outstanding_allocs\n{ctx}"
    );
    assert_eq!(
        r.totals.outstanding_bytes, want_bytes,
        "totals.outstanding_bytes\n{ctx}"
    );
    assert_eq!(
        r.site_sums(),
        (want_bytes, want_allocs),
        "sum over the sites\n{ctx}"
    );
    assert_eq!(
        r.sites.len(),
        NATIVE_LEAKS.len(),
        "one site per leak function\n{ctx}"
    );
    for (leak_fn, ..) in NATIVE_LEAKS {
        assert_eq!(r.sites_with(leak_fn).len(), 1, "sites of {leak_fn}\n{ctx}");
    }
    assert_eq!(r.totals.dropped, 0, "dropped\n{ctx}");
    assert!(r.totals.allocs_seen >= want_allocs, "allocs_seen\n{ctx}");
    assert!(
        r.totals.allocs_seen >= r.totals.frees_seen,
        "more frees than allocations seen\n{ctx}"
    );
    r.assert_no_nested_allocator_sites();
}

/// Report fields: final, target, settings, the allocator that was probed.
fn native_report_metadata(v: Variant) {
    let t = native(v);
    let r = &t.report;
    let ctx = r.describe();
    assert!(r.is_final, "final\n{ctx}");
    assert_eq!(r.ended_by.as_deref(), Some("duration"), "ended_by\n{ctx}");
    assert!(
        r.target.exe.ends_with(&t.exe_name()),
        "target.exe {:?}",
        r.target.exe
    );
    assert_eq!(r.target.language, "c");
    assert_eq!(r.settings.min_age_s, 0.0);
    assert!(
        (r.settings.interval_s - 0.3).abs() < 1e-6,
        "interval_s {}",
        r.settings.interval_s
    );
    assert!(
        (1.5..=5.0).contains(&r.duration_s),
        "duration_s {} for --duration 2s",
        r.duration_s
    );
    for name in ["malloc", "free", "calloc", "realloc"] {
        assert!(
            r.allocator.probed.iter().any(|p| p == name),
            "allocator.probed {:?} lacks {name}",
            r.allocator.probed
        );
    }
    match v {
        Variant::Static => {
            assert_eq!(r.allocator.name, "glibc", "allocator {:?}", r.allocator);
            assert!(
                r.allocator.path.ends_with(&t.exe_name()),
                "allocator {:?}",
                r.allocator
            );
        }
        _ => {
            assert_eq!(r.allocator.name, "glibc", "allocator {:?}", r.allocator);
            assert!(
                r.allocator.path.contains("libc.so"),
                "allocator {:?}",
                r.allocator
            );
        }
    }
}

/// Every site: a known allocator, a known verdict, counts that fit, largest first.
fn every_site_is_well_formed(v: Variant) {
    let t = native(v);
    let r = &t.report;
    let ctx = r.describe();
    for s in &r.sites {
        assert!(
            ALLOCATORS.contains(&s.allocator.as_str()),
            "allocator {:?}\n{ctx}",
            s.allocator
        );
        assert!(
            ["growing", "steady", "young"].contains(&s.verdict.as_str()),
            "verdict {:?}\n{ctx}",
            s.verdict
        );
        assert!(!s.frames.is_empty(), "no frames: {}", s.describe());
        assert!(
            s.outstanding_allocs > 0 && s.outstanding_bytes > 0,
            "{}",
            s.describe()
        );
        assert!(s.total_allocs >= s.outstanding_allocs && s.total_bytes >= s.outstanding_bytes);
        for f in &s.frames {
            assert!(
                f.address.starts_with("0x") && f.address_value() != 0,
                "frame address {:?}",
                f.address
            );
        }
    }
    for w in r.sites.windows(2) {
        assert!(
            w[0].outstanding_bytes >= w[1].outstanding_bytes,
            "sites not sorted by outstanding_bytes\n{ctx}"
        );
    }
}

/// frames[0] of every site is the allocator entry point by its public name (`malloc`, not
/// `__libc_malloc`): the name the site's `allocator` has, or another name of the same function
/// (glibc's aligned_alloc and memalign are one function).
fn allocator_frame_named_after_entry_point(v: Variant) {
    let t = native(v);
    let r = &t.report;
    for s in &r.sites {
        let names = t.aliases(&s.allocator);
        assert!(
            s.frames
                .first()
                .and_then(|f| f.function.as_ref())
                .is_some_and(|f| names.contains(f)),
            "frames[0] must be the allocator entry point, one of {names:?}: {}\n{}",
            s.describe(),
            r.describe()
        );
    }
}

// ---- transient.c ------------------------------------------------------------------------------

/// Blocks transient.c allocates (each malloc/calloc/strdup/memalign/mmap/realloc(NULL) call).
const TRANSIENT_ALLOCS: u64 = 200 + 200 + 100 + 50 + 100 + 50 + 50 + 50 + 20 + 20 + 200 + 1;
/// Explicit free/munmap calls in transient.c.
const TRANSIENT_FREES: u64 = 200 + 200 + 100 + 100 + 50 + 50 + 50 + 20 + 20 + 200;

/// Nothing that was released is reported; only the 4242-byte marker is outstanding.
fn transient_never_reported(v: Variant) {
    let t = transient(v);
    let r = &t.report;
    let ctx = r.describe();
    for s in &r.sites {
        assert!(
            !s.function_names()
                .iter()
                .any(|f| f.starts_with("transient_")),
            "a released allocation is reported: {}\n{ctx}",
            s.describe()
        );
    }
    let marker = r.site_with("leak_marker");
    assert_eq!(
        (marker.outstanding_bytes, marker.outstanding_allocs),
        (4242, 1),
        "{ctx}"
    );
    assert_eq!(marker.allocator, "malloc");
    let f = marker.frame("leak_marker");
    assert_eq!(
        f.line,
        Some(u64::from(marked_line("transient", "leak_marker"))),
        "{ctx}"
    );
    assert_eq!(
        r.sites.len(),
        1,
        "only the marker may be outstanding\n{ctx}"
    );
    assert_eq!(
        (r.totals.outstanding_bytes, r.totals.outstanding_allocs),
        (4242, 1),
        "totals\n{ctx}"
    );
    assert_eq!(r.totals.dropped, 0, "dropped\n{ctx}");
}

/// allocs_seen / frees_seen cover every call and agree with what is outstanding: everything was
/// allocated after the attach, so allocs_seen - frees_seen is what is still outstanding.
fn transient_counters_consistent(v: Variant) {
    let t = transient(v);
    let r = &t.report;
    let ctx = r.describe();
    assert!(
        r.totals.allocs_seen >= TRANSIENT_ALLOCS,
        "allocs_seen {} < {TRANSIENT_ALLOCS}\n{ctx}",
        r.totals.allocs_seen
    );
    assert!(
        r.totals.frees_seen >= TRANSIENT_FREES,
        "frees_seen {} < {TRANSIENT_FREES}\n{ctx}",
        r.totals.frees_seen
    );
    assert_eq!(
        r.totals.allocs_seen - r.totals.frees_seen.min(r.totals.allocs_seen),
        r.totals.outstanding_allocs,
        "allocs_seen - frees_seen must equal outstanding_allocs (all made after attach)\n{ctx}"
    );
}

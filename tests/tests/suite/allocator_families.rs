//! Allocator families other than glibc's malloc: a C++ program (targets/cxx_alloc.cc) linked
//! with jemalloc, tcmalloc and mimalloc (and with nothing, and the glibc build run under
//! LD_PRELOAD of each), a C program on jemalloc's `*allocx` API (targets/jemalloc_api.c, linked
//! dynamically and into the executable), a C program on mimalloc's `mi_*` API
//! (targets/mimalloc_api.c) and a Rust program on tikv-jemallocator (targets/rust_jemalloc).
//! Exact bytes and counts per leak site, the entry point each site names, frames from the marked
//! line down to `main`, transient allocations (freed by sized and aligned deletes, `sdallocx`,
//! `dallocx`, `mi_free_size`) never reported, and the report's `families`.

use std::sync::OnceLock;

use leaktrace_tests::*;

/// What targets/cxx_alloc.cc leaks (keep in sync with its `run_leaks`):
/// (leak function, allocator entry point, allocs, bytes per alloc).
const CXX_LEAKS: &[(&str, &str, u64, u64)] = &[
    ("leak_new", "operator new", 5, 120),
    ("leak_new_array", "operator new[]", 3, 3000),
    ("leak_new_nothrow", "operator new", 4, 200),
    ("leak_new_nothrow_array", "operator new[]", 2, 700),
    ("leak_new_aligned", "operator new", 3, 256),
    ("leak_new_aligned_array", "operator new[]", 2, 2 * 256),
    // Five 40-byte elements behind the 8-byte element count.
    ("leak_new_dtor_array", "operator new[]", 2, 5 * 40 + 8),
    ("leak_cxx_malloc", "malloc", 2, 333),
];

/// The operator new variant each C++ leak calls and its counterpart (new vs new[]), as the
/// `addr` lines of cxx_alloc.cc name them.
const CXX_VARIANTS: &[(&str, &str, &str)] = &[
    ("leak_new", "new", "new_array"),
    ("leak_new_array", "new_array", "new"),
    ("leak_new_nothrow", "new_nothrow", "new_array_nothrow"),
    ("leak_new_nothrow_array", "new_array_nothrow", "new_nothrow"),
    ("leak_new_aligned", "new_aligned", "new_array_aligned"),
    ("leak_new_aligned_array", "new_array_aligned", "new_aligned"),
    ("leak_new_dtor_array", "new_array", "new"),
];

/// The names a site of LEAK_FN may report: ALLOCATOR, and the other of `operator new` /
/// `operator new[]` when the allocator defines both variants as one function (tcmalloc and
/// mimalloc do), where a probe cannot tell which was called.
fn cxx_names(t: &FamilyTrace, leak_fn: &str, allocator: &str) -> Vec<String> {
    let mut names = vec![allocator.to_string()];
    let Some(&(_, own, other)) = CXX_VARIANTS.iter().find(|v| v.0 == leak_fn) else {
        return names;
    };
    let addrs = &t.traced.addrs;
    if addrs.get(own).is_some_and(|a| addrs.get(other) == Some(a)) {
        names.push(if allocator == "operator new" {
            "operator new[]".into()
        } else {
            "operator new".into()
        });
    }
    names
}

/// How the C++ target got its allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linkage {
    /// `g++ ... -lFAMILY` (nothing for glibc).
    Linked,
    /// The glibc build run with `LD_PRELOAD=libFAMILY.so`.
    Preloaded,
}

type Cell = OnceLock<Result<FamilyTrace, String>>;

fn cxx(family: Family, linkage: Linkage) -> &'static FamilyTrace {
    static CELLS: [[Cell; 2]; 4] = [const { [const { OnceLock::new() }; 2] }; 4];
    let cell = &CELLS[family as usize][linkage as usize];
    shared_value(cell, || match linkage {
        Linkage::Linked => trace_family(&build_cxx(family), &[], &["--top", "100"]),
        Linkage::Preloaded => {
            let lib = family.preload_path().expect("glibc is never preloaded");
            trace_family(
                &build_cxx(Family::Glibc),
                &[("LD_PRELOAD", lib)],
                &["--top", "100"],
            )
        }
    })
}

/// The sites of LEAK_FN (one per call instruction: an unrolled loop has several): exact counts
/// summed, all of them still outstanding, each with the frame of LEAK_FN at its marked line of
/// SOURCE and the stack reaching `main`. Returns the largest.
fn check_site<'a>(
    t: &'a FamilyTrace,
    source: &str,
    leak_fn: &str,
    allocs: u64,
    bytes_each: u64,
) -> &'a Site {
    let r = t.report();
    let ctx = r.describe();
    let found = sites_of(r, leak_fn);
    assert!(!found.is_empty(), "no site of {leak_fn}\n{ctx}");
    let sum = |f: fn(&Site) -> (u64, u64)| {
        found.iter().fold((0, 0), |(a, b), s| {
            let (x, y) = f(s);
            (a + x, b + y)
        })
    };
    assert_eq!(
        sum(|s| (s.outstanding_allocs, s.outstanding_bytes)),
        (allocs, allocs * bytes_each),
        "{leak_fn}: outstanding allocs and bytes\n{ctx}"
    );
    assert_eq!(
        sum(|s| (s.total_allocs, s.total_bytes)),
        (allocs, allocs * bytes_each),
        "{leak_fn}: totals (all of it leaked)\n{ctx}"
    );
    for site in &found {
        check_frames(site, source, leak_fn, &ctx);
    }
    found[0]
}

/// LEAK_FN's frame at its marked line of SOURCE, and the stack reaching `main`.
fn check_frames(site: &Site, source: &str, leak_fn: &str, ctx: &str) {
    let at = frame_index(site, leak_fn).expect("found above");
    let frame = &site.frames[at];
    assert!(
        frame
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with(source.rsplit('/').next().unwrap_or(source))),
        "{leak_fn}: frame file {:?}, want {source}\n{ctx}",
        frame.file
    );
    assert_eq!(
        frame.line,
        Some(u64::from(marked_line_in(source, leak_fn))),
        "{leak_fn}: frame line (the allocation call)\n{ctx}"
    );
    assert!(
        site.frames
            .iter()
            .any(|f| function_is(f.function(), "main")),
        "{leak_fn}: the stack does not reach `main`: {}",
        site.describe()
    );
}

/// frames[0] is the entry point the site names (`operator new`, possibly with its parameter list).
fn assert_first_frame_is_allocator(site: &Site) {
    let first = site.frames[0].function();
    assert!(
        first == site.allocator || first.starts_with(&format!("{}(", site.allocator)),
        "frames[0] {first:?} is not the site's allocator {:?}: {}",
        site.allocator,
        site.describe()
    );
}

/// The C++ leaks: exact numbers; under jemalloc, tcmalloc and mimalloc (which define their own
/// operator new) the site names the C++ entry point and frames[1] is the leak function.
fn cxx_leaks_exact(family: Family, linkage: Linkage) {
    let t = cxx(family, linkage);
    for &(leak_fn, allocator, allocs, each) in CXX_LEAKS {
        let site = check_site(t, "cxx_alloc.cc", leak_fn, allocs, each);
        if family == Family::Glibc {
            // libstdc++'s operator new calls malloc (aligned_alloc for aligned new): either the
            // C++ entry point or the C one under it may be reported.
            assert!(
                site.allocator == allocator || ALLOCATORS.contains(&site.allocator.as_str()),
                "{leak_fn}: allocator {:?}: {}",
                site.allocator,
                site.describe()
            );
            continue;
        }
        let names = cxx_names(t, leak_fn, allocator);
        assert!(
            names.contains(&site.allocator),
            "{leak_fn} under {}: allocator {:?}, want one of {names:?}: {}",
            family.name(),
            site.allocator,
            site.describe()
        );
        assert_first_frame_is_allocator(site);
        assert_eq!(
            frame_index(site, leak_fn),
            Some(1),
            "{leak_fn}: frames[1] must be the caller of {allocator}: {}",
            site.describe()
        );
    }
}

/// Nothing released (sized, aligned, nothrow and array deletes) is reported; the totals are
/// exactly the leaks.
fn cxx_transient_never_reported(family: Family, linkage: Linkage) {
    let t = cxx(family, linkage);
    let r = t.report();
    let ctx = r.describe();
    assert!(
        sites_of(r, "transient_cxx").is_empty(),
        "a released allocation is reported (a sized or aligned delete missed?)\n{ctx}"
    );
    let allocs: u64 = CXX_LEAKS.iter().map(|l| l.2).sum();
    let bytes: u64 = CXX_LEAKS.iter().map(|l| l.2 * l.3).sum();
    assert_eq!(
        (r.totals.outstanding_bytes, r.totals.outstanding_allocs),
        (bytes, allocs),
        "totals\n{ctx}"
    );
    assert_eq!(r.sites.len(), CXX_LEAKS.len(), "one site per leak\n{ctx}");
    assert_eq!(r.totals.dropped, 0, "dropped\n{ctx}");
    // 300 rounds of 9 allocations and 9 frees each.
    assert!(r.totals.frees_seen >= 300 * 9, "frees_seen\n{ctx}");
}

/// The report names the family that provides malloc and lists it among the probed families.
fn cxx_report_names_family(family: Family, linkage: Linkage) {
    let t = cxx(family, linkage);
    let r = t.report();
    assert_eq!(r.allocator.name, family.name(), "{:?}", r.allocator);
    assert!(
        r.allocator.path.contains(family.library()),
        "allocator.path {:?}, want {}",
        r.allocator.path,
        family.library()
    );
    assert!(!linked_into_executable(r));
    let info = family_of(r, family.name());
    assert!(info.path.contains(family.library()), "{info:?}");
    for name in ["malloc", "free"] {
        assert!(
            info.probed.iter().any(|p| p == name),
            "{name} not probed: {info:?}"
        );
    }
    if family != Family::Glibc {
        // new[] is its own function unless the allocator made it one with new.
        let addrs = &t.traced.addrs;
        let array_is_new =
            addrs.get("new_array").is_some() && addrs.get("new_array") == addrs.get("new");
        let required: &[&str] = if array_is_new {
            &["_Znwm", "_ZdlPvm", "_ZnwmSt11align_val_t"]
        } else {
            &["_Znwm", "_Znam", "_ZdlPvm", "_ZnwmSt11align_val_t"]
        };
        for &name in required {
            let demangled = demangled_operator(name);
            assert!(
                info.probed.iter().any(|p| p == name || p == demangled),
                "{name} ({demangled}) not probed: {info:?}"
            );
        }
    }
}

/// The demangled names of the C++ entry points checked above.
fn demangled_operator(mangled: &str) -> &'static str {
    match mangled {
        "_Znwm" => "operator new(unsigned long)",
        "_Znam" => "operator new[](unsigned long)",
        "_ZdlPvm" => "operator delete(void*, unsigned long)",
        "_ZnwmSt11align_val_t" => "operator new(unsigned long, std::align_val_t)",
        _ => "",
    }
}

fn family_of(r: &Report, name: &str) -> FamilyInfo {
    family(r, name)
}

macro_rules! cxx_cases {
    ($($module:ident: $family:expr, $linkage:expr;)*) => {$(
        mod $module {
            use super::*;
            #[test]
            fn leaks_exact() {
                cxx_leaks_exact($family, $linkage)
            }
            #[test]
            fn transient_never_reported() {
                cxx_transient_never_reported($family, $linkage)
            }
            #[test]
            fn report_names_family() {
                cxx_report_names_family($family, $linkage)
            }
        }
    )*};
}

cxx_cases! {
    cxx_glibc: Family::Glibc, Linkage::Linked;
    cxx_jemalloc: Family::Jemalloc, Linkage::Linked;
    cxx_tcmalloc: Family::Tcmalloc, Linkage::Linked;
    cxx_mimalloc: Family::Mimalloc, Linkage::Linked;
    cxx_preloaded_jemalloc: Family::Jemalloc, Linkage::Preloaded;
    cxx_preloaded_tcmalloc: Family::Tcmalloc, Linkage::Preloaded;
    cxx_preloaded_mimalloc: Family::Mimalloc, Linkage::Preloaded;
}

// ---- jemalloc's *allocx API ---------------------------------------------------------------------

/// What targets/jemalloc_api.c leaks, besides leak_xallocx (whose size it prints):
/// (leak function, allocator, allocs, bytes per alloc).
const JEMALLOC_API_LEAKS: &[(&str, &str, u64, u64)] = &[
    ("leak_mallocx", "mallocx", 6, 500),
    ("leak_mallocx_aligned", "mallocx", 3, 300),
    ("leak_rallocx_moved", "rallocx", 3, 10000),
    ("leak_je_malloc", "malloc", 2, 777),
];
const XALLOCX_BLOCKS: u64 = 2;

/// jemalloc_api.c linked with the shared libjemalloc, or with libjemalloc.a into the executable
/// (a fully `-static` build clashes with libc.a's own malloc).
fn jemalloc_api(statically: bool) -> &'static FamilyTrace {
    static DYNAMIC: Cell = OnceLock::new();
    static STATIC: Cell = OnceLock::new();
    let cell = if statically { &STATIC } else { &DYNAMIC };
    shared_value(cell, || {
        let built = if statically {
            compile(
                "gcc",
                "jemalloc_api.c",
                "jemalloc_api-in-exe",
                &["-O2", "-g"],
                &[
                    "-Wl,-Bstatic",
                    "-ljemalloc",
                    "-Wl,-Bdynamic",
                    "-lstdc++",
                    "-lm",
                ],
            )
        } else {
            compile(
                "gcc",
                "jemalloc_api.c",
                "jemalloc_api",
                &["-O2", "-g"],
                &["-ljemalloc"],
            )
        };
        trace_family(&built, &[], &["--top", "100"])
    })
}

fn jemalloc_api_leaks(statically: bool) {
    let t = jemalloc_api(statically);
    for &(leak_fn, allocator, allocs, each) in JEMALLOC_API_LEAKS {
        let site = check_site(t, "jemalloc_api.c", leak_fn, allocs, each);
        assert_eq!(site.allocator, allocator, "{}", site.describe());
        assert_first_frame_is_allocator(site);
        assert_eq!(frame_index(site, leak_fn), Some(1), "{}", site.describe());
    }
}

/// xallocx shrank each 40000-byte block in place: it holds what xallocx returned from then on,
/// counted at the xallocx call.
fn jemalloc_api_xallocx(statically: bool) {
    let t = jemalloc_api(statically);
    let real = t.printed("xallocx");
    let r = t.report();
    let ctx = r.describe();
    let sites = sites_of(r, "leak_xallocx");
    let (bytes, allocs) = sites.iter().fold((0, 0), |(b, n), s| {
        (b + s.outstanding_bytes, n + s.outstanding_allocs)
    });
    assert_eq!(
        (bytes, allocs),
        (XALLOCX_BLOCKS * real, XALLOCX_BLOCKS),
        "leak_xallocx: each block holds xallocx's {real} bytes\n{ctx}"
    );
    let site = check_site(t, "jemalloc_api.c", "leak_xallocx", XALLOCX_BLOCKS, real);
    assert_eq!(site.allocator, "xallocx", "{}", site.describe());
}

/// sdallocx, dallocx, a rallocx'ed block and nallocx leave nothing behind; totals are exact.
fn jemalloc_api_transient(statically: bool) {
    let t = jemalloc_api(statically);
    let real = t.printed("xallocx");
    let r = t.report();
    let ctx = r.describe();
    assert!(
        sites_of(r, "transient_api").is_empty(),
        "released memory reported\n{ctx}"
    );
    let allocs: u64 = JEMALLOC_API_LEAKS.iter().map(|l| l.2).sum::<u64>() + XALLOCX_BLOCKS;
    let bytes: u64 =
        JEMALLOC_API_LEAKS.iter().map(|l| l.2 * l.3).sum::<u64>() + XALLOCX_BLOCKS * real;
    assert_eq!(
        (r.totals.outstanding_bytes, r.totals.outstanding_allocs),
        (bytes, allocs),
        "totals\n{ctx}"
    );
    assert_eq!(r.totals.dropped, 0, "dropped\n{ctx}");
    assert!(
        !r.sites.iter().any(|s| s.allocator == "nallocx"),
        "nallocx allocates nothing\n{ctx}"
    );
}

/// The jemalloc family: in libjemalloc.so or in the executable, its API probed, nallocx not.
fn jemalloc_api_family(statically: bool) {
    let t = jemalloc_api(statically);
    let r = t.report();
    assert_eq!(r.allocator.name, "jemalloc", "{:?}", r.allocator);
    assert_eq!(linked_into_executable(r), statically, "{:?}", r.allocator);
    let info = family(r, "jemalloc");
    if statically {
        assert!(info.path.ends_with(&t.traced.exe_name()), "{info:?}");
    } else {
        assert!(info.path.contains("libjemalloc.so"), "{info:?}");
    }
    for name in [
        "malloc", "free", "mallocx", "rallocx", "xallocx", "sdallocx", "dallocx",
    ] {
        assert!(
            info.probed.iter().any(|p| p == name),
            "{name} not probed: {info:?}"
        );
    }
    assert!(
        !info.probed.iter().any(|p| p == "nallocx"),
        "nallocx probed: {info:?}"
    );
}

macro_rules! jemalloc_api_cases {
    ($($module:ident: $statically:expr;)*) => {$(
        mod $module {
            use super::*;
            #[test]
            fn leaks() {
                jemalloc_api_leaks($statically)
            }
            #[test]
            fn xallocx() {
                jemalloc_api_xallocx($statically)
            }
            #[test]
            fn transient() {
                jemalloc_api_transient($statically)
            }
            #[test]
            fn family() {
                jemalloc_api_family($statically)
            }
        }
    )*};
}

jemalloc_api_cases! {
    jemalloc_api_shared: false;
    jemalloc_api_in_executable: true;
}

// ---- mimalloc's mi_* API ------------------------------------------------------------------------

/// What targets/mimalloc_api.c leaks: (leak function, allocator, allocs, bytes per alloc).
/// mi_malloc, mi_calloc and mi_realloc are malloc, calloc and realloc (one address each): the
/// standard name is reported.
const MIMALLOC_API_LEAKS: &[(&str, &str, u64, u64)] = &[
    ("leak_mi_malloc", "malloc", 3, 400),
    ("leak_mi_zalloc", "mi_zalloc", 2, 600),
    ("leak_mi_calloc", "calloc", 2, 500),
    ("leak_mi_malloc_aligned", "mi_malloc_aligned", 3, 300),
    ("leak_mi_zalloc_aligned", "mi_zalloc_aligned", 2, 200),
    ("leak_mi_realloc_moved", "realloc", 2, 20000),
];

fn mimalloc_api() -> &'static FamilyTrace {
    static CELL: Cell = OnceLock::new();
    shared_value(&CELL, || {
        let built = compile(
            "gcc",
            "mimalloc_api.c",
            "mimalloc_api",
            &["-O2", "-g"],
            &["-lmimalloc"],
        );
        trace_family(&built, &[], &["--top", "100"])
    })
}

#[test]
fn mimalloc_api_leaks() {
    let t = mimalloc_api();
    for &(leak_fn, allocator, allocs, each) in MIMALLOC_API_LEAKS {
        let site = check_site(t, "mimalloc_api.c", leak_fn, allocs, each);
        assert_eq!(site.allocator, allocator, "{}", site.describe());
        assert_first_frame_is_allocator(site);
        assert_eq!(frame_index(site, leak_fn), Some(1), "{}", site.describe());
    }
}

/// mi_free, mi_free_size, mi_free_aligned and a moving mi_realloc leave nothing behind.
#[test]
fn mimalloc_api_transient() {
    let r = mimalloc_api().report();
    let ctx = r.describe();
    assert!(
        sites_of(r, "transient_mi").is_empty(),
        "released memory reported\n{ctx}"
    );
    let allocs: u64 = MIMALLOC_API_LEAKS.iter().map(|l| l.2).sum();
    let bytes: u64 = MIMALLOC_API_LEAKS.iter().map(|l| l.2 * l.3).sum();
    assert_eq!(
        (r.totals.outstanding_bytes, r.totals.outstanding_allocs),
        (bytes, allocs),
        "totals\n{ctx}"
    );
    assert_eq!(r.totals.dropped, 0, "dropped\n{ctx}");
}

#[test]
fn mimalloc_api_family() {
    let r = mimalloc_api().report();
    assert_eq!(r.allocator.name, "mimalloc", "{:?}", r.allocator);
    let info = family(r, "mimalloc");
    assert!(info.path.contains("libmimalloc.so"), "{info:?}");
    for name in [
        "malloc",
        "free",
        "mi_zalloc",
        "mi_malloc_aligned",
        "mi_zalloc_aligned",
        "mi_free_size",
        "mi_free_aligned",
    ] {
        assert!(
            info.probed.iter().any(|p| p == name),
            "{name} not probed: {info:?}"
        );
    }
}

// ---- Rust on tikv-jemallocator ------------------------------------------------------------------

/// What targets/rust_jemalloc leaks: (leak function, allocator, allocs, bytes per alloc).
const RUST_LEAKS: &[(&str, &str, u64, u64)] = &[
    ("leak_box", "malloc", 10, 1000),
    ("leak_zeroed", "calloc", 4, 2048),
    ("leak_aligned", "mallocx", 3, 192),
    ("leak_grown", "realloc", 2, 5000),
    // A vector of one 192-byte, 64-aligned element grown to four.
    ("leak_aligned_grown", "rallocx", 2, 4 * 192),
];
const RUST_SOURCE: &str = "rust_jemalloc/src/main.rs";

fn rust_jemalloc() -> &'static FamilyTrace {
    static CELL: Cell = OnceLock::new();
    shared_value(&CELL, || {
        trace_family(&build_rust_jemalloc(), &[], &["--top", "100"])
    })
}

/// `_rjem_malloc` is reported as `malloc`, `_rjem_mallocx` as `mallocx`: exact leaks, each at its
/// marked line, stacks reaching `main`.
#[test]
fn rust_jemalloc_leaks() {
    let t = rust_jemalloc();
    for &(leak_fn, allocator, allocs, each) in RUST_LEAKS {
        let site = check_site(t, RUST_SOURCE, leak_fn, allocs, each);
        assert_eq!(site.allocator, allocator, "{}", site.describe());
        assert_first_frame_is_allocator(site);
    }
}

/// Vectors and boxes dropped again (`sdallocx`) and grown (`realloc`/`rallocx` free the old
/// block) leave nothing behind; totals are exact.
#[test]
fn rust_jemalloc_transient() {
    let r = t_report();
    let ctx = r.describe();
    assert!(
        sites_of(r, "transient").is_empty(),
        "released memory reported\n{ctx}"
    );
    let allocs: u64 = RUST_LEAKS.iter().map(|l| l.2).sum();
    let bytes: u64 = RUST_LEAKS.iter().map(|l| l.2 * l.3).sum();
    assert_eq!(
        (r.totals.outstanding_bytes, r.totals.outstanding_allocs),
        (bytes, allocs),
        "totals\n{ctx}"
    );
    // Every site is one of the leaks (an unrolled loop makes several sites of one).
    for site in &r.sites {
        assert!(
            RUST_LEAKS
                .iter()
                .any(|leak| frame_index(site, leak.0).is_some()),
            "a site that is none of the leaks: {}",
            site.describe()
        );
    }
}

/// Two families: glibc in libc, jemalloc inside the executable with its `_rjem_` prefix.
#[test]
fn rust_jemalloc_families() {
    let t = rust_jemalloc();
    let r = t.report();
    let glibc = family(r, "glibc");
    assert!(glibc.path.contains("libc.so"), "{glibc:?}");
    let jemalloc = family(r, "jemalloc");
    assert!(
        jemalloc.path.ends_with(&t.traced.exe_name()),
        "jemalloc must be found in the executable: {jemalloc:?}"
    );
    for name in [
        "mallocx", "rallocx", "sdallocx", "malloc", "calloc", "realloc",
    ] {
        assert!(
            jemalloc
                .probed
                .iter()
                .any(|p| p == name || p == &format!("_rjem_{name}")),
            "{name} not probed: {jemalloc:?}"
        );
    }
}

fn t_report() -> &'static Report {
    rust_jemalloc().report()
}

// ---- an allocator leaktrace does not know ---------------------------------------------------

/// A custom `malloc` in its own preloaded library (targets/bump_alloc.c): named in a warning
/// with what it defines, and traced all the same, exactly.
#[test]
fn an_unknown_allocator_is_named_and_traced() {
    // -fno-builtin: otherwise gcc turns calloc's malloc + memset into a call to calloc itself.
    let lib = compile(
        "gcc",
        "bump_alloc.c",
        "libbump.so",
        &["-O2", "-fno-builtin", "-shared", "-fPIC"],
        &[],
    );
    let target = compile("gcc", "contained.c", "contained-bump", &["-O2", "-g"], &[]);
    let preload = lib.exe.display().to_string();
    let t = trace_family(&target, &[("LD_PRELOAD", preload.as_str())], &[]);
    let r = t.report();
    let ctx = r.describe();
    assert_eq!(r.allocator.name, "unknown", "{ctx}");
    assert_eq!(r.allocator.path, preload, "{ctx}");
    let warning = t
        .traced
        .stderr
        .lines()
        .find(|l| l.contains("unknown allocator"))
        .unwrap_or_else(|| panic!("no warning naming the allocator:\n{}", t.traced.stderr));
    assert!(warning.contains(&preload), "{warning}");
    for name in ["malloc", "calloc", "realloc", "free"] {
        assert!(warning.contains(name), "{warning} lacks {name}");
    }
    check_site(&t, "contained.c", "contained_malloc", 10, 1000);
    check_site(&t, "contained.c", "contained_calloc", 4, 1000);
}

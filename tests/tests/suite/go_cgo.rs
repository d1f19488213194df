//! Native leaks of a cgo program (targets/go/cgo/main.go), built with the recent Go and Go 1.19,
//! plain and stripped: C.CString, C.malloc and C code that mallocs, each a site whose stack has
//! the C frames first and then the Go frames that called into C, down to the Go function and
//! line of the leaking call; a CString+free churn is never reported, and the 64 MiB the Go heap
//! holds are not native leaks. One trace per build is shared by the tests of this file.

use std::time::Duration;

use leaktrace_tests::*;

const TARGET: &str = "cgo";
const FILE: &str = "main.go";

/// A native leak the target makes from Go.
struct NativeLeak {
    /// The Go function holding the leaking call (at its marker).
    go_fn: &'static str,
    mark: &'static str,
    /// The Go caller of GO_FN, next in the stack (after any inlined frames).
    caller: &'static str,
    /// C code of the program between malloc and Go (named in the plain builds only: a stripped
    /// executable has no symbol for it).
    c_fn: Option<&'static str>,
    allocs: u64,
    bytes_each: u64,
}

/// `C.CString` of a 99-character string, 10 times: malloc(100) each.
const CSTRING: NativeLeak = NativeLeak {
    go_fn: "main.leakCString",
    mark: "cstring",
    caller: "main.leaks",
    c_fn: None,
    allocs: 10,
    bytes_each: 100,
};

/// `C.malloc(3000)`, 4 times. cgo's `_Cfunc__CMalloc` is inlined into the caller: the line is
/// that of the inlined call. (Go 1.19's DWARF gives that call line 3 too high, the line in the
/// cgo-generated file; `.gopclntab`'s inline tree and Go's own tracebacks have the right one.)
const CMALLOC: NativeLeak = NativeLeak {
    go_fn: "main.leakCMalloc",
    mark: "cmalloc",
    caller: "main.leaks",
    c_fn: None,
    allocs: 4,
    bytes_each: 3000,
};

/// The preamble's `leak_c(5000)`, which mallocs, called 6 times.
const LEAK_C: NativeLeak = NativeLeak {
    go_fn: "main.leakC",
    mark: "leak-c",
    caller: "main.leaks",
    c_fn: Some("leak_c"),
    allocs: 6,
    bytes_each: 5000,
};

/// `C.malloc(777)` 3 times, from a goroutine of its own.
const WORKER: NativeLeak = NativeLeak {
    go_fn: "main.leakCMallocWorker",
    mark: "worker-cmalloc",
    caller: "main.leakFromGoroutine.func1",
    c_fn: None,
    allocs: 3,
    bytes_each: 777,
};

const LEAKS: [&NativeLeak; 4] = [&CSTRING, &CMALLOC, &LEAK_C, &WORKER];

/// The Go function converting and freeing 1000 strings.
const CHURN_FN: &str = "main.churnCString";
const CHURN_ROUNDS: u64 = 1000;

/// What the Go heap holds at the end.
const GO_HEAP_BYTES: u64 = 64 << 20;
/// The native memory outstanding must stay far below it: the leaks are 45 kB.
const NATIVE_CEILING: u64 = 4 << 20;

/// Functions of the Go runtime's own memory management: in a native site's stack they would
/// mean Go heap (or stack) memory counted as a native leak. `x_cgo_mmap`/`_cgo_mmap` are the C
/// side of the runtime's mmap in a cgo program.
const GO_MEMORY_FUNCTIONS: &[&str] = &[
    "runtime.sysMap",
    "runtime.sysAlloc",
    "runtime.sysReserve",
    "runtime.sysUsed",
    "runtime.sysHugePage",
    "runtime.(*mheap)",
    "runtime.(*mcache)",
    "runtime.(*mcentral)",
    "runtime.(*pageAlloc)",
    "runtime.(*linearAlloc)",
    "runtime.persistentalloc",
    "runtime.mallocgc",
    "runtime.newobject",
    "runtime.makeslice",
    "runtime.growslice",
    "runtime.stackalloc",
    "runtime.mmap",
    "x_cgo_mmap",
    "_cgo_mmap",
];

/// The target's stdout up to `done`, the same on every run.
const EXPECTED_OUTPUT: &[&str] = &[
    "ready",
    "cstring: 10 x 100 bytes kept (strlen 99)",
    "cmalloc: 4 x 3000 bytes kept",
    "leak_c: 6 x 5000 bytes kept",
    "worker: 3 x 777 bytes kept",
    "churn: 1000 strings freed, 7890 bytes",
    "go heap: 64 MiB kept",
    "done",
];

/// After `done`: two interval samples.
const SETTLE: Duration = Duration::from_millis(2500);

static LEAKS_RUN: PerGoBuild<GoTraced> = PerGoBuild::new();

fn leaks_run(b: GoBuild) -> &'static GoTraced {
    LEAKS_RUN.get(b, || {
        let t = go_trace(&go_build(TARGET, b), &[], SETTLE);
        assert_eq!(
            t.target_lines, EXPECTED_OUTPUT,
            "the target's output under tracing"
        );
        t
    })
}

per_go_build!(
    cstring_leak,
    cmalloc_leak,
    c_code_leak,
    goroutine_leak_has_its_own_stack,
    cstring_free_churn_not_reported,
    go_heap_is_not_a_native_leak,
    go_report_metadata,
    complete_run_same_output,
);

/// A Go function name (`main.x`, `runtime.x`, `runtime/cgo.x`), not a C one.
fn is_go_function(name: &str) -> bool {
    name.starts_with("main.") || name.starts_with("runtime")
}

/// Index of the first Go frame of SITE; panics when there is none.
fn first_go_frame(site: &Site, ctx: &str) -> usize {
    site.frames
        .iter()
        .position(|f| f.function.as_deref().is_some_and(is_go_function))
        .unwrap_or_else(|| panic!("no Go frame in {}\n{ctx}", site.describe()))
}

/// The one site of LEAK: malloc, exact counts (all of it leaked), frames[0] malloc, then C
/// frames only, then Go frames only, among which LEAK's function at its marked line of main.go
/// and its caller.
fn check_leak(b: GoBuild, leak: &NativeLeak) -> Site {
    let r = &leaks_run(b).report;
    let ctx = r.describe();
    let site = r.site_with(leak.go_fn);
    assert_eq!(site.allocator, "malloc", "{}: allocator\n{ctx}", leak.go_fn);
    assert_eq!(
        (site.outstanding_allocs, site.outstanding_bytes),
        (leak.allocs, leak.allocs * leak.bytes_each),
        "{}: outstanding allocs, bytes\n{ctx}",
        leak.go_fn
    );
    assert_eq!(
        (site.total_allocs, site.total_bytes),
        (leak.allocs, leak.allocs * leak.bytes_each),
        "{}: total allocs, bytes (all of it leaked)\n{ctx}",
        leak.go_fn
    );
    assert_eq!(
        site.frames[0].function.as_deref(),
        Some("malloc"),
        "frames[0] must be malloc: {}\n{ctx}",
        site.describe()
    );
    // C first, then Go: no Go frame before the first, no C frame (nor an unknown one) after.
    let first_go = first_go_frame(site, &ctx);
    for f in &site.frames[first_go..] {
        assert!(
            f.function.as_deref().is_some_and(is_go_function),
            "a frame after the first Go frame is not Go: {}\n{ctx}",
            site.describe()
        );
    }
    if let Some(c_fn) = leak.c_fn {
        // malloc is not leak_c's tail call: leak_c is a frame of its own, named or not.
        assert!(
            first_go >= 2,
            "want malloc and {c_fn} before the Go frames: {}\n{ctx}",
            site.describe()
        );
        if b.variant == GoVariant::Plain {
            let at = site
                .position(c_fn)
                .unwrap_or_else(|| panic!("no frame `{c_fn}` in {}\n{ctx}", site.describe()));
            assert!(
                (1..first_go).contains(&at),
                "`{c_fn}` must be among the C frames, after malloc: {}\n{ctx}",
                site.describe()
            );
        }
    }
    let at = site.position(leak.go_fn).unwrap();
    assert!(at >= first_go, "{ctx}");
    let f = &site.frames[at];
    assert!(
        f.file
            .as_deref()
            .is_some_and(|p| p == FILE || p.ends_with(&format!("/{FILE}"))),
        "{}: file {:?}\n{ctx}",
        leak.go_fn,
        f.file
    );
    assert_eq!(
        f.line,
        Some(u64::from(go_marked_line(TARGET, leak.mark))),
        "{}: line of the leaking call\n{ctx}",
        leak.go_fn
    );
    site.assert_chain(&["malloc", leak.go_fn, leak.caller]);
    site.clone()
}

/// C.CString: 10 x 100 bytes under main.leakCString.
fn cstring_leak(b: GoBuild) {
    let site = check_leak(b, &CSTRING);
    site.assert_chain(&["malloc", CSTRING.go_fn, "main.leaks", "main.main"]);
}

/// C.malloc: 4 x 3000 bytes under main.leakCMalloc, a site of its own (not C.CString's).
fn cmalloc_leak(b: GoBuild) {
    let site = check_leak(b, &CMALLOC);
    site.assert_chain(&["malloc", CMALLOC.go_fn, "main.leaks", "main.main"]);
    assert!(!site.has_function(CSTRING.go_fn), "{}", site.describe());
}

/// C code that mallocs: malloc, then leak_c (plain builds name it), then main.leakC.
fn c_code_leak(b: GoBuild) {
    let site = check_leak(b, &LEAK_C);
    site.assert_chain(&["malloc", LEAK_C.go_fn, "main.leaks", "main.main"]);
}

/// A leak from another goroutine has that goroutine's Go stack: its closure, not main.
fn goroutine_leak_has_its_own_stack(b: GoBuild) {
    let site = check_leak(b, &WORKER);
    assert!(
        !site.has_function("main.main") && !site.has_function("main.leaks"),
        "the worker goroutine's leak has main's stack: {}\n{}",
        site.describe(),
        leaks_run(b).report.describe()
    );
}

/// 1000 C.CString + C.free: seen (as many allocations and frees), never in a site.
fn cstring_free_churn_not_reported(b: GoBuild) {
    let r = &leaks_run(b).report;
    let ctx = r.describe();
    assert!(
        r.sites_with(CHURN_FN).is_empty(),
        "freed C strings are reported\n{ctx}"
    );
    let leaked: u64 = LEAKS.iter().map(|l| l.allocs).sum();
    assert!(
        r.totals.allocs_seen >= CHURN_ROUNDS + leaked,
        "allocs_seen {}: the churn's {CHURN_ROUNDS} allocations were not seen\n{ctx}",
        r.totals.allocs_seen
    );
    assert!(
        r.totals.frees_seen >= CHURN_ROUNDS,
        "frees_seen {}: the churn's {CHURN_ROUNDS} frees were not seen\n{ctx}",
        r.totals.frees_seen
    );
}

/// The 64 MiB kept in Go slices are the Go heap: no site has a frame of the runtime's memory
/// management, and the native total stays far below them (the process's RSS holds them).
fn go_heap_is_not_a_native_leak(b: GoBuild) {
    let r = &leaks_run(b).report;
    let ctx = r.describe();
    for s in &r.sites {
        for f in &s.frames {
            let name = f.function();
            assert!(
                !GO_MEMORY_FUNCTIONS.iter().any(|g| name.starts_with(g)),
                "Go runtime memory reported as a native site (`{name}`): {}\n{ctx}",
                s.describe()
            );
        }
    }
    let leaked: u64 = LEAKS.iter().map(|l| l.allocs * l.bytes_each).sum();
    assert!(
        (leaked..NATIVE_CEILING).contains(&r.totals.outstanding_bytes),
        "totals.outstanding_bytes {}: want the {leaked} bytes of the leaks, far below the Go \
         heap's {GO_HEAP_BYTES}\n{ctx}",
        r.totals.outstanding_bytes
    );
    let (site_bytes, _) = r.site_sums();
    assert!(site_bytes < NATIVE_CEILING, "{ctx}");
    if let Some(rss) = r.memory.as_ref().and_then(|m| m.rss_bytes) {
        assert!(
            rss >= GO_HEAP_BYTES,
            "rss_bytes {rss}: the target touched {GO_HEAP_BYTES} bytes of Go heap\n{ctx}"
        );
    }
}

/// A Go program (with cgo): language `go`, a goroutines section.
fn go_report_metadata(b: GoBuild) {
    let r = &leaks_run(b).report;
    assert_eq!(r.target.language, "go", "{}", r.describe());
    assert!(r.goroutines().live >= 1, "{}", r.describe());
    assert_eq!(r.totals.dropped, 0, "{}", r.describe());
}

/// The `complete` mode (64 goroutines making 128000 cgo calls, C code that mallocs and frees,
/// C.CString/C.free, stacks that grow between calls) runs to completion under tracing with the
/// same output as without; leaktrace ends when it exits.
fn complete_run_same_output(b: GoBuild) {
    // ready, the checksum, done.
    assert_same_output_traced(&go_build(TARGET, b), 3);
}

//! Allocations and frees on different threads (targets/threads.c): blocks freed by another
//! thread than the one that made them, concurrent producers/consumers and workers, and glibc's
//! per-thread arenas (mmapped by malloc itself, never counted).

use leaktrace_tests::*;

static THREADS_O0: SharedTrace = SharedTrace::new();
static THREADS_O2: SharedTrace = SharedTrace::new();
static THREADS_STATIC: SharedTrace = SharedTrace::new();

fn threads(v: Variant) -> &'static Traced {
    let cell = match v {
        Variant::O0 => &THREADS_O0,
        Variant::O2NoFramePointer => &THREADS_O2,
        Variant::Static => &THREADS_STATIC,
    };
    shared(cell, || trace_report("threads", v, &["--top", "100"]))
}

per_variant!(
    freed_by_another_thread,
    producer_consumer_concurrent,
    concurrent_workers_one_site,
    main_frees_worker_blocks,
    no_arena_or_nested_allocations,
);

/// Exact counts for the site of FUNC, a malloc site whose stack leads to the thread function.
fn check(v: Variant, func: &str, thread_fn: &str, allocs: u64, total: u64, bytes_each: u64) {
    let t = threads(v);
    let r = &t.report;
    let ctx = r.describe();
    let site = r.site_with(func);
    assert_eq!(site.allocator, "malloc", "{ctx}");
    assert_eq!(
        site.outstanding_allocs, allocs,
        "{func}: outstanding_allocs\n{ctx}"
    );
    assert_eq!(
        site.outstanding_bytes,
        allocs * bytes_each,
        "{func}: outstanding_bytes\n{ctx}"
    );
    assert_eq!(site.total_allocs, total, "{func}: total_allocs\n{ctx}");
    assert_eq!(
        site.total_bytes,
        total * bytes_each,
        "{func}: total_bytes\n{ctx}"
    );
    assert_eq!(site.frames[1].function(), func, "{ctx}");
    let f = site.frame(func);
    assert!(
        f.file.as_deref().is_some_and(|p| p.ends_with("threads.c")),
        "{ctx}"
    );
    assert_eq!(
        f.line,
        Some(u64::from(marked_line("threads", func))),
        "{func}: line\n{ctx}"
    );
    site.assert_chain(&[func, thread_fn]);
}

/// Thread A allocates 100 x 128 bytes and ends; thread B frees the 50 with an even index.
fn freed_by_another_thread(v: Variant) {
    check(v, "thread_alloc_blocks", "thread_a_main", 50, 100, 128);
}

/// Producer and consumer run at once; the consumer frees every other one of 200 x 96 bytes.
fn producer_consumer_concurrent(v: Variant) {
    check(v, "producer_alloc", "producer_main", 100, 200, 96);
}

/// Four threads allocate 250 x 32 bytes each at the same time and free 50 of their own: one
/// stack, so one site with 4 x 200 outstanding.
fn concurrent_workers_one_site(v: Variant) {
    check(v, "worker_alloc", "worker_main", 800, 1000, 32);
}

/// A worker allocates 40 blocks, the main thread frees them all: nothing outstanding.
fn main_frees_worker_blocks(v: Variant) {
    let t = threads(v);
    assert!(
        t.report.sites_with("foreign_alloc").is_empty(),
        "blocks freed by the main thread are reported\n{}",
        t.report.describe()
    );
    assert_eq!(t.report.totals.dropped, 0, "{}", t.report.describe());
}

/// New threads make glibc create arenas (mmap inside malloc): never counted. No site may have an
/// allocator entry point among its callers, and the thread functions appear in no mmap site.
fn no_arena_or_nested_allocations(v: Variant) {
    let t = threads(v);
    let r = &t.report;
    r.assert_no_nested_allocator_sites();
    for s in &r.sites {
        if s.allocator == "mmap" {
            for f in [
                "thread_alloc_blocks",
                "producer_alloc",
                "worker_alloc",
                "foreign_alloc",
            ] {
                assert!(
                    !s.has_function(f),
                    "an mmap site under {f}: {}\n{}",
                    s.describe(),
                    r.describe()
                );
            }
        }
    }
}

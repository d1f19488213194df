//! Stacks: complete caller chains with file:line in every build (frame pointers, `-O2
//! -fomit-frame-pointer` where only the CFI tells the way, and a static executable), inlined
//! frames, and a stack deeper than any tracer keeps.

use leaktrace_tests::*;

static NATIVE_O0: SharedTrace = SharedTrace::new();
static NATIVE_O2: SharedTrace = SharedTrace::new();
static NATIVE_STATIC: SharedTrace = SharedTrace::new();

fn native(v: Variant) -> &'static Traced {
    let cell = match v {
        Variant::O0 => &NATIVE_O0,
        Variant::O2NoFramePointer => &NATIVE_O2,
        Variant::Static => &NATIVE_STATIC,
    };
    shared(cell, || trace_report("native", v, &["--top", "100"]))
}

per_variant!(
    malloc_chain_with_lines,
    every_leak_reaches_main,
    modules_are_named,
    inlined_frame,
);

/// (malloc) <- leak_malloc <- run_leaks <- main, adjacent, each with native.c and the line of the
/// call it is in. How frames[0] is named is checked in native_allocators.rs.
fn malloc_chain_with_lines(v: Variant) {
    let t = native(v);
    let r = &t.report;
    let ctx = r.describe();
    let site = r.site_with("leak_malloc");
    let names = site.function_names();
    assert!(
        names.len() >= 4 && names[1..4] == ["leak_malloc", "run_leaks", "main"],
        "want (malloc) <- leak_malloc <- run_leaks <- main at the top of the stack\n{}",
        site.describe()
    );
    for (i, func) in ["leak_malloc", "run_leaks", "main"].iter().enumerate() {
        let f = &site.frames[i + 1];
        assert!(
            f.file.as_deref().is_some_and(|p| p.ends_with("native.c")),
            "{func}: file {:?}\n{ctx}",
            f.file
        );
        assert_eq!(
            f.line,
            Some(u64::from(marked_line("native", func))),
            "{func}: line of the call\n{}",
            site.describe()
        );
        assert!(!f.inlined, "{func} is not inlined\n{}", site.describe());
    }
}

/// Every leak function's stack goes through run_leaks up to main, whatever allocator it entered.
fn every_leak_reaches_main(v: Variant) {
    let t = native(v);
    for (leak_fn, ..) in NATIVE_LEAKS {
        let site = t.report.site_with(leak_fn);
        site.assert_chain(&[leak_fn, "run_leaks", "main"]);
        assert!(
            !site.truncated,
            "a 5-deep stack is not truncated: {}",
            site.describe()
        );
    }
}

/// frames[0] is in libc (or in the executable when static); the program's frames in the
/// executable.
fn modules_are_named(v: Variant) {
    let t = native(v);
    let exe = t.exe_name();
    let site = t.report.site_with("leak_malloc");
    let m0 = site.frames[0].module.as_deref().unwrap_or("");
    match v {
        Variant::Static => assert!(
            m0.ends_with(&exe),
            "malloc's module {m0:?}, want the executable"
        ),
        _ => assert!(m0.contains("libc.so"), "malloc's module {m0:?}, want libc"),
    }
    for func in ["leak_malloc", "run_leaks", "main"] {
        let m = site.frame(func).module.as_deref().unwrap_or("");
        assert!(m.ends_with(&exe), "{func}'s module {m:?}, want {exe}");
    }
}

/// An always-inlined helper that calls malloc: its own frame, marked inlined, at the same address
/// as the frame of the function it was inlined into, each with its own line.
fn inlined_frame(v: Variant) {
    let t = native(v);
    let site = t.report.site_with("leak_inlined");
    let d = site.describe();
    assert_eq!(
        (site.outstanding_bytes, site.outstanding_allocs),
        (777, 1),
        "{d}"
    );
    let names = site.function_names();
    assert!(
        names.len() >= 5
            && names[1..5] == ["leak_inline_helper", "leak_inlined", "run_leaks", "main"],
        "want malloc <- leak_inline_helper (inlined) <- leak_inlined <- run_leaks <- main: {d}"
    );
    let helper = &site.frames[1];
    let outer = &site.frames[2];
    assert!(
        helper.inlined,
        "leak_inline_helper must be marked inlined: {d}"
    );
    assert!(!outer.inlined, "leak_inlined is a real frame: {d}");
    assert_eq!(
        helper.address, outer.address,
        "an inlined frame shares its caller's address: {d}"
    );
    assert_eq!(
        helper.line,
        Some(u64::from(marked_line("native", "leak_inline_helper"))),
        "{d}"
    );
    assert_eq!(
        outer.line,
        Some(u64::from(marked_line("native", "leak_inlined"))),
        "{d}"
    );
}

/// A leak under 300 recursive calls: either the whole stack up to main, or a cut stack marked
/// truncated; and a useful part of it either way.
#[test]
fn deep_stack_is_kept_or_marked_truncated() {
    let t = trace_report("deep", Variant::O0, &["--top", "100"]);
    let r = &t.report;
    let site = r.site_with("leak_deep");
    let d = site.describe();
    assert_eq!(
        (site.outstanding_bytes, site.outstanding_allocs),
        (4321, 1),
        "{d}"
    );
    assert_eq!(
        site.function_names().get(1).copied(),
        Some("leak_deep"),
        "{d}"
    );
    assert_eq!(
        site.frames[1].line,
        Some(u64::from(marked_line("deep", "leak_deep"))),
        "{d}"
    );
    let recursions = site
        .function_names()
        .iter()
        .filter(|f| **f == "recurse")
        .count();
    assert!(
        recursions >= 20,
        "only {recursions} recurse frames kept: {d}"
    );
    if site.truncated {
        assert!(
            recursions < 301,
            "truncated, yet all 301 recurse frames are there: {d}"
        );
    } else {
        assert!(
            site.has_function("main"),
            "not truncated, so the stack must reach main: {d}"
        );
        assert_eq!(
            recursions, 301,
            "not truncated, so every recurse frame is there: {d}"
        );
    }
    if !site.has_function("main") {
        assert!(
            site.truncated,
            "the stack stops short of main but is not marked truncated: {d}"
        );
    }
}

/// Thread stacks: through the thread function on into libc (start_thread), also without frame
/// pointers.
#[test]
fn thread_stack_reaches_libc_thread_start() {
    let t = trace_report("threads", Variant::O2NoFramePointer, &["--top", "100"]);
    let site = t.report.site_with("worker_alloc");
    let d = site.describe();
    site.assert_chain(&["worker_alloc", "worker_main"]);
    let after = site.position("worker_main").unwrap() + 1;
    let next = site
        .frames
        .get(after)
        .unwrap_or_else(|| panic!("nothing after worker_main: {d}"));
    assert!(
        next.module
            .as_deref()
            .is_some_and(|m| m.contains("libc.so")),
        "worker_main's caller must be libc's thread start: {d}"
    );
}

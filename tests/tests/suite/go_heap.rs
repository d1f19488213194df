//! The Go runtime's own heap profile read from a live process (targets/go/goheap/main.go),
//! built with the recent Go and Go 1.19, plain and stripped: the report's `go_heap` equals,
//! site by site, the heap profile the target wrote itself with `pprof.WriteHeapProfile` at
//! the same GC cycle (the target collects no more after it); a site that keeps growing is
//! `growing`; `--format pprof` writes a Go heap profile `go tool pprof` opens; a runtime that
//! keeps no profile says so.
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use leaktrace_tests::*;
use prost::Message as _;

use super::outputs::proto;

const TARGET: &str = "goheap";

/// `retainBig`'s one 3 MiB array: sampled for sure, counted 1 / (1 - exp(-6)) times at the
/// default rate (3145728 / 524288 = 6), as `runtime/pprof` scales it.
const BIG_INUSE_BYTES: i64 = 3_153_544;

/// A site as both profiles give it: `(function, line)` innermost first, then
/// `(inuse_objects, inuse_bytes, alloc_objects, alloc_bytes)`.
type SiteFigures = (Vec<(String, u64)>, [i64; 4]);

fn decode(path: &Path) -> proto::Profile {
    let gz = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut raw)
        .expect("the profile is gzipped");
    proto::Profile::decode(raw.as_slice()).expect("the profile decodes as profile.proto")
}

/// The sites holding memory of a heap profile as `runtime/pprof` or leaktrace writes it.
fn profile_sites(profile: &proto::Profile) -> Vec<SiteFigures> {
    let s = |i: i64| profile.string_table[i as usize].as_str();
    let types: Vec<&str> = profile.sample_type.iter().map(|t| s(t.r#type)).collect();
    let at = |name: &str| {
        types
            .iter()
            .position(|t| *t == name)
            .unwrap_or_else(|| panic!("no {name} in {types:?}"))
    };
    let (io, ib, ao, ab) = (
        at("inuse_objects"),
        at("inuse_space"),
        at("alloc_objects"),
        at("alloc_space"),
    );
    let mut sites: Vec<SiteFigures> = profile
        .sample
        .iter()
        .filter(|sample| sample.value[ib] > 0)
        .map(|sample| {
            let frames = sample
                .location_id
                .iter()
                .flat_map(|&id| {
                    let location = profile
                        .location
                        .iter()
                        .find(|l| l.id == id)
                        .expect("location");
                    location.line.iter().map(|line| {
                        let function = profile
                            .function
                            .iter()
                            .find(|f| f.id == line.function_id)
                            .expect("function");
                        (s(function.name).to_owned(), line.line as u64)
                    })
                })
                .collect();
            let v = &sample.value;
            (frames, [v[io], v[ib], v[ao], v[ab]])
        })
        .collect();
    sites.sort();
    sites
}

fn report_sites(heap: &GoHeap) -> Vec<SiteFigures> {
    let mut sites: Vec<SiteFigures> = heap
        .sites
        .iter()
        .filter(|site| site.inuse_bytes > 0)
        .map(|site| {
            let frames = site
                .frames
                .iter()
                .map(|f| (f.function().to_owned(), f.line.unwrap_or(0)))
                .collect();
            let figures = [
                site.inuse_objects,
                site.inuse_bytes,
                site.alloc_objects,
                site.alloc_bytes,
            ];
            (frames, figures)
        })
        .collect();
    sites.sort();
    sites
}

/// Every site in use in the target's own profile is in the report with the same stack and
/// the same four figures, and nothing else is; the three retaining functions are there at
/// their lines.
fn equals_the_programs_own_profile(b: GoBuild) {
    let dir = TempDir::new("goheap-own");
    let own = dir.join("own.pb.gz");
    let own_arg = own.to_string_lossy().into_owned();
    let traced = go_trace(
        &go_build(TARGET, b),
        &["profile", &own_arg],
        Duration::from_millis(1500),
    );
    let heap = traced
        .report
        .go_heap
        .as_ref()
        .unwrap_or_else(|| panic!("no go_heap in the report:\n{}", traced.stderr));
    assert_eq!(heap.source, "runtime memory profile");
    assert_eq!(heap.unavailable, None);
    assert_eq!(heap.sample_rate_bytes, 512 * 1024);
    let own_profile = decode(&own);
    assert_eq!(own_profile.period, heap.sample_rate_bytes);
    let want = profile_sites(&own_profile);
    let got = report_sites(heap);
    assert_eq!(
        got,
        want,
        "{}: go_heap sites vs the program's own profile",
        b.label()
    );
    for (function, mark) in [
        ("main.retainBlobs", "goheap-blob"),
        ("main.retainRecords", "goheap-record"),
        ("main.retainBig", "goheap-big"),
    ] {
        let line = u64::from(go_marked_line(TARGET, mark));
        let site = heap
            .sites
            .iter()
            .find(|s| s.frames.first().map(Frame::function) == Some(function))
            .unwrap_or_else(|| panic!("no {function} site in {:?}", heap.sites));
        assert_eq!(site.frames[0].line, Some(line), "{function}");
        assert_eq!(site.functions()[1], "main.retain", "{function}");
    }
    let big = heap
        .sites
        .iter()
        .find(|s| s.frames.first().map(Frame::function) == Some("main.retainBig"))
        .expect("the big array's site");
    assert_eq!((big.inuse_objects, big.inuse_bytes), (1, BIG_INUSE_BYTES));
    let sum: i64 = heap.sites.iter().map(|s| s.inuse_bytes).sum();
    assert_eq!(heap.inuse_bytes, sum);
}

/// A 512 KiB blob every 100 ms from `done` on (each sampled with probability 1 - 1/e): its
/// site grows at every reading; the memory retained once before stays put.
fn growing_site_is_growing(b: GoBuild) {
    let traced = go_trace(&go_build(TARGET, b), &["grow"], Duration::from_millis(4500));
    let heap = traced.report.go_heap.as_ref().expect("go_heap");
    let verdict = |function: &str| {
        heap.sites
            .iter()
            .find(|s| s.frames.first().map(Frame::function) == Some(function))
            .and_then(|s| s.verdict.clone())
            .unwrap_or_else(|| panic!("no {function} site with a verdict in {:?}", heap.sites))
    };
    assert_eq!(verdict("main.growLeak"), "growing");
    assert_eq!(verdict("main.retainBig"), "steady");
}

/// `MemProfileRate = 0`: the report says the runtime keeps no heap profile.
fn no_profile_is_said(b: GoBuild) {
    let traced = go_trace(&go_build(TARGET, b), &["off"], Duration::from_millis(1500));
    let heap = traced.report.go_heap.as_ref().expect("go_heap");
    assert!(heap.sites.is_empty());
    let reason = heap.unavailable.as_deref().unwrap_or_default();
    assert!(
        reason.contains("keeps no heap profile"),
        "{reason:?}\n{}",
        traced.stderr
    );
}

/// `--format pprof` writes `leaks.goheap.pb.gz`; `go tool pprof -top` reads it as a heap
/// profile and finds the big array.
fn goheap_profile_opens_in_pprof(toolchain: GoToolchain) {
    let b = GoBuild::new(toolchain, GoVariant::Stripped);
    let dir = TempDir::new("goheap-pprof");
    let out = dir.join("leaks.pb.gz");
    let out_arg = out.to_string_lossy().into_owned();
    let own = dir.join("own.pb.gz");
    let own_arg = own.to_string_lossy().into_owned();
    let run = go_trace_with(
        &go_build(TARGET, b),
        &["profile", &own_arg],
        Duration::from_millis(1500),
        &[
            "--format",
            "pprof",
            "--output",
            &out_arg,
            "--interval",
            "1s",
        ],
    );
    assert!(
        run.finished.stderr.contains("Go heap profile written to"),
        "{}",
        run.finished.stderr
    );
    let written = dir.join("leaks.goheap.pb.gz");
    assert_eq!(
        profile_sites(&decode(&written)),
        profile_sites(&decode(&own))
    );
    let text = GoToolchain::Recent.pprof(&["-top", "-sample_index=inuse_space"], &written);
    assert!(text.contains("Type: inuse_space"), "{text}");
    assert!(text.contains("main.retainBig"), "{text}");
}

/// `--format folded`: the Go heap under a `[go heap]` root, root first, in-use bytes.
fn folded_has_a_go_heap_root(toolchain: GoToolchain) {
    let b = GoBuild::new(toolchain, GoVariant::Plain);
    let dir = TempDir::new("goheap-folded");
    let own = dir.join("own.pb.gz");
    let own_arg = own.to_string_lossy().into_owned();
    let run = go_trace_with(
        &go_build(TARGET, b),
        &["profile", &own_arg],
        Duration::from_millis(1500),
        &["--format", "folded", "--interval", "1s"],
    );
    let want =
        format!("[go heap];runtime.main;main.main;main.retain;main.retainBig {BIG_INUSE_BYTES}");
    assert!(
        run.finished.stdout.lines().any(|line| line == want),
        "no {want:?} in\n{}",
        run.finished.stdout
    );
}

per_go_build!(
    equals_the_programs_own_profile,
    growing_site_is_growing,
    no_profile_is_said
);

per_go_toolchain!(goheap_profile_opens_in_pprof, folded_has_a_go_heap_root);

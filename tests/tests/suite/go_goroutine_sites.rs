//! Native memory charged to the creation site of the goroutine that allocated it
//! (targets/go/goroutine_sites/main.go): one C function called by one Go function from
//! goroutines started at two `go` statements is one site, whose bytes `goroutine_sites` splits
//! by statement, exactly, also for the goroutines started before leaktrace attached; built
//! with the recent Go and Go 1.19, plain and stripped. The text report and the pprof label
//! `goroutine_created_by` show the same split (one build).

use std::{collections::BTreeMap, time::Duration};

use leaktrace_tests::*;

use crate::outputs::{decode_profile, string};

const TARGET: &str = "goroutine_sites";
/// The Go function calling the C code, in every leaking goroutine's stack.
const WORK_FN: &str = "main.work";
const BLOCK: u64 = 1000;

/// A `go work()` statement and what its goroutines leak.
struct Creation {
    function: &'static str,
    mark: &'static str,
    allocs: u64,
}

/// 3 goroutines x 100 blocks (started before attaching), then 1 goroutine x 50 blocks; largest
/// first, as reported.
const CREATIONS: [Creation; 2] = [
    Creation {
        function: "main.startA",
        mark: "go-a",
        allocs: 300,
    },
    Creation {
        function: "main.startB",
        mark: "go-b",
        allocs: 50,
    },
];

const EXPECTED_OUTPUT: &[&str] = &[
    "ready",
    "a: 3 goroutines x 100 x 1000 bytes kept",
    "b: 1 goroutine x 50 x 1000 bytes kept",
    "done",
];

/// After `done`: two interval samples.
const SETTLE: Duration = Duration::from_millis(2500);

static RUN: PerGoBuild<GoTraced> = PerGoBuild::new();

fn run(b: GoBuild) -> &'static GoTraced {
    RUN.get(b, || {
        let t = go_trace(&go_build(TARGET, b), &[], SETTLE);
        assert_eq!(t.target_lines, EXPECTED_OUTPUT, "the target's output");
        t
    })
}

per_go_build!(one_site_split_by_go_statement);

/// The leak is one site of 350 blocks; its goroutine_sites are main.startA at its `go` line
/// with 300 of them and main.startB with 50, nothing else.
fn one_site_split_by_go_statement(b: GoBuild) {
    let r = &run(b).report;
    let ctx = r.describe();
    let site = r.site_with(WORK_FN);
    let allocs: u64 = CREATIONS.iter().map(|c| c.allocs).sum();
    assert_eq!(
        (site.outstanding_allocs, site.outstanding_bytes),
        (allocs, allocs * BLOCK),
        "the leak's site\n{ctx}"
    );
    let got: Vec<_> = site
        .goroutine_sites
        .iter()
        .map(|g| {
            assert!(g.created_by.file_is("main.go"), "{:?}\n{ctx}", g.created_by);
            (
                g.created_by.function.clone(),
                g.created_by.line,
                g.outstanding_allocs,
                g.outstanding_bytes,
            )
        })
        .collect();
    let want: Vec<_> = CREATIONS
        .iter()
        .map(|c| {
            (
                Some(c.function.to_owned()),
                Some(u64::from(go_marked_line(TARGET, c.mark))),
                c.allocs,
                c.allocs * BLOCK,
            )
        })
        .collect();
    assert_eq!(got, want, "goroutine_sites of {}\n{ctx}", site.describe());
}

fn recent_plain_run(leaktrace: &[&str]) -> GoRun {
    let exe = go_build(TARGET, GoBuild::plain(GoToolchain::Recent));
    let run = go_trace_with(&exe, &[], SETTLE, leaktrace);
    assert_eq!(run.target_lines, EXPECTED_OUTPUT, "the target's output");
    run
}

/// The text report lists the split under the site, one line per `go` statement.
#[test]
fn text_report_names_each_creation_site() {
    let run = recent_plain_run(&["--format", "text", "--interval", "1s", "--min-age", "0s"]);
    let text = &run.finished.stdout;
    let final_report = text
        .rsplit_once("final report")
        .map_or(text.as_str(), |(_, last)| last);
    for (creation, size) in CREATIONS.iter().zip(["293.0 KiB", "48.8 KiB"]) {
        let line = format!(
            "by goroutines created at {} (main.go:{}): {size}",
            creation.function,
            go_marked_line(TARGET, creation.mark)
        );
        let found = final_report.lines().filter(|l| l.trim() == line).count();
        assert_eq!(found, 1, "want one line `{line}` in:\n{final_report}");
    }
}

/// The pprof profile has one sample per creation site, labelled `goroutine_created_by`, with
/// that site's bytes and allocations.
#[test]
fn pprof_labels_goroutine_created_by() {
    let dir = TempDir::new("gorsite-pprof");
    let out = dir.path().join("leaks.pb.gz");
    let out_arg = out.to_str().expect("a UTF-8 path");
    recent_plain_run(&["--format", "pprof", "--output", out_arg, "--min-age", "0s"]);
    let profile = decode_profile(&out);
    let mut by_label: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for sample in &profile.sample {
        let labels: BTreeMap<&str, &str> = sample
            .label
            .iter()
            .map(|l| (string(&profile, l.key), string(&profile, l.str)))
            .collect();
        if let Some(created_by) = labels.get("goroutine_created_by") {
            by_label.insert((*created_by).to_owned(), sample.value.clone());
        }
    }
    let want: BTreeMap<String, Vec<i64>> = CREATIONS
        .iter()
        .map(|c| {
            let line = go_marked_line(TARGET, c.mark);
            let allocs = c.allocs as i64;
            (
                format!("{} main.go:{line}", c.function),
                vec![allocs * BLOCK as i64, allocs],
            )
        })
        .collect();
    assert_eq!(by_label, want, "samples by goroutine_created_by");
}

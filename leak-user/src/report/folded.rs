//! `--format folded`: one line per stack, `outer;...;inner bytes`, root (outermost frame)
//! first, as `flamegraph.pl` and inferno read them. Every call site holding allocations older
//! than `--min-age` is written (the report is built without the `--top` cut); stacks that fold
//! to the same function names are one line with their bytes added up. A Go target's runtime
//! heap profile comes beside them: its sites' in-use bytes under a `[go heap]` root, the
//! native stacks then under a `[native]` root.
use std::collections::BTreeMap;

use super::model::{Frame, Report};

pub fn render(report: &Report) -> String {
    stacks(report)
        .into_iter()
        .map(|(stack, bytes)| format!("{stack} {bytes}\n"))
        .collect()
}

/// Folded stacks and their outstanding bytes, sorted by stack.
pub fn stacks(report: &Report) -> Vec<(String, u64)> {
    let go_heap: Vec<(&[Frame], u64)> = report
        .go_heap
        .iter()
        .flat_map(|heap| &heap.sites)
        .filter(|s| s.inuse_bytes > 0)
        .map(|s| (s.frames.as_slice(), s.inuse_bytes as u64))
        .collect();
    let native_root = if go_heap.is_empty() { "" } else { "[native];" };
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    let native = report
        .sites
        .iter()
        .filter(|s| s.outstanding_bytes > 0)
        .map(|s| (s.frames.as_slice(), s.outstanding_bytes));
    for (root, frames, bytes) in native
        .map(|(frames, bytes)| (native_root, frames, bytes))
        .chain(go_heap.into_iter().map(|(f, b)| ("[go heap];", f, b)))
    {
        let stack = format!("{root}{}", fold(frames));
        let total = folded.entry(stack).or_default();
        *total = total.saturating_add(bytes);
    }
    folded.into_iter().collect()
}

/// Outermost frame first.
fn fold(frames: &[Frame]) -> String {
    if frames.is_empty() {
        return "[no stack]".to_owned();
    }
    frames
        .iter()
        .rev()
        .map(frame_name)
        .collect::<Vec<_>>()
        .join(";")
}

/// The function, else `[module]` or `[unknown]` as perf's folded stacks have it. The separators
/// of the format (`;` between frames, newlines) cannot appear inside a name, nor can other
/// control characters.
fn frame_name(frame: &Frame) -> String {
    let name = match (&frame.function, &frame.module) {
        (Some(function), _) => function.clone(),
        (None, Some(module)) => format!("[{}]", module.rsplit('/').next().unwrap_or(module)),
        (None, None) => "[unknown]".to_owned(),
    };
    let name = name.replace(';', ":").replace(['\n', '\r'], " ");
    // Other control characters (escape sequences) as in the text report.
    crate::escape::control_chars(&name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{GoHeap, GoHeapSite, Site, Verdict};

    fn frame(function: Option<&str>, module: Option<&str>) -> Frame {
        Frame {
            address: "0x1".into(),
            function: function.map(str::to_owned),
            file: None,
            line: None,
            module: module.map(str::to_owned),
            inlined: false,
        }
    }

    fn site(bytes: u64, frames: Vec<Frame>) -> Site {
        Site {
            outstanding_bytes: bytes,
            outstanding_allocs: 1,
            oldest_age_s: 1.0,
            growth_bytes_per_s: 0.0,
            verdict: Verdict::Young,
            allocator: "malloc".into(),
            frames,
            total_allocs: 1,
            total_bytes: bytes,
            ..Site::example()
        }
    }

    #[test]
    fn root_first_merged_and_sorted() {
        let libc = Some("/lib/libc.so.6");
        let report = crate::report::pprof::tests::report(vec![
            site(
                100,
                vec![
                    frame(Some("malloc"), libc),
                    frame(Some("leak"), None),
                    frame(Some("main"), None),
                ],
            ),
            site(
                5,
                vec![
                    frame(Some("malloc"), libc),
                    frame(Some("leak"), None),
                    frame(Some("main"), None),
                ],
            ),
            site(
                7,
                vec![
                    frame(Some("a;b"), libc),
                    frame(None, libc),
                    frame(None, None),
                ],
            ),
            site(9, vec![]),
            site(0, vec![frame(Some("zero"), None)]),
        ]);
        assert_eq!(
            render(&report),
            "[no stack] 9\n[unknown];[libc.so.6];a:b 7\nmain;leak;malloc 105\n"
        );
    }

    #[test]
    fn go_heap_beside_native_under_two_roots() {
        let mut report = crate::report::pprof::tests::report(vec![site(
            100,
            vec![frame(Some("malloc"), None), frame(Some("main"), None)],
        )]);
        let go_site = |bytes, function| GoHeapSite {
            inuse_bytes: bytes,
            inuse_objects: 1,
            alloc_bytes: bytes,
            alloc_objects: 1,
            frames: vec![frame(Some(function), None), frame(Some("main.main"), None)],
            object_size_bytes: 64,
            growth_bytes_per_s: 0.0,
            verdict: Verdict::Steady,
        };
        report.go_heap = Some(GoHeap {
            sites: vec![go_site(3000, "main.fill"), go_site(0, "main.gone")],
            ..GoHeap::default()
        });
        assert_eq!(
            render(&report),
            "[go heap];main.main;main.fill 3000\n[native];main;malloc 100\n"
        );
    }
}

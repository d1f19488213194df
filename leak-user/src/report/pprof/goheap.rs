//! The Go heap profile of a Go target as `runtime/pprof` writes one (`leaks.goheap.pb.gz`):
//! sample types `alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space` (the default),
//! period `space`/`bytes` of `MemProfileRate`, and each sample's object size as the numeric
//! label `bytes`. Labels also carry the site's verdict.
use std::collections::HashMap;

use super::{Builder, proto, seconds_to_nanos, verdict_name};
use crate::report::model::Report;

/// None unless the report has a Go heap profile.
pub fn profile(report: &Report) -> Option<proto::Profile> {
    let heap = report
        .go_heap
        .as_ref()
        .filter(|h| h.unavailable.is_none())?;
    let mut b = Builder::default();
    let sample_type = vec![
        b.value_type("alloc_objects", "count"),
        b.value_type("alloc_space", "bytes"),
        b.value_type("inuse_objects", "count"),
        b.value_type("inuse_space", "bytes"),
    ];
    let no_mappings = HashMap::new();
    let samples = heap
        .sites
        .iter()
        .map(|site| {
            let location_id = b.locations(&site.frames, &no_mappings);
            let size = proto::Label {
                key: b.strings.get("bytes"),
                num: i64::try_from(site.object_size_bytes).unwrap_or(i64::MAX),
                ..Default::default()
            };
            let verdict = proto::Label {
                key: b.strings.get("verdict"),
                str: b.strings.get(verdict_name(site.verdict)),
                ..Default::default()
            };
            proto::Sample {
                location_id,
                value: vec![
                    site.alloc_objects,
                    site.alloc_bytes,
                    site.inuse_objects,
                    site.inuse_bytes,
                ],
                label: vec![size, verdict],
            }
        })
        .collect();
    let comment = format!(
        "Go heap of pid {} ({}) as of GC cycle {}, read from the runtime's memory profile",
        report.target.pid, report.target.comm, heap.gc_cycle
    );
    let default_sample_type = sample_type[3].r#type;
    let profile = proto::Profile {
        sample_type,
        sample: samples,
        default_sample_type,
        period_type: Some(b.value_type("space", "bytes")),
        period: heap.sample_rate_bytes,
        duration_nanos: seconds_to_nanos(report.duration_s),
        ..Default::default()
    };
    Some(b.finish(profile, &[comment]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{Frame, GoHeap, GoHeapSite, Verdict};
    use crate::report::pprof::tests::report;

    fn frame(function: &str, line: u32, inlined: bool) -> Frame {
        Frame {
            address: "0x401000".into(),
            function: Some(function.into()),
            file: Some("/src/main.go".into()),
            line: Some(line),
            module: None,
            inlined,
        }
    }

    #[test]
    fn heap_profile_has_go_sample_types_and_inlined_lines() {
        let mut r = report(vec![]);
        assert!(profile(&r).is_none(), "no Go heap, no profile");
        r.go_heap = Some(GoHeap {
            source: "runtime memory profile",
            sample_rate_bytes: 524288,
            sites: vec![GoHeapSite {
                inuse_bytes: 3153544,
                inuse_objects: 1,
                alloc_bytes: 3153544,
                alloc_objects: 1,
                frames: vec![frame("main.fill", 9, true), frame("main.main", 20, false)],
                object_size_bytes: 3145728,
                growth_bytes_per_s: 0.0,
                verdict: Verdict::Steady,
            }],
            ..GoHeap::default()
        });
        let p = profile(&r).expect("a Go heap profile");
        let s = |i: i64| p.string_table[i as usize].as_str();
        let types: Vec<&str> = p.sample_type.iter().map(|t| s(t.r#type)).collect();
        assert_eq!(
            types,
            [
                "alloc_objects",
                "alloc_space",
                "inuse_objects",
                "inuse_space"
            ]
        );
        assert_eq!(s(p.default_sample_type), "inuse_space");
        assert_eq!(p.period, 524288);
        assert_eq!(p.sample[0].value, [1, 3153544, 1, 3153544]);
        // The inlined frame and its caller are one location with two lines.
        assert_eq!(p.sample[0].location_id.len(), 1);
        assert_eq!(p.location[0].line.len(), 2);
        assert_eq!(
            (s(p.sample[0].label[0].key), p.sample[0].label[0].num),
            ("bytes", 3145728)
        );
        r.go_heap = Some(crate::report::go_heap::unavailable("none".into()));
        assert!(profile(&r).is_none());
    }
}

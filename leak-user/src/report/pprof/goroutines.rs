//! The second profile of a Go target: live goroutines by creation site (sample type
//! `goroutine`/`count`, as Go's own goroutine profile), each site's stack being where most of
//! them block, the function they started in, and the `go` statement that created them.
//! Labels carry the verdict and the states.
use std::collections::HashMap;

use super::{Builder, proto, seconds_to_nanos, verdict_name};
use crate::report::model::{CodeLocation, Frame, GoroutineSite, Report};

/// None for targets without goroutine tracing.
pub fn profile(report: &Report) -> Option<proto::Profile> {
    let goroutines = report.goroutines.as_ref()?;
    let mut b = Builder::default();
    let count = b.value_type("goroutine", "count");
    let no_mappings = HashMap::new();
    let samples = goroutines
        .sites
        .iter()
        .map(|site| {
            let location_id = b.locations(&site_frames(site), &no_mappings);
            let states = site
                .states
                .iter()
                .map(|(state, n)| format!("{state} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let labels = [("verdict", verdict_name(site.verdict)), ("states", &states)];
            proto::Sample {
                location_id,
                value: vec![i64::try_from(site.live).unwrap_or(i64::MAX)],
                label: labels
                    .into_iter()
                    .map(|(key, value)| proto::Label {
                        key: b.strings.get(key),
                        str: b.strings.get(value),
                        ..Default::default()
                    })
                    .collect(),
            }
        })
        .collect();
    let comment = format!(
        "goroutines of pid {} ({}): {} live",
        report.target.pid, report.target.comm, goroutines.live
    );
    let profile = proto::Profile {
        sample_type: vec![count],
        sample: samples,
        default_sample_type: count.r#type,
        period_type: Some(count),
        period: 1,
        duration_nanos: seconds_to_nanos(report.duration_s),
        ..Default::default()
    };
    Some(b.finish(profile, &[comment]))
}

/// Innermost first: the blocking frame, the start function, the creating `go` statement.
fn site_frames(site: &GoroutineSite) -> Vec<Frame> {
    let frame = |place: &CodeLocation| Frame {
        address: "0x0".to_owned(),
        function: place.function.clone(),
        file: place.file.clone(),
        line: place.line,
        module: None,
        inlined: false,
    };
    let mut frames = Vec::new();
    if let Some(blocked) = &site.blocked_at {
        frames.push(frame(blocked));
    }
    if let Some(start) = &site.start_function
        && site.blocked_at.as_ref().and_then(|b| b.function.as_ref()) != Some(start)
    {
        frames.push(frame(&CodeLocation {
            function: Some(start.clone()),
            file: None,
            line: None,
        }));
    }
    frames.push(frame(&site.created_by));
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{Goroutines, Verdict};
    use crate::report::pprof::{goroutine_profile_path, tests::report};
    use std::path::{Path, PathBuf};

    fn place(function: &str, line: u32) -> CodeLocation {
        CodeLocation {
            function: Some(function.into()),
            file: Some("/src/main.go".into()),
            line: Some(line),
        }
    }

    #[test]
    fn one_sample_per_site_blocking_frame_first() {
        let mut r = report(vec![]);
        assert!(profile(&r).is_none(), "C targets have no goroutine profile");
        r.goroutines = Some(Goroutines {
            live: 9,
            sites: vec![GoroutineSite {
                created_by: place("main.leak", 41),
                start_function: Some("main.leak.func1".into()),
                live: 9,
                growth_per_s: 1.5,
                verdict: Verdict::Growing,
                states: [("chan send".to_owned(), 9)].into(),
                blocked_at: Some(place("main.leak.func1", 43)),
                blocked_at_count: 9,
                oldest_age_s: None,
            }],
            coverage: "all",
            ..Goroutines::default()
        });
        let p = profile(&r).expect("a Go target's profile");
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(s(p.sample_type[0].r#type), "goroutine");
        assert_eq!(p.sample.len(), 1);
        assert_eq!(p.sample[0].value, vec![9]);
        // The start function is the blocking frame's function: one location for both.
        let names: Vec<(&str, i64)> = p.sample[0]
            .location_id
            .iter()
            .map(|&id| {
                let line = &p.location[id as usize - 1].line[0];
                let f = &p.function[line.function_id as usize - 1];
                (s(f.name), line.line)
            })
            .collect();
        assert_eq!(names, vec![("main.leak.func1", 43), ("main.leak", 41)]);
        let labels: Vec<(&str, &str)> = p.sample[0]
            .label
            .iter()
            .map(|l| (s(l.key), s(l.str)))
            .collect();
        assert_eq!(
            labels,
            vec![("verdict", "growing"), ("states", "chan send 9")]
        );
    }

    #[test]
    fn profile_path_sits_beside_the_output() {
        assert_eq!(
            goroutine_profile_path(Path::new("/tmp/leaks.pb.gz")),
            PathBuf::from("/tmp/leaks.goroutines.pb.gz")
        );
        assert_eq!(
            goroutine_profile_path(Path::new("out/profile")),
            PathBuf::from("out/profile.goroutines.pb.gz")
        );
    }
}

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
    let mut profile = proto::Profile {
        sample_type: vec![count],
        sample: samples,
        default_sample_type: count.r#type,
        period_type: Some(count),
        period: 1,
        duration_nanos: seconds_to_nanos(report.duration_s),
        ..Default::default()
    };
    profile.comment = vec![b.strings.get(&comment)];
    profile.location = b.location;
    profile.function = b.function;
    profile.string_table = b.strings.table;
    Some(profile)
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

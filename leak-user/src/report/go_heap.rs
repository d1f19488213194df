//! The report's `go_heap` section from the runtime's heap profile read from the target:
//! stacks symbolized (the runtime records one return PC per logical frame, inlined calls
//! included), leading runtime frames hidden as `runtime/pprof` hides them, sites with their
//! growth between readings.
use super::model::{Frame, GoHeap, GoHeapSite};
use crate::{
    analysis::History,
    golang::heap_profile::{HeapReading, RawSite},
    symbolize::Symbolizer,
};

pub const SOURCE: &str = "runtime memory profile";

/// `top`: most sites kept (the largest in use).
pub fn build(
    reading: &HeapReading,
    history: &History,
    symbolizer: &mut Symbolizer,
    top: usize,
) -> GoHeap {
    let profile = &reading.profile;
    let mut raw: Vec<&RawSite> = profile
        .sites
        .iter()
        .filter(|site| site.figures.alloc_objects > 0 || site.figures.inuse_objects > 0)
        .collect();
    raw.sort_by(|a, b| {
        (b.figures.inuse_bytes, b.figures.alloc_bytes)
            .cmp(&(a.figures.inuse_bytes, a.figures.alloc_bytes))
    });
    let inuse_bytes = raw.iter().map(|s| s.figures.inuse_bytes).sum();
    let inuse_objects = raw.iter().map(|s| s.figures.inuse_objects).sum();
    let sites = raw
        .into_iter()
        .take(top)
        .map(|site| {
            let assessment = history.assess(site.key());
            GoHeapSite {
                inuse_bytes: site.figures.inuse_bytes,
                inuse_objects: site.figures.inuse_objects,
                alloc_bytes: site.figures.alloc_bytes,
                alloc_objects: site.figures.alloc_objects,
                frames: frames(&site.pcs, symbolizer),
                object_size_bytes: site.object_size,
                growth_bytes_per_s: assessment.growth_bytes_per_s,
                verdict: assessment.verdict,
            }
        })
        .collect();
    GoHeap {
        source: SOURCE,
        sample_rate_bytes: profile.sample_rate_bytes,
        gc_cycle: profile.gc_cycle,
        inuse_bytes,
        inuse_objects,
        sites,
        read_at_s: reading.read_at_s,
        at_oom_kill: reading.at_oom_kill,
        unavailable: None,
    }
}

/// No profile: `reason` says why.
pub fn unavailable(reason: String) -> GoHeap {
    GoHeap {
        source: SOURCE,
        unavailable: Some(reason),
        ..GoHeap::default()
    }
}

/// One frame per PC: the innermost function at it (the runtime already wrote a PC for each
/// function inlined there). As `runtime/pprof` shows them: leading runtime frames hidden
/// unless nothing else is left, `runtime.goexit` dropped.
fn frames(pcs: &[u64], symbolizer: &mut Symbolizer) -> Vec<Frame> {
    let frames: Vec<Frame> = pcs
        .iter()
        .filter_map(|&pc| symbolizer.frames_at(pc, true).into_iter().next())
        .filter(|frame| frame.function.as_deref() != Some("runtime.goexit"))
        .collect();
    let first_user = frames
        .iter()
        .position(|frame| !is_runtime(frame))
        .unwrap_or(0);
    frames.into_iter().skip(first_user).collect()
}

/// What `runtime/pprof` hides at the top of heap stacks.
fn is_runtime(frame: &Frame) -> bool {
    frame
        .function
        .as_deref()
        .is_some_and(|f| f.starts_with("runtime.") || f.starts_with("internal/runtime/"))
}

//! A native site's bytes split by the creation site of the goroutine that allocated them.
use std::collections::HashMap;

use crate::{
    collect::CreationShare,
    golang::tracker,
    report::model::{CodeLocation, NativeByGoroutineSite},
    symbolize::Symbolizer,
};

/// The shares of one stack by `go` statement, largest first. Two `gopc`s that symbolize to one
/// place (the same statement in two copies of inlined code) are one site.
pub fn split(shares: &[CreationShare], symbolizer: &mut Symbolizer) -> Vec<NativeByGoroutineSite> {
    let mut by_place: HashMap<CodeLocation, (u64, u64)> = HashMap::new();
    for share in shares {
        let place = tracker::created_by(share.gopc, symbolizer);
        let sum = by_place.entry(place).or_default();
        sum.0 += share.bytes;
        sum.1 += share.allocs;
    }
    let mut sites: Vec<NativeByGoroutineSite> = by_place
        .into_iter()
        .filter(|(_, (bytes, _))| *bytes > 0)
        .map(|(created_by, (bytes, allocs))| NativeByGoroutineSite {
            created_by,
            outstanding_bytes: bytes,
            outstanding_allocs: allocs,
        })
        .collect();
    sites.sort_by(|a, b| {
        b.outstanding_bytes
            .cmp(&a.outstanding_bytes)
            .then_with(|| a.created_by.function.cmp(&b.created_by.function))
            .then_with(|| a.created_by.line.cmp(&b.created_by.line))
    });
    sites
}

//! `native_by_goroutine_site_bytes{created_by}`: Go targets, the native bytes of the `--top`
//! sites by the creation site (`go` statement) of the goroutine that allocated them. Bounded:
//! at most the creation sites those few sites name.
use std::collections::BTreeMap;

use crate::report::model::Report;

/// Bytes per `created_by` label over the `top` largest sites.
pub(super) fn series(report: &Report, top: usize) -> BTreeMap<String, u64> {
    let mut bytes: BTreeMap<String, u64> = BTreeMap::new();
    for by in report
        .sites
        .iter()
        .take(top)
        .flat_map(|s| &s.goroutine_sites)
    {
        let sum = bytes.entry(by.created_by.label()).or_default();
        *sum = sum.saturating_add(by.outstanding_bytes);
    }
    bytes
}

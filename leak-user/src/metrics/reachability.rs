//! `--reachability` series: the last scan's lost memory over all sites, its pause and reads,
//! and the number of scans.
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::{advance, gauge};
use crate::report::model::Report;

#[derive(Default)]
pub struct ReachabilityMetrics {
    unreachable_bytes: Gauge,
    unreachable_allocs: Gauge,
    indirect_bytes: Gauge,
    scanned_bytes: Gauge,
    pause_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    scans: Counter,
}

impl ReachabilityMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ReachabilityMetrics::default();
        registry.register_with_unit(
            "unreachable",
            "Bytes in blocks older than --min-age that no root reaches, at the last scan",
            Unit::Bytes,
            m.unreachable_bytes.clone(),
        );
        registry.register(
            "unreachable_allocations",
            "Blocks older than --min-age that no root reaches, at the last scan",
            m.unreachable_allocs.clone(),
        );
        registry.register_with_unit(
            "indirectly_lost",
            "Of the unreachable bytes, those only lost blocks point to",
            Unit::Bytes,
            m.indirect_bytes.clone(),
        );
        registry.register_with_unit(
            "reachability_scanned",
            "Bytes the last reachability scan read",
            Unit::Bytes,
            m.scanned_bytes.clone(),
        );
        registry.register_with_unit(
            "reachability_pause",
            "How long the last reachability scan stopped the target",
            Unit::Seconds,
            m.pause_seconds.clone(),
        );
        registry.register(
            "reachability_scans",
            "Reachability scans run",
            m.scans.clone(),
        );
        m
    }

    pub fn update(&self, report: &Report) {
        let Some(scan) = &report.reachability else {
            return;
        };
        self.unreachable_bytes.set(gauge(scan.unreachable_bytes));
        self.unreachable_allocs.set(gauge(scan.unreachable_allocs));
        self.indirect_bytes.set(gauge(scan.indirect_bytes));
        self.scanned_bytes.set(gauge(scan.scanned_bytes));
        self.pause_seconds.set(scan.pause_ms / 1e3);
        advance(&self.scans, scan.scans);
    }
}

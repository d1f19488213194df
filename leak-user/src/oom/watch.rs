//! Watching `oom:mark_victim` live: the tracepoint program hands every victim of the machine to
//! user space through a ring buffer; callers keep the ones they care about.
use std::io;

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
    programs::TracePoint,
};
use chrono::{DateTime, Utc};
use leak_common::OomRecord;
use thiserror::Error;
use tokio::io::unix::AsyncFd;

use super::{
    tracefs::TracefsMount,
    tracepoint::{MarkVictimLayout, OomVictim, TracepointError},
};
use crate::collect::monotonic_ns;

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("cannot read the oom:mark_victim tracepoint's layout: {0}")]
    Layout(#[from] TracepointError),
    #[error("cannot attach to oom:mark_victim: {0}")]
    Attach(String),
    #[error("cannot poll the OOM event ring: {0}")]
    Poll(io::Error),
}

/// One victim and when the kernel marked it (CLOCK_MONOTONIC).
#[derive(Debug, Clone)]
pub struct Victim {
    pub timestamp_ns: u64,
    pub victim: OomVictim,
}

impl Victim {
    /// When the kernel marked it, on the wall clock.
    pub fn marked_at(&self) -> DateTime<Utc> {
        let age_ns = monotonic_ns().saturating_sub(self.timestamp_ns);
        Utc::now() - chrono::Duration::nanoseconds(age_ns.min(i64::MAX as u64) as i64)
    }
}

pub struct OomWatch {
    ring: AsyncFd<RingBuf<MapData>>,
    layout: MarkVictimLayout,
}

impl OomWatch {
    /// Attaches the tracepoint program. Where nobody has mounted tracefs (the tracepoint's id
    /// and field layout live there), mounts it for the time of attaching.
    pub fn attach(ebpf: &mut Ebpf) -> Result<Self, WatchError> {
        let (layout, _mounted) = match MarkVictimLayout::from_system() {
            Ok(layout) => (layout, None),
            Err(TracepointError::NotFound(_)) => {
                let mounted = TracefsMount::mount().map_err(|e| {
                    WatchError::Attach(format!(
                        "tracefs is not mounted and mounting it failed: {e}"
                    ))
                })?;
                (MarkVictimLayout::from_system()?, Some(mounted))
            }
            Err(e) => return Err(e.into()),
        };
        let program: &mut TracePoint = ebpf
            .program_mut("oom_mark_victim")
            .ok_or_else(|| WatchError::Attach("program oom_mark_victim missing".into()))?
            .try_into()
            .map_err(|e| WatchError::Attach(format!("{e}")))?;
        program
            .load()
            .map_err(|e| WatchError::Attach(format!("{e}")))?;
        program
            .attach("oom", "mark_victim")
            .map_err(|e| WatchError::Attach(format!("{e}")))?;
        let map = ebpf
            .take_map("OOM_EVENTS")
            .ok_or_else(|| WatchError::Attach("map OOM_EVENTS missing".into()))?;
        let ring = RingBuf::try_from(map).map_err(|e| WatchError::Attach(format!("{e}")))?;
        // SAFETY: the AsyncFd owns the ring, whose descriptor lives as long as it does.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| WatchError::Poll(io::Error::other(e.to_string())))?;
        Ok(Self { ring, layout })
    }

    /// Waits for the next victims (at least one).
    pub async fn next(&mut self) -> Result<Vec<Victim>, WatchError> {
        loop {
            let mut guard = self.ring.readable_mut().await.map_err(WatchError::Poll)?;
            let victims = drain(guard.get_inner_mut(), &self.layout);
            guard.clear_ready();
            if !victims.is_empty() {
                return Ok(victims);
            }
        }
    }

    /// Victims already in the ring, without waiting.
    pub fn pending(&mut self) -> Vec<Victim> {
        drain(self.ring.get_mut(), &self.layout)
    }
}

fn drain(ring: &mut RingBuf<MapData>, layout: &MarkVictimLayout) -> Vec<Victim> {
    let mut victims = Vec::new();
    while let Some(item) = ring.next() {
        if item.len() < std::mem::size_of::<OomRecord>() {
            continue;
        }
        // SAFETY: the item holds one OomRecord written by the eBPF program (plain bytes).
        let record: OomRecord = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        match layout.decode(&record.data) {
            Ok(victim) => victims.push(Victim {
                timestamp_ns: record.timestamp_ns,
                victim,
            }),
            Err(error) => log::warn!("undecodable oom:mark_victim record: {error}"),
        }
    }
    victims
}

//! `--reachability` at scale: [`bench/reach_heap.c`] makes a 1 GiB heap of 1,048,576 blocks of
//! 1 KiB chained from a global, every 100th left out of the chain (10,485 lost). leaktrace traces
//! it and scans it at its final report, twice: with a pause bound long enough to stop the world
//! for the whole scan (20 s), and with the default (200 ms), where it falls back to two passes
//! over the running target. Each gives the target's pause, the scan's time, the bytes read and
//! the throughput; both must find exactly the lost blocks.
use std::{fs, path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::{
    runner::{LEAKTRACE_READY, Target, Tracer, leaktrace_command},
    table::write_columns,
};
use crate::cmd::say;

pub(super) const SOURCE: &str = "bench/reach_heap.c";
const BLOCKS: u64 = 1 << 20;
const BLOCK_SIZE: u64 = 1024;
/// Every 100th block (i % 100 == 99) is left out of the chain.
const LOST: u64 = BLOCKS / 100;
const ALLOC_TIMEOUT: Duration = Duration::from_secs(300);
const STOP_TIMEOUT: Duration = Duration::from_secs(600);

/// The pause bounds compared: the whole scan stopped, and leaktrace's default.
const BOUNDS: [&str; 2] = ["20s", "200ms"];

/// One scan's figures, from the report's `reachability`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ReachRow {
    pub bound: &'static str,
    pub method: String,
    pub pause_ms: f64,
    pub duration_ms: f64,
    pub scanned_bytes: u64,
    pub unreachable_allocs: u64,
}

impl ReachRow {
    fn mb_per_s(&self) -> f64 {
        self.scanned_bytes as f64 / 1e6 / (self.duration_ms / 1e3)
    }

    /// What the correctness check found wrong.
    pub(super) fn problem(&self) -> Option<String> {
        (self.unreachable_allocs != LOST).then(|| {
            format!(
                "reachability ({} bound): {} blocks found lost, the target lost {LOST}",
                self.bound, self.unreachable_allocs
            )
        })
    }
}

pub(super) fn run(exe: &Path, leaktrace: &Path, out_dir: &Path) -> Result<Vec<ReachRow>> {
    BOUNDS
        .iter()
        .map(|bound| one_run(bound, exe, leaktrace, out_dir))
        .collect()
}

fn one_run(bound: &'static str, exe: &Path, leaktrace: &Path, out_dir: &Path) -> Result<ReachRow> {
    let mut target = Target::spawn(
        exe,
        &[BLOCKS.to_string(), BLOCK_SIZE.to_string()],
        "reach_heap".to_owned(),
    )?;
    let report = out_dir.join(format!("leaktrace-reach-{bound}.json"));
    let mut command = leaktrace_command(leaktrace, target.pid, &report);
    command
        .args([
            "--interval",
            "1h",
            "--max-allocs",
            "1200000",
            "--reachability",
        ])
        .args(["--reachability-max-pause", bound]);
    let mut tracer = Tracer::start(command, LEAKTRACE_READY)?;
    target.send_line()?;
    target.expect("done", ALLOC_TIMEOUT)?;
    tracer.stop_measured(&report, STOP_TIMEOUT)?;
    // The target sleeps after `done`: dropping it kills it.
    drop(target);
    let row = read_row(bound, &report)?;
    say!(
        "bench: reachability ({bound} bound): {}, paused {:.1} ms, scan {:.2} s, {:.2} GiB read ({:.0} MB/s), {} blocks lost",
        row.method,
        row.pause_ms,
        row.duration_ms / 1e3,
        row.scanned_bytes as f64 / (1u64 << 30) as f64,
        row.mb_per_s(),
        row.unreachable_allocs
    );
    Ok(row)
}

fn read_row(bound: &'static str, report: &Path) -> Result<ReachRow> {
    let text = fs::read_to_string(report)
        .with_context(|| format!("could not read {}", report.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", report.display()))?;
    let Some(scan) = json.get("reachability") else {
        bail!("{} has no reachability figures", report.display());
    };
    let num = |key: &str| scan.get(key).and_then(serde_json::Value::as_f64);
    let (Some(pause_ms), Some(duration_ms), Some(scanned), Some(lost)) = (
        num("pause_ms"),
        num("duration_ms"),
        num("scanned_bytes"),
        num("unreachable_allocs"),
    ) else {
        bail!(
            "incomplete reachability figures in {}: {scan}",
            report.display()
        );
    };
    Ok(ReachRow {
        bound,
        method: scan
            .get("method")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_owned(),
        pause_ms,
        duration_ms,
        scanned_bytes: scanned as u64,
        unreachable_allocs: lost as u64,
    })
}

pub(super) fn table(rows: &[ReachRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.bound.to_owned(),
                r.method.clone(),
                format!("{:.1}", r.pause_ms),
                format!("{:.2}", r.duration_ms / 1e3),
                format!("{:.2}", r.scanned_bytes as f64 / (1u64 << 30) as f64),
                format!("{:.0}", r.mb_per_s()),
                format!("{} of {LOST}", r.unreachable_allocs),
            ]
        })
        .collect();
    let mut out = format!(
        "\nreachability scan ({SOURCE}: 1 GiB in {BLOCKS} blocks of {BLOCK_SIZE} B, every 100th lost):\n"
    );
    write_columns(
        &mut out,
        &[
            "--reachability-max-pause",
            "method",
            "target paused ms",
            "scan s",
            "read GiB",
            "MB/s",
            "lost blocks found",
        ],
        &cells,
        |_| false,
    );
    out
}

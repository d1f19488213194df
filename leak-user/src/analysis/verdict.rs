//! The verdict rule (README, "Verdicts"). A site is `growing` when all of these hold over its
//! sampled history:
//! 1. significant in size: its growth (the net growth, capped by its robust trend over the
//!    observed time) is at least a floor, the larger of an absolute one and a share of
//!    everything tracked now;
//! 2. significant against its own noise: that growth is more than [`NOISE_K`] times the
//!    spread of its samples around their robust trend line;
//! 3. rising through most of the observed time: it first came within 10% of its final level
//!    in the second half of its history (a cache fills early, then stays flat; a leak that
//!    paused moments ago got there late);
//! 4. not one jump: no step between samples (shorter than a quarter of the observed time)
//!    carries more than half the net growth.
//!
//! Otherwise it is `steady`, or `young` with less than [`MIN_SPAN_S`] of history.
use super::{
    Sample,
    robust::{half_span_slope, noise_around, smoothed},
};
use crate::report::model::Verdict;

/// Fewer samples than this have no shape.
const MIN_SAMPLES: usize = 3;
/// Less history than this cannot tell a cache filling up from a leak.
pub const MIN_SPAN_S: f64 = 2.0;
/// How many times its own noise a site must have grown by.
const NOISE_K: f64 = 3.0;
/// The share of its net growth a site must reach before it counts as "there".
const ARRIVED_SHARE: f64 = 0.9;
/// ... and how late in its history (a fraction of the observed time) it must have got there.
const ARRIVED_LATE: f64 = 0.5;
/// The largest share of the growth one step between samples may carry...
const MAX_STEP_SHARE: f64 = 0.5;
/// ... when that step is shorter than this share of the observed time.
const JUMP_TIME_SHARE: f64 = 0.25;

/// What a history counts, and so how much growth is significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Units {
    /// Outstanding bytes of a stack. The floor is 1 KiB, or 0.1% of all tracked bytes when that
    /// is more: a few hundred bytes creeping up next to megabytes (an allocator's bookkeeping)
    /// is not worth an operator's attention, while any leak of one small block a second
    /// passes 1 KiB in a run of a minute.
    #[default]
    Bytes,
    /// Live goroutines of a creation site: at least 4 more, or 0.1% of all live ones.
    Counts,
}

impl Units {
    fn floor(self, total_now: u64) -> f64 {
        let (absolute, share) = match self {
            Units::Bytes => (1024.0, 0.001),
            Units::Counts => (4.0, 0.001),
        };
        f64::max(absolute, share * total_now as f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub verdict: Verdict,
    /// The robust slope: bytes (or goroutines) per second.
    pub growth_bytes_per_s: f64,
}

/// Each test of the rule, for one history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Checks {
    pub young: bool,
    pub above_floor: bool,
    pub above_noise: bool,
    pub rising_late: bool,
    pub not_one_jump: bool,
}

impl Checks {
    fn verdict(self) -> Verdict {
        if self.young {
            Verdict::Young
        } else if self.above_floor && self.above_noise && self.rising_late && self.not_one_jump {
            Verdict::Growing
        } else {
            Verdict::Steady
        }
    }
}

/// The verdict on one site's history; `total_now` is everything tracked at the last sample.
pub fn assess(samples: &[Sample], total_now: u64, units: Units) -> Assessment {
    let slope = half_span_slope(samples);
    Assessment {
        verdict: checks(samples, slope, total_now, units).verdict(),
        growth_bytes_per_s: slope,
    }
}

pub(super) fn checks(samples: &[Sample], slope: f64, total_now: u64, units: Units) -> Checks {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return young();
    };
    let span = last.t_s - first.t_s;
    if samples.len() < MIN_SAMPLES || span < MIN_SPAN_S {
        return young();
    }
    let net = last.bytes as f64 - first.bytes as f64;
    // The net growth, and no more than the robust trend says: a churning site may end higher
    // than it started by chance, but its trend is flat.
    let growth = net.min(slope * span);
    // A long step between samples (a stalled sampler) is not a jump.
    let largest_jump = samples
        .windows(2)
        .filter(|w| w[1].t_s - w[0].t_s < JUMP_TIME_SHARE * span)
        .map(|w| w[1].bytes as f64 - w[0].bytes as f64)
        .fold(0.0, f64::max);
    Checks {
        young: false,
        above_floor: growth > 0.0 && growth >= units.floor(total_now),
        above_noise: growth > NOISE_K * noise_around(samples, slope),
        rising_late: arrival_time(samples, net) - first.t_s >= ARRIVED_LATE * span,
        not_one_jump: largest_jump <= MAX_STEP_SHARE * net,
    }
}

fn young() -> Checks {
    Checks {
        young: true,
        above_floor: false,
        above_noise: false,
        rising_late: false,
        not_one_jump: false,
    }
}

/// When the site, spikes smoothed out, first came within 10% of its net `growth`.
fn arrival_time(samples: &[Sample], growth: f64) -> f64 {
    let start = samples.first().map_or(0.0, |s| s.bytes as f64);
    let level = start + ARRIVED_SHARE * growth;
    smoothed(samples)
        .iter()
        .zip(samples)
        .find(|(smooth, _)| **smooth >= level)
        .map(|(_, s)| s.t_s)
        .or(samples.last().map(|s| s.t_s))
        .unwrap_or(0.0)
}

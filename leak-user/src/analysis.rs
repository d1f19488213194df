//! Telling growing leaks from bounded caches: each stack's outstanding bytes are sampled at every
//! interval, and the shape of that history gives the verdict.
use std::collections::HashMap;

use crate::report::model::Verdict;

/// Fewer samples than this cannot tell growth from a cache filling up.
const MIN_SAMPLES: usize = 3;
/// Older samples are thinned out past this, keeping the whole run's shape in bounded memory.
const MAX_SAMPLES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    t_s: f64,
    bytes: u64,
}

#[derive(Debug, Default)]
pub struct History {
    stacks: HashMap<u64, Vec<Sample>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub verdict: Verdict,
    pub growth_bytes_per_s: f64,
}

impl History {
    /// Records one figure per key at `t_s` seconds into the run (a stack's outstanding bytes
    /// of any age, a goroutine site's count).
    pub fn record_values(&mut self, t_s: f64, values: impl IntoIterator<Item = (u64, u64)>) {
        for (stack, bytes) in values {
            let samples = self.stacks.entry(stack).or_default();
            samples.push(Sample { t_s, bytes });
            if samples.len() > MAX_SAMPLES {
                // Keep the first and every other one after it.
                let mut keep = 0;
                samples.retain(|_| {
                    keep += 1;
                    keep % 2 == 1
                });
            }
        }
    }

    /// Forgets the keys `keep` refuses (stacks evicted from the kernel's maps): a run of days
    /// with stacks coming and going keeps the history of live ones only.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.stacks.retain(|&key, _| keep(key));
    }

    pub fn assess(&self, stack: u64) -> Assessment {
        self.stacks
            .get(&stack)
            .map(|samples| assess(samples))
            .unwrap_or(Assessment {
                verdict: Verdict::Young,
                growth_bytes_per_s: 0.0,
            })
    }
}

fn assess(samples: &[Sample]) -> Assessment {
    let growth_bytes_per_s = slope(samples);
    if samples.len() < MIN_SAMPLES {
        return Assessment {
            verdict: Verdict::Young,
            growth_bytes_per_s,
        };
    }
    // Growing: higher now than halfway through, at its peak now, and rising in at least half
    // of the recent steps (a leak may come in bursts; a cache that filled up stays flat, and
    // one that churns goes up and down).
    let n = samples.len() - 1;
    let last = samples[n].bytes;
    let middle = samples[n / 2].bytes;
    let peak_before = samples[..n].iter().map(|s| s.bytes).max().unwrap_or(0);
    let recent = &samples[n / 2..];
    let steps = recent.len() - 1;
    let rises = recent
        .windows(2)
        .filter(|w| w[1].bytes > w[0].bytes)
        .count();
    let growing = last > middle && last >= peak_before && rises * 2 >= steps;
    Assessment {
        verdict: if growing {
            Verdict::Growing
        } else {
            Verdict::Steady
        },
        growth_bytes_per_s,
    }
}

/// Growth of one figure over the run (the process's memory), in bytes per second.
#[derive(Debug, Default)]
pub struct Trend {
    samples: Vec<Sample>,
}

impl Trend {
    pub fn record(&mut self, t_s: f64, bytes: u64) {
        self.samples.push(Sample { t_s, bytes });
        if self.samples.len() > MAX_SAMPLES {
            let mut keep = 0;
            self.samples.retain(|_| {
                keep += 1;
                keep % 2 == 1
            });
        }
    }

    /// None until there are two samples.
    pub fn bytes_per_s(&self) -> Option<f64> {
        (self.samples.len() >= 2).then(|| slope(&self.samples))
    }
}

/// Least-squares slope of bytes over time, in bytes per second.
fn slope(samples: &[Sample]) -> f64 {
    if samples.len() < 2 {
        return 0.0;
    }
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.t_s).sum::<f64>() / n;
    let mean_b = samples.iter().map(|s| s.bytes as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.t_s - mean_t) * (s.bytes as f64 - mean_b);
        den += (s.t_s - mean_t).powi(2);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(points: &[u64]) -> Vec<Sample> {
        points
            .iter()
            .enumerate()
            .map(|(i, &bytes)| Sample {
                t_s: i as f64 * 0.5,
                bytes,
            })
            .collect()
    }

    #[test]
    fn a_linear_leak_is_growing_at_its_rate() {
        let a = assess(&history(&[0, 1000, 2000, 3000, 4000, 5000]));
        assert_eq!(a.verdict, Verdict::Growing);
        assert!((a.growth_bytes_per_s - 2000.0).abs() < 1e-6);
    }

    #[test]
    fn a_filled_cache_is_steady() {
        let a = assess(&history(&[8192, 8192, 8192, 8192, 8192]));
        assert_eq!(a.verdict, Verdict::Steady);
        assert_eq!(a.growth_bytes_per_s, 0.0);
        // Filling quickly, then flat, is still a cache.
        let a = assess(&history(&[0, 4096, 8192, 8192, 8192, 8192, 8192]));
        assert_eq!(a.verdict, Verdict::Steady);
    }

    #[test]
    fn a_churning_pool_is_steady() {
        let a = assess(&history(&[500, 700, 400, 650, 450, 600, 500]));
        assert_eq!(a.verdict, Verdict::Steady);
    }

    #[test]
    fn bursty_leaks_still_grow() {
        let a = assess(&history(&[0, 0, 1000, 1000, 2000, 2000, 3000]));
        assert_eq!(a.verdict, Verdict::Growing);
    }

    #[test]
    fn too_little_history_is_young() {
        assert_eq!(assess(&history(&[100, 200])).verdict, Verdict::Young);
        assert_eq!(History::default().assess(7).verdict, Verdict::Young);
    }

    #[test]
    fn forgotten_stacks_leave_the_history() {
        let mut h = History::default();
        h.record_values(0.0, [(1, 10), (2, 20)]);
        h.retain(|key| key == 2);
        assert!(!h.stacks.contains_key(&1) && h.stacks.contains_key(&2));
    }

    #[test]
    fn long_runs_keep_bounded_history() {
        let mut h = History::default();
        for i in 0..1000u64 {
            h.record_values(i as f64, [(1, i * 10)]);
        }
        assert!(h.stacks[&1].len() <= MAX_SAMPLES);
        assert_eq!(h.assess(1).verdict, Verdict::Growing);
        assert!((h.assess(1).growth_bytes_per_s - 10.0).abs() < 1e-6);
    }
}

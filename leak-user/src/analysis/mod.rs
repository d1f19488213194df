//! Telling growing leaks from bounded caches: each stack's outstanding bytes are sampled often
//! (a tick faster than the reports), and the shape of that history gives the verdict
//! ([`verdict`] states the rule).
use std::collections::HashMap;

mod robust;
mod verdict;

pub use verdict::{Assessment, Units};

/// Older samples are thinned out past this, keeping the whole run's shape in bounded memory.
const MAX_SAMPLES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    t_s: f64,
    bytes: u64,
}

/// One key's samples, evenly spaced: once thinned, the last sample stays provisional, replaced
/// by the next until it is `spacing_s` past the one before; so the newest figure is always
/// there, and the rest keep the spacing.
#[derive(Debug, Default)]
struct Series {
    samples: Vec<Sample>,
    spacing_s: f64,
}

impl Series {
    fn push(&mut self, sample: Sample) {
        if let [.., before, last] = self.samples.as_mut_slice()
            && last.t_s - before.t_s < self.spacing_s
        {
            *last = sample;
            return;
        }
        self.samples.push(sample);
        if self.samples.len() > MAX_SAMPLES {
            // Keep the first and every other one after it (the last too: the count is odd).
            let mut keep = 0;
            self.samples.retain(|_| {
                keep += 1;
                keep % 2 == 1
            });
            if let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) {
                self.spacing_s = (last.t_s - first.t_s) / (self.samples.len() - 1) as f64;
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct History {
    units: Units,
    stacks: HashMap<u64, Series>,
    /// Everything recorded at the last sample: the scale of a significant growth.
    total_now: u64,
}

impl History {
    /// Live goroutines per creation site.
    pub fn counts() -> History {
        History {
            units: Units::Counts,
            ..History::default()
        }
    }

    /// Records one figure per key (a stack's bytes, a goroutine site's count). `values` is
    /// every key's figure: a key seen before and absent now holds 0. A key that never held
    /// anything gets no history (most stacks are transient: allocated and freed at once).
    pub fn record_values(&mut self, t_s: f64, values: impl IntoIterator<Item = (u64, u64)>) {
        let mut seen: HashMap<u64, u64> = values.into_iter().collect();
        self.total_now = seen.values().sum();
        for (key, series) in &mut self.stacks {
            let bytes = seen.remove(key).unwrap_or(0);
            series.push(Sample { t_s, bytes });
        }
        for (key, bytes) in seen.into_iter().filter(|&(_, bytes)| bytes > 0) {
            self.stacks
                .entry(key)
                .or_default()
                .push(Sample { t_s, bytes });
        }
    }

    /// Stacks removed from the kernel's maps.
    pub fn forget(&mut self, keys: &[u64]) {
        for key in keys {
            self.stacks.remove(key);
        }
    }

    pub fn assess(&self, stack: u64) -> Assessment {
        let samples = self.stacks.get(&stack).map_or(&[][..], |s| &s.samples);
        verdict::assess(samples, self.total_now, self.units)
    }
}

/// Growth of one figure over the run (the process's memory), in bytes per second.
#[derive(Debug, Default)]
pub struct Trend {
    samples: Series,
}

impl Trend {
    pub fn record(&mut self, t_s: f64, bytes: u64) {
        self.samples.push(Sample { t_s, bytes });
    }

    /// None until there are two samples.
    pub fn bytes_per_s(&self) -> Option<f64> {
        let samples = &self.samples.samples;
        (samples.len() >= 2).then(|| robust::least_squares_slope(samples))
    }
}

#[cfg(test)]
mod tests;

//! Robust statistics over a site's samples: a slope and a spread that a few outliers (one burst,
//! one spike) do not move.
use super::Sample;

/// The median of `values` (reordered); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A Theil-Sen slope in bytes per second, over the pairs half the observed time apart: each
/// sample paired with the first one at least half the span later, the median of their slopes
/// weighted by the time each sample stands for (samples may come unevenly). Each pair spans
/// half the run, so a burst moves few of them, and a site flat for most of its history has a
/// median slope of 0.
pub fn half_span_slope(samples: &[Sample]) -> f64 {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return 0.0;
    };
    let half = (last.t_s - first.t_s) / 2.0;
    let mut weighted = Vec::new();
    let mut j = 0;
    for (i, a) in samples.iter().enumerate() {
        while j < samples.len() && samples[j].t_s < a.t_s + half {
            j += 1;
        }
        let (Some(b), Some(next)) = (samples.get(j), samples.get(i + 1)) else {
            break;
        };
        if b.t_s > a.t_s {
            let slope = (b.bytes as f64 - a.bytes as f64) / (b.t_s - a.t_s);
            weighted.push((slope, next.t_s - a.t_s));
        }
    }
    weighted_median(&mut weighted)
}

/// The median of `(value, weight)` pairs: the value at half the total weight.
fn weighted_median(pairs: &mut [(f64, f64)]) -> f64 {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = pairs.iter().map(|p| p.1).sum();
    let mut below = 0.0;
    for &(value, weight) in pairs.iter() {
        below += weight;
        if below >= total / 2.0 {
            return value;
        }
    }
    0.0
}

/// The noise of a site around the line of `slope`: the median absolute deviation of the
/// residuals, scaled to a standard deviation (x 1.4826, exact for normal noise).
pub fn noise_around(samples: &[Sample], slope: f64) -> f64 {
    let mut residuals: Vec<f64> = samples
        .iter()
        .map(|s| s.bytes as f64 - slope * s.t_s)
        .collect();
    let center = median(&mut residuals);
    let mut deviations: Vec<f64> = residuals.iter().map(|r| (r - center).abs()).collect();
    1.4826 * median(&mut deviations)
}

/// Each sample's level with single-sample spikes removed: the median of it and its neighbours
/// (the first and last stay as they are).
pub fn smoothed(samples: &[Sample]) -> Vec<f64> {
    let raw: Vec<f64> = samples.iter().map(|s| s.bytes as f64).collect();
    let mut out = raw.clone();
    for i in 1..raw.len().saturating_sub(1) {
        let mut window = [raw[i - 1], raw[i], raw[i + 1]];
        out[i] = median(&mut window);
    }
    out
}

/// Least-squares slope of bytes over time, in bytes per second (the process's memory trend).
pub fn least_squares_slope(samples: &[Sample]) -> f64 {
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

    fn samples(points: &[u64]) -> Vec<Sample> {
        points
            .iter()
            .enumerate()
            .map(|(i, &bytes)| Sample {
                t_s: i as f64,
                bytes,
            })
            .collect()
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn one_burst_does_not_move_the_slope() {
        let s = samples(&[0, 10, 20, 30, 5000, 50, 60, 70, 80, 90]);
        assert_eq!(half_span_slope(&s), 10.0);
        assert_eq!(noise_around(&s, 10.0), 0.0);
        assert_eq!(smoothed(&s)[4], 50.0);
    }

    #[test]
    fn dense_samples_weigh_no_more_than_sparse_ones() {
        // Rising 100 B/s, sampled every 0.1 s for 1 s, then flat, sampled every 1 s for 9 s:
        // flat for 90% of the time, though half the samples are in the first second.
        let mut s: Vec<Sample> = (0..10)
            .map(|i| Sample {
                t_s: i as f64 * 0.1,
                bytes: i * 10,
            })
            .collect();
        s.extend((1..10).map(|i| Sample {
            t_s: i as f64,
            bytes: 100,
        }));
        assert_eq!(half_span_slope(&s), 0.0);
    }

    #[test]
    fn a_site_flat_for_most_of_its_history_has_no_slope() {
        let s = samples(&[0, 500, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000]);
        assert_eq!(half_span_slope(&s), 0.0);
    }
}

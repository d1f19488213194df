//! The verdict rule on synthetic shapes, then on histories captured from real runs
//! (testdata/*.csv: `t_s,bytes` per line, one site each).

use super::*;
use crate::report::model::Verdict;

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

fn verdict_of(samples: &[Sample], total_now: u64) -> Verdict {
    verdict::assess(samples, total_now, Units::Bytes).verdict
}

#[test]
fn a_linear_leak_is_growing_at_its_rate() {
    let a = verdict::assess(
        &history(&[0, 1000, 2000, 3000, 4000, 5000]),
        5000,
        Units::Bytes,
    );
    assert_eq!(a.verdict, Verdict::Growing);
    assert!((a.growth_bytes_per_s - 2000.0).abs() < 1e-6);
}

#[test]
fn a_filled_cache_is_steady() {
    let flat = history(&[8192; 6]);
    let a = verdict::assess(&flat, 8192, Units::Bytes);
    assert_eq!(a.verdict, Verdict::Steady);
    assert_eq!(a.growth_bytes_per_s, 0.0);
    // Filling quickly, then flat for most of the run, is still a cache.
    let filling = history(&[0, 4096, 8192, 8192, 8192, 8192, 8192, 8192, 8192]);
    assert_eq!(verdict_of(&filling, 8192), Verdict::Steady);
}

#[test]
fn a_churning_pool_is_steady() {
    let churn = history(&[5000, 7000, 4000, 6500, 4500, 6000, 5000, 7200]);
    assert_eq!(verdict_of(&churn, 7200), Verdict::Steady);
}

#[test]
fn bursty_leaks_still_grow() {
    let bursts = history(&[0, 0, 1000, 1000, 2000, 2000, 3000, 3000]);
    assert_eq!(verdict_of(&bursts, 3000), Verdict::Growing);
}

#[test]
fn one_jump_is_steady() {
    let jump = history(&[100, 100, 100, 100, 100, 50_000, 50_000, 50_000]);
    let checks = verdict::checks(&jump, 0.0, 50_000, Units::Bytes);
    assert!(checks.rising_late && !checks.not_one_jump, "{checks:?}");
    assert_eq!(verdict_of(&jump, 50_000), Verdict::Steady);
}

#[test]
fn growth_below_the_floor_is_steady() {
    // 900 bytes of clean growth: under 1 KiB.
    let small = history(&[100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
    assert_eq!(verdict_of(&small, 1000), Verdict::Steady);
    // 9 KiB of growth next to 10 MB tracked: under 0.1% of it.
    let creep = history(&[0, 1024, 2048, 3072, 4096, 5120, 6144, 7168, 8192, 9216]);
    assert_eq!(verdict_of(&creep, 10_000_000), Verdict::Steady);
    assert_eq!(verdict_of(&creep, 1_000_000), Verdict::Growing);
}

#[test]
fn too_little_history_is_young() {
    assert_eq!(verdict_of(&history(&[100, 200]), 200), Verdict::Young);
    // Three samples over 1 s: less than MIN_SPAN_S.
    assert_eq!(verdict_of(&history(&[1, 2, 3]), 3), Verdict::Young);
    assert_eq!(History::default().assess(7).verdict, Verdict::Young);
}

#[test]
fn goroutine_sites_need_a_few_more() {
    let three_more = history(&[5, 6, 7, 8, 8]);
    let ten_more = history(&[5, 7, 9, 11, 13, 15]);
    let counts = |s: &[Sample]| verdict::assess(s, 20, Units::Counts).verdict;
    assert_eq!(counts(&three_more), Verdict::Steady);
    assert_eq!(counts(&ten_more), Verdict::Growing);
}

#[test]
fn long_runs_keep_bounded_evenly_spaced_history() {
    let mut h = History::default();
    for i in 0..1000u64 {
        h.record_values(i as f64, [(1, i * 10)]);
    }
    let samples = &h.stacks[&1].samples;
    assert!(samples.len() <= MAX_SAMPLES);
    assert_eq!(
        samples.last().map(|s| s.t_s),
        Some(999.0),
        "the newest stays"
    );
    // Evenly spaced: no gap more than twice another (but the newest's, provisional).
    let gaps: Vec<f64> = samples[..samples.len() - 1]
        .windows(2)
        .map(|w| w[1].t_s - w[0].t_s)
        .collect();
    let (min, max) = gaps
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &g| (lo.min(g), hi.max(g)));
    assert!(max <= 2.0 * min.max(1.0) + 1e-9, "gaps {min}..{max}");
    assert_eq!(h.assess(1).verdict, Verdict::Growing);
    assert!((h.assess(1).growth_bytes_per_s - 10.0).abs() < 1e-6);
}

#[test]
fn stacks_that_never_held_anything_get_no_history() {
    let mut h = History::default();
    h.record_values(0.0, [(1, 0), (2, 64)]);
    h.record_values(1.0, [(1, 0)]);
    assert!(!h.stacks.contains_key(&1));
    // Freed since: recorded at 0.
    assert_eq!(h.stacks[&2].samples[1].bytes, 0);
    h.forget(&[2]);
    assert!(h.stacks.is_empty());
}

/// A captured run: each column's samples (rows where it has a value) and the tracked total at
/// each row.
struct Captured {
    columns: Vec<(String, Vec<(Sample, u64)>)>,
}

impl Captured {
    fn parse(text: &str) -> Captured {
        let mut lines = text.lines().filter(|l| !l.starts_with('#'));
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        assert_eq!(header[..2], ["t_s", "total"]);
        let mut columns: Vec<(String, Vec<(Sample, u64)>)> = header[2..]
            .iter()
            .map(|name| (name.to_string(), Vec::new()))
            .collect();
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            let t_s: f64 = fields[0].parse().expect("t_s");
            let total: u64 = fields[1].parse().expect("total");
            for (column, field) in columns.iter_mut().zip(&fields[2..]) {
                if let Ok(bytes) = field.parse() {
                    column.1.push((Sample { t_s, bytes }, total));
                }
            }
        }
        Captured { columns }
    }

    fn site(&self, name: &str) -> &[(Sample, u64)] {
        &self
            .columns
            .iter()
            .find(|c| c.0 == name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .1
    }
}

/// The verdict on the first `n` samples, as a report made then would give it.
fn verdict_at(site: &[(Sample, u64)], n: usize) -> Verdict {
    let samples: Vec<Sample> = site[..n].iter().map(|s| s.0).collect();
    verdict_of(&samples, site[n - 1].1)
}

const PAUSED_LEAK_RUNS: [&str; 3] = [
    include_str!("testdata/paused_leak_run1.csv"),
    include_str!("testdata/paused_leak_run2.csv"),
    include_str!("testdata/paused_leak_run3.csv"),
];

/// 3 MiB leaked over 8 s, then no more, in a 12-s run: growing at the end and at every report
/// before it once there are 2 s of history; not one report calls it steady.
#[test]
fn a_leak_that_paused_before_the_end_is_growing() {
    for (run, text) in PAUSED_LEAK_RUNS.iter().enumerate() {
        let leak = Captured::parse(text).site("leak_paused").to_vec();
        assert_eq!(leak.last().map(|s| s.0.bytes), Some(3 << 20), "run {run}");
        for n in 1..=leak.len() {
            let verdict = verdict_at(&leak, n);
            let span = leak[n - 1].0.t_s - leak[0].0.t_s;
            let expected = if span < verdict::MIN_SPAN_S {
                Verdict::Young
            } else {
                Verdict::Growing
            };
            assert_eq!(verdict, expected, "run {run}, first {n} samples");
        }
    }
}

/// A cache filled in the first 2 s (256 KiB), flat for the 10 s after: steady from the moment
/// it has been flat for as long as it grew.
#[test]
fn a_cache_that_filled_early_is_steady() {
    for (run, text) in PAUSED_LEAK_RUNS.iter().enumerate() {
        let cache = Captured::parse(text).site("cache_fill").to_vec();
        assert_eq!(
            cache.last().map(|s| s.0.bytes),
            Some(256 << 10),
            "run {run}"
        );
        let full_at = cache
            .iter()
            .find(|s| s.0.bytes == 256 << 10)
            .map_or(0.0, |s| s.0.t_s);
        for n in 1..=cache.len() {
            let flat_for = cache[n - 1].0.t_s - full_at;
            let grew_for = full_at - cache[0].0.t_s;
            if flat_for > grew_for + 0.5 {
                assert_eq!(verdict_at(&cache, n), Verdict::Steady, "run {run}, {n}");
            }
        }
    }
}

/// 16 slots freed and refilled with 1..8 KiB at random: up and down by tens of KiB, steady.
/// And 58 bytes a second next to 3 MiB: too little to matter, steady. At every report.
#[test]
fn churn_and_creep_are_steady() {
    for (run, text) in PAUSED_LEAK_RUNS.iter().enumerate() {
        let captured = Captured::parse(text);
        for name in ["pool_churn", "creep"] {
            let site = captured.site(name);
            // From 3 s of history: run 2's sampler stalled for 1.7 s after its first sample,
            // which caught the pool low; the two after it look like a pool filling up.
            let growing: Vec<usize> = (1..=site.len())
                .filter(|&n| site[n - 1].0.t_s - site[0].0.t_s >= 3.0)
                .filter(|&n| verdict_at(site, n) == Verdict::Growing)
                .collect();
            assert_eq!(
                growing, [0usize; 0],
                "run {run} {name}: growing with n samples"
            );
        }
    }
}

/// CPython with sqlite, its memory flat: no site is growing, not even sqlite's page churn that
/// ends 195 KB above where it started (its peak, at the last sample).
#[test]
fn a_flat_cpython_has_no_growing_site() {
    let captured = Captured::parse(include_str!("testdata/cpython_sqlite_flat.csv"));
    assert_eq!(captured.columns.len(), 30);
    for (name, site) in &captured.columns {
        let verdict = verdict_at(site, site.len());
        assert_eq!(verdict, Verdict::Steady, "{name}");
    }
}

//! The live status line on stderr: elapsed time, outstanding bytes, allocations per second and
//! drops, rewritten in place every second. Only when stderr is a terminal and not `--quiet`.
use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use crate::report::units;

/// How often the line is redrawn.
pub const EVERY: Duration = Duration::from_secs(1);
/// The line never gets wider than this.
const WIDTH: usize = 79;

pub struct Status {
    enabled: bool,
    /// Characters on screen now (0: nothing to clear).
    shown: usize,
    /// As of the latest interval sample; none before the first.
    outstanding_bytes: Option<u64>,
    last: Option<(Instant, u64)>,
    rate: f64,
}

impl Status {
    pub fn new(quiet: bool) -> Self {
        Status {
            enabled: !quiet && std::io::stderr().is_terminal(),
            shown: 0,
            outstanding_bytes: None,
            // The kernel's counters start at zero when the probes are attached.
            last: Some((Instant::now(), 0)),
            rate: 0.0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Outstanding bytes as of the latest interval sample.
    pub fn sampled(&mut self, outstanding_bytes: u64) {
        self.outstanding_bytes = Some(outstanding_bytes);
    }

    /// Redraws the line from the kernel's counters.
    pub fn show(&mut self, elapsed: Duration, allocs_seen: u64, dropped: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if let Some((then, allocs)) = self.last {
            let secs = now.duration_since(then).as_secs_f64();
            if secs > 0.0 {
                self.rate = allocs_seen.saturating_sub(allocs) as f64 / secs;
            }
        }
        self.last = Some((now, allocs_seen));
        let text = line(elapsed, self.outstanding_bytes, self.rate, dropped);
        // `\r`, the line, then erase whatever a longer previous line left.
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r{text}\x1b[K");
        let _ = stderr.flush();
        self.shown = text.chars().count();
    }

    /// Erases the line, before anything else is written to the terminal.
    pub fn clear(&mut self) {
        if self.shown > 0 {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K");
            let _ = stderr.flush();
            self.shown = 0;
        }
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `leaktrace: 1m05s  outstanding 309.6 KiB  1.2k allocs/s  dropped 0` (`outstanding -`
/// before the first interval sample).
pub fn line(
    elapsed: Duration,
    outstanding_bytes: Option<u64>,
    allocs_per_s: f64,
    dropped: u64,
) -> String {
    let text = format!(
        "leaktrace: {}  outstanding {}  {} allocs/s  dropped {}",
        clock(elapsed.as_secs()),
        outstanding_bytes.map_or_else(|| "-".to_owned(), units::bytes),
        per_second(allocs_per_s),
        dropped
    );
    text.chars().take(WIDTH).collect()
}

/// `9s`, `1m05s`, `2h03m`: whole seconds, like a clock.
fn clock(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn per_second(rate: f64) -> String {
    let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
    match rate {
        r if r < 1000.0 => format!("{r:.0}"),
        r if r < 1e6 => format!("{:.1}k", r / 1e3),
        r => format!("{:.1}M", r / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_it_all() {
        assert_eq!(
            line(Duration::from_millis(65_400), Some(317_030), 1234.0, 0),
            "leaktrace: 1m05s  outstanding 309.6 KiB  1.2k allocs/s  dropped 0"
        );
        assert_eq!(
            line(Duration::from_millis(900), None, 3.4, 2),
            "leaktrace: 0s  outstanding -  3 allocs/s  dropped 2"
        );
        assert_eq!(per_second(2.5e6), "2.5M");
        assert_eq!(clock(7384), "2h03m");
        assert_eq!(per_second(f64::NAN), "0");
        assert!(
            line(Duration::MAX, Some(u64::MAX), 1e300, u64::MAX)
                .chars()
                .count()
                <= WIDTH
        );
    }

    #[test]
    fn quiet_means_no_line() {
        assert!(!Status::new(true).enabled());
    }
}

//! The verdicts' own sample: each stack's outstanding bytes, read more often than reports are
//! made so that even a short run has a shape (`Run::on_history_tick`).
use std::time::Duration;

use tokio::time::Instant;

/// At most this long between samples; shorter with a short `--interval` (a tenth of it).
const LONGEST: Duration = Duration::from_millis(500);
const SHORTEST: Duration = Duration::from_millis(20);
/// A read that took d of CPU time waits at least this many times d before the next: under 5%
/// of a core even when millions of outstanding blocks make each read long.
const COST_FACTOR: u32 = 20;

pub(super) struct HistoryTick {
    period: Duration,
    next: Instant,
}

impl HistoryTick {
    pub fn new(report_interval: Duration) -> HistoryTick {
        let period = (report_interval / 10).clamp(SHORTEST, LONGEST);
        HistoryTick {
            period,
            next: Instant::now() + period,
        }
    }

    pub fn due_at(&self) -> Instant {
        self.next
    }

    /// After a read that took `cost` of this thread's CPU time ([`thread_cpu_time`]).
    pub fn read_took(&mut self, cost: Duration) {
        self.next = Instant::now() + self.period.max(cost * COST_FACTOR);
    }
}

/// CPU time this thread has used (user and kernel): what a read costs, whatever else the
/// machine is doing.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenth_of_the_interval_between_bounds() {
        assert_eq!(HistoryTick::new(Duration::from_secs(5)).period, LONGEST);
        assert_eq!(
            HistoryTick::new(Duration::from_secs(1)).period,
            Duration::from_millis(100)
        );
        assert_eq!(HistoryTick::new(Duration::from_millis(50)).period, SHORTEST);
    }

    #[tokio::test]
    async fn a_costly_read_spaces_the_next() {
        let mut tick = HistoryTick::new(Duration::from_secs(5));
        let before = Instant::now();
        tick.read_took(Duration::from_millis(100));
        assert!(tick.due_at() >= before + Duration::from_secs(2));
        tick.read_took(Duration::from_millis(1));
        assert!(tick.due_at() <= Instant::now() + LONGEST);
    }
}

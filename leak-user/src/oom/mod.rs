//! OOM kills, from the two places the kernel reports them: the `oom:mark_victim` tracepoint
//! ([`tracepoint`]: immediate, but only the pid before 6.9) and the kernel log ([`kmsg`]: cgroup,
//! constraint and sizes, but its header lines are rate-limited). User-space killers
//! (systemd-oomd, oomd) appear in neither.

pub mod command;
pub mod kmsg;
pub mod tracefs;
pub mod tracepoint;
pub mod watch;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::report::model::OomKill;

/// What the kernel tells of a victim besides its pid and comm, from the tracepoint or the log
/// line alike: sizes in kB as it records them, uid, oom_score_adj. A field the kernel version
/// or a rate-limited log did not give is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VictimFigures {
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
    pub oom_score_adj: Option<i64>,
    pub uid: Option<u32>,
}

impl VictimFigures {
    /// True when no memory figure is known (kernels whose tracepoint records the pid only).
    pub fn lack_memory(&self) -> bool {
        self.anon_rss_kb.is_none() && self.total_vm_kb.is_none()
    }

    /// Fills the fields this lacks from another report of the same kill.
    pub fn complete_from(&mut self, other: &VictimFigures) {
        self.total_vm_kb = self.total_vm_kb.or(other.total_vm_kb);
        self.anon_rss_kb = self.anon_rss_kb.or(other.anon_rss_kb);
        self.file_rss_kb = self.file_rss_kb.or(other.file_rss_kb);
        self.shmem_rss_kb = self.shmem_rss_kb.or(other.shmem_rss_kb);
        self.pgtables_kb = self.pgtables_kb.or(other.pgtables_kb);
        self.oom_score_adj = self.oom_score_adj.or(other.oom_score_adj);
        self.uid = self.uid.or(other.uid);
    }
}

impl kmsg::OomEvent {
    #[cfg(test)]
    /// The report entry (`source: "kmsg"`). `cgroup` is the victim's memcg, else the memcg whose
    /// limit was hit (all a rate-limited log may tell).
    pub fn to_oom_kill(&self, clock: &kmsg::BootClock) -> OomKill {
        OomKill {
            pid: self.pid,
            comm: self.comm.clone(),
            time: clock
                .wall_time(self.time_usec)
                .to_rfc3339_opts(SecondsFormat::Secs, true),
            source: "kmsg".to_owned(),
            cgroup: self.task_memcg.clone().or_else(|| self.oom_memcg.clone()),
            anon_rss_kb: self.figures.anon_rss_kb,
        }
    }
}

impl tracepoint::OomVictim {
    /// Older kernels' `oom:mark_victim` carries the pid alone: the kernel logs the rest in
    /// the `Killed process` line it prints right after, so the newest logged kill of this
    /// pid fills what the tracepoint lacked (where a kprobe on `oom_kill_process` would be
    /// the other way, and kprobes are not on every kernel). Returns true if it found one.
    pub fn complete_from_log(&mut self, events: &[kmsg::OomEvent]) -> bool {
        let Some(event) = events.iter().rev().find(|e| e.pid == self.pid) else {
            return false;
        };
        self.comm.get_or_insert_with(|| event.comm.clone());
        self.figures.complete_from(&event.figures);
        true
    }

    /// True when the tracepoint gave no memory figures (kernels before 6.x record the pid only).
    pub fn lacks_figures(&self) -> bool {
        self.figures.lack_memory()
    }

    /// The report entry (`source: "tracepoint"`). The tracepoint has no time or cgroup of its
    /// own: the caller passes when it saw the event and the target's memcg path; `fallback_comm`
    /// stands in on kernels whose event has no comm.
    pub fn to_oom_kill(
        &self,
        time: DateTime<Utc>,
        cgroup: Option<String>,
        fallback_comm: &str,
    ) -> OomKill {
        OomKill {
            pid: self.pid,
            comm: self
                .comm
                .clone()
                .unwrap_or_else(|| fallback_comm.to_owned()),
            time: time.to_rfc3339_opts(SecondsFormat::Secs, true),
            source: "tracepoint".to_owned(),
            cgroup,
            anon_rss_kb: self.figures.anon_rss_kb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_event_becomes_report_entry() {
        let records =
            kmsg::parse_stream(include_str!("testdata/kmsg-6.18-memcg-kill.txt")).expect("fixture");
        let events = kmsg::assemble(&records);
        let wall = DateTime::parse_from_rfc3339("2026-11-23T20:10:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let clock = kmsg::BootClock::new(wall, 2_500_000_000);
        let kill = events[0].to_oom_kill(&clock);
        assert_eq!((kill.pid, kill.comm.as_str()), (3457, "memhog"));
        assert_eq!(kill.time, "2026-11-23T20:09:14Z");
        assert_eq!(kill.source, "kmsg");
        assert_eq!(
            kill.cgroup.as_deref(),
            Some("/process_api/5a10f742627aa8c687901111449221da/lt_oom_scratch")
        );
        assert_eq!(kill.anon_rss_kb, Some(32512));
    }

    /// What the oldest tracepoint layout gives.
    fn pid_only(pid: u32) -> tracepoint::OomVictim {
        tracepoint::OomVictim {
            pid,
            comm: None,
            figures: VictimFigures::default(),
        }
    }

    #[test]
    fn a_pid_only_tracepoint_is_completed_from_the_log() {
        let records =
            kmsg::parse_stream(include_str!("testdata/kmsg-6.18-memcg-kill.txt")).expect("fixture");
        let events = kmsg::assemble(&records);
        let mut v = pid_only(3457);
        assert!(v.lacks_figures());
        assert!(v.complete_from_log(&events));
        assert!(!v.lacks_figures());
        assert_eq!(v.comm.as_deref(), Some("memhog"));
        assert_eq!(v.figures.anon_rss_kb, Some(32512));
        let mut other = tracepoint::OomVictim {
            pid: 1,
            ..v.clone()
        };
        other.figures.anon_rss_kb = None;
        assert!(!other.complete_from_log(&events));
        assert_eq!(other.figures.anon_rss_kb, None);
    }

    #[test]
    fn tracepoint_victim_becomes_report_entry() {
        let v = pid_only(4242);
        let kill = v.to_oom_kill(DateTime::<Utc>::UNIX_EPOCH, None, "server");
        assert_eq!(kill.comm, "server");
        assert_eq!(kill.time, "1970-01-01T00:00:00Z");
        assert_eq!(kill.source, "tracepoint");
    }
}

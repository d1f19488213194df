//! `leaktrace oom`: past OOM kills from the kernel log, and with `--follow` new ones as the
//! tracepoint reports them.
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use super::{
    VictimFigures,
    kmsg::{self, BootClock, OomEvent},
    watch::OomWatch,
};
use crate::{
    attach::{self, MapLimits},
    cli::OomArgs,
    escape::control_chars,
};

/// One kill as `leaktrace oom` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct KillEntry {
    pub time: String,
    pub pid: u32,
    pub comm: String,
    /// `kmsg` (the kernel log) or `tracepoint` (seen live).
    pub source: &'static str,
    pub constraint: Option<String>,
    pub global: Option<bool>,
    pub oom_memcg: Option<String>,
    pub task_memcg: Option<String>,
    /// Flattened: `total_vm_kb` ... `uid` are fields of the kill's JSON object.
    #[serde(flatten)]
    pub figures: VictimFigures,
    pub invoked_by: Option<String>,
    pub memcg_usage_kb: Option<u64>,
    pub memcg_limit_kb: Option<u64>,
    #[serde(skip)]
    at: DateTime<Utc>,
}

impl KillEntry {
    fn from_log(event: &OomEvent, clock: &BootClock) -> Self {
        let at = clock.wall_time(event.time_usec);
        Self {
            time: at.to_rfc3339_opts(SecondsFormat::Secs, true),
            pid: event.pid,
            comm: event.comm.clone(),
            source: "kmsg",
            constraint: event.constraint.clone(),
            global: Some(event.global),
            oom_memcg: event.oom_memcg.clone(),
            task_memcg: event.task_memcg.clone(),
            figures: event.figures,
            invoked_by: event.invoked_by.clone(),
            memcg_usage_kb: event.memcg_usage_kb,
            memcg_limit_kb: event.memcg_limit_kb,
            at,
        }
    }

    fn from_tracepoint(victim: &super::watch::Victim) -> Self {
        let at = victim.marked_at();
        let v = &victim.victim;
        Self {
            time: at.to_rfc3339_opts(SecondsFormat::Secs, true),
            pid: v.pid,
            comm: v.comm.clone().unwrap_or_default(),
            source: "tracepoint",
            constraint: None,
            global: None,
            oom_memcg: None,
            task_memcg: None,
            figures: v.figures,
            invoked_by: None,
            memcg_usage_kb: None,
            memcg_limit_kb: None,
            at,
        }
    }

    fn matches(&self, args: &OomArgs, since: Option<DateTime<Utc>>) -> bool {
        args.pid.is_none_or(|pid| pid == self.pid)
            && args.comm.as_deref().is_none_or(|comm| comm == self.comm)
            && since.is_none_or(|since| self.at >= since)
    }
}

pub async fn run(args: OomArgs) -> Result<()> {
    let since = args.since.map(|ago| Utc::now() - ago);
    let records = kmsg::read_kmsg_nonblocking().context("cannot read the kernel log /dev/kmsg")?;
    let clock = BootClock::from_monotonic().context("cannot read the clocks")?;
    let kills: Vec<KillEntry> = kmsg::assemble(&records)
        .iter()
        .map(|event| KillEntry::from_log(event, &clock))
        .filter(|kill| kill.matches(&args, since))
        .collect();

    if !args.follow {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&kills)?);
        } else if kills.is_empty() {
            println!("no OOM kills in the kernel log{}", filter_note(&args));
        } else {
            print_header();
            for kill in &kills {
                print_line(kill);
            }
        }
        return Ok(());
    }

    // --follow: the log's kills first, then live ones, one line (or JSON object) each.
    let mut ebpf = attach::load(MapLimits::minimal())?;
    let mut watch = OomWatch::attach(&mut ebpf)?;
    if !args.json {
        print_header();
    }
    for kill in &kills {
        emit(kill, args.json);
    }
    eprintln!("leaktrace: following OOM kills (oom:mark_victim); Ctrl-C to stop");
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            victims = watch.next() => {
                for mut victim in victims? {
                    // Older kernels' tracepoint has the pid only: the log line has the rest.
                    if victim.victim.lacks_figures()
                        && let Ok(records) = super::kmsg::read_kmsg_nonblocking()
                    {
                        victim.victim.complete_from_log(&super::kmsg::assemble(&records));
                    }
                    let kill = KillEntry::from_tracepoint(&victim);
                    if kill.matches(&args, None) {
                        emit(&kill, args.json);
                    }
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    Ok(())
}

fn filter_note(args: &OomArgs) -> String {
    let mut parts = Vec::new();
    if let Some(pid) = args.pid {
        parts.push(format!("pid {pid}"));
    }
    if let Some(comm) = &args.comm {
        parts.push(format!("comm {comm}"));
    }
    if let Some(since) = args.since {
        parts.push(format!(
            "in the last {}",
            humantime::format_duration(round(since))
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" matching {}", parts.join(", "))
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

fn emit(kill: &KillEntry, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(kill) {
            println!("{line}");
        }
    } else {
        print_line(kill);
    }
}

fn print_header() {
    println!(
        "{:<20}  {:>7}  {:<15}  {:<10}  {:>9}  {:>9}  {:>8}  cgroup",
        "time (UTC)", "pid", "comm", "constraint", "anon-rss", "total-vm", "adj"
    );
}

fn print_line(kill: &KillEntry) {
    println!("{}", line(kill));
}

/// One kill as a table row; the strings from the kernel (comm, cgroups) escaped.
fn line(kill: &KillEntry) -> String {
    let kb = |v: Option<u64>| v.map_or("-".to_owned(), |kb| format!("{kb}kB"));
    let constraint = match (&kill.constraint, kill.global) {
        (Some(c), _) => c.trim_start_matches("CONSTRAINT_").to_lowercase(),
        (None, Some(true)) => "global".to_owned(),
        _ => "-".to_owned(),
    };
    format!(
        "{:<20}  {:>7}  {:<15}  {:<10}  {:>9}  {:>9}  {:>8}  {}",
        kill.time.trim_end_matches('Z').replace('T', " "),
        kill.pid,
        control_chars(&kill.comm),
        constraint,
        kb(kill.figures.anon_rss_kb),
        kb(kill.figures.total_vm_kb),
        kill.figures
            .oom_score_adj
            .map_or("-".to_owned(), |a| a.to_string()),
        control_chars(
            kill.task_memcg
                .as_deref()
                .or(kill.oom_memcg.as_deref())
                .unwrap_or("-")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oom::{tracepoint::OomVictim, watch::Victim};

    #[test]
    fn rows_escape_the_victims_comm() {
        let victim = Victim {
            timestamp_ns: 0,
            victim: OomVictim {
                pid: 4242,
                comm: Some("evil\x1b[2J\nfake".into()),
                figures: VictimFigures {
                    total_vm_kb: Some(1024),
                    anon_rss_kb: Some(512),
                    uid: Some(0),
                    oom_score_adj: Some(0),
                    ..VictimFigures::default()
                },
            },
        };
        let row = line(&KillEntry::from_tracepoint(&victim));
        assert!(row.contains("   4242  evil\\x1b[2J\\x0afake  -  "), "{row}");
        assert!(!row.contains('\x1b') && !row.contains('\n'), "{row}");
    }
}

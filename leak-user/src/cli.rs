//! Command-line interface (clap derive).
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "leaktrace",
    version,
    about = "Find native memory leaks in a running process with eBPF",
    long_about = "Attaches uprobes to the allocator a process really uses and reports the call \
                  sites that hold memory that is never freed, with growth rates and verdicts.",
    args_conflicts_with_subcommands = false,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Process to trace.
    #[arg(short, long, required = true, global = false)]
    pub pid: Option<u32>,

    #[command(flatten)]
    pub trace: TraceOptions,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a command with the probes in place before its first allocation.
    ///
    /// The command runs in its own process group and dies with leaktrace. At the end of the
    /// run it gets SIGTERM, and SIGKILL 3 s later if it is still there.
    Run {
        /// Run the command as USER (name or uid), with USER's groups or GROUP, as `sudo -u`
        /// does. Its environment is then reset: PATH, TERM, TZ, LANG, LANGUAGE and LC_* are
        /// kept, HOME, USER, LOGNAME and SHELL are USER's, everything else is dropped
        /// (prefix the command with `env NAME=VALUE` to pass more). Without --user the
        /// command runs as leaktrace does (root), with its environment.
        #[arg(short, long, value_name = "USER[:GROUP]")]
        user: Option<String>,

        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List past OOM kills from the kernel log; --follow streams new ones live.
    Oom(OomArgs),
    /// Print shell completions or the man page (for packagers and `cargo xtask install`).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Generate {
    /// Completions for SHELL, on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man page (roff), on stdout.
    Man,
}

#[derive(Debug, Clone, Args)]
pub struct OomArgs {
    /// Only kills of this PID.
    #[arg(short, long)]
    pub pid: Option<u32>,

    /// Only kills of processes with this command name.
    #[arg(long)]
    pub comm: Option<String>,

    /// Only kills in the last DURATION (e.g. 10m, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,

    /// Keep running and print new kills as the kernel makes them (oom:mark_victim).
    #[arg(short = 'F', long)]
    pub follow: bool,

    /// Set from the global --format.
    #[arg(skip)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TraceOptions {
    /// Stop after this long (e.g. 30s, 2m); default: until Ctrl-C or the target exits.
    #[arg(short, long, global = true, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// How often to sample growth and print a periodic report (1m with --always-on).
    #[arg(short, long, global = true, default_value = "5s", value_parser = parse_positive_duration)]
    pub interval: Duration,

    /// --interval was on the command line (else --always-on picks its own).
    #[arg(skip)]
    pub interval_given: bool,

    /// Report only allocations at least this old.
    #[arg(long, global = true, default_value = "5s", value_parser = humantime::parse_duration)]
    pub min_age: Duration,

    /// How many call sites to report (and to give their own metrics series); pprof, folded
    /// and svg output has every site.
    #[arg(short, long, global = true, default_value_t = 10)]
    pub top: usize,

    /// Report format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report to this file instead of stdout.
    #[arg(short, long, global = true)]
    pub output: Option<PathBuf>,

    /// Serve OpenMetrics (Prometheus) metrics at http://ADDR/metrics, updated every interval.
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Outstanding allocations the kernel side can track at once.
    #[arg(long, global = true, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_allocs: u32,

    /// Distinct stacks the kernel side can keep.
    #[arg(long, global = true, default_value_t = 1 << 16, value_parser = clap::value_parser!(u32).range(64..))]
    pub max_stacks: u32,

    /// Unwind-table rows for all of the target's executable objects.
    #[arg(long, global = true, default_value_t = 1 << 21, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_unwind_rows: u32,

    /// No periodic text reports, live status line or progress on stderr: only the report
    /// (with --format jsonl, all its lines) and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Sample allocations by bytes, one per SIZE on average (e.g. 512KiB), as Go's and tcmalloc's
    /// heap profilers do: much cheaper, and reported figures become unbiased estimates with
    /// their standard error. Default: record every allocation.
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    pub sample_bytes: Option<ByteSize>,

    /// A mode to leave running on a fleet: byte sampling (--sample-bytes 512KiB unless given),
    /// metrics served (--metrics-addr 127.0.0.1:9464 unless given), --interval 1m unless given,
    /// no periodic text report,
    /// and call sites whose sampled estimate keeps growing escalated to exact tracing (every
    /// allocation they make is recorded from then on; at most 64 sites).
    #[arg(long, global = true)]
    pub always_on: bool,

    /// Trace a process that another leaktrace is already tracing. Each run holds a lock per
    /// target under /run/leaktrace/; a second run on the same process is refused without
    /// --force.
    #[arg(long, global = true)]
    pub force: bool,

    /// Scan the live target's memory for pointers into the tracked blocks at the final report
    /// (and on SIGUSR1): each site's blocks no root reaches are definitely lost, as LSan
    /// reports them. The target is stopped during the scan.
    #[arg(long, global = true)]
    pub reachability: bool,

    /// Also scan every N intervals (implies --reachability).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub reachability_every: Option<u32>,

    /// Longest a reachability scan may keep the target stopped; a scan that needs longer lets
    /// it go and calls nothing lost.
    #[arg(long, global = true, default_value = "200ms", value_parser = parse_positive_duration)]
    pub reachability_max_pause: Duration,

    /// Attach every probe but make its program return at once: `cargo xtask bench`'s floor.
    #[arg(long, global = true, hide = true)]
    pub empty_probes: bool,

    /// Print each eBPF program's run count and mean run time on exit (kernel BPF stats):
    /// `cargo xtask bench`'s per-event cost of the programs themselves.
    #[arg(long, global = true, hide = true)]
    pub bpf_stats: bool,

    /// How allocator probes are linked: `auto` takes uprobe sessions, else `uprobe_multi`
    /// links, else per-probe links, as the kernel allows; the others force a slower kind
    /// (`cargo xtask bench`'s comparisons, the fallback tests).
    #[arg(long, global = true, hide = true, value_enum, default_value_t)]
    pub probe_links: crate::attach::ProbeLinks,
}

/// What `--always-on` implies for the options not given.
pub const ALWAYS_ON_SAMPLE_BYTES: u64 = 512 << 10;
pub const ALWAYS_ON_METRICS_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 9464);
/// Long enough for a slow leak to be sampled in most intervals at 512KiB (the verdict needs
/// rises in half of them).
pub const ALWAYS_ON_INTERVAL: Duration = Duration::from_secs(60);

/// Whether the argument `id` was given on the command line, before or after a subcommand.
pub fn given(matches: &clap::ArgMatches, id: &str) -> bool {
    let here = matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    here || matches.subcommand().is_some_and(|(_, sub)| given(sub, id))
}

impl TraceOptions {
    /// Fills in what `--always-on` implies: byte sampling, a metrics endpoint, and a longer
    /// interval.
    pub fn apply_always_on(&mut self) {
        if !self.always_on {
            return;
        }
        if !self.interval_given {
            self.interval = ALWAYS_ON_INTERVAL;
        }
        self.sample_bytes
            .get_or_insert(ByteSize(ALWAYS_ON_SAMPLE_BYTES));
        self.metrics_addr
            .get_or_insert_with(|| SocketAddr::from(ALWAYS_ON_METRICS_ADDR));
    }
}

#[cfg(test)]
mod tests {
    use super::{ByteSize, parse_size};

    #[test]
    fn always_on_implies_sampling_and_metrics_unless_given() {
        use clap::{CommandFactory as _, FromArgMatches as _};
        use std::time::Duration;
        let parse = |args: &[&str]| {
            let matches = super::Cli::command().get_matches_from(args);
            let mut cli = super::Cli::from_arg_matches(&matches).unwrap();
            cli.trace.interval_given = super::given(&matches, "interval");
            cli.trace.apply_always_on();
            cli.trace
        };
        let on = parse(&["leaktrace", "-p", "1", "--always-on"]);
        assert_eq!(on.sample_bytes, Some(ByteSize(512 << 10)));
        assert_eq!(on.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(on.interval, Duration::from_secs(60));
        // --interval given, before or after `run`, stays.
        let run = parse(&[
            "leaktrace",
            "--always-on",
            "run",
            "--interval",
            "1s",
            "--",
            "x",
        ]);
        assert_eq!(run.interval, Duration::from_secs(1));
        let before = parse(&[
            "leaktrace",
            "--interval",
            "2s",
            "--always-on",
            "run",
            "--",
            "x",
        ]);
        assert_eq!(before.interval, Duration::from_secs(2));
        let default = parse(&["leaktrace", "--always-on", "run", "--", "x"]);
        assert_eq!(default.interval, Duration::from_secs(60));
        let given = parse(&[
            "leaktrace",
            "-p",
            "1",
            "--always-on",
            "--sample-bytes",
            "4KiB",
            "--metrics-addr",
            "127.0.0.1:0",
        ]);
        assert_eq!(given.sample_bytes, Some(ByteSize(4096)));
        assert_eq!(given.metrics_addr, Some("127.0.0.1:0".parse().unwrap()));
        let off = parse(&["leaktrace", "-p", "1"]);
        assert_eq!((off.sample_bytes, off.metrics_addr), (None, None));
        assert_eq!(off.interval, Duration::from_secs(5));
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("512KiB"), Ok(ByteSize(512 << 10)));
        assert_eq!(parse_size("4096"), Ok(ByteSize(4096)));
        assert_eq!(parse_size("1m"), Ok(ByteSize(1 << 20)));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("KiB").is_err());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A report for people, 80 columns wide.
    Text,
    /// One JSON object when the run ends (see the report schema).
    Json,
    /// One JSON object per interval, one per line; the last one has "final": true.
    Jsonl,
    /// A gzipped pprof profile of every site older than --min-age (needs --output or a
    /// redirected stdout).
    Pprof,
    /// Folded stacks (`outer;...;inner bytes`) for flamegraph.pl and inferno.
    Folded,
    /// An interactive flame graph of outstanding bytes (SVG).
    Svg,
}

impl TraceOptions {
    /// Whether reachability scans were asked for.
    pub fn reachability_on(&self) -> bool {
        self.reachability || self.reachability_every.is_some()
    }
}

impl Format {
    /// Profile formats show every site older than `--min-age`: `--top` does not cut them.
    pub fn is_profile(self) -> bool {
        matches!(self, Format::Pprof | Format::Folded | Format::Svg)
    }
}

/// A byte count given as `4096`, `512KiB`, `1MiB` (or KB/MB/K/M, all powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

fn parse_size(s: &str) -> Result<ByteSize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 512KiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB or GiB)")),
    };
    let bytes = n
        .checked_mul(scale)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("`{s}` is not a usable size"))?;
    Ok(ByteSize(bytes))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

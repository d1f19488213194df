//! Command-line interface (clap derive).
use std::{path::PathBuf, time::Duration};

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
    Run {
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List past OOM kills from the kernel log; --follow streams new ones live.
    Oom(OomArgs),
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

    /// How often to sample growth and print a periodic report.
    #[arg(short, long, global = true, default_value = "5s", value_parser = parse_positive_duration)]
    pub interval: Duration,

    /// Report only allocations at least this old.
    #[arg(long, global = true, default_value = "5s", value_parser = humantime::parse_duration)]
    pub min_age: Duration,

    /// How many call sites to report.
    #[arg(short, long, global = true, default_value_t = 10)]
    pub top: usize,

    /// Report format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report to this file instead of stdout.
    #[arg(short, long, global = true)]
    pub output: Option<PathBuf>,

    /// Outstanding allocations the kernel side can track at once.
    #[arg(long, global = true, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_allocs: u32,

    /// Distinct stacks the kernel side can keep.
    #[arg(long, global = true, default_value_t = 1 << 16, value_parser = clap::value_parser!(u32).range(64..))]
    pub max_stacks: u32,

    /// Unwind-table rows for all of the target's executable objects.
    #[arg(long, global = true, default_value_t = 1 << 21, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_unwind_rows: u32,

    /// No periodic reports or progress on stderr; only the final report and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A report for people, 80 columns wide.
    Text,
    /// One JSON object when the run ends (see the report schema).
    Json,
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

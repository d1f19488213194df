//! leaktrace: attach to a running process (or start one) and report the call sites that hold
//! native memory that is never freed.
mod analysis;
mod attach;
mod cli;
mod collect;
mod escalation;
mod escape;
#[cfg(test)]
mod fuzz;
mod golang;
mod launch;
mod limits;
mod memory;
mod metrics;
mod oom;
mod reachability;
mod report;
mod session;
mod status;
mod symbolize;
mod tracee;
mod unwind;
mod uprobe_multi;

use std::{io::Write as _, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{CommandFactory as _, FromArgMatches as _};

use cli::{Cli, Command, Generate};
use session::TargetSpec;

fn main() -> ExitCode {
    // Like other Unix tools: a closed pipe (`leaktrace oom | head`) ends us quietly.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    cli.trace.interval_given = cli::given(&matches, "interval");
    init_logging();
    if let Err(error) = limits::raise_open_files_limit() {
        log::warn!("cannot raise the open files limit: {error}");
    }
    // Every error, whatever the subcommand, ends here.
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&format!("{error:#}")),
    }
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        // Messages quote the target's paths and names: escaped, as in the text report.
        .format(|buf, record| {
            let message = record.args().to_string();
            writeln!(
                buf,
                "[{:<5}] {}",
                record.level(),
                escape::control_chars(&message)
            )
        })
        .init();
}

/// Command lines clap accepts but that name no valid target.
#[derive(Debug, thiserror::Error)]
enum UsageError {
    #[error("`generate` takes no target")]
    GenerateWithTarget,
    #[error("--pid and `run` exclude each other")]
    PidAndRun,
    #[error("name a target: --pid PID, or run -- COMMAND")]
    NoTarget,
    #[error("--pid goes after `oom` to filter its kills")]
    PidBeforeOom,
}

/// Runs the subcommand: `oom`, `generate`, or a trace (`--pid` or `run`).
fn dispatch(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(Command::Oom(mut args)) = cli.command {
        args.json = cli.trace.format == cli::Format::Json;
        return runtime.block_on(oom::command::run(args));
    }
    if let Some(Command::Generate { what }) = cli.command {
        return generate(what);
    }
    let spec = match (cli.pid, cli.command) {
        (Some(pid), None) => TargetSpec::Pid(pid),
        (None, Some(Command::Run { command, user })) => TargetSpec::Run { command, user },
        (_, Some(Command::Generate { .. })) => return Err(UsageError::GenerateWithTarget.into()),
        (Some(_), Some(_)) => return Err(UsageError::PidAndRun.into()),
        (None, None) => return Err(UsageError::NoTarget.into()),
        (_, Some(Command::Oom(_))) => return Err(UsageError::PidBeforeOom.into()),
    };
    let mut options = cli.trace;
    options.apply_always_on();
    runtime.block_on(session::run(options, spec))
}

/// `leaktrace generate completions SHELL` / `generate man`: from the clap definitions, on
/// stdout.
fn generate(what: Generate) -> Result<()> {
    let mut command = Cli::command();
    let mut stdout = std::io::stdout().lock();
    match what {
        Generate::Completions { shell } => {
            clap_complete::generate(shell, &mut command, "leaktrace", &mut stdout);
        }
        Generate::Man => {
            clap_mangen::Man::new(command)
                .render(&mut stdout)
                .context("cannot write the man page")?;
        }
    }
    std::io::Write::flush(&mut stdout).context("cannot write to stdout")
}

/// One line on stderr and a non-zero exit.
fn fail(message: &str) -> ExitCode {
    // One line, whatever paths or names from the target it quotes.
    let message = message.replace('\n', " ");
    eprintln!("leaktrace: error: {}", escape::control_chars(&message));
    ExitCode::FAILURE
}

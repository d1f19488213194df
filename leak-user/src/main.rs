//! leaktrace: attach to a running process (or start one) and report the call sites that hold
//! native memory that is never freed.
mod analysis;
mod attach;
mod cli;
mod collect;
mod launch;
mod report;
mod session;
mod symbolize;
mod target;
mod unwind;

use std::process::ExitCode;

use clap::Parser as _;

use cli::{Cli, Command};
use session::TargetSpec;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
    let spec = match (cli.pid, cli.command) {
        (Some(pid), None) => TargetSpec::Pid(pid),
        (None, Some(Command::Run { command })) => TargetSpec::Run(command),
        (Some(_), Some(_)) => return fail("--pid and `run` exclude each other"),
        (None, None) => return fail("name a target: --pid PID, or run -- COMMAND"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    match runtime.block_on(session::run(cli.trace, spec)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&format!("{error:#}")),
    }
}

/// One line on stderr and a non-zero exit.
fn fail(message: &str) -> ExitCode {
    eprintln!("leaktrace: error: {}", message.replace('\n', " "));
    ExitCode::FAILURE
}

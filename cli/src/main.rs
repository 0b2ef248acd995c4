//! `trellis`: one binary for running hosts and driving a lattice. Thin: parsing and printing
//! here, behaviour in the library crates.

mod args;
mod builtins;
mod cmd;
mod console;
mod context;
mod output;
mod progress;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// Hosts allocate on every call; mimalloc's thread-local free lists beat glibc's arenas there
/// (docs/benchmarks.md, the call-path profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let matches = match args::Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => return usage_error(&e),
    };
    let mut cli = match args::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_logging(&cli.command, cli.global.log_format);
    // A context fills in what flags and the environment leave unset, for the commands that
    // drive a lattice: not for managing contexts, and not for `host` and `up`, which deployments
    // configure (a host under systemd must not pick up its user's selected context).
    let uses_context = !matches!(
        &cli.command,
        args::Command::Context(_)
            | args::Command::Host(args::HostCommand { action: None, .. })
            | args::Command::Up(_)
    );
    if uses_context && let Err(e) = context::apply(&mut cli.global, &matches) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli, &matches)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command-line error (or `--help`, `--version`). Usage errors exit 64 (EX_USAGE), not
/// clap's 2, which `trellis` keeps for "accepted but not fully placed" (docs/cli.md).
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() { ExitCode::from(64) } else { ExitCode::SUCCESS }
}

fn init_logging(command: &args::Command, format: args::LogFormat) {
    let default = match command {
        args::Command::Up(_) | args::Command::Host(args::HostCommand { action: None, .. }) => {
            "info"
        }
        // What the component prints, and its traps.
        args::Command::Dev(_) => "warn,trellis_host::runtime::output=info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        args::LogFormat::Json => logs.json().init(),
        args::LogFormat::Text => {
            logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
    }
}

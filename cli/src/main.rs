//! `trellis`: one binary for running hosts and driving a lattice. Thin: parsing and printing
//! here, behaviour in the library crates.

mod args;
mod builtins;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// Hosts allocate on every call; mimalloc's thread-local free lists beat glibc's arenas there
/// (docs/benchmarks.md, the call-path profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    init_logging(&cli.command, cli.global.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(command: &args::Command, format: args::LogFormat) {
    let default = match command {
        args::Command::Up(_) | args::Command::Host(_) => "info",
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

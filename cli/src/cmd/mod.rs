//! One module per subcommand.

pub(crate) mod app;
mod bench;
mod call;
mod claims;
mod config;
mod context;
mod dev;
mod docs;
pub(crate) mod get;
pub(crate) mod host;
mod keys;
mod link;
mod nats;
mod push;
mod secret;
mod start;
mod stop;
mod up;

use std::process::ExitCode;

use anyhow::Context as _;
use trellis_lattice::client::LatticeClient;

use crate::args::{Cli, Command, Global, HostAction};

/// Exit code for "accepted but not (fully) placed".
pub const NOT_PLACED: u8 = 2;

pub async fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Context(cmd) => context::run(g, matches, cmd),
        Command::Up(args) => up::run(g, args).await,
        Command::Host(cmd) => match cmd.action {
            Some(HostAction::Drain(args)) => host::drain(g, args).await,
            None => host::run(g, cmd.run).await,
        },
        Command::Dev(args) => dev::run(g, args).await,
        Command::Console(args) => crate::console::run(g, args).await,
        Command::Get(cmd) => get::run(g, cmd).await,
        Command::Push(args) => push::run(g, args).await,
        Command::Start(cmd) => start::run(g, cmd).await,
        Command::Stop(cmd) => stop::run(g, cmd).await,
        Command::Link(cmd) => link::run(g, cmd).await,
        Command::Call(args) => call::run(g, args).await,
        Command::Config(cmd) => config::run(g, cmd).await,
        Command::Secret(cmd) => secret::run(g, cmd).await,
        Command::Bench(args) => bench::run(g, args).await,
        Command::Keys(cmd) => keys::run(g, cmd),
        Command::Nats(cmd) => nats::run(g, cmd),
        Command::Claims(cmd) => claims::run(g, cmd),
        Command::App(cmd) => app::run(g, cmd).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out_dir } => docs::man(out_dir.as_deref()),
    }
}

/// Connects to the lattice, failing fast with advice when NATS is not there.
pub async fn connect(g: &Global) -> anyhow::Result<LatticeClient> {
    let auth = g.nats_auth()?;
    let connected = trellis_lattice::connect::connect_once(g.nats_url(), "trellis-cli", &auth);
    let nats = match (connected.await, &g.context) {
        (Ok(nats), _) => nats,
        (Err(e), Some(name)) => return Err(e).context(format!("with context `{name}`")),
        (Err(e), None) => return Err(e.into()),
    };
    let client = LatticeClient::new(nats, &g.lattice)
        .context("invalid --lattice")?
        .with_js_domain(auth.js_domain)
        .with_js_replicas(g.js_replicas.clamp(1, 5));
    Ok(match g.operator_key()? {
        Some(key) => client.with_operator(key),
        None => client,
    })
}

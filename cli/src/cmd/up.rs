//! `trellis up`: a local lattice in one command.

use std::process::ExitCode;

use crate::args::{Global, UpArgs};
use crate::nats_server::NatsServer;

pub async fn run(g: &Global, args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut global = g.clone();
    let server = match &g.nats_url {
        Some(url) => {
            eprintln!("using NATS at {url}");
            None
        }
        None => {
            let server = NatsServer::start(args.nats_port).await?;
            eprintln!(
                "started nats-server -js at {} (data in {})",
                server.url(),
                server.store_dir()
            );
            global.nats_url = Some(server.url().to_owned());
            Some(server)
        }
    };
    eprintln!(
        "starting a host in lattice `{}`; Ctrl-C stops everything",
        g.lattice
    );
    let config = super::host::config(&global, &args.host);
    let result = trellis_host::run(config, super::host::shutdown_signal()).await;
    if let Some(server) = server {
        server.stop().await;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

//! `trellis up`: a local lattice in one command.

use std::process::ExitCode;

use trellis_ops::nats_server::LocalNatsServer;

use crate::args::{Global, UpArgs};

pub async fn run(g: &Global, args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut global = g.clone();
    let mut server = match &g.nats_url {
        Some(url) => {
            eprintln!("using NATS at {url}");
            None
        }
        None => {
            let server = LocalNatsServer::start(Some(args.nats_port)).await?;
            eprintln!(
                "started nats-server -js at {} (data and log in {})",
                server.url(),
                server.dir().display()
            );
            global.nats_url = Some(server.url());
            Some(server)
        }
    };
    eprintln!("starting a host in lattice `{}`; Ctrl-C stops everything", g.lattice);
    let mut config = super::host::config(&global, &args.host)?;
    if !config.allow_unsigned {
        eprintln!(
            "local lattice: unsigned components are allowed (--allow-unsigned); a `trellis host` \
             in production refuses them"
        );
        config.allow_unsigned = true;
    }
    if config.scheduler.is_none() {
        config.scheduler = Some(Default::default());
    }
    let result = trellis_host::run(config, super::host::shutdown_signal()).await;
    if let Some(server) = server.as_mut() {
        server.stop().await;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

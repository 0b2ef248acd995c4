//! `trellis stop component|provider`.

use std::process::ExitCode;

use anyhow::bail;
use trellis_lattice::client::LatticeClient;

use super::get::PING_WAIT;
use crate::args::{Global, StopCommand};

#[derive(Clone, Copy)]
enum What {
    Component,
    Provider,
}

pub async fn run(g: &Global, cmd: StopCommand) -> anyhow::Result<ExitCode> {
    let lattice = super::connect(g).await?;
    let (what, id, host) = match cmd {
        StopCommand::Component { id, host } => (What::Component, id, host),
        StopCommand::Provider { id, host } => (What::Provider, id, host),
    };
    let hosts = match host {
        Some(h) => vec![h],
        None => running_on(&lattice, what, &id).await?,
    };
    let noun = match what {
        What::Component => "component",
        What::Provider => "provider",
    };
    if hosts.is_empty() {
        bail!("{noun} `{id}` runs on no host in lattice `{}`", lattice.lattice());
    }
    for host in &hosts {
        match what {
            What::Component => lattice.stop_component(host, &id).await?,
            What::Provider => lattice.stop_provider(host, &id).await?,
        }
        println!("{noun} {id} stopped on {host}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn running_on(lattice: &LatticeClient, what: What, id: &str) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for (host, inventory) in lattice.inventories(PING_WAIT).await? {
        let inv = match inventory {
            Ok(inv) => inv,
            Err(e) => {
                eprintln!("could not ask host {}: {e}", host.id);
                continue;
            }
        };
        let runs = match what {
            What::Component => inv.components.iter().any(|c| c.id == id),
            What::Provider => inv.providers.iter().any(|p| p.id == id),
        };
        if runs {
            found.push(host.id);
        }
    }
    Ok(found)
}

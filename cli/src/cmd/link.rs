//! `trellis link put|get|del`.

use std::process::ExitCode;

use anyhow::bail;
use trellis_lattice::client::LatticeClient;
use trellis_lattice::link::{InterfaceName, Link};

use super::get::{PING_WAIT, links_out};
use crate::args::{Global, LinkCommand, Output};
use crate::output::{link_json, print_json};

pub async fn run(g: &Global, cmd: LinkCommand) -> anyhow::Result<ExitCode> {
    let lattice = super::connect(g).await?;
    match cmd {
        LinkCommand::Put(args) => {
            let link = Link {
                source: args.key.source,
                target: args.target,
                interface: InterfaceName::parse(&args.key.interface)?,
                name: args.key.name,
                config: args.config.into_iter().collect(),
            };
            link.validate()?;
            check_target(&lattice, &link).await?;
            lattice.state().await?.put_link(&link).await?;
            if g.output == Output::Json {
                print_json(&link_json(&link));
            } else {
                println!("link {} -> {} ({}) saved", link.source, link.target, link.interface);
            }
        }
        LinkCommand::Get { source } => list(g, &lattice, source.as_deref()).await?,
        LinkCommand::Del(args) => {
            let interface = InterfaceName::parse(&args.interface)?;
            let existed =
                lattice.state().await?.delete_link(&args.source, &interface, &args.name).await?;
            if !existed {
                bail!(
                    "no link from `{}` over {interface} named `{}`; list links with `trellis link get`",
                    args.source,
                    args.name
                );
            }
            println!("link deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(g: &Global, lattice: &LatticeClient, source: Option<&str>) -> anyhow::Result<()> {
    let mut links = lattice.state().await?.links().await?;
    if let Some(source) = source {
        links.retain(|l| l.source == source);
    }
    links_out(g, &links);
    Ok(())
}

/// A link must point at a component that runs somewhere and exports the interface.
async fn check_target(lattice: &LatticeClient, link: &Link) -> anyhow::Result<()> {
    let interface = link.interface.to_string();
    let mut found_without_export = false;
    let mut unreadable = Vec::new();
    for (host, inventory) in lattice.inventories(PING_WAIT).await? {
        let inv = match inventory {
            Ok(inv) => inv,
            Err(e) => {
                unreadable.push(format!("{}: {e}", host.id));
                continue;
            }
        };
        for c in inv.components.iter().filter(|c| c.id == link.target) {
            if c.exports.contains(&interface) {
                return Ok(());
            }
            found_without_export = true;
        }
    }
    if found_without_export {
        bail!(
            "component `{}` does not export {interface}, so the link cannot work; link a component \
             that does",
            link.target
        );
    }
    let also = if unreadable.is_empty() {
        String::new()
    } else {
        format!(" (could not ask: {})", unreadable.join("; "))
    };
    bail!(
        "no component `{}` runs in lattice `{}`{also}; start it first with `trellis start component \
         <file> --id {}`",
        link.target,
        lattice.lattice(),
        link.target
    )
}

//! `trellis link put|get|del`.

use std::process::ExitCode;

use std::time::Duration;

use anyhow::bail;
use futures::StreamExt;
use prost::Message as _;
use trellis_lattice::client::LatticeClient;
use trellis_lattice::link::{InterfaceName, Link};
use trellis_lattice::proto as pb;
use trellis_lattice::subject::EventKind;

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
            let provider_involved = check_link(&lattice, &link).await?;
            // Listen before writing, so the provider's answer cannot be missed.
            let outcome =
                if provider_involved { Some(LinkOutcome::listen(&lattice).await?) } else { None };
            let revision = lattice.state().await?.put_link(&link).await?;
            if let Some(outcome) = outcome {
                outcome.wait(&link, revision).await?;
            }
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

/// A link must point at a provider or a component (exporting the interface) that runs
/// somewhere, and a running source component must import the interface. Returns whether a
/// running provider is at either end (it will confirm the link).
async fn check_link(lattice: &LatticeClient, link: &Link) -> anyhow::Result<bool> {
    let interface = link.interface.to_string();
    let mut found = false;
    let mut provider_involved = false;
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
        provider_involved |= inv.providers.iter().any(|p| p.id == link.source);
        if inv.providers.iter().any(|p| p.id == link.target) {
            provider_involved = true;
            found = true;
        }
        for c in inv.components.iter().filter(|c| c.id == link.source) {
            let imports = c
                .imports
                .iter()
                .any(|i| trellis_lattice::http::link_interface(unversioned(i)) == interface);
            if !imports {
                bail!(
                    "component `{}` does not import {interface}, so the link would never be used; \
                     it imports: {}",
                    link.source,
                    if c.imports.is_empty() { "nothing".to_owned() } else { c.imports.join(", ") }
                );
            }
        }
        for c in inv.components.iter().filter(|c| c.id == link.target) {
            if c.exports.contains(&interface) {
                found = true;
            } else {
                found_without_export = true;
            }
        }
    }
    if found {
        return Ok(provider_involved);
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
        "no component or provider `{}` runs in lattice `{}`{also}; start it first with `trellis \
         start component <file> --id {}` or `trellis start provider <kind> --id {}`",
        link.target,
        lattice.lattice(),
        link.target,
        link.target
    )
}

fn unversioned(interface: &str) -> &str {
    interface.split_once('@').map_or(interface, |(name, _)| name)
}

/// Waits for the providers at either end to apply (or refuse) links just written.
pub(super) struct LinkOutcome {
    applied: async_nats::Subscriber,
    failed: async_nats::Subscriber,
}

/// How long `link put` waits for a running provider to confirm.
const CONFIRM_WAIT: Duration = Duration::from_secs(5);

impl LinkOutcome {
    /// Listens from now on: before the links are written.
    pub(super) async fn listen(lattice: &LatticeClient) -> anyhow::Result<Self> {
        let (nats, subjects) = (lattice.nats(), lattice.subjects());
        let applied = nats.subscribe(subjects.event(EventKind::LinkApplied)).await?;
        let failed = nats.subscribe(subjects.event(EventKind::LinkFailed)).await?;
        trellis_lattice::connect::sync_with_server(nats).await?;
        Ok(Self { applied, failed })
    }

    async fn wait(self, link: &Link, revision: u64) -> anyhow::Result<()> {
        self.wait_all(std::iter::once(link.key()).collect(), revision).await
    }

    /// Waits until a provider applied each link of `keys` (at `revision` or later); an error
    /// when one refuses; a warning, and `Ok`, when some are unconfirmed after [`CONFIRM_WAIT`].
    pub(super) async fn wait_all(
        mut self,
        mut keys: std::collections::BTreeSet<String>,
        revision: u64,
    ) -> anyhow::Result<()> {
        let event = |msg: &async_nats::Message| match pb::Event::decode(msg.payload.clone()) {
            Ok(pb::Event { body: Some(pb::event::Body::Link(e)), .. }) => {
                (e.revision >= revision).then_some(e)
            }
            _ => None,
        };
        let deadline = tokio::time::Instant::now() + CONFIRM_WAIT;
        while !keys.is_empty() {
            tokio::select! {
                Some(msg) = self.applied.next() => if let Some(e) = event(&msg) {
                    keys.remove(&e.link_key);
                },
                Some(msg) = self.failed.next() => if let Some(e) = event(&msg)
                    && keys.contains(&e.link_key)
                {
                    bail!(
                        "link {} saved, but provider `{}` could not apply it: {}",
                        e.link_key, e.provider_id, e.reason
                    );
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let keys: Vec<String> = keys.into_iter().collect();
                    eprintln!(
                        "link {} saved; no provider has confirmed it within {CONFIRM_WAIT:?}",
                        keys.join(", ")
                    );
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

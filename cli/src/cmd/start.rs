//! `trellis start component|provider`.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use futures::future::join_all;
use trellis_lattice::artifact::{WasmKind, sniff};
use trellis_lattice::client::LatticeClient;
use trellis_proto as pb;

use super::NOT_PLACED;
use super::get::PING_WAIT;
use crate::args::{Global, Output, StartCommand, StartComponentArgs, StartProviderArgs};
use crate::output::print_json;

pub async fn run(g: &Global, cmd: StartCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StartCommand::Component(args) => component(g, args).await,
        StartCommand::Provider(args) => provider(g, args).await,
    }
}

async fn component(g: &Global, args: StartComponentArgs) -> anyhow::Result<ExitCode> {
    trellis_lattice::subject::validate_id("component id", &args.id)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read component file {}", args.file.display()))?;
    match sniff(&bytes) {
        WasmKind::Component => {}
        WasmKind::NotWasm => bail!(
            "{} is not a WebAssembly file; pass a .wasm component built for wasm32-wasip2",
            args.file.display()
        ),
        WasmKind::CoreModule => bail!(
            "{} is a core WebAssembly module, not a component; build for wasm32-wasip2 or wrap it with `wasm-tools component new`",
            args.file.display()
        ),
    }
    let lattice = super::connect(g).await?;
    let digest = lattice.state().await?.put_artifact(&bytes).await?;

    let hosts = match &args.host {
        Some(host) => vec![host.clone()],
        None => {
            let all = lattice.hosts(PING_WAIT).await?;
            let chosen = place(&all, &args.labels, args.replicas);
            if chosen.is_empty() {
                bail!(
                    "no host in lattice `{}` matches {}",
                    g.lattice,
                    describe_labels(&args.labels)
                );
            }
            chosen
        }
    };
    let results = join_all(
        hosts
            .iter()
            .map(|h| lattice.start_component(h, &args.id, &digest)),
    )
    .await;
    let mut started = Vec::new();
    let mut first_error = None;
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Ok(()) => started.push(host.clone()),
            Err(e) => {
                eprintln!("host {host}: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    if started.is_empty() {
        return Err(first_error.map_or_else(|| anyhow::anyhow!("not started"), Into::into));
    }
    if g.output == Output::Json {
        print_json(&serde_json::json!({"id": args.id, "digest": digest, "hosts": started}));
    } else {
        println!(
            "component {} ({digest}) started on {}",
            args.id,
            started.join(", ")
        );
    }
    let wanted = if args.host.is_some() {
        1
    } else {
        args.replicas
    };
    if started.len() < wanted {
        eprintln!(
            "placed {} of {wanted} replicas: not enough matching hosts",
            started.len()
        );
        return Ok(ExitCode::from(NOT_PLACED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Picks up to `replicas` distinct hosts carrying every label, fewest components first.
fn place(hosts: &[pb::HostInfo], labels: &[(String, String)], replicas: usize) -> Vec<String> {
    let mut fit: Vec<&pb::HostInfo> = hosts
        .iter()
        .filter(|h| labels.iter().all(|(k, v)| h.labels.get(k) == Some(v)))
        .collect();
    fit.sort_by(|a, b| {
        a.components
            .cmp(&b.components)
            .then_with(|| a.id.cmp(&b.id))
    });
    fit.into_iter()
        .take(replicas)
        .map(|h| h.id.clone())
        .collect()
}

fn describe_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return "(no hosts are running; start one with `trellis host` or `trellis up`)".into();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("labels {}", pairs.join(","))
}

async fn provider(g: &Global, args: StartProviderArgs) -> anyhow::Result<ExitCode> {
    let lattice = super::connect(g).await?;
    let host = match args.host {
        Some(h) => h,
        None => least_providers(&lattice).await?,
    };
    lattice.start_provider(&host, &args.id, &args.kind).await?;
    if g.output == Output::Json {
        print_json(&serde_json::json!({"id": args.id, "kind": args.kind, "host": host}));
    } else {
        println!("provider {} ({}) started on {host}", args.id, args.kind);
    }
    Ok(ExitCode::SUCCESS)
}

async fn least_providers(lattice: &LatticeClient) -> anyhow::Result<String> {
    let hosts = lattice.hosts(PING_WAIT).await?;
    hosts
        .iter()
        .min_by(|a, b| a.providers.cmp(&b.providers).then_with(|| a.id.cmp(&b.id)))
        .map(|h| h.id.clone())
        .with_context(|| {
            format!(
                "no host in lattice `{}`; start one with `trellis host`",
                lattice.lattice()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, components: u32, labels: &[(&str, &str)]) -> pb::HostInfo {
        pb::HostInfo {
            id: id.into(),
            components,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn places_on_distinct_matching_hosts_least_loaded_first() {
        let hosts = [
            host("a", 3, &[("zone", "x")]),
            host("b", 0, &[("zone", "x")]),
            host("c", 0, &[]),
        ];
        let zone = [("zone".to_string(), "x".to_string())];
        assert_eq!(place(&hosts, &zone, 1), vec!["b"]);
        assert_eq!(place(&hosts, &zone, 5), vec!["b", "a"]);
        assert_eq!(place(&hosts, &[], 2), vec!["b", "c"]);
        assert!(place(&hosts, &[("zone".into(), "y".into())], 1).is_empty());
    }
}

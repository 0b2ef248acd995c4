//! `trellis start component|provider`.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use futures::future::join_all;
use std::path::Path;
use trellis_lattice::artifact::{WasmKind, sniff};
use trellis_lattice::client::LatticeClient;

use trellis_scheduler::plan::choose_hosts;

use super::NOT_PLACED;
use super::get::PING_WAIT;
use crate::args::{Global, Output, StartCommand, StartComponentArgs, StartProviderArgs};
use crate::output::print_json;
use crate::progress::Progress;

pub async fn run(g: &Global, cmd: StartCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StartCommand::Component(args) => component(g, args).await,
        StartCommand::Provider(args) => provider(g, args).await,
    }
}

async fn component(g: &Global, args: StartComponentArgs) -> anyhow::Result<ExitCode> {
    trellis_lattice::subject::validate_id("component id", &args.id)?;
    let bytes = read_component(&args.file)?;
    let lattice = super::connect(g).await?;
    let mib = bytes.len() as f64 / (1024.0 * 1024.0);
    let progress = Progress::start(g, format!("uploading {} ({mib:.1} MiB)", args.file.display()));
    let digest = lattice.state().await?.put_artifact(&bytes).await?;
    let request = trellis_lattice::proto::StartComponentRequest {
        component_id: args.id.clone(),
        digest: digest.clone(),
        limits: args.limits(),
        config: args.config.clone(),
        secrets: args.secrets.clone(),
        ..Default::default()
    };
    for name in &args.config {
        trellis_lattice::subject::validate_id("config name", name)?;
    }
    for name in &args.secrets {
        trellis_lattice::subject::validate_id("secret name", name)?;
    }

    let hosts = match &args.host {
        Some(host) => vec![host.clone()],
        None => {
            let mut all = lattice.hosts(PING_WAIT).await?;
            // Granted secrets open only where the lattice's secrets key is.
            if !args.secrets.is_empty() {
                all.retain(|h| !h.secrets_xkey.is_empty());
            }
            let labels = args.labels.iter().cloned().collect();
            let load = |h: &trellis_proto::HostInfo| h.components as usize;
            let chosen = choose_hosts(&all, &labels, args.replicas, load);
            if chosen.is_empty() {
                bail!(
                    "no host in lattice `{}` matches {}{}",
                    g.lattice,
                    describe_labels(&args.labels),
                    if args.secrets.is_empty() {
                        ""
                    } else {
                        " and holds the secrets key (--secrets-seed), which --secret needs"
                    }
                );
            }
            chosen
        }
    };
    progress.say(format!(
        "starting {} on {} host(s): fetching and compiling",
        args.id,
        hosts.len()
    ));
    let results =
        join_all(hosts.iter().map(|h| lattice.start_component_with(h, request.clone()))).await;
    drop(progress);
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
        println!("component {} ({digest}) started on {}", args.id, started.join(", "));
    }
    let wanted = if args.host.is_some() { 1 } else { args.replicas as usize };
    if started.len() < wanted {
        eprintln!("placed {} of {wanted} replicas: not enough matching hosts", started.len());
        return Ok(ExitCode::from(NOT_PLACED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a component file, refusing what is not a component before anything is uploaded.
pub(crate) fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read component file {}", path.display()))?;
    match sniff(&bytes) {
        WasmKind::Component => Ok(bytes),
        WasmKind::NotWasm => bail!(
            "{} is not a WebAssembly file; pass a .wasm component built for wasm32-wasip2",
            path.display()
        ),
        WasmKind::CoreModule => bail!(
            "{} is a core WebAssembly module, not a component; build for wasm32-wasip2 or wrap \
             it with `wasm-tools component new`",
            path.display()
        ),
    }
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
    lattice.start_provider(&host, &args.id, &args.kind, args.builtin).await?;
    if g.output == Output::Json {
        print_json(&serde_json::json!({"id": args.id, "kind": args.kind, "host": host}));
    } else {
        println!("provider {} ({}) started on {host}", args.id, args.kind);
    }
    Ok(ExitCode::SUCCESS)
}

async fn least_providers(lattice: &LatticeClient) -> anyhow::Result<String> {
    let hosts = lattice.hosts(PING_WAIT).await?;
    let providers = |h: &trellis_proto::HostInfo| h.providers as usize;
    choose_hosts(&hosts, &Default::default(), 1, providers).pop().with_context(|| {
        format!("no host in lattice `{}`; start one with `trellis host`", lattice.lattice())
    })
}

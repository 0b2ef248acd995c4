//! `trellis host`: run a host until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use trellis_host::HostConfig;
use trellis_host::runtime::RuntimeConfig;
use trellis_lattice::connect::NatsAuth;

use crate::args::{DrainArgs, Global, HostArgs};

pub async fn run(g: &Global, args: HostArgs) -> anyhow::Result<ExitCode> {
    let config = config(g, &args)?;
    let (stop_console, console_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(listen) = args.console_listen {
        tokio::spawn(console(g.clone(), listen, async move { drop(console_stopped.await) }));
    }
    let ran = trellis_host::run(config, shutdown_signal()).await;
    drop(stop_console);
    ran?;
    Ok(ExitCode::SUCCESS)
}

/// `trellis host drain`: asks the host to drain, then watches it until it has left (or, with
/// `--stay`, runs nothing), printing what it still runs as that changes.
pub async fn drain(g: &Global, args: DrainArgs) -> anyhow::Result<ExitCode> {
    let lattice = super::connect(g).await?;
    let hosts = lattice.hosts(super::get::PING_WAIT).await?;
    let Some(host) = hosts.iter().find(|h| h.id == args.host || h.name == args.host) else {
        let known: Vec<String> = hosts.iter().map(|h| format!("{} ({})", h.name, h.id)).collect();
        anyhow::bail!(
            "no host `{}` answers in lattice `{}`; hosts: {}",
            args.host,
            lattice.lattice(),
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        );
    };
    if hosts.iter().filter(|h| h.name == args.host).count() > 1 {
        anyhow::bail!("several hosts are named `{}`: name one by its id", args.host);
    }
    let (id, name) = (host.id.clone(), host.name.clone());
    let wait = args.wait.map_or(0, |s| s.saturating_mul(1000));
    let req = trellis_lattice::proto::DrainRequest { stay: args.stay, timeout_ms: wait };
    lattice.drain_host(&id, req).await.with_context(|| format!("cannot drain host {name}"))?;
    println!("host {name} ({id}) is draining");
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    // The host's wait, then its calls' drain: far more than a drain that goes well takes.
    let limit = Duration::from_secs(u64::from(args.wait.unwrap_or(60)) + 60);
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = None;
    loop {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "host {name} is still draining after {limit:?}; its log says what it waits for"
            );
        }
        match lattice.inventory(&id).await {
            Ok(inventory) => {
                let left = (inventory.components.len(), inventory.providers.len());
                if last != Some(left) {
                    println!("  runs {} components and {} providers", left.0, left.1);
                    last = Some(left);
                }
                if args.stay && left == (0, 0) {
                    println!("host {name} is drained and stays up, taking no placements");
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Err(trellis_lattice::client::ControlError::NoSuchHost { .. }) => {
                println!("host {name} is drained and has left the lattice");
                return Ok(ExitCode::SUCCESS);
            }
            // Busy stopping, or leaving: ask again.
            Err(e) => tracing::debug!(error = %e, "inventory while draining"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The web console, served beside the host (`--console-listen`) once NATS answers.
async fn console(
    g: Global,
    listen: std::net::SocketAddr,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let client = loop {
        match super::connect(&g).await {
            Ok(client) => break client,
            // The host waits for NATS as it comes up; the console waits with it.
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
    let args = crate::args::ConsoleArgs { listen, trace_url: None };
    if let Err(e) = crate::console::serve(&g, client, args, stop).await {
        tracing::error!(error = format!("{e:#}"), "the console stopped");
    }
}

pub fn config(g: &Global, args: &HostArgs) -> anyhow::Result<HostConfig> {
    let mut config = HostConfig::new(g.nats_url(), &g.lattice);
    config.nats_auth = g.nats_auth()?;
    config.provider_nats_auth = provider_nats_auth(&config.nats_auth, args)?;
    if let Some(name) = &args.name {
        config.name = name.clone();
    }
    config.labels = args.labels.iter().cloned().collect();
    config.labels.extend(env_labels(std::env::vars()));
    config.health_listen = args.health_listen;
    config.nats_connect_timeout = args.nats_connect_timeout.map(Duration::from_secs);
    config.drain_timeout = Duration::from_secs(args.drain_timeout);
    config.drain_wait = Duration::from_secs(args.drain_wait);
    config.js_replicas = g.js_replicas.clamp(1, 5);
    // The flags stand in for their variables; the other OTEL_* variables are read as they are.
    let otel_var = |name: &str| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => args.otlp_endpoint.clone(),
        "OTEL_EXPORTER_OTLP_PROTOCOL" => args.otlp_protocol.clone(),
        _ => std::env::var(name).ok(),
    };
    config.telemetry = trellis_lattice::telemetry::Config::from_vars("trellis-host", otel_var)?;
    config.heartbeat_interval = Duration::from_secs(args.heartbeat_interval.max(1));
    config.provider_dir = args.provider_dir.clone();
    config.builtins = crate::builtins::all();
    config.metrics_listen = args.metrics_listen;
    config.trusted_issuers = args.trusted_issuers.clone();
    config.trusted_clusters = args.trusted_clusters.clone();
    config.policy_timeout = args.policy.then(|| Duration::from_millis(args.policy_timeout_ms));
    if let Some(path) = &args.cluster_seed {
        let seed = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read cluster seed file {}", path.display()))?;
        config.cluster_seed = Some(seed);
    }
    if let Some(path) = &args.secrets_seed {
        let seed = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read secrets seed file {}", path.display()))?;
        config.secrets_seed = Some(seed);
    }
    config.allow_unsigned = args.allow_unsigned;
    config.compile_cache = !args.no_compile_cache;
    // An empty TRELLIS_TRUSTED_OPERATORS (as templates leave it) trusts nobody.
    config.trusted_operators = args
        .trusted_operators
        .iter()
        .filter(|key| !key.trim().is_empty())
        .map(|key| key.trim().parse().with_context(|| format!("--trusted-operator {key}")))
        .collect::<anyhow::Result<_>>()?;
    if args.scheduler {
        config.scheduler = Some(trellis_scheduler::SchedulerConfig {
            lease_ttl: Duration::from_secs(args.scheduler_lease.max(1)),
            operator: g.operator_key()?,
            ..Default::default()
        });
    }
    config.runtime = RuntimeConfig {
        max_instances: args.max_instances.max(1),
        max_memory_bytes: args.max_memory_mb.max(1) << 20,
        on_demand_allocator: args.on_demand_allocator,
    };
    Ok(config)
}

/// Labels from `TRELLIS_LABEL_<KEY>=<value>` variables: `<key>` in lowercase. Orchestrators
/// set these from node metadata (see deploy/).
fn env_labels(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.filter_map(|(k, v)| {
        let key = k.strip_prefix("TRELLIS_LABEL_")?.to_ascii_lowercase();
        (!key.is_empty()).then_some((key, v))
    })
    .collect()
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the host");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The NATS user of this host's providers: the host's TLS settings and JetStream domain with
/// the providers' own credentials, if --provider-nats-creds or --provider-nats-nkey gives them.
fn provider_nats_auth(host: &NatsAuth, args: &HostArgs) -> anyhow::Result<Option<NatsAuth>> {
    let nkey_seed = match &args.provider_nats_nkey {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
            format!("cannot read --provider-nats-nkey seed file {}", path.display())
        })?),
        None => None,
    };
    if nkey_seed.is_none() && args.provider_nats_creds.is_none() {
        return Ok(None);
    }
    Ok(Some(NatsAuth { creds_file: args.provider_nats_creds.clone(), nkey_seed, ..host.clone() }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_come_from_trellis_label_variables() {
        let vars = [
            ("TRELLIS_LABEL_ZONE", "eu-1"),
            ("TRELLIS_LABELS", "x=y"),
            ("TRELLIS_LABEL_", "no"),
            ("HOME", "/"),
        ];
        let labels =
            super::env_labels(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        assert_eq!(labels, vec![("zone".to_owned(), "eu-1".to_owned())]);
    }
}

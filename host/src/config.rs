//! How a host is configured (the CLI fills this from flags and env).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::RuntimeConfig;

/// Everything a host needs to join a lattice.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// NATS server address.
    pub nats_url: String,
    /// NATS credentials and TLS, passed through (also to providers).
    pub nats_auth: trellis_lattice::connect::NatsAuth,
    /// The providers' own NATS user (TLS and domain as the host's); `None`: the host's.
    pub provider_nats_auth: Option<trellis_lattice::connect::NatsAuth>,
    /// Lattice to join.
    pub lattice: String,
    /// Human-friendly host name (defaults to the machine's hostname).
    pub name: String,
    /// Labels the scheduler places by, for example `zone=a`.
    pub labels: BTreeMap<String, String>,
    /// How often the host publishes its digest.
    pub heartbeat_interval: Duration,
    /// Where provider executables are looked up first.
    pub provider_dir: Option<PathBuf>,
    /// Default time a call may take when the caller sets none.
    pub call_timeout: Duration,
    /// How long SIGTERM waits for calls in flight.
    pub drain_timeout: Duration,
    /// How long a drain (`trellis host drain`, or SIGTERM with a scheduler in the lattice)
    /// waits for the scheduler to move what it placed here before stopping it anyway.
    pub drain_wait: Duration,
    /// wasmtime limits.
    pub runtime: RuntimeConfig,
    /// Account public keys whose component claims this host accepts.
    pub trusted_issuers: Vec<String>,
    /// Accept components without (trusted) claims and unsigned invocations. Local development
    /// only.
    pub allow_unsigned: bool,
    /// Operators whose signed requests change this host, each with a role. Without any (and
    /// without `allow_unsigned`) the host refuses every change.
    pub trusted_operators: Vec<trellis_lattice::signing::TrustedOperator>,
    /// Cluster seed this host signs its own identity with, if the lattice requires one.
    pub cluster_seed: Option<String>,
    /// Seed (`SX...`) of the lattice's secrets key: with it the host opens the secrets granted
    /// to the components it starts. `None`: it starts no component granted a secret.
    pub secrets_seed: Option<String>,
    /// Ask the lattice's policy service before starts and calls, waiting at most this long
    /// (no answer denies). `None`: no policy service.
    pub policy_timeout: Option<Duration>,
    /// Cluster public keys whose host identities this host accepts calls from (empty: any host
    /// key, as long as its signature verifies).
    pub trusted_clusters: Vec<String>,
    /// Providers this host can run in its own process (`start provider --builtin`).
    pub builtins: crate::providers::Builtins,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where to answer `/livez` and `/readyz`; `None`: nowhere.
    pub health_listen: Option<std::net::SocketAddr>,
    /// How long to wait for NATS at start; `None`: as long as it takes.
    pub nats_connect_timeout: Option<std::time::Duration>,
    /// Replicas of the lattice's JetStream buckets when this host creates them (3 on a 3-node
    /// cluster); buckets that exist keep theirs.
    pub js_replicas: usize,
    /// Where to export spans (OTLP/HTTP); `None`: nowhere, at no cost.
    pub telemetry: Option<trellis_lattice::telemetry::Config>,
    /// Share compiled code with the lattice's other hosts through its compile cache (only with
    /// trusted clusters, or in development).
    pub compile_cache: bool,
    /// Run a scheduler beside the host (one of the lattice's schedulers leads); `None`: don't.
    pub scheduler: Option<trellis_scheduler::SchedulerConfig>,
}

impl HostConfig {
    /// A configuration with defaults for everything but the address and lattice.
    pub fn new(nats_url: impl Into<String>, lattice: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            nats_auth: Default::default(),
            provider_nats_auth: None,
            lattice: lattice.into(),
            name: machine_hostname(),
            labels: BTreeMap::new(),
            heartbeat_interval: Duration::from_secs(3),
            provider_dir: None,
            call_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            drain_wait: Duration::from_secs(60),
            runtime: RuntimeConfig::default(),
            trusted_issuers: Vec::new(),
            allow_unsigned: false,
            trusted_operators: Vec::new(),
            cluster_seed: None,
            secrets_seed: None,
            policy_timeout: None,
            trusted_clusters: Vec::new(),
            builtins: Default::default(),
            metrics_listen: None,
            scheduler: None,
            health_listen: None,
            nats_connect_timeout: None,
            telemetry: None,
            js_replicas: 1,
            compile_cache: true,
        }
    }
}

/// The machine's hostname, or `host` when it cannot be read.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default NATS address when neither --nats-url nor TRELLIS_NATS_URL is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

#[derive(Debug, Parser)]
#[command(name = "trellis", version, about = "Run WebAssembly components across a NATS lattice")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Context whose settings fill in what flags and the environment leave unset (default: the
    /// one `trellis context use` selected). Not for `trellis host` and `trellis up`.
    #[arg(long, env = "TRELLIS_CONTEXT", global = true)]
    pub context: Option<String>,
    /// Lattice name (one NATS subject prefix).
    #[arg(long, env = "TRELLIS_LATTICE", default_value = "default", global = true)]
    pub lattice: String,
    /// NATS server address [default: nats://127.0.0.1:4222].
    #[arg(long, env = "TRELLIS_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// Output format.
    #[arg(long, value_enum, env = "TRELLIS_OUTPUT", default_value = "text", global = true)]
    pub output: Output,
    /// Log format (logs go to stderr): `json` writes one JSON object per record.
    #[arg(long, value_enum, env = "TRELLIS_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// NATS credentials file (`.creds`).
    #[arg(long, env = "TRELLIS_NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,
    /// File holding an nkey user seed for NATS.
    #[arg(long, env = "TRELLIS_NATS_NKEY", global = true)]
    pub nats_nkey: Option<PathBuf>,
    /// CA certificate for a TLS connection to NATS.
    #[arg(long, env = "TRELLIS_NATS_TLS_CA", global = true)]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS with NATS (with --nats-tls-key).
    #[arg(long, env = "TRELLIS_NATS_TLS_CERT", global = true, requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS with NATS (with --nats-tls-cert).
    #[arg(long, env = "TRELLIS_NATS_TLS_KEY", global = true, requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// JetStream domain of the lattice's state: set it on a leaf node whose hub runs
    /// JetStream under a domain (see deploy/nats/), for example `hub`.
    #[arg(long, env = "TRELLIS_JS_DOMAIN", global = true)]
    pub js_domain: Option<String>,
    /// Replicas of the lattice's JetStream buckets when this process creates them (hosts, and
    /// commands that write state): 3 on a 3-node NATS cluster, so links, config, artifacts and
    /// applications survive a server. Buckets that exist keep theirs.
    #[arg(long, env = "TRELLIS_JS_REPLICAS", default_value_t = 1, global = true)]
    pub js_replicas: usize,
    /// Seed file of the operator key that signs requests changing the lattice (`trellis keys
    /// gen operator`; hosts trust its public key with --trusted-operator). A host with
    /// --scheduler signs the scheduler's requests with it.
    #[arg(long, env = "TRELLIS_OPERATOR_KEY", global = true)]
    pub operator_key: Option<PathBuf>,
}

impl Global {
    pub fn nats_url(&self) -> &str {
        self.nats_url.as_deref().unwrap_or(DEFAULT_NATS_URL)
    }

    /// Credentials and TLS settings for NATS, with the nkey seed read from its file.
    pub fn nats_auth(&self) -> anyhow::Result<trellis_lattice::connect::NatsAuth> {
        use anyhow::Context as _;
        let nkey_seed =
            match &self.nats_nkey {
                Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read NATS nkey seed file {}", path.display())
                })?),
                None => None,
            };
        Ok(trellis_lattice::connect::NatsAuth {
            creds_file: self.nats_creds.clone(),
            nkey_seed,
            tls_ca: self.nats_tls_ca.clone(),
            tls_client: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
            js_domain: self.js_domain.clone(),
        })
    }

    /// The operator key from --operator-key, if one is given.
    pub fn operator_key(
        &self,
    ) -> anyhow::Result<Option<std::sync::Arc<trellis_lattice::signing::OperatorKey>>> {
        use anyhow::Context as _;
        let Some(path) = &self.operator_key else { return Ok(None) };
        let seed = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read operator key file {}", path.display()))?;
        let key = trellis_lattice::signing::OperatorKey::from_seed(&seed)
            .with_context(|| format!("--operator-key {}", path.display()))?;
        Ok(Some(std::sync::Arc::new(key)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Where the console listens (loopback by default: it shows the whole lattice).
    #[arg(long, default_value = "127.0.0.1:8800", env = "TRELLIS_CONSOLE_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Link to a component's traces in your trace UI; `{component}` is replaced by its id
    /// (e.g. `http://localhost:16686/search?service=trellis&tags=%7B%22trellis.target%22%3A%22{component}%22%7D`).
    #[arg(long, env = "TRELLIS_CONSOLE_TRACE_URL")]
    pub trace_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local lattice: nats-server (unless --nats-url is given) and one host.
    Up(UpArgs),
    /// Run a host that joins the lattice (`trellis host drain` drains one before maintenance).
    Host(HostCommand),
    /// Build a component project, serve it on HTTP (on a local lattice unless one is up), and
    /// rebuild and replace it in place when its sources change.
    Dev(DevArgs),
    /// Serve a web console: the lattice live, and its applications (actions need an operator
    /// key).
    Console(ConsoleArgs),
    /// Show hosts, a host's inventory, or links.
    #[command(subcommand)]
    Get(GetCommand),
    /// Upload a component to the lattice's artifact store without starting it; with
    /// `--compile`, have one host compile it into the compile cache first.
    Push(PushArgs),
    /// Start a component or provider.
    #[command(subcommand)]
    Start(StartCommand),
    /// Stop a component or provider.
    #[command(subcommand)]
    Stop(StopCommand),
    /// Create, list and delete links.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Call an exported function of a component, wherever it runs, and print the result.
    Call(CallArgs),
    /// Create, show and delete named config (read by components through wasi:config).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Store, read, list and delete secrets, sealed to the lattice's secrets key (read by the
    /// components granted them through wasi:config).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Measure Trellis against baselines in the same run (see docs/benchmarks.md).
    Bench(BenchArgs),
    /// Make nkeys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// NATS settings derived from the lattice's subjects.
    #[command(subcommand)]
    Nats(NatsCommand),
    /// Sign and inspect component claims.
    #[command(subcommand)]
    Claims(ClaimsCommand),
    /// Deploy applications from manifests and follow them (a host with --scheduler places them).
    #[command(subcommand)]
    App(AppCommand),
    /// Keep named connection settings (NATS URLs, credentials, TLS, lattice, operator key) and
    /// pick one.
    #[command(subcommand)]
    Context(ContextCommand),
    /// Print a shell completion script: `trellis completions bash > /etc/bash_completion.d/trellis`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Write man pages: trellis(1) to stdout, or one page per command into --out-dir.
    Man {
        /// Directory to write `trellis.1`, `trellis-get.1`, `trellis-get-hosts.1`, ... into.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// A Rust crate to build for wasm32-wasip2, a componentize-py app (app.py and wit/), or a
    /// .wasm component another tool builds.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// The WIT world a componentize-py app targets (e.g. wasi:http/proxy@0.2.12) [default: the
    /// only world in its wit/].
    #[arg(long)]
    pub world: Option<String>,
    /// Component id [default: the crate's or file's name].
    #[arg(long)]
    pub id: Option<String>,
    /// Where the http-server provider listens.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Save the connection flags given with it (`--nats-url`, `--lattice`, `--nats-creds`,
    /// `--nats-nkey`, `--nats-tls-*`, `--js-domain`, `--operator-key`) as context NAME.
    Add {
        name: String,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// Where `trellis console` serves for this lattice.
        #[arg(long)]
        console_url: Option<String>,
        /// Select it too.
        #[arg(long)]
        select: bool,
    },
    /// Select context NAME for the commands that follow.
    Use { name: String },
    /// List contexts; `*` marks the selected one.
    Ls,
    /// Show a context's settings (the selected one by default).
    Show { name: Option<String> },
    /// Delete context NAME.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Deploy (or update to) the version in a manifest; waits until it is placed.
    Deploy {
        /// The manifest: Trellis YAML (docs/manifest.md) or a wadm (wasmCloud OAM) manifest,
        /// translated (docs/migrating-from-wasmcloud.md).
        manifest: PathBuf,
        /// Seconds to wait for placement; then exit 2 if it is not placed yet.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// User name for OCI registries (`oci://` sources); the password comes from
        /// TRELLIS_OCI_PASSWORD.
        #[arg(long, env = "TRELLIS_OCI_USERNAME")]
        oci_username: Option<String>,
        /// Password or token for OCI registries (use the environment variable: arguments are
        /// visible to other users of the machine).
        #[arg(
            long,
            env = "TRELLIS_OCI_PASSWORD",
            hide_env_values = true,
            requires = "oci_username"
        )]
        oci_password: Option<String>,
    },
    /// Where an application stands: per component, desired and running per host.
    Status {
        /// Application name.
        name: String,
    },
    /// Every application and its state.
    List,
    /// Stop everything an application runs and remove its links and config.
    Undeploy {
        /// Application name.
        name: String,
    },
    /// What happened to an application: deploys, rollbacks, undeploys.
    History {
        /// Application name.
        name: String,
    },
    /// Go back to an earlier version of an application.
    Rollback {
        /// Application name.
        name: String,
        /// The version to run again (see `trellis app history`); by default the newest one
        /// before the current one that was completely placed.
        version: Option<String>,
        /// Seconds to wait for placement.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// Print the JSON Schema of manifests.
    Schema,
    /// Print the Trellis manifest a wadm (wasmCloud OAM) manifest translates to, for review.
    Convert {
        /// The wadm manifest (`apiVersion: core.oam.dev/v1beta1`, `kind: Application`).
        manifest: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key pair: prints the public key, writes the seed to a 0600 file.
    Gen {
        /// What the key is for.
        #[arg(value_enum)]
        kind: KeyKind,
        /// Seed file to write [default: ./<kind>.nk]; never overwritten.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyKind {
    /// Signs requests that change the lattice; hosts trust it with --trusted-operator.
    Operator,
    Account,
    Cluster,
    Host,
    Component,
    Provider,
    /// A NATS user key, for nkey-authenticated accounts (see deploy/nats/).
    NatsUser,
    /// The lattice's secrets key (curve25519, `X...`): hosts hold the seed (--secrets-seed),
    /// `trellis secret put` seals to the public key (--xkey).
    Secrets,
}

#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Print the subject permissions of one kind of NATS user of --lattice, as a nats-server
    /// `permissions` block to paste under that user (see deploy/nats/roles.conf).
    Permissions {
        /// Whose permissions.
        #[arg(long, value_enum)]
        role: NatsRoleArg,
        /// An application subject (wildcards allowed) that providers may publish and subscribe
        /// to, such as the subscriptions of a messaging link (repeatable; `--role provider`).
        #[arg(long = "app-subject", value_name = "SUBJECT")]
        app_subjects: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NatsRoleArg {
    /// `trellis host` processes (and the providers they start, unless given their own user).
    Host,
    /// Capability providers, with a user of their own (`trellis host --provider-nats-creds`).
    Provider,
    /// An operator's CLI: changes the lattice, calls components, serves nothing.
    Operator,
    /// Reads only: hosts, inventories, events, state.
    Viewer,
}

#[derive(Debug, Subcommand)]
pub enum ClaimsCommand {
    /// Embed signed claims in a component.
    Sign(ClaimsSignArgs),
    /// Show a component's claims and whether they verify.
    Inspect {
        /// The component.
        file: PathBuf,
        /// Account public keys to check the issuer against; repeatable.
        #[arg(long = "trusted-issuer", env = "TRELLIS_TRUSTED_ISSUERS", value_delimiter = ',')]
        trusted_issuers: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ClaimsSignArgs {
    /// The component to sign.
    pub file: PathBuf,
    /// Where to write the signed component.
    #[arg(long, short)]
    pub output_file: PathBuf,
    /// Seed file of the issuing account (from `trellis keys gen account`).
    #[arg(long)]
    pub issuer: PathBuf,
    /// Component name.
    #[arg(long)]
    pub name: String,
    /// Revision.
    #[arg(long, default_value_t = 1)]
    pub rev: u32,
    /// Validity from now, like `30d`, `12h`, `90m`, `3600s` [default: never expires].
    #[arg(long, value_parser = parse_duration)]
    pub expires: Option<std::time::Duration>,
    /// An interface it may import beyond the baseline (`wasi:keyvalue/store`, `wasi:keyvalue/*`);
    /// repeatable.
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// Forbid hosts to keep this component's instances warm between calls (`--reuse`): every
    /// call gets a fresh instance, so no state survives from one call to the next.
    #[arg(long)]
    pub no_reuse: bool,
    /// A component (by the name in its own claims) that may call this one; repeatable.
    /// Without any, every component may (calls from providers and operators are not limited).
    #[arg(long = "caller")]
    pub callers: Vec<String>,
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30d, 12h, 90m or 3600s"))?;
    let secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit in `{s}`: use s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(secs)))
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenario to run.
    #[arg(value_enum, default_value = "all")]
    pub scenario: BenchScenario,
    /// Small counts: checks that the scenarios run, measures little.
    #[arg(long)]
    pub quick: bool,
    /// The http-hello component; `call` uses greeter.wasm and caller.wasm beside it [default:
    /// built beside this binary's target directory].
    #[arg(long)]
    pub component: Option<PathBuf>,
    /// The componentize-py py-hello component that `compile` and `wake` start [default:
    /// `wasm-components/py-hello.wasm` in this binary's target directory, where the tests
    /// build it; http-hello when missing].
    #[arg(long)]
    pub python_component: Option<PathBuf>,
    /// Hosts the `scale` scenario plays [default: 1000, 100 with --quick].
    #[arg(long)]
    pub hosts: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchScenario {
    All,
    Invoke,
    Local,
    Http,
    Start,
    Memory,
    Call,
    Compile,
    Wake,
    Schedule,
    Telemetry,
    State,
    Scale,
    Wasi03,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Port for the spawned nats-server.
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    #[command(flatten)]
    pub host: HostArgs,
}

/// `trellis host`: run a host, or act on one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct HostCommand {
    #[command(subcommand)]
    pub action: Option<HostAction>,
    #[command(flatten)]
    pub run: HostArgs,
}

#[derive(Debug, Subcommand)]
pub enum HostAction {
    /// Drain a host before maintenance: it takes no new placements, the scheduler starts its
    /// replicas on other hosts before they stop there, what is left stops (calls in flight
    /// finish), and the host exits (or, with --stay, stays up empty). Needs an admin operator.
    Drain(DrainArgs),
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The host: its id or name (as `trellis get hosts` lists them).
    pub host: String,
    /// Stay up, empty and draining, instead of exiting (until the host is restarted).
    #[arg(long)]
    pub stay: bool,
    /// Longest the host waits for the scheduler to move its replicas before stopping them
    /// anyway, in seconds [default: the host's --drain-wait].
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u32>,
    /// Return once the host has been asked, without watching it drain.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    /// Host name shown in listings [default: the machine's hostname].
    #[arg(long, env = "TRELLIS_HOST_NAME")]
    pub name: Option<String>,
    /// Serve the web console here too (as `trellis console` does), e.g. 127.0.0.1:8800.
    #[arg(long, env = "TRELLIS_HOST_CONSOLE_LISTEN")]
    pub console_listen: Option<std::net::SocketAddr>,
    /// Label `key=value` the scheduler places by; repeatable. Every environment variable
    /// TRELLIS_LABEL_<KEY>=<value> adds one too (key in lowercase).
    #[arg(long = "label", value_parser = parse_key_value, env = "TRELLIS_LABELS", value_delimiter = ',')]
    pub labels: Vec<(String, String)>,
    /// Seconds between heartbeats.
    #[arg(long, env = "TRELLIS_HEARTBEAT_INTERVAL", default_value_t = 3)]
    pub heartbeat_interval: u64,
    /// Directory searched first for `trellis-provider-<kind>` executables.
    #[arg(long, env = "TRELLIS_PROVIDER_DIR")]
    pub provider_dir: Option<PathBuf>,
    /// Calls running at once on this host (the instance pool holds twice as many: room for one
    /// in-process call from each to another component).
    #[arg(long, env = "TRELLIS_MAX_INSTANCES", default_value_t = 256)]
    pub max_instances: u32,
    /// Largest linear memory of one instance, in MiB.
    #[arg(long, env = "TRELLIS_MAX_MEMORY_MB", default_value_t = 64)]
    pub max_memory_mb: usize,
    /// Allocate instances on demand instead of from a pre-reserved pool.
    #[arg(long, env = "TRELLIS_ON_DEMAND_ALLOCATOR")]
    pub on_demand_allocator: bool,
    /// Compile every component here instead of loading code another host of the lattice
    /// compiled (the compile cache, `TRELLIS_<lattice>_COMPILED`; used only with
    /// --trusted-cluster, or --allow-unsigned), and share none.
    #[arg(long, env = "TRELLIS_NO_COMPILE_CACHE")]
    pub no_compile_cache: bool,
    /// Account public key whose signed components this host runs; repeatable.
    #[arg(long = "trusted-issuer", env = "TRELLIS_TRUSTED_ISSUERS", value_delimiter = ',')]
    pub trusted_issuers: Vec<String>,
    /// Operator public key whose signed requests change this host, optionally with a role:
    /// `KEY` (admin), `KEY:deployer` (applications, components, providers, links, config) or
    /// `KEY:viewer` (reads only); repeatable. Without any, the host refuses every change
    /// unless --allow-unsigned.
    #[arg(long = "trusted-operator", env = "TRELLIS_TRUSTED_OPERATORS", value_delimiter = ',')]
    pub trusted_operators: Vec<String>,
    /// NATS credentials file (`.creds`) for the providers this host starts, instead of the
    /// host's own: give them a user with `trellis nats permissions --role provider`, so a
    /// provider cannot serve calls, reach a host's inbox or change the lattice.
    #[arg(long, env = "TRELLIS_PROVIDER_NATS_CREDS", conflicts_with = "provider_nats_nkey")]
    pub provider_nats_creds: Option<PathBuf>,
    /// File holding an nkey user seed for the providers this host starts (see
    /// --provider-nats-creds).
    #[arg(long, env = "TRELLIS_PROVIDER_NATS_NKEY")]
    pub provider_nats_nkey: Option<PathBuf>,
    /// Run components without trusted claims and accept unsigned invocations and control
    /// requests. Local development only (`trellis up` sets it).
    #[arg(long, env = "TRELLIS_ALLOW_UNSIGNED")]
    pub allow_unsigned: bool,
    /// Ask the lattice's policy service (`trellis.<lattice>.policy`) before starts and calls;
    /// no answer within --policy-timeout-ms denies.
    #[arg(long, env = "TRELLIS_POLICY")]
    pub policy: bool,
    /// How long to wait for the policy service.
    #[arg(long, env = "TRELLIS_POLICY_TIMEOUT_MS", default_value_t = 500)]
    pub policy_timeout_ms: u64,
    /// Serve Prometheus metrics on this address (`GET /metrics`), for example 0.0.0.0:9090.
    #[arg(long, env = "TRELLIS_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Seed file of the cluster key that vouches for this host's identity.
    #[arg(long, env = "TRELLIS_CLUSTER_SEED")]
    pub cluster_seed: Option<PathBuf>,
    /// Seed file of the lattice's secrets key (`trellis keys gen secrets`): the host opens the
    /// secrets granted to the components it starts with it (docs/security.md, "Secrets").
    #[arg(long, env = "TRELLIS_SECRETS_SEED")]
    pub secrets_seed: Option<PathBuf>,
    /// Cluster public key whose hosts may call this one; repeatable. Without any, every host
    /// key is accepted as long as its signature verifies.
    #[arg(long = "trusted-cluster", env = "TRELLIS_TRUSTED_CLUSTERS", value_delimiter = ',')]
    pub trusted_clusters: Vec<String>,
    /// Answer `GET /livez` (the process runs) and `GET /readyz` (connected to NATS and taking
    /// work; 503 otherwise) on this address, for orchestrators' probes.
    #[arg(long, env = "TRELLIS_HEALTH_LISTEN")]
    pub health_listen: Option<std::net::SocketAddr>,
    /// Give up starting when NATS cannot be reached within this many seconds, and exit 1
    /// naming the URL (default: keep trying, with backoff; `/readyz` says 503 meanwhile).
    #[arg(long, env = "TRELLIS_NATS_CONNECT_TIMEOUT", value_name = "SECONDS")]
    pub nats_connect_timeout: Option<u64>,
    /// Seconds SIGTERM waits for calls in flight before the host leaves anyway.
    #[arg(long, env = "TRELLIS_DRAIN_TIMEOUT", default_value_t = 10)]
    pub drain_timeout: u64,
    /// Seconds a drain (`trellis host drain`, or SIGTERM while a scheduler leads the lattice)
    /// waits for the scheduler to move this host's replicas before stopping them anyway.
    #[arg(long, env = "TRELLIS_DRAIN_WAIT", default_value_t = 60)]
    pub drain_wait: u64,
    /// Export traces and metrics to this OpenTelemetry collector, for example
    /// `http://127.0.0.1:4318` (`/v1/traces` and `/v1/metrics` are appended) or, with
    /// `--otlp-protocol grpc`, `http://127.0.0.1:4317`. The other OTEL_* variables are read too
    /// (per-signal endpoints, headers, OTEL_METRIC_EXPORT_INTERVAL, OTEL_SERVICE_NAME,
    /// OTEL_TRACES_SAMPLER, ...; see
    /// docs/observability.md). Providers this host starts export their spans alike.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// How to reach the collector: `http/protobuf` (port 4318) or `grpc` (port 4317).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_parser = ["http/protobuf", "grpc"])]
    pub otlp_protocol: Option<String>,
    /// Run a scheduler beside this host: it places deployed applications (`trellis app`) while
    /// it holds the lattice's scheduler lease. Several may run; one leads.
    #[arg(long, env = "TRELLIS_SCHEDULER")]
    pub scheduler: bool,
    /// Seconds a scheduler leader's lease lasts unrenewed: how soon another takes over when it
    /// dies. The first scheduler of a lattice sets it for all.
    #[arg(long, env = "TRELLIS_SCHEDULER_LEASE", default_value_t = 6)]
    pub scheduler_lease: u64,
}

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// Every host in the lattice.
    Hosts,
    /// What one host runs.
    Inventory {
        /// Host id (from `trellis get hosts`).
        host_id: String,
    },
    /// Links, optionally of one source.
    Links {
        /// Only links from this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// The lattice's events as they happen (host, component, provider, link, denied calls).
    Events {
        /// Keep printing until interrupted [default: listen for --wait-ms, then exit].
        #[arg(long)]
        follow: bool,
        /// Without --follow, how long to listen.
        #[arg(long, default_value_t = 2000)]
        wait_ms: u64,
        /// Only events of these kinds (repeatable), for example `component_started`.
        #[arg(long = "kind")]
        kinds: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StartCommand {
    /// Upload a component to the lattice and start it.
    Component(StartComponentArgs),
    /// Start a capability provider process on a host.
    Provider(StartProviderArgs),
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Path to the .wasm component.
    pub file: PathBuf,
    /// Ask one host to compile it and store the code in the lattice's compile cache, so that
    /// every host that starts it later loads the code, the first one too.
    #[arg(long)]
    pub compile: bool,
    /// The host that compiles [default: the one running fewest components].
    #[arg(long, requires = "compile")]
    pub host: Option<String>,
}

#[derive(Debug, Args)]
pub struct StartComponentArgs {
    /// Path to the .wasm component.
    pub file: PathBuf,
    /// Component id (the name links and calls use).
    #[arg(long)]
    pub id: String,
    /// Start on this host only.
    #[arg(long, conflicts_with_all = ["labels", "replicas"])]
    pub host: Option<String>,
    /// Only hosts with this `key=value` label; repeatable.
    #[arg(long = "label", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Number of hosts to run a replica on.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Largest linear memory of one instance, in MiB [default: the host's].
    #[arg(long)]
    pub max_memory_mb: Option<u64>,
    /// Longest a call may run, in milliseconds [default: the host's].
    #[arg(long)]
    pub timeout_ms: Option<u32>,
    /// Calls running at once; more are refused at once with Unavailable [default: no own limit].
    #[arg(long)]
    pub max_concurrent: Option<u32>,
    /// Largest request payload in bytes; larger ones get TooLarge [default: 1 MiB].
    #[arg(long)]
    pub max_request_bytes: Option<u64>,
    /// Keep instances warm between calls instead of a fresh one per call. State the guest
    /// keeps in memory then survives from one call to the next (docs/performance.md).
    #[arg(long)]
    pub reuse: bool,
    /// With --reuse: calls one instance serves before it is dropped [default: 10000].
    #[arg(long, requires = "reuse")]
    pub reuse_max_calls: Option<u32>,
    /// With --reuse: how long an unused instance is kept, in milliseconds [default: 1000].
    #[arg(long, requires = "reuse")]
    pub reuse_idle_ms: Option<u32>,
    /// Named config (`trellis config put`) the component reads through wasi:config;
    /// repeatable, later ones win on the same key.
    #[arg(long = "config")]
    pub config: Vec<String>,
    /// Secret (`trellis secret put`) the component may read through wasi:config, under its
    /// name; repeatable. Only hosts holding the lattice's secrets key (--secrets-seed) run it.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
}

impl StartComponentArgs {
    /// The limit overrides given on the command line, if any.
    pub fn limits(&self) -> Option<trellis_proto::ComponentLimits> {
        let any = self.max_memory_mb.is_some()
            || self.timeout_ms.is_some()
            || self.max_concurrent.is_some()
            || self.max_request_bytes.is_some()
            || self.reuse;
        any.then(|| trellis_proto::ComponentLimits {
            max_memory_bytes: self.max_memory_mb.unwrap_or(0).saturating_mul(1 << 20),
            timeout_ms: self.timeout_ms.unwrap_or(0),
            max_concurrent: self.max_concurrent.unwrap_or(0),
            max_request_bytes: self.max_request_bytes.unwrap_or(0),
            reuse: self.reuse.then(|| trellis_proto::Reuse {
                max_calls: self.reuse_max_calls.unwrap_or(0),
                idle_ms: self.reuse_idle_ms.unwrap_or(0),
            }),
        })
    }
}

#[derive(Debug, Args)]
pub struct StartProviderArgs {
    /// Provider kind, for example `http-server`.
    pub kind: String,
    /// Provider id (the source of its links).
    #[arg(long)]
    pub id: String,
    /// Start on this host [default: the host with the fewest providers].
    #[arg(long)]
    pub host: Option<String>,
    /// Run it inside the host process instead of as a child process (no process hop; the
    /// `trellis` binary includes every provider of this repository).
    #[arg(long)]
    pub builtin: bool,
}

#[derive(Debug, Subcommand)]
pub enum StopCommand {
    /// Stop a component (on every host, or one).
    Component {
        /// Component id.
        id: String,
        /// Stop only on this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// Stop a provider (on every host, or one).
    Provider {
        /// Provider id.
        id: String,
        /// Stop only on this host.
        #[arg(long)]
        host: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Create or replace a link (idempotent).
    Put(LinkPutArgs),
    /// List links.
    Get {
        /// Only links from this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// Delete a link.
    Del(LinkKeyArgs),
}

#[derive(Debug, Args)]
pub struct LinkKeyArgs {
    /// The calling side (a provider such as http-server, or a component).
    #[arg(long)]
    pub source: String,
    /// `namespace:package/interface`, for example `wasi:http/incoming-handler`.
    #[arg(long)]
    pub interface: String,
    /// Link name, to tell several links of one source and interface apart.
    #[arg(long, default_value = "default")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LinkPutArgs {
    #[command(flatten)]
    pub key: LinkKeyArgs,
    /// The serving side.
    #[arg(long)]
    pub target: String,
    /// Link config `key=value`; repeatable.
    #[arg(long = "config", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
}

pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected key=value, got `{s}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86400);
        assert_eq!(parse_duration("90m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("15").unwrap().as_secs(), 15);
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn key_values_parse() {
        assert_eq!(parse_key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// Component id.
    pub component: String,
    /// `namespace:package/interface.function`, for example `trellis:test/types.greet`.
    pub function: String,
    /// Arguments as a JSON array (records as objects, enums and variant cases as strings or
    /// `{"case": value}`, options as null or the value).
    #[arg(long, default_value = "[]")]
    pub args: String,
    /// How long to wait, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Sign the call with this host seed (`trellis keys gen host`), as strict hosts require.
    #[arg(long, env = "TRELLIS_CALL_SEED")]
    pub seed: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Create or replace named config `name` with `key=value` pairs.
    Put {
        /// Config name.
        name: String,
        /// `key=value` pairs.
        #[arg(value_parser = parse_key_value, required = true)]
        values: Vec<(String, String)>,
    },
    /// Show named config `name`, or list every name.
    Get {
        /// Config name.
        name: Option<String>,
    },
    /// Delete named config `name`.
    Del {
        /// Config name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store secret NAME, sealed to the lattice's secrets key: only hosts holding its seed open
    /// it. The value is read from stdin (one trailing newline dropped) or --from-file, never
    /// from the command line.
    Put {
        /// Secret name.
        name: String,
        /// The lattice's public secrets key (`X...`, printed by `trellis keys gen secrets`).
        #[arg(long, env = "TRELLIS_SECRETS_XKEY")]
        xkey: String,
        /// Read the value from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Print secret NAME's value: asks a host holding the secrets key, with a request only an
    /// admin operator may sign; the answer is sealed to a key made for this request.
    Get {
        /// Secret name.
        name: String,
        /// Ask this host [default: one that holds the secrets key, --xkey's when given].
        #[arg(long)]
        host: Option<String>,
        /// The lattice's public secrets key (`X...`): the answer must come from it.
        #[arg(long, env = "TRELLIS_SECRETS_XKEY")]
        xkey: Option<String>,
    },
    /// List the secrets' names (never their values).
    Ls,
    /// Delete secret NAME (components that read it keep their copy until they stop).
    Rm {
        /// Secret name.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

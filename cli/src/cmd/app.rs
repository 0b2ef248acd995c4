//! `trellis app ...`: deploy applications from manifests and follow what the scheduler does.
//!
//! The command changes applications through the scheduler crate's
//! [`AppStore`](trellis_scheduler::apps::AppStore); the leading scheduler places them and
//! writes their status.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use trellis_lattice::client::LatticeClient;
use trellis_scheduler::apps::{AppError, AppRecord, AppStatus, AppStore, Deployed, State};
use trellis_scheduler::manifest::{Manifest, Source, wadm};

use super::NOT_PLACED;
use crate::args::{AppCommand, Global, Output};
use crate::output::{print_json, print_table, time_text};
use crate::progress::Progress;

pub async fn run(g: &Global, cmd: AppCommand) -> anyhow::Result<ExitCode> {
    match &cmd {
        AppCommand::Schema => {
            print!("{}", Manifest::json_schema());
            return Ok(ExitCode::SUCCESS);
        }
        AppCommand::Convert { manifest } => return convert(manifest),
        _ => {}
    }
    if let AppCommand::Deploy { manifest, .. } = &cmd {
        // A bad manifest is reported before anything else, NATS included.
        read_manifest(manifest)?;
    }
    let lattice = super::connect(g).await?;
    let apps = AppStore::open(&lattice.jetstream(), &g.lattice, lattice.js_replicas())
        .await?
        .with_sealer(lattice.operator());
    match cmd {
        AppCommand::Deploy { manifest, wait, oci_username, oci_password } => {
            let credentials = oci_username
                .zip(oci_password)
                .map(|(username, password)| trellis_ops::oci::Credentials { username, password });
            let sources = Sources { lattice: &lattice, oci: credentials, g };
            deploy(g, &sources, &apps, &manifest, wait).await
        }
        AppCommand::Status { name } => {
            let record = get(g, &apps, &name).await?;
            let status = apps.status(&name).await?;
            print_status(g, &record, status.as_ref());
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::List => list(g, &apps).await,
        AppCommand::Undeploy { name } => undeploy(g, &apps, &name).await,
        AppCommand::History { name } => {
            let history = apps.history(&name).await?;
            match g.output {
                Output::Json => print_json(&json!(history)),
                Output::Text => {
                    let rows: Vec<Vec<String>> = history
                        .iter()
                        .map(|c| {
                            vec![
                                time_text(c.time_ms),
                                c.action.clone(),
                                c.version.clone(),
                                c.reason.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["TIME (UTC)", "ACTION", "VERSION", "REASON"], &rows);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::Rollback { name, version, wait } => {
            let version = apps.rollback(&name, version.as_deref()).await?;
            eprintln!("application `{name}`: rolling back to {version}");
            wait_placed(g, &apps, &name, version.as_str(), wait).await
        }
        AppCommand::Schema | AppCommand::Convert { .. } => unreachable!("handled above"),
    }
}

/// Reads a Trellis manifest, or translates a wadm one (saying on stderr what reads
/// differently).
fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    let read = wadm::read(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if read.from_wadm {
        eprintln!(
            "{}: a wadm manifest, translated (`trellis app convert` shows the result)",
            path.display()
        );
    }
    for note in &read.notes {
        eprintln!("note: {note}");
    }
    Ok(read.manifest)
}

/// `trellis app convert`: the translation as Trellis YAML, with its notes as comments.
fn convert(path: &Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    if !wadm::is_wadm(&text) {
        bail!(
            "{} is not a wadm manifest (no `apiVersion: core.oam.dev/v1beta1`); a Trellis \
             manifest deploys as it is",
            path.display()
        );
    }
    let t = wadm::translate(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    println!("# Translated from {} by `trellis app convert`.", path.display());
    println!("# File sources are relative to that manifest's directory.");
    for note in &t.notes {
        println!("# note: {note}");
    }
    print!("{}", t.manifest.to_yaml());
    Ok(ExitCode::SUCCESS)
}

async fn get(g: &Global, apps: &AppStore, name: &str) -> anyhow::Result<AppRecord> {
    match apps.get(name).await? {
        Some(record) => Ok(record),
        None => bail!(
            "no application `{name}` in lattice `{}`; list them with `trellis app list`",
            g.lattice
        ),
    }
}

/// Where component sources come from: files, the lattice store, OCI registries.
pub(crate) struct Sources<'a> {
    pub lattice: &'a LatticeClient,
    pub oci: Option<trellis_ops::oci::Credentials>,
    pub g: &'a Global,
}

impl Sources<'_> {
    /// Resolves every component source to a digest in the lattice artifact store, uploading
    /// files and pulling OCI references. Nothing is deployed if one fails.
    pub async fn resolve(&self, manifest: &mut Manifest, base: &Path) -> anyhow::Result<()> {
        let state = self.lattice.state().await?;
        for c in &mut manifest.components {
            let digest = match &c.source {
                Source::File(file) => {
                    let file = base.join(file);
                    let bytes = std::fs::read(&file).with_context(|| {
                        format!("component `{}`: cannot read its source {}", c.name, file.display())
                    })?;
                    state.put_artifact(&bytes).await?
                }
                Source::Digest(digest) => {
                    if !state.has_artifact(digest).await? {
                        bail!(
                            "component `{}`: {digest} is not in the lattice artifact store; give \
                             a file path or an oci:// reference as its source",
                            c.name
                        );
                    }
                    digest.clone()
                }
                Source::Oci(text) => {
                    let reference = trellis_ops::oci::Reference::parse(text)?;
                    let progress = Progress::start(self.g, format!("pulling oci://{reference}"));
                    let pulled = trellis_ops::oci::pull(&reference, self.oci.as_ref())
                        .await
                        .with_context(|| format!("component `{}`", c.name))?;
                    progress.done(format!("pulled oci://{reference} ({})", pulled.manifest_digest));
                    state.put_artifact(&pulled.bytes).await?
                }
            };
            c.source = Source::Digest(digest);
        }
        Ok(())
    }
}

async fn deploy(
    g: &Global,
    sources: &Sources<'_>,
    apps: &AppStore,
    path: &Path,
    wait: u64,
) -> anyhow::Result<ExitCode> {
    let mut manifest = read_manifest(path)?;
    sources.resolve(&mut manifest, path.parent().unwrap_or(Path::new("."))).await?;
    let name = manifest.name.to_string();
    let version = manifest.version.to_string();
    let links = LinksToConfirm::listen(sources.lattice, &manifest).await?;
    let deployed = match apps.deploy(&manifest).await {
        Ok(deployed) => deployed,
        Err(AppError::NameTaken { workload, owner, .. }) => bail!(
            "`{workload}` is already a component or provider of application `{owner}`; rename \
             it in {}",
            path.display()
        ),
        Err(e) => return Err(e.into()),
    };
    if deployed == Deployed::Unchanged {
        eprintln!("application `{name}` {version} is already the deployed version");
        return wait_placed(g, apps, &name, &version, wait).await;
    }
    let placed = wait_placed(g, apps, &name, &version, wait).await?;
    if placed == ExitCode::SUCCESS {
        links.outcome.wait_all(links.keys, 0).await?;
    }
    Ok(placed)
}

/// The links of a deploy that its providers will apply: new or changed links with one of the
/// application's providers at either end. `deployed` waits for them, so a request sent right
/// after finds an http-server listening.
struct LinksToConfirm {
    outcome: super::link::LinkOutcome,
    keys: std::collections::BTreeSet<String>,
}

impl LinksToConfirm {
    /// Listens for the providers' word before the application is written.
    async fn listen(lattice: &LatticeClient, manifest: &Manifest) -> anyhow::Result<Self> {
        let providers: Vec<&str> = manifest.providers.iter().map(|p| p.name.as_str()).collect();
        let existing = lattice.state().await?.links().await?;
        let keys = manifest
            .links
            .iter()
            .map(|l| l.to_link())
            .filter(|l| {
                providers.contains(&l.source.as_str()) || providers.contains(&l.target.as_str())
            })
            .filter(|l| !existing.contains(l))
            .map(|l| l.key())
            .collect();
        Ok(Self { outcome: super::link::LinkOutcome::listen(lattice).await?, keys })
    }
}

/// Waits until the scheduler reports `version` of `name` placed (0), unplaceable (2), failed or
/// rolled back (1); after `wait` seconds, 2.
async fn wait_placed(
    g: &Global,
    apps: &AppStore,
    name: &str,
    version: &str,
    wait: u64,
) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + Duration::from_secs(wait);
    let progress = Progress::start(g, format!("{name} {version}: waiting for the scheduler"));
    loop {
        let record = get(g, apps, name).await?;
        if record.current.as_ref().map(|v| v.as_str()) != Some(version) {
            let why = record
                .history
                .iter()
                .rev()
                .find(|c| c.version == version && c.action == "automatic-rollback")
                .map(|c| c.reason.clone());
            match why {
                Some(reason) => bail!(
                    "{name} {version} failed and was rolled back to {}: {reason}",
                    record.current.as_ref().map(|v| v.as_str()).unwrap_or("nothing")
                ),
                None => bail!("{name} {version} was replaced by another deploy while waiting"),
            }
        }
        let status = apps.status(name).await?.filter(|s| s.version == version);
        if let Some(s) = &status {
            progress.say(format!("{name} {version}: {} {}", s.state, s.reason));
        }
        match status.as_ref().map(|s| s.state) {
            Some(State::Deployed) => {
                drop(progress);
                print_status(g, &record, status.as_ref());
                return Ok(ExitCode::SUCCESS);
            }
            Some(State::Unplaceable) => {
                print_status(g, &record, status.as_ref());
                let reason = status.map(|s| s.reason).unwrap_or_default();
                eprintln!("accepted, but cannot be placed yet: {reason}");
                return Ok(ExitCode::from(NOT_PLACED));
            }
            Some(State::Failed) => {
                print_status(g, &record, status.as_ref());
                bail!("{name} {version} failed: {}", status.map(|s| s.reason).unwrap_or_default());
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            print_status(g, &record, status.as_ref());
            match status {
                Some(s) => {
                    eprintln!("accepted, but not placed after {wait} s: {} {}", s.state, s.reason)
                }
                None => eprintln!(
                    "accepted, but no scheduler has placed it after {wait} s: is a host running \
                     with --scheduler in lattice `{}`?",
                    g.lattice
                ),
            }
            return Ok(ExitCode::from(NOT_PLACED));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn undeploy(g: &Global, apps: &AppStore, name: &str) -> anyhow::Result<ExitCode> {
    apps.undeploy(name).await?;
    let progress = Progress::start(g, format!("{name}: undeploying"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = apps.status(name).await?;
        if status.as_ref().is_some_and(|s| s.state == State::Undeployed) {
            drop(progress);
            match g.output {
                Output::Json => print_json(&json!({ "name": name, "state": "undeployed" })),
                Output::Text => println!("application `{name}` undeployed"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            eprintln!("undeploy accepted; replicas are still stopping");
            return Ok(ExitCode::from(NOT_PLACED));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn list(g: &Global, apps: &AppStore) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let mut all = Vec::new();
    for record in apps.all().await? {
        let status = apps.status(&record.name).await?;
        let current = record.current.as_ref().map(|v| v.to_string()).unwrap_or_default();
        let state =
            status.as_ref().map(|s| s.state.to_string()).unwrap_or_else(|| "pending".into());
        rows.push(vec![
            record.name.clone(),
            current.clone(),
            state.clone(),
            record.versions.len().to_string(),
        ]);
        all.push(json!({ "name": record.name, "version": current, "state": state, "versions": record.versions.len() }));
    }
    match g.output {
        Output::Json => print_json(&json!(all)),
        Output::Text => print_table(&["NAME", "VERSION", "STATE", "VERSIONS"], &rows),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(g: &Global, record: &AppRecord, status: Option<&AppStatus>) {
    let current = record.current.as_ref().map(|v| v.to_string());
    match g.output {
        Output::Json => print_json(&json!({
            "name": record.name,
            "current": current,
            "stable": record.stable.as_ref().map(|v| v.to_string()),
            "status": status,
        })),
        Output::Text => {
            let Some(status) = status else {
                println!(
                    "app {} {}: no status yet (is a host running with --scheduler?)",
                    record.name,
                    current.unwrap_or_else(|| "(undeployed)".into())
                );
                return;
            };
            let reason = if status.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", status.reason)
            };
            println!("app {} {}: {}{reason}", status.name, status.version, status.state);
            let rows: Vec<Vec<String>> = status
                .workloads
                .iter()
                .map(|w| {
                    vec![
                        w.name.clone(),
                        w.kind.clone(),
                        w.desired.to_string(),
                        w.hosts.len().to_string(),
                        w.state.to_string(),
                        if w.reason.is_empty() { w.hosts.join(",") } else { w.reason.clone() },
                    ]
                })
                .collect();
            if !rows.is_empty() {
                print_table(
                    &["NAME", "KIND", "DESIRED", "RUNNING", "STATE", "HOSTS / REASON"],
                    &rows,
                );
            }
        }
    }
}

//! Applications in JetStream: what is deployed (written through [`AppStore`] by `trellis app`
//! and the console), how it stands (written by the leading scheduler), and the scheduler's
//! leader lease.
//!
//! [`AppStore`] owns applications: every change to one (deploy, rollback, undeploy, marking a
//! version stable, an automatic rollback) goes through its one compare-and-set loop, and the
//! check that a component or provider name belongs to one application only is made there too.
//!
//! Bucket `TRELLIS_<lattice>_APPS` (see [`stored`]):
//! - `spec.<app>`: the application's index ([`stored::Index`]): the kept versions' names, each
//!   with the SHA-256 of its manifest, which one should run, the stable one, the history. Small
//!   whatever the number of versions. The first deploy of a name creates it (create-only), so
//!   of two first deploys of one name only one wins the name.
//! - `version.<app>.<sha256>`: one kept version's manifest (sources resolved to digests), under
//!   the hex SHA-256 of its JSON: a key names its content, so it is written once and never
//!   changes, and a reader checks it.
//! - `status.<app>`: an [`AppStatus`].
//! - `name.<id>`: which application claimed component or provider name `id` ([`claims`]);
//!   written before the record, so of two applications deploying one name one is refused.
//!
//! `spec.<app>` written by earlier versions holds the whole [`AppRecord`] (every manifest
//! inline): it is still read, and the next change to the application rewrites it as an index.
//! Every value is sealed by the writer's operator key when it has one, and read through the
//! reader's [`RecordGate`](trellis_lattice::record::RecordGate) when it has one.
//!
//! Bucket `TRELLIS_<lattice>_SCHEDULER` holds the [`Lease`].
//!
//! ```no_run
//! # async fn example(js: async_nats::jetstream::Context, manifest: trellis_scheduler::manifest::Manifest)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use trellis_scheduler::apps::{AppStore, Deployed};
//!
//! let apps = AppStore::open(&js, "default", 1).await?;
//! if apps.deploy(&manifest).await? == Deployed::Unchanged {
//!     println!("already the version to run");
//! }
//! let back_to = apps.rollback(manifest.name.as_str(), None).await?;
//! println!("rolled back to {back_to}");
//! # Ok(()) }
//! ```

mod change;
pub mod claims;
mod error;
mod lease;
mod store;
pub mod stored;

use serde::{Deserialize, Serialize};

use crate::manifest::{Manifest, Version};
use trellis_lattice::envelope::unix_ms;

pub use error::AppError;
pub use lease::Lease;
pub use store::{AppStore, Deployed};

/// Versions kept per application; older ones are dropped from the record.
pub const MAX_VERSIONS: usize = 32;
/// History entries kept per application.
pub const MAX_HISTORY: usize = 100;

/// Everything known about one application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    /// The application's name.
    pub name: String,
    /// Every version deployed (oldest first), with sources resolved to digests.
    pub versions: Vec<Manifest>,
    /// The version that should run; `None` once undeployed.
    pub current: Option<Version>,
    /// The last version that was completely placed: automatic rollbacks return to it.
    #[serde(default)]
    pub stable: Option<Version>,
    /// What happened, oldest first.
    pub history: Vec<Change>,
}

/// One entry of an application's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// `deploy`, `rollback`, `undeploy`, `automatic-rollback` or `deployed`.
    pub action: String,
    /// The version it concerns.
    pub version: String,
    /// Why, for rollbacks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl AppRecord {
    /// The manifest of `version`, if the record still has it.
    pub fn manifest(&self, version: &str) -> Option<&Manifest> {
        self.versions.iter().find(|m| m.version.as_str() == version)
    }

    /// The manifest that should run now.
    pub fn current_manifest(&self) -> Option<&Manifest> {
        self.current.as_ref().and_then(|v| self.manifest(v.as_str()))
    }

    /// Appends to the history, dropping the oldest entries past [`MAX_HISTORY`].
    pub fn record(&mut self, action: &str, version: &str, reason: &str) {
        self.history.push(Change {
            time_ms: unix_ms(),
            action: action.to_owned(),
            version: version.to_owned(),
            reason: reason.to_owned(),
        });
        let excess = self.history.len().saturating_sub(MAX_HISTORY);
        self.history.drain(..excess);
    }
}

/// Where an application stands, as the leading scheduler last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The application's name.
    pub name: String,
    /// The version being placed (empty once undeployed).
    pub version: String,
    /// Overall state: the worst of its workloads.
    pub state: State,
    /// Why, when not deployed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Per component and provider.
    pub workloads: Vec<WorkloadStatus>,
    /// Unix milliseconds of this status.
    pub updated_ms: u64,
    /// The scheduler (host id) that wrote it.
    pub scheduler: String,
}

/// One component or provider of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    /// Its lattice id.
    pub name: String,
    /// `component` or `provider`.
    pub kind: String,
    /// Replicas wanted.
    pub desired: u32,
    /// Hosts (names) running the wanted version.
    pub hosts: Vec<String>,
    /// Its state.
    pub state: State,
    /// Why, when not deployed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// How an application or one of its workloads stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Everything runs as wanted.
    Deployed,
    /// The scheduler is starting, replacing or stopping replicas.
    Reconciling,
    /// Not enough matching hosts: waits for more.
    Unplaceable,
    /// Starting failed; the reason says why.
    Failed,
    /// Nothing runs any more.
    Undeployed,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Deployed => "deployed",
            State::Reconciling => "reconciling",
            State::Unplaceable => "unplaceable",
            State::Failed => "failed",
            State::Undeployed => "undeployed",
        })
    }
}

//! Applications in JetStream: what is deployed (written by `trellis app`), how it stands
//! (written by the leading scheduler), and the scheduler's leader lease.
//!
//! Bucket `TRELLIS_<lattice>_APPS`: `spec.<app>` holds an [`AppRecord`] (every version's
//! manifest, which one should run, the history), `status.<app>` an [`AppStatus`]. Bucket
//! `TRELLIS_<lattice>_SCHEDULER` holds the lease: one key whose entries expire on the server,
//! so a dead leader's lease lapses by itself.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use trellis_lattice::envelope::unix_ms;
use trellis_lattice::manifest::{Manifest, Version};
use trellis_lattice::record::{self, Opened, RecordGate, Stored};
use trellis_lattice::signing::OperatorKey;
use trellis_lattice::state::{self, StateError};

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

/// A write lost a race with another writer (compare-and-set failed): read and try again.
#[derive(Debug, thiserror::Error)]
#[error("application `{0}` changed while it was being updated; try again")]
pub struct Conflict(pub String);

/// The lattice's applications bucket.
#[derive(Clone)]
pub struct AppStore {
    kv: kv::Store,
    /// Seals the records and statuses it writes (see [`trellis_lattice::record`]).
    sealer: Option<Arc<OperatorKey>>,
    /// Checks the application records it reads; `None`: reads them unchecked (listings).
    gate: Option<Arc<RecordGate>>,
}

impl std::fmt::Debug for AppStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppStore").field("bucket", &self.kv.name).finish()
    }
}

fn spec_key(name: &str) -> String {
    format!("spec.{name}")
}

fn status_key(name: &str) -> String {
    format!("status.{name}")
}

fn js(op: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> StateError {
    move |e| StateError::JetStream { op, reason: e.to_string() }
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StateError::BadRecord { key: key.to_owned(), reason: e.to_string() })
}

impl AppStore {
    /// Opens (creating when missing, with `replicas` replicas) the applications bucket of
    /// `lattice`.
    pub async fn open(
        js: &jetstream::Context,
        lattice: &str,
        replicas: usize,
    ) -> Result<Self, StateError> {
        let bucket = format!("TRELLIS_{lattice}_APPS");
        let kv = state::open_kv(js, &bucket, replicas).await?;
        Ok(Self { kv, sealer: None, gate: None })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.kv.name
    }

    /// Seals what it writes with `operator`'s key; `None` writes plain (development).
    pub fn with_sealer(mut self, operator: Option<Arc<OperatorKey>>) -> Self {
        self.sealer = operator;
        self
    }

    /// Reads application records only as `gate` lets through (the scheduler does).
    pub fn with_gate(mut self, gate: Arc<RecordGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// `json` under `key`, sealed when this store has a key.
    fn value(&self, key: &str, json: Vec<u8>) -> Result<bytes::Bytes, StateError> {
        let Some(operator) = &self.sealer else { return Ok(json.into()) };
        record::seal(operator, &self.kv.name, key, Some(&json), unix_ms())
            .map(Into::into)
            .map_err(|e| js("seal")(&e))
    }

    /// The record's JSON in `bytes` stored under `key`: checked when this store has a gate.
    fn unseal<'a>(&self, key: &str, bytes: &'a [u8]) -> Result<Option<&'a [u8]>, StateError> {
        let Some(gate) = &self.gate else { return Ok(Stored::parse(bytes).contents()) };
        match gate.open(&self.kv.name, key, bytes) {
            Ok(Opened::Put(json)) => Ok(Some(json)),
            Ok(Opened::Deleted) => Ok(None),
            Err(denied) => {
                Err(StateError::Refused { key: key.to_owned(), reason: denied.to_string() })
            }
        }
    }

    /// The record of `name` and its revision (for [`Self::put`]).
    pub async fn get(&self, name: &str) -> Result<Option<(AppRecord, u64)>, StateError> {
        let key = spec_key(name);
        match self.kv.entry(&key).await.map_err(|e| js("app read")(&e))? {
            Some(e) if e.operation == kv::Operation::Put => match self.unseal(&key, &e.value)? {
                Some(json) => Ok(Some((decode(&key, json)?, e.revision))),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// Writes `record` if nobody changed it since `revision` (0: it must not exist yet).
    pub async fn put(
        &self,
        record: &AppRecord,
        revision: u64,
    ) -> Result<Result<u64, Conflict>, StateError> {
        let key = spec_key(&record.name);
        let value = self.value(&key, serde_json::to_vec(record).expect("records serialize"))?;
        let conflict = || Ok(Err(Conflict(record.name.clone())));
        if revision == 0 {
            match self.kv.create(&key, value).await {
                Ok(rev) => Ok(Ok(rev)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => conflict(),
                Err(e) => Err(js("app write")(&e)),
            }
        } else {
            match self.kv.update(&key, value, revision).await {
                Ok(rev) => Ok(Ok(rev)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => conflict(),
                Err(e) => Err(js("app write")(&e)),
            }
        }
    }

    /// Every application record.
    pub async fn all(&self) -> Result<Vec<AppRecord>, StateError> {
        Ok(self.all_checked().await?.0)
    }

    /// Every application record, and the names of those this store's gate refused.
    pub async fn all_checked(&self) -> Result<(Vec<AppRecord>, Vec<String>), StateError> {
        let mut keys = self.kv.keys().await.map_err(|e| js("app list")(&e))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| js("app list")(&e))?;
            if let Some(name) = key.strip_prefix("spec.") {
                names.push(name.to_owned());
            }
        }
        names.sort();
        let (mut records, mut refused) = (Vec::with_capacity(names.len()), Vec::new());
        for name in names {
            // One unreadable record (written by a newer version, or damaged) must not stop the
            // others from being listed and scheduled.
            match self.get(&name).await {
                Ok(Some((record, _))) => records.push(record),
                Ok(None) => {}
                Err(e @ StateError::BadRecord { .. }) => {
                    tracing::warn!(app = %name, error = %e, "skipping an unreadable application record");
                }
                Err(e @ StateError::Refused { .. }) => {
                    tracing::warn!(app = %name, error = %e, "application record not applied");
                    refused.push(name);
                }
                Err(e) => return Err(e),
            }
        }
        Ok((records, refused))
    }

    /// The last status the scheduler wrote for `name`.
    pub async fn status(&self, name: &str) -> Result<Option<AppStatus>, StateError> {
        let key = status_key(name);
        match self.kv.entry(&key).await.map_err(|e| js("status read")(&e))? {
            // What the scheduler reports, for people: read unchecked.
            Some(e) if e.operation == kv::Operation::Put => {
                match Stored::parse(&e.value).contents() {
                    Some(json) => Ok(Some(decode(&key, json)?)),
                    None => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }

    /// Writes the status of an application (the leading scheduler does).
    pub async fn put_status(&self, status: &AppStatus) -> Result<(), StateError> {
        let key = status_key(&status.name);
        let value = self.value(&key, serde_json::to_vec(status).expect("statuses serialize"))?;
        self.kv.put(key, value).await.map_err(|e| js("status write")(&e))?;
        Ok(())
    }

    /// Every change to records and statuses, from now on (with the current values first).
    pub async fn watch(&self) -> Result<kv::Watch, StateError> {
        self.kv.watch_all().await.map_err(|e| js("app watch")(&e))
    }
}

/// The scheduler leader lease: whoever holds the key leads until it stops renewing it.
#[derive(Clone)]
pub struct Lease {
    kv: kv::Store,
    holder: String,
    /// Our entry's revision while we hold the lease.
    revision: Option<u64>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("holder", &self.holder).finish()
    }
}

const LEASE_KEY: &str = "leader";

impl Lease {
    /// Opens the lease bucket of `lattice`, whose entries live `ttl`. Every scheduler of a
    /// lattice must use the same `ttl` (the bucket keeps the first one).
    pub async fn open(
        js: &jetstream::Context,
        lattice: &str,
        holder: &str,
        (ttl, replicas): (Duration, usize),
    ) -> Result<Self, StateError> {
        let bucket = format!("TRELLIS_{lattice}_SCHEDULER");
        let config = kv::Config {
            bucket,
            history: 1,
            max_age: ttl,
            num_replicas: replicas,
            ..Default::default()
        };
        let kv = state::open_kv_with(js, config).await?;
        Ok(Self { kv, holder: holder.to_owned(), revision: None })
    }

    /// The revision of the lease entry while it is held (each renewal makes a new one).
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// Takes the lease if nobody holds it, or renews ours. True while we lead.
    pub async fn hold(&mut self) -> bool {
        let value = self.holder.clone().into_bytes();
        let result = match self.revision {
            Some(revision) => {
                self.kv.update(LEASE_KEY, value.into(), revision).await.map_err(|e| e.to_string())
            }
            None => self.kv.create(LEASE_KEY, value.into()).await.map_err(|e| e.to_string()),
        };
        match result {
            Ok(revision) => {
                self.revision = Some(revision);
                true
            }
            Err(_) => {
                // An update that timed out may still have been applied: the key is then ours
                // under a newer revision.
                self.revision = match self.kv.entry(LEASE_KEY).await {
                    Ok(Some(e))
                        if e.operation == kv::Operation::Put
                            && e.value.as_ref() == self.holder.as_bytes() =>
                    {
                        Some(e.revision)
                    }
                    _ => None,
                };
                self.revision.is_some()
            }
        }
    }

    /// Who holds the lease now, if anyone.
    pub async fn holder(&self) -> Option<String> {
        let entry = self.kv.entry(LEASE_KEY).await.ok()??;
        (entry.operation == kv::Operation::Put)
            .then(|| String::from_utf8_lossy(&entry.value).into_owned())
    }

    /// Gives the lease up (on shutdown), so another scheduler takes over at once.
    pub async fn release(&mut self) {
        if let Some(revision) = self.revision.take() {
            let _ = self.kv.delete_expect_revision(LEASE_KEY, Some(revision)).await;
        }
    }
}

//! [`AppStore`]: the applications bucket, and the one compare-and-set loop every change to an
//! application goes through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::manifest::{Manifest, Version};
use async_nats::jetstream::{self, kv};
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use serde::Deserialize;
use trellis_lattice::envelope::unix_ms;
use trellis_lattice::record::{self, Opened, RecordGate, Stored};
use trellis_lattice::signing::OperatorKey;
use trellis_lattice::state::{self, StateError};

use super::change::{Step, name_taken};
use super::claims::{Claim, claim_key};
use super::stored::{self, Index, Spec, spec_key, status_key, version_key};
use super::{AppError, AppRecord, AppStatus, Change};

/// Retries of one change after losing a compare-and-set, before [`AppError::Busy`].
const RETRIES: usize = 7;
/// Version manifests kept in memory once read; past this many, the memory is cleared.
const CACHED_VERSIONS: usize = 4096;

const DEPLOY_FIX: &str = "rename it in the manifest";
const ROLLBACK_FIX: &str =
    "undeploy that application first, or deploy a version of this one that names it otherwise";
const MISSING: &str = "missing: the application's index names this version but the bucket has \
                       no such key (was it deleted by hand?)";

/// A manifest's component and provider names.
fn names(manifest: &Manifest) -> Vec<String> {
    manifest.workload_names().map(str::to_owned).collect()
}

/// How a name was claimed.
enum Claimed {
    /// Nobody had claimed it: the key was created (at this revision).
    New(String, u64),
    /// Another application's claim no longer held: written over (at this revision).
    TakenOver(String, u64),
    /// The application's own claim, renewed.
    Renewed,
}

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployed {
    /// A version new to the application, now the one to run.
    New,
    /// A version it kept (same content), made the one to run again.
    Again,
    /// Already the version to run: nothing was written.
    Unchanged,
}

/// The lattice's applications bucket: reads applications and makes every change to them.
#[derive(Clone)]
pub struct AppStore {
    kv: kv::Store,
    lattice: String,
    /// Seals the records and statuses it writes (see [`trellis_lattice::record`]).
    sealer: Option<Arc<OperatorKey>>,
    /// Checks the application records it reads; `None`: reads them unchecked (listings).
    gate: Option<Arc<RecordGate>>,
    /// Manifests read from (or written to) version keys, with the keys' revisions. A key names
    /// its content, so what is remembered never goes stale.
    versions: Arc<Mutex<HashMap<String, (Manifest, u64)>>>,
}

impl std::fmt::Debug for AppStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppStore").field("bucket", &self.kv.name).finish()
    }
}

/// An application as read, with what writing it back needs.
struct Loaded {
    /// `None`: no such application.
    record: Option<AppRecord>,
    /// The revision of `spec.<app>` to write over; 0: create it.
    revision: u64,
    /// Versions stored under keys of their own: version → (sha256, the key's revision).
    stored: HashMap<String, (String, u64)>,
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
        Ok(Self {
            kv,
            lattice: lattice.to_owned(),
            sealer: None,
            gate: None,
            versions: Arc::default(),
        })
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

    /// Deploys `manifest` (its sources resolved): makes it the version of its application to
    /// run, creating the application on its first deploy. Refuses a version name the
    /// application keeps with other content, and component or provider names that another
    /// application's current version has.
    pub async fn deploy(&self, manifest: &Manifest) -> Result<Deployed, AppError> {
        let app = manifest.name.as_str();
        let before = self.current_names(app).await?;
        let claimed = self.claim_names(manifest, DEPLOY_FIX).await?;
        match self.change(app, true, |r| r.deploy(manifest)).await {
            Ok(deployed) => {
                self.release_dropped(app, before).await;
                Ok(deployed)
            }
            Err(e) => {
                self.release(claimed).await;
                Err(e)
            }
        }
    }

    /// Makes version `to` of `name` the one to run again; `None`: the newest version before
    /// the current one that was completely placed. Answers the version it rolled back to.
    pub async fn rollback(&self, name: &str, to: Option<&str>) -> Result<Version, AppError> {
        let record = self.get(name).await?.ok_or_else(|| self.no_such(name))?;
        let target = record.rollback_target(to)?;
        let manifest = record.manifest(target.as_str()).expect("a rollback target is kept");
        // The version rolled back to may name what another application took since.
        let claimed = self.claim_names(manifest, ROLLBACK_FIX).await?;
        if let Err(e) = self.change(name, false, |r| r.roll_back_to(&target)).await {
            self.release(claimed).await;
            return Err(e);
        }
        let before = record.current_manifest().map(names).unwrap_or_default();
        self.release_dropped(name, before).await;
        Ok(target)
    }

    /// Takes `name` out of service: the scheduler stops its replicas, and its component and
    /// provider names are free for other applications.
    pub async fn undeploy(&self, name: &str) -> Result<(), AppError> {
        let before = self.current_names(name).await?;
        self.change(name, false, |r| r.undeploy()).await?;
        self.release_dropped(name, before).await;
        Ok(())
    }

    /// What happened to `name`, oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<Change>, AppError> {
        Ok(self.get(name).await?.ok_or_else(|| self.no_such(name))?.history)
    }

    /// Marks `version` of `name` completely placed, if it still is the one to run (the leading
    /// scheduler does). True if that changed the record.
    pub async fn mark_stable(&self, name: &str, version: &str) -> Result<bool, AppError> {
        self.change(name, false, |r| Ok(r.mark_stable(version))).await
    }

    /// Goes back from version `from` of `name`, which failed for `reason`, to the stable `to`,
    /// if nobody changed the application meanwhile (the leading scheduler does). True if it
    /// did.
    pub async fn roll_back_automatically(
        &self,
        name: &str,
        (from, to): (&str, &str),
        reason: &str,
    ) -> Result<bool, AppError> {
        self.change(name, false, |r| Ok(r.roll_back_automatically(from, to, reason))).await
    }

    /// Claims every component and provider name of `manifest` for its application (see
    /// [`super::claims`]), or refuses the first that another application holds. Answers the
    /// claims it wrote new or took over (not those it only renewed), to release if the change
    /// they were for fails.
    async fn claim_names(
        &self,
        manifest: &Manifest,
        fix: &str,
    ) -> Result<Vec<(String, u64)>, AppError> {
        let app = manifest.name.as_str();
        let mut claimed = Vec::new();
        let mut first_claims = false;
        for id in manifest.workload_names() {
            match self.claim(app, id, fix).await {
                Ok(Claimed::Renewed) => {}
                Ok(Claimed::New(key, revision)) => {
                    first_claims = true;
                    claimed.push((key, revision));
                }
                Ok(Claimed::TakenOver(key, revision)) => claimed.push((key, revision)),
                Err(e) => {
                    self.release(claimed).await;
                    return Err(e);
                }
            }
        }
        // Applications deployed before names were claimed hold theirs without a claim key.
        if first_claims && let Some((workload, owner)) = name_taken(manifest, &self.all().await?) {
            let owner = owner.to_owned();
            self.release(claimed).await;
            return Err(AppError::NameTaken { workload, owner, fix: fix.to_owned() });
        }
        Ok(claimed)
    }

    /// Claims `id` for `app`.
    async fn claim(&self, app: &str, id: &str, fix: &str) -> Result<Claimed, AppError> {
        let key = claim_key(id);
        for _ in 0..=RETRIES {
            let claim = Claim { app: app.to_owned(), at_ms: unix_ms() };
            let value = self.value(&key, serde_json::to_vec(&claim).expect("claims serialize"))?;
            match self.kv.create(&key, value.clone()).await {
                Ok(revision) => return Ok(Claimed::New(key, revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(js("name claim")(&e).into()),
            }
            let Some(entry) = self.kv.entry(&key).await.map_err(|e| js("name claim read")(&e))?
            else {
                continue;
            };
            let holder = match entry.operation {
                kv::Operation::Put => match self.unseal(&key, &entry.value)? {
                    Some(json) => Some(decode::<Claim>(&key, json)?),
                    None => None,
                },
                _ => None,
            };
            let ours = holder.as_ref().is_some_and(|h| h.app == app);
            if let Some(holder) = holder.filter(|h| h.app != app) {
                let in_use = self.get(&holder.app).await?.is_some_and(|r| {
                    r.current_manifest().is_some_and(|m| m.workload_names().any(|n| n == id))
                });
                if holder.holds(in_use, unix_ms()) {
                    return Err(AppError::NameTaken {
                        workload: id.to_owned(),
                        owner: holder.app,
                        fix: fix.to_owned(),
                    });
                }
            }
            // Ours (renewed, so that it is fresh while this change is written), or one that
            // no longer holds: written over only if nobody wrote it since it was read.
            match self.kv.update(&key, value, entry.revision).await {
                Ok(_) if ours => return Ok(Claimed::Renewed),
                Ok(revision) => return Ok(Claimed::TakenOver(key, revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(js("name claim")(&e).into()),
            }
        }
        Err(AppError::Busy { name: app.to_owned() })
    }

    /// The component and provider names of `app`'s current version.
    async fn current_names(&self, app: &str) -> Result<Vec<String>, StateError> {
        Ok(self.get(app).await?.and_then(|r| r.current_manifest().map(names)).unwrap_or_default())
    }

    /// Releases `app`'s claims of those of `before` (names its current version had) that its
    /// current version no longer has. Best effort: a claim left behind no longer holds once
    /// it is older than [`super::claims::PENDING_MS`].
    async fn release_dropped(&self, app: &str, before: Vec<String>) {
        let Ok(now) = self.current_names(app).await else { return };
        for id in before.into_iter().filter(|id| !now.contains(id)) {
            let key = claim_key(&id);
            let Ok(Some(entry)) = self.kv.entry(&key).await else { continue };
            let ours = entry.operation == kv::Operation::Put
                && matches!(self.unseal(&key, &entry.value), Ok(Some(json))
                    if decode::<Claim>(&key, json).is_ok_and(|c| c.app == app));
            if ours {
                self.release(vec![(key, entry.revision)]).await;
            }
        }
    }

    /// Gives up claims written for a change that failed, unless written over since.
    async fn release(&self, claimed: Vec<(String, u64)>) {
        for (key, revision) in claimed {
            if let Err(e) = self.kv.delete_expect_revision(&key, Some(revision)).await {
                tracing::debug!(key, error = %e, "a name claim was not released");
            }
        }
    }

    fn no_such(&self, name: &str) -> AppError {
        AppError::NoSuchApp { name: name.to_owned(), lattice: self.lattice.clone() }
    }

    /// The one compare-and-set loop: reads `name` (an empty application if missing and
    /// `create`), applies `change`, writes the result if it asks to, and starts over when
    /// another writer came first.
    async fn change<T>(
        &self,
        name: &str,
        create: bool,
        change: impl Fn(&mut AppRecord) -> Result<Step<T>, AppError>,
    ) -> Result<T, AppError> {
        let (store, change) = (self, &change);
        let attempt = || async move {
            let mut loaded = store.load(name).await?;
            let mut record = match loaded.record.take() {
                Some(record) => record,
                None if create => AppRecord::empty(name),
                None => return Err(store.no_such(name)),
            };
            match change(&mut record)? {
                Step::Keep(answer) => Ok(answer),
                Step::Write(answer) if store.write(&loaded, &record).await? => Ok(answer),
                Step::Write(_) => Err(AppError::Busy { name: name.to_owned() }),
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(250))
            .with_max_times(RETRIES)
            .with_jitter();
        attempt.retry(backoff).when(|e| matches!(e, AppError::Busy { .. })).await
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

    /// The application `name`, its manifests read from their own keys.
    pub async fn get(&self, name: &str) -> Result<Option<AppRecord>, StateError> {
        Ok(self.load(name).await?.record)
    }

    async fn load(&self, name: &str) -> Result<Loaded, StateError> {
        let key = spec_key(name);
        let missing = |revision| Loaded { record: None, revision, stored: HashMap::new() };
        let entry = match self.kv.entry(&key).await.map_err(|e| js("app read")(&e))? {
            Some(e) if e.operation == kv::Operation::Put => e,
            // A bare delete: `create` writes over it.
            _ => return Ok(missing(0)),
        };
        // A sealed tombstone is a value: it is written over with compare-and-set.
        let Some(json) = self.unseal(&key, &entry.value)? else {
            return Ok(missing(entry.revision));
        };
        let bad = |reason: String| StateError::BadRecord { key: key.clone(), reason };
        let index = match Spec::decode(json).map_err(|e| bad(e.to_string()))? {
            Spec::Whole(record) => {
                return Ok(Loaded {
                    record: Some(record),
                    revision: entry.revision,
                    stored: HashMap::new(),
                });
            }
            Spec::Index(index) => index,
        };
        let (mut versions, mut stored) = (Vec::with_capacity(index.kept.len()), HashMap::new());
        for kept in &index.kept {
            let (manifest, revision) = self.version(name, &kept.sha256).await?;
            if manifest.version != kept.version {
                return Err(bad(format!(
                    "version `{}` is stored as version `{}`",
                    kept.version, manifest.version
                )));
            }
            stored.insert(kept.version.to_string(), (kept.sha256.clone(), revision));
            versions.push(manifest);
        }
        Ok(Loaded { record: Some(index.into_record(versions)), revision: entry.revision, stored })
    }

    /// The manifest under `version.<app>.<sha256>` and the key's revision.
    async fn version(&self, app: &str, sha256: &str) -> Result<(Manifest, u64), StateError> {
        let key = version_key(app, sha256);
        if let Some(known) = self.remembered().get(&key) {
            return Ok(known.clone());
        }
        let bad = |reason: &str| StateError::BadRecord { key: key.clone(), reason: reason.into() };
        let entry = self.kv.entry(&key).await.map_err(|e| js("app version read")(&e))?;
        let entry = entry.filter(|e| e.operation == kv::Operation::Put).ok_or(bad(MISSING))?;
        let json = self.unseal(&key, &entry.value)?.ok_or(bad(MISSING))?;
        let manifest = stored::decode_version(sha256, json).map_err(|e| bad(&e.to_string()))?;
        self.remember(key, &manifest, entry.revision);
        Ok((manifest, entry.revision))
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Manifest, u64)>> {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, key: String, manifest: &Manifest, revision: u64) {
        let mut versions = self.remembered();
        if versions.len() >= CACHED_VERSIONS {
            versions.clear();
        }
        versions.insert(key, (manifest.clone(), revision));
    }

    /// Writes `record` over what `loaded` read: first the versions not stored yet under keys of
    /// their own, then the index with compare-and-set (create-only for a new application),
    /// then drops the versions it no longer keeps. False: another writer came first.
    async fn write(&self, loaded: &Loaded, record: &AppRecord) -> Result<bool, StateError> {
        let mut sha256 = Vec::with_capacity(record.versions.len());
        for manifest in &record.versions {
            let sha = match loaded.stored.get(manifest.version.as_str()) {
                Some((sha, _)) => sha.clone(),
                None => self.put_version(&record.name, manifest).await?,
            };
            sha256.push(sha);
        }
        let key = spec_key(&record.name);
        let index = Index::of(record, sha256);
        let value = self.value(&key, serde_json::to_vec(&index).expect("indexes serialize"))?;
        let written = if loaded.revision == 0 {
            match self.kv.create(&key, value).await {
                Ok(_) => true,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => false,
                Err(e) => return Err(js("app write")(&e)),
            }
        } else {
            match self.kv.update(&key, value, loaded.revision).await {
                Ok(_) => true,
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => false,
                Err(e) => return Err(js("app write")(&e)),
            }
        };
        if written {
            self.drop_versions(loaded, &index).await;
        }
        Ok(written)
    }

    /// Purges the versions `loaded` had that `index` no longer keeps, each only if its key
    /// was not written again since it was read (a deploy of the same manifest after the trim).
    async fn drop_versions(&self, loaded: &Loaded, index: &Index) {
        for (sha, revision) in loaded.stored.values() {
            if index.kept.iter().any(|k| &k.sha256 == sha) {
                continue;
            }
            let key = version_key(&index.name, sha);
            self.remembered().remove(&key);
            if let Err(e) = self.kv.purge_expect_revision(&key, Some(*revision)).await {
                tracing::debug!(%key, error = %e, "an old application version stays");
            }
        }
    }

    /// Stores `manifest` under its version key; answers its sha256.
    async fn put_version(&self, app: &str, manifest: &Manifest) -> Result<String, StateError> {
        let (json, sha256) = stored::encode_version(manifest);
        let key = version_key(app, &sha256);
        let value = self.value(&key, json)?;
        let revision = self.kv.put(&key, value).await.map_err(|e| js("app version write")(&e))?;
        self.remember(key, manifest, revision);
        Ok(sha256)
    }

    /// Every application.
    pub async fn all(&self) -> Result<Vec<AppRecord>, StateError> {
        Ok(self.all_checked().await?.0)
    }

    /// Every application, and the names of those this store's gate refused.
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
                Ok(Some(record)) => records.push(record),
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

    /// Every change to the bucket, from now on (with the current values first).
    pub async fn watch(&self) -> Result<kv::Watch, StateError> {
        self.kv.watch_all().await.map_err(|e| js("app watch")(&e))
    }
}

//! The components running on this host, by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::oneshot;
use trellis_proto as pb;

use trellis_claims::Token;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};

use crate::histogram::Histogram;
use crate::limits::Limits;
use crate::runtime::Component;

/// One running component.
#[derive(Debug)]
pub(crate) struct Running {
    pub id: String,
    pub digest: String,
    pub component: Component,
    pub limits: Limits,
    /// Named configs it reads through wasi:config, in merge order.
    pub config: Vec<String>,
    /// The application that placed it (the scheduler), if any.
    pub owner: Option<pb::Owner>,
    pub invocations: AtomicU64,
    pub errors: AtomicU64,
    /// Errors by [`trellis_lattice::envelope::InvokeErrorKind`] (`kind as usize`).
    pub errors_by_kind: [AtomicU64; 8],
    /// How long its calls took.
    pub durations: Histogram,
    /// `component` = its id, as the OTLP call-duration histogram labels its calls.
    pub component_attribute: opentelemetry::KeyValue,
    /// Tells the serving task to drain its subscription and end.
    pub stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    /// The serving task, which ends once it has left the queue group.
    pub serving: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Its verified claims token; `None`: unsigned (development hosts only).
    pub claims: Option<Token>,
    /// The secrets granted to it, opened (read through wasi:config; never described).
    pub secrets: crate::secrets::Granted,
    /// `invocations` when last looked at by [`Running::called_within`], and when it last
    /// changed: the heartbeat's `active` list (scale to zero) costs the call path nothing.
    last_counted: std::sync::Mutex<(u64, std::time::Instant)>,
    /// Its counters at the last heartbeat, for the load it reports (autoscaling).
    pub(crate) last_look: crate::load::LastLook,
}

impl Running {
    pub fn new(
        id: String,
        digest: String,
        component: Component,
        limits: Limits,
        config: Vec<String>,
        owner: Option<pb::Owner>,
        claims: Option<Token>,
    ) -> Self {
        Self {
            component_attribute: opentelemetry::KeyValue::new("component", id.clone()),
            id,
            digest,
            component,
            limits,
            config,
            owner,
            invocations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            errors_by_kind: Default::default(),
            durations: Histogram::default(),
            stop: std::sync::Mutex::new(None),
            serving: std::sync::Mutex::new(None),
            claims,
            secrets: Vec::new(),
            last_counted: std::sync::Mutex::new((0, std::time::Instant::now())),
            last_look: crate::load::LastLook::new(),
        }
    }

    /// Whether it took a call within `window`, as far as the last look tells (a call is
    /// noticed at the first look after it: looks come with every heartbeat).
    pub fn called_within(&self, window: std::time::Duration) -> bool {
        let count = self.invocations.load(Ordering::Relaxed);
        let mut last = self.last_counted.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 != count {
            *last = (count, std::time::Instant::now());
        }
        last.1.elapsed() < window
    }

    /// The same, with the secrets granted to it.
    pub fn with_secrets(mut self, secrets: crate::secrets::Granted) -> Self {
        self.secrets = secrets;
        self
    }

    /// The names of the secrets granted to it, in grant order.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(|(name, _)| name.as_str())
    }

    /// Its name in its claims, as it names itself to the components it calls (empty when
    /// unsigned).
    pub fn claims_name(&self) -> &str {
        self.claims.as_ref().map_or("", |t| t.trellis.name.as_str())
    }

    /// Admits a call from `caller` (a component's name in its claims; `None`: not a
    /// component's call) if its claims list the callers it takes; else the typed refusal.
    pub fn admit_caller(&self, caller: Option<&str>) -> Result<(), InvokeError> {
        match (self.claims.as_ref().map(|t| &t.trellis), caller) {
            (Some(claims), Some(caller)) if !claims.admits_caller(caller) => Err(InvokeError::new(
                InvokeErrorKind::Denied,
                format!(
                    "component `{}` may be called only by {}; the caller{} is not among them",
                    self.id,
                    claims.callers.join(", "),
                    if caller.is_empty() {
                        " has no claims".to_owned()
                    } else {
                        format!(" `{caller}`")
                    }
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Stops taking calls from the lattice; calls already delivered and in flight finish.
    pub fn stop_serving(&self) {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }

    pub fn describe(&self) -> pb::ComponentDescription {
        pb::ComponentDescription {
            id: self.id.clone(),
            digest: self.digest.clone(),
            invocations: self.invocations.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            exports: self.component.exports(),
            limits: Some(self.limits.describe()),
            imports: self.component.imports().to_vec(),
            config: self.config.clone(),
            owner: self.owner.clone(),
            claims: self.claims.as_ref().map(|t| pb::ClaimsSummary {
                name: t.trellis.name.clone(),
                rev: t.trellis.rev,
                issuer: t.iss.clone(),
                expires_s: t.exp.unwrap_or_default(),
                allow: t.trellis.allow.clone(),
                callers: t.trellis.callers.clone(),
                no_reuse: t.trellis.no_reuse,
            }),
            errors_by_kind: InvokeErrorKind::ALL
                .iter()
                .map(|&kind| {
                    (
                        kind.as_str().to_owned(),
                        self.errors_by_kind[kind as usize].load(Ordering::Relaxed),
                    )
                })
                .filter(|(_, count)| *count > 0)
                .collect(),
            duration_bounds_us: crate::histogram::BOUNDS_US.to_vec(),
            duration_counts: self.durations.snapshot().0.to_vec(),
        }
    }
}

/// Id → running component. Reads are the hot path (every call); writes are rare.
#[derive(Debug, Default)]
pub(crate) struct Components {
    map: RwLock<HashMap<String, Arc<Running>>>,
}

impl Components {
    pub fn get(&self, id: &str) -> Option<Arc<Running>> {
        self.read().get(id).cloned()
    }

    /// Inserts `running` unless the id is taken; returns the one already there.
    pub fn try_insert(&self, running: Arc<Running>) -> Result<(), Arc<Running>> {
        match self.write().entry(running.id.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => Err(e.get().clone()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(running);
                Ok(())
            }
        }
    }

    /// Puts `running` in place of the component of the same id, handing it that one's
    /// subscription (its stop signal), and returns the one it replaced; `None`, and nothing
    /// changed, when no component of that id runs (a stop got there first). One lock for
    /// both, so a concurrent stop stops either the old component or the new one, never
    /// neither.
    pub fn swap_in(&self, running: Arc<Running>) -> Option<Arc<Running>> {
        let mut table = self.write();
        let old = table.get(&running.id)?.clone();
        let stop = old.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        *running.stop.lock().unwrap_or_else(|p| p.into_inner()) = stop;
        table.insert(running.id.clone(), running);
        Some(old)
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Running>> {
        self.write().remove(id)
    }

    pub fn all(&self) -> Vec<Arc<Running>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// True when another running component still uses `digest`.
    pub fn uses_digest(&self, digest: &str) -> bool {
        self.read().values().any(|r| r.digest == digest)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Running>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Running>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }
}

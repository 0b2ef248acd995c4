//! A host: joins the lattice, runs components and providers, answers control requests, and
//! drains on shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::Client;
use backon::{ExponentialBuilder, Retryable};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use trellis_claims::Token;
use trellis_lattice::connect::{connect_persistent, sync_with_server, wait_connected};
use trellis_lattice::hostlink::Bootstrap;
use trellis_lattice::policy::Policy;
use trellis_lattice::record::RecordGate;
use trellis_lattice::signing::{
    Authorized, ControlVerifier, IDENTITY_TTL_S, RequestDenied, Role, Signer, Verifier,
    issue_identity,
};
use trellis_lattice::state::{LatticeState, decode_config, decode_link};
use trellis_lattice::subject::{EventKind, Subjects, validate_id};
use trellis_proto::{self as pb, PolicyRequest};

use crate::admission::Trust;
use crate::compile_cache::{CompileCache, Source};
use crate::components::{Components, Running};
use crate::config::HostConfig;
use crate::limits::Limits;
use crate::links::{Configs, Links};
use crate::providers::Pipes;
use crate::providers::{Providers, StartError};
use crate::refused::{ControlResult, Refused};
use crate::router::{Guard, Router, Routes};
use crate::runtime::{Component, LoadError, Runtime};
use crate::{control, inbound};
use trellis_lattice::events::Events;

/// A host could not start or lost its footing.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// wasmtime could not be set up.
    #[error(transparent)]
    Runtime(#[from] LoadError),
    /// NATS failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// NATS could not be reached at start within `--nats-connect-timeout`.
    #[error(
        "NATS is not reachable at {url} after {waited:?} (--nats-connect-timeout): check the \
         URL, that nats-server runs and that this machine can reach it, or leave the timeout \
         unset to wait as long as it takes"
    )]
    NatsUnreachable { url: String, waited: Duration },
    /// JetStream state could not be opened.
    #[error(transparent)]
    State(#[from] trellis_lattice::state::StateError),
}

impl HostError {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        HostError::Nats(e.to_string())
    }
}

/// A running host. Built by [`run`]; shared by its tasks.
#[derive(Debug)]
pub struct Host {
    id: String,
    pub(crate) config: HostConfig,
    started: Instant,
    nats: Client,
    subjects: Subjects,
    state: LatticeState,
    runtime: Runtime,
    pub(crate) components: Arc<Components>,
    router: Arc<Router>,
    pub(crate) providers: Providers,
    events: Events,
    /// Held while an artifact is fetched and compiled.
    compiling: tokio::sync::Mutex<()>,
    /// Code compiled by the lattice's hosts, shared (`None`: off).
    compile_cache: Option<Arc<CompileCache>>,
    /// Which issuers' claims this host accepts.
    trust: Trust,
    /// Verified claims of compiled artifacts, by digest (`None`: accepted unsigned).
    tokens: std::sync::Mutex<HashMap<String, Option<Token>>>,
    /// The lattice's policy service, when the host asks one.
    policy: Option<Policy>,
    /// Set once draining began (before maintenance, or on shutdown): the host takes no new
    /// work.
    pub(crate) draining: std::sync::atomic::AtomicBool,
    /// Told when a drain is done and the host should leave (see [`crate::evacuate`]).
    pub(crate) leave: tokio::sync::Notify,
    /// Serving tasks of stopped replicas still leaving their queue groups (with calls they
    /// took to hand to the router): shutdown waits for them too.
    stopped_serving: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Checks the requests that change this host against its trusted operators.
    control: ControlVerifier,
    /// Control requests refused since start.
    requests_denied: AtomicU64,
    /// Control requests refused with `Busy` (or pings left unanswered) under a flood.
    requests_busy: AtomicU64,
    /// Checks the lattice state (links, config, applications) before it is applied.
    records: Arc<RecordGate>,
    /// NATS connection health, for `/metrics`.
    pub(crate) nats_health: NatsHealth,
    /// What its scheduler does, if it runs one (`--scheduler`).
    pub(crate) scheduler: Arc<trellis_scheduler::Stats>,
    /// The lattice's secrets key and bucket (`--secrets-seed`); `None`: it opens no secret.
    pub(crate) secrets: Option<crate::secrets::Secrets>,
    /// Each busy component's load between the last two heartbeats, sent in every digest.
    load: std::sync::Mutex<Vec<pb::ComponentLoad>>,
}

/// What the host saw of its NATS connection.
#[derive(Debug, Default)]
pub(crate) struct NatsHealth {
    /// Reconnections after a lost connection.
    pub reconnects: AtomicU64,
    /// Messages the client dropped because a subscription fell behind.
    pub slow_consumers: AtomicU64,
    /// Milliseconds since the host started when the last heartbeat went out (0: none yet).
    pub last_heartbeat_ms: AtomicU64,
}

impl Host {
    /// Where its calls go, and what they count.
    pub(crate) fn router(&self) -> &Router {
        &self.router
    }

    /// The host's id: the public half of its nkey.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub(crate) fn nats(&self) -> &Client {
        &self.nats
    }

    pub(crate) fn lattice(&self) -> &str {
        &self.config.lattice
    }

    pub(crate) fn js_replicas(&self) -> usize {
        self.config.js_replicas
    }

    /// The JetStream context of the lattice's state.
    pub(crate) fn jetstream(&self) -> async_nats::jetstream::Context {
        trellis_lattice::connect::jetstream(&self.nats, self.config.nats_auth.js_domain.as_deref())
    }

    /// Why the host should not get work now, if it should not.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            Some("draining: shutting down")
        } else if !self.nats_connected() {
            Some("not connected to NATS")
        } else {
            None
        }
    }

    pub(crate) fn components(&self) -> &Components {
        &self.components
    }

    /// Time since the host started.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn nats_connected(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
    }

    /// Calls running now, and the most that may.
    pub(crate) fn instances(&self) -> (u64, u64) {
        let max = u64::from(self.config.runtime.max_instances);
        (max.saturating_sub(self.router.free_slots() as u64), max)
    }

    /// What checks the lattice's state before this host (or its scheduler) applies it.
    pub(crate) fn records(&self) -> Arc<RecordGate> {
        self.records.clone()
    }

    /// Whether this host is in development mode (`--allow-unsigned`).
    pub(crate) fn development(&self) -> bool {
        self.config.allow_unsigned
    }

    /// Whether a request on `subject` with `headers` and `body` that needs role `need` may
    /// change this host (with `signed`, only from a trusted operator, even in development); a
    /// refusal is counted, logged and announced.
    pub(crate) async fn authorize_request(
        &self,
        subject: &str,
        headers: Option<&async_nats::HeaderMap>,
        body: &[u8],
        (need, signed): (Role, bool),
    ) -> Result<(), RequestDenied> {
        let now = trellis_lattice::envelope::unix_ms();
        let checked = self.control.check(subject, headers, body, need, now);
        let Err(denied) = checked.and_then(|who| match who {
            Authorized::Unsigned if signed => Err(RequestDenied::SignatureRequired),
            _ => Ok(()),
        }) else {
            return Ok(());
        };
        self.requests_denied.fetch_add(1, Ordering::Relaxed);
        let operator = headers
            .and_then(|h| h.get(trellis_lattice::signing::OPERATOR))
            .map_or("", |v| v.as_str());
        tracing::warn!(subject, operator, reason = %denied, "control request denied");
        self.events.denied(EventKind::RequestDenied, subject, operator, &denied.to_string()).await;
        Err(denied)
    }

    /// A control request refused with `Busy` (or a ping left unanswered).
    pub(crate) fn count_busy(&self) {
        self.requests_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether it runs a scheduler (`--scheduler`).
    pub(crate) fn runs_scheduler(&self) -> bool {
        self.config.scheduler.is_some()
    }

    /// Control requests refused with `Busy` since start.
    pub(crate) fn requests_busy(&self) -> u64 {
        self.requests_busy.load(Ordering::Relaxed)
    }

    /// Calls refused at once because the intake was full.
    pub(crate) fn calls_shed(&self) -> u64 {
        self.router.shed()
    }

    /// What the compile cache did, by result; `None` when it is off.
    pub(crate) fn compile_cache_counts(&self) -> Option<[(&'static str, u64); 5]> {
        self.compile_cache.as_ref().map(|c| c.counts())
    }

    /// Answers to this host's calls dropped as forged.
    pub(crate) fn forged_answers(&self) -> u64 {
        self.router.signer().forged_answers()
    }

    /// Calls received over NATS and accepted by signature and by pair key.
    pub(crate) fn accepted_calls(&self) -> (u64, u64) {
        self.router.accepted_calls()
    }

    /// The bounded digest sent in heartbeats and ping replies.
    pub fn info(&self) -> pb::HostInfo {
        let components = self.components.all();
        let providers = self.providers.describe();
        let mut hash = Sha256::new();
        let fingerprint = |owner: &Option<pb::Owner>| {
            owner.as_ref().map_or(String::new(), |o| format!("{}/{}", o.app, o.fingerprint))
        };
        for c in &components {
            for part in [&c.id, &c.digest, &fingerprint(&c.owner)] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
        }
        for p in &providers {
            for part in [&p.id, &p.kind, &fingerprint(&p.owner)] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
        }
        let inventory_hash = hash.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
        let window = self.config.heartbeat_interval * 2;
        let active =
            components.iter().filter(|c| c.called_within(window)).map(|c| c.id.clone()).collect();
        pb::HostInfo {
            id: self.id.clone(),
            name: self.config.name.clone(),
            labels: self.config.labels.clone().into_iter().collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            components: components.len() as u32,
            providers: providers.len() as u32,
            inventory_hash,
            lattice: self.config.lattice.clone(),
            invocations_denied: self.router.denied(),
            requests_denied: self.requests_denied.load(Ordering::Relaxed),
            heartbeat_ms: u32::try_from(self.config.heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            rss_bytes: crate::metrics::resources::rss_bytes().unwrap_or_default(),
            cpu_ms: crate::metrics::resources::cpu_seconds().map_or(0, |s| (s * 1000.0) as u64),
            draining: self.is_draining(),
            secrets_xkey: self.secrets.as_ref().map(|s| s.public_key()).unwrap_or_default(),
            active,
            load: self.load.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Looks at every component's load since the last heartbeat, for the next digests.
    fn look_at_load(&self) {
        let now = std::time::Instant::now();
        let load = self.components.all().iter().filter_map(|c| crate::load::look(c, now)).collect();
        *self.load.lock().unwrap_or_else(|p| p.into_inner()) = load;
    }

    /// Refuses new work while the host drains.
    fn taking_work(&self) -> ControlResult {
        if self.is_draining() {
            return Err(Refused::Draining(format!(
                "host {} ({}) is draining and takes no new components or providers; start it \
                 on another host",
                self.config.name, self.id
            )));
        }
        Ok(())
    }

    /// Everything this host runs.
    pub fn inventory(&self) -> pb::Inventory {
        pb::Inventory {
            host: Some(self.info()),
            components: self.components.all().iter().map(|c| c.describe()).collect(),
            providers: self.providers.describe(),
            posture: Some(pb::HostPosture {
                development: self.config.allow_unsigned,
                trusted_issuers: self.config.trusted_issuers.clone(),
                trusted_operators: self
                    .config
                    .trusted_operators
                    .iter()
                    .map(|o| o.to_string())
                    .collect(),
            }),
        }
    }

    /// Fetches, compiles and starts serving a component as `req` says; with `req.replace`, in
    /// place of a different one of the same id.
    pub(crate) async fn start_component(&self, req: pb::StartComponentRequest) -> ControlResult {
        let (id, digest, config) = (&req.component_id, &req.digest, &req.config);
        self.taking_work()?;
        validate_id("component id", id).map_err(|e| Refused::BadRequest(e.to_string()))?;
        for name in config {
            validate_id("config name", name).map_err(|e| Refused::BadRequest(e.to_string()))?;
        }
        let limits =
            Limits::resolve(req.limits.as_ref(), &self.config).map_err(Refused::BadRequest)?;
        if let Some(existing) = self.components.get(id) {
            let same = existing.digest == *digest
                && (!req.replace
                    || (existing.owner == req.owner
                        && existing.limits.describe() == limits.describe()
                        && existing.config == *config
                        && existing.secret_names().eq(req.secrets.iter().map(String::as_str))));
            if same {
                return Ok(());
            }
            if !req.replace {
                return Err(Refused::AlreadyExists(format!(
                    "component `{id}` already runs here from {}; stop it first",
                    existing.digest
                )));
            }
        }
        let result = self.load_and_serve(req.clone(), limits).await;
        match &result {
            Ok(()) => self.events.component(EventKind::ComponentStarted, id, digest, "").await,
            Err(refused) => {
                let reason = refused.to_string();
                tracing::warn!(component = id, %reason, "component failed to start");
                self.events.component(EventKind::ComponentFailed, id, digest, &reason).await;
            }
        }
        result
    }

    async fn load_and_serve(
        &self,
        req: pb::StartComponentRequest,
        limits: Limits,
    ) -> ControlResult {
        let (id, digest) = (req.component_id.as_str(), req.digest.as_str());
        if !req.secrets.is_empty() && self.secrets.is_none() {
            return Err(crate::secrets::no_key(&self.id));
        }
        let component = self.component(digest).await?;
        let claims = self.lock_tokens().get(digest).cloned().flatten();
        let component = match limits.reuse {
            Some(_) if claims.as_ref().is_some_and(|t| t.trellis.no_reuse) => {
                return Err(Refused::Denied(format!(
                    "the claims of {digest} forbid keeping its instances warm; start \
                         `{id}` without reuse"
                )));
            }
            Some(reuse) => component.with_reuse(reuse),
            None => component,
        };
        self.ask_policy(PolicyRequest {
            kind: "start_component".into(),
            id: id.to_owned(),
            digest: digest.to_owned(),
            issuer: claims.as_ref().map(|t| t.iss.clone()).unwrap_or_default(),
            claims_name: claims.as_ref().map(|t| t.trellis.name.clone()).unwrap_or_default(),
            ..Default::default()
        })
        .await?;
        // Opened last, once everything else let the component start.
        let secrets = match &self.secrets {
            Some(secrets) => secrets.open_grants(&req.secrets, &self.records).await?,
            None => Vec::new(),
        };
        let running = Arc::new(
            Running::new(
                id.to_owned(),
                digest.to_owned(),
                component,
                limits,
                req.config,
                req.owner,
                claims,
            )
            .with_secrets(secrets),
        );
        if req.replace && self.components.get(id).is_some() {
            // In place: the subscription stays (no moment without one, nothing in flight on a
            // closing one); calls dispatch to the new component from the moment it is in the
            // table, and the old one's calls in flight finish on it.
            let Some(old) = self.components.swap_in(running) else {
                return Err(Refused::NotFound(format!(
                    "component `{id}` was stopped while it was being replaced"
                )));
            };
            self.forget_digest_if_unused(&old.digest);
            tracing::info!(component = id, from = %old.digest, to = digest, "component replaced");
            return Ok(());
        }
        let sub = inbound::subscribe(&self.nats, &self.subjects, id)
            .await
            .map_err(|e| Refused::Internal(format!("cannot subscribe: {e}")))?;
        // Once we answer "started", a call must find the subscription on the server.
        sync_with_server(&self.nats)
            .await
            .map_err(|e| Refused::Internal(format!("cannot reach NATS: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        *running.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
        let target = inbound::Target::Component(running.clone());
        let serving = tokio::spawn(inbound::serve(sub, stopped, target, self.router.clone()));
        *running.serving.lock().unwrap_or_else(|p| p.into_inner()) = Some(serving);
        // A concurrent start of the same id may have won; keep exactly one.
        if let Err(existing) = self.components.try_insert(running.clone()) {
            running.stop_serving();
            return if existing.digest == digest {
                Ok(())
            } else {
                Err(Refused::AlreadyExists(format!(
                    "component `{id}` already runs here from {}",
                    existing.digest
                )))
            };
        }
        tracing::info!(component = id, digest, "component started");
        Ok(())
    }

    /// Compiles `digest` into the lattice's compile cache ahead of any start (`trellis push
    /// --compile`) and answers once its code is stored; `Ok(true)`: the cache held code for it
    /// that this host accepts, nothing compiled. The host keeps the code only if a component
    /// of the artifact runs here.
    pub(crate) async fn compile_ahead(&self, digest: &str) -> Result<bool, Refused> {
        let Some(cache) = &self.compile_cache else {
            return Err(Refused::BadRequest(format!(
                "host {} runs without the compile cache (--no-compile-cache, or no                  --trusted-cluster): ask another",
                self.id
            )));
        };
        // The key depends on the engine, which the artifact's WASI generation picks.
        let bytes = (self.state.get_artifact(digest).await)
            .map_err(|e| Refused::ArtifactUnavailable(e.to_string()))?;
        let generation =
            Runtime::generation(&bytes).map_err(|e| Refused::InvalidComponent(e.to_string()))?;
        drop(bytes);
        let key = (self.runtime.cache_key(digest, generation))
            .map_err(|e| Refused::InvalidComponent(e.to_string()))?;
        if cache.holds(&key, unix_s()).await {
            return Ok(true);
        }
        let (_, storing) = self.load_component(digest).await?;
        let stored = match storing {
            Some(task) => task.await.unwrap_or(false),
            // Loaded here earlier: stored then, or loaded from the cache meanwhile.
            None => true,
        };
        self.forget_digest_if_unused(digest);
        if !stored {
            return Err(Refused::Internal(format!(
                "compiled {digest} but could not store it in the compile cache (see the host's log)"
            )));
        }
        Ok(false)
    }

    /// The component of `digest`, compiled once: starts of the same artifact that arrive
    /// together wait for one fetch and one compile.
    async fn component(&self, digest: &str) -> Result<Component, Refused> {
        self.load_component(digest).await.map(|(component, _)| component)
    }

    /// [`Self::component`], and the task storing its code in the compile cache when this call
    /// compiled it.
    async fn load_component(
        &self,
        digest: &str,
    ) -> Result<(Component, Option<tokio::task::JoinHandle<bool>>), Refused> {
        if let Some(loaded) = self.cached_component(digest) {
            return loaded.map(|c| (c, None));
        }
        let _one_at_a_time = self.compiling.lock().await;
        if let Some(loaded) = self.cached_component(digest) {
            return loaded.map(|c| (c, None));
        }
        let bytes = self
            .state
            .get_artifact(digest)
            .await
            .map_err(|e| Refused::ArtifactUnavailable(e.to_string()))?;
        // Which engine compiles it, or a refusal naming a WASI import this host cannot serve.
        let generation =
            Runtime::generation(&bytes).map_err(|e| Refused::InvalidComponent(e.to_string()))?;
        let key = self
            .runtime
            .cache_key(digest, generation)
            .map_err(|e| Refused::InvalidComponent(e.to_string()))?;
        let entry = match &self.compile_cache {
            Some(cache) => cache.fetch(&key).await,
            None => None,
        };
        // Claims first: a tampered or unsigned artifact is never compiled (nor loaded). Both
        // hash and parse the whole artifact, so both run below the host's priority
        // (runtime::compile), as does checking and loading cached code.
        let (trust, runtime, cache) =
            (self.trust.clone(), self.runtime.clone(), self.compile_cache.clone());
        let (owned_digest, owned_key) = (digest.to_owned(), key.clone());
        let (token, component, source) = crate::runtime::compile::low_priority(move || {
            let token = trust.check(&bytes, unix_s()).map_err(Refused::from)?;
            let digest = owned_digest.as_str();
            let loaded = match &cache {
                Some(cache) => {
                    let at = (digest, generation, owned_key.as_str());
                    cache.load_or_compile(&runtime, at, &bytes, entry, unix_s())
                }
                None => {
                    runtime.load(digest, &bytes).map(|c| (c, Source::Compiled { refused: None }))
                }
            };
            let (component, source) =
                loaded.map_err(|e| Refused::InvalidComponent(e.to_string()))?;
            Ok::<_, Refused>((token, component, source))
        })
        .await
        .map_err(Refused::Internal)??;
        if let Err(e) = self.trust.check_imports(token.as_ref(), component.imports()) {
            self.runtime.evict(digest);
            return Err(e.into());
        }
        let mut storing = None;
        if let Some(cache) = &self.compile_cache {
            cache.note(digest, &source);
            if matches!(source, Source::Compiled { .. }) {
                let (runtime, router) = (self.runtime.clone(), self.router.clone());
                storing = Some(cache.store_later((digest, &key), runtime, router));
            }
        }
        self.lock_tokens().insert(digest.to_owned(), token);
        Ok((component, storing))
    }

    /// A component compiled earlier from `digest`, its claims' validity checked again.
    fn cached_component(&self, digest: &str) -> Option<Result<Component, Refused>> {
        let token = self.lock_tokens().get(digest).cloned()?;
        let loaded = self.runtime.load_compiled(digest)?;
        Some(match self.trust.recheck(token.as_ref(), unix_s()) {
            Ok(()) => loaded.map_err(|e| Refused::InvalidComponent(e.to_string())),
            Err(e) => Err(e.into()),
        })
    }

    /// The policy service's word, when the host has one: `Denied` with its reason otherwise.
    async fn ask_policy(&self, request: PolicyRequest) -> ControlResult {
        let Some(policy) = &self.policy else { return Ok(()) };
        policy.decide(request).await.map_err(|e| Refused::Denied(e.to_string()))
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Token>>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops component `id`; calls in flight finish.
    pub(crate) async fn stop_component(&self, id: &str) -> ControlResult {
        self.stop_component_because(id, "stopped").await
    }

    async fn stop_component_because(&self, id: &str, reason: &str) -> ControlResult {
        let running = self
            .components
            .remove(id)
            .ok_or_else(|| Refused::NotFound(format!("no component `{id}` runs on this host")))?;
        running.stop_serving();
        if let Some(task) = running.serving.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let mut stopped = self.stopped_serving.lock().unwrap_or_else(|p| p.into_inner());
            stopped.retain(|t| !t.is_finished());
            stopped.push(task);
        }
        self.forget_digest_if_unused(&running.digest);
        self.events.component(EventKind::ComponentStopped, id, &running.digest, reason).await;
        tracing::info!(component = id, reason, "component stopped");
        Ok(())
    }

    /// Drops the compiled artifact of `digest` once no running component uses it.
    fn forget_digest_if_unused(&self, digest: &str) {
        if !self.components.uses_digest(digest) {
            self.runtime.evict(digest);
            self.lock_tokens().remove(digest);
        }
    }

    /// Stops the running components whose claims have expired since they started.
    async fn stop_expired(&self) {
        let now = unix_s();
        for running in self.components.all() {
            let token = self.lock_tokens().get(&running.digest).cloned().flatten();
            if let Err(e) = self.trust.recheck(token.as_ref(), now) {
                tracing::warn!(component = %running.id, error = %e, "claims no longer valid");
                let reason = format!("claims no longer valid: {e}");
                let _ = self.stop_component_because(&running.id, &reason).await;
            }
        }
    }

    pub(crate) async fn start_provider(
        &self,
        id: &str,
        kind: &str,
        builtin: bool,
        owner: Option<pb::Owner>,
    ) -> ControlResult {
        self.taking_work()?;
        validate_id("provider id", id).map_err(|e| Refused::BadRequest(e.to_string()))?;
        validate_id("provider kind", kind).map_err(|e| Refused::BadRequest(e.to_string()))?;
        self.ask_policy(PolicyRequest {
            kind: "start_provider".into(),
            id: id.to_owned(),
            provider_kind: kind.to_owned(),
            ..Default::default()
        })
        .await?;
        self.providers.start(id, kind, builtin, owner).await.map_err(|e| match e {
            StartError::Conflict { .. } => Refused::AlreadyExists(e.to_string()),
            _ => Refused::ProviderFailed(e.to_string()),
        })?;
        tracing::info!(provider = id, kind, builtin, "provider started");
        Ok(())
    }

    pub(crate) async fn stop_provider(&self, id: &str) -> ControlResult {
        self.providers.stop(id).await.map_err(|e| Refused::NotFound(e.to_string()))
    }

    pub(crate) async fn announce(&self, kind: EventKind) {
        self.events.publish(kind, pb::event::Body::Host(self.info())).await;
    }
}

/// Runs a host until `shutdown` resolves, then drains and leaves the lattice.
///
/// Waits for NATS as long as it takes to come up, and reconnects forever after that.
pub async fn run(config: HostConfig, shutdown: impl Future<Output = ()>) -> Result<(), HostError> {
    // Health answers from the start (not ready while NATS is awaited) to the end of the drain.
    let started = Arc::new(std::sync::OnceLock::new());
    let _health = match config.health_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| HostError::Config(format!("cannot serve health on {address}: {e}")))?;
            tracing::info!(%address, "serving health on /livez and /readyz");
            Some(AbortOnDrop(tokio::spawn(crate::health::serve(started.clone(), listener))))
        }
        None => None,
    };
    let (host, conn_events) = Host::start(config).await?;
    let _ = started.set(host.clone());
    let control = control::subscribe(&host).await?;
    let mut tasks = Vec::new();
    // Pushes metrics until the host is done.
    let _metrics = match host.config.telemetry.clone() {
        Some(mut telemetry) => {
            telemetry.resource.push(("trellis.host.id".into(), host.id.clone()));
            telemetry.resource.push(("host.name".into(), host.config.name.clone()));
            telemetry.resource.push(("trellis.lattice".into(), host.config.lattice.clone()));
            trellis_otlp::init(&telemetry);
            crate::metrics::otlp::start(&host, &telemetry)
        }
        None => None,
    };
    tasks.extend([
        tokio::spawn(control::serve(host.clone(), control)),
        tokio::spawn(heartbeat(host.clone())),
        tokio::spawn(reannounce(host.clone(), conn_events)),
        tokio::spawn(expire_claims(host.clone())),
        tokio::spawn(refresh_identity(host.clone())),
    ]);
    if let Some(policy) = &host.policy {
        tasks.push(tokio::spawn(policy.clone().follow_changes(host.subjects.clone())));
    }
    if let Some(scheduler) = host.config.scheduler.clone() {
        let context = trellis_scheduler::Context {
            nats: host.nats().clone(),
            jetstream: host.jetstream(),
            lattice: host.lattice().to_owned(),
            host_id: host.id().to_owned(),
            development: host.development(),
            js_replicas: host.js_replicas(),
            records: host.records(),
            stats: host.scheduler.clone(),
            wakes: Arc::new(trellis_lattice::signing::Verifier::new(
                host.config.trusted_clusters.clone(),
                host.config.allow_unsigned,
                u64::try_from(host.config.call_timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_add(60_000),
            )),
        };
        tasks.push(tokio::spawn(trellis_scheduler::run(context, scheduler)));
    }
    if let Some(address) = host.config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| HostError::Config(format!("cannot serve metrics on {address}: {e}")))?;
        tracing::info!(%address, "serving metrics on /metrics");
        tasks.push(tokio::spawn(crate::metrics::prometheus::serve(host.clone(), listener)));
    }
    host.announce(EventKind::HostStarted).await;
    tracing::info!(host = host.id(), lattice = %host.config.lattice, "host started");

    tokio::select! {
        () = shutdown => {
            // With a scheduler in the lattice, what it placed here moves before it stops.
            host.evacuate(host.config.drain_wait).await;
        }
        () = host.leave.notified() => {}
    }
    for task in &tasks {
        task.abort();
    }
    host.drain().await;
    Ok(())
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Host {
    /// Connects (waiting for NATS), opens lattice state and builds the host.
    async fn start(
        config: HostConfig,
    ) -> Result<(Arc<Self>, mpsc::Receiver<async_nats::Event>), HostError> {
        let subjects =
            Subjects::new(&config.lattice).map_err(|e| HostError::Config(e.to_string()))?;
        crate::runtime::compile::lower_compile_workers();
        let runtime = Runtime::new(config.runtime.clone())?;
        let key = nkeys::KeyPair::new_server();
        let id = key.public_key();
        let signer = Signer::new(key, host_identity(&config, &id)?)
            .with_trusted_clusters(config.trusted_clusters.clone());
        let (verifier, trust, control) = trust_settings(&config);
        let verifier = verifier.with_pair_keys(signer.pair_keys());
        // Answers to the calls this host signs come to its own inbox, which the signature names.
        let inbox = trellis_lattice::signing::inbox_prefix(&id);
        let name = format!("trellis-host {id}");
        let (nats, conn_events) =
            connect_persistent(&config.nats_url, &name, &config.nats_auth, Some(&inbox))
                .await
                .map_err(HostError::nats)?;
        if tokio::time::timeout(Duration::from_secs(1), wait_connected(&nats)).await.is_err() {
            match config.nats_connect_timeout {
                Some(limit) => {
                    tracing::warn!(url = %config.nats_url, ?limit, "NATS is not reachable yet; waiting for it");
                    let left = limit.saturating_sub(Duration::from_secs(1));
                    if tokio::time::timeout(left, wait_connected(&nats)).await.is_err() {
                        return Err(HostError::NatsUnreachable {
                            url: config.nats_url.clone(),
                            waited: limit,
                        });
                    }
                }
                None => {
                    tracing::warn!(url = %config.nats_url, "NATS is not reachable yet; waiting for it (set --nats-connect-timeout to give up)");
                    wait_connected(&nats).await;
                }
            }
        }
        let js = trellis_lattice::connect::jetstream(&nats, config.nats_auth.js_domain.as_deref());
        let state = (|| LatticeState::open_replicated(&js, &config.lattice, config.js_replicas))
            .retry(ExponentialBuilder::default().with_max_times(8))
            .notify(|e, _| tracing::warn!(error = %e, "lattice state not ready; retrying"))
            .await?;

        let compile_cache = CompileCache::open(&config, &js).await;
        let secrets = match &config.secrets_seed {
            Some(seed) => Some(
                crate::secrets::Secrets::open(seed, &js, &config.lattice, config.js_replicas)
                    .await?,
            ),
            None => None,
        };
        let policy = config
            .policy_timeout
            .map(|t| Policy::new(nats.clone(), &subjects, t, &id, &config.lattice));
        let components = Arc::new(Components::default());
        let events = Events::new(nats.clone(), subjects.clone(), id.clone());
        // Links and config apply only when a trusted operator sealed them (or in development).
        let records =
            Arc::new(RecordGate::new(config.trusted_operators.clone(), config.allow_unsigned));
        let links = Arc::new(Links::new("links"));
        let watch = state.watch_all_links().await?;
        tokio::spawn(links.clone().follow(watch, (records.clone(), events.clone()), decode_link));
        let configs = Arc::new(Configs::new("configs"));
        let watch = state.watch_config().await?;
        tokio::spawn(configs.clone().follow(
            watch,
            (records.clone(), events.clone()),
            decode_config,
        ));
        let pipes = Arc::new(Pipes::default());
        let routes =
            Routes { components: components.clone(), links, configs, providers: pipes.clone() };
        let router = Router::new(
            routes,
            (nats.clone(), subjects.clone()),
            (config.runtime.max_instances, config.call_timeout),
            Guard { signer, verifier, policy: policy.clone() },
            events.clone(),
        );
        let bootstrap = Bootstrap {
            lattice: config.lattice.clone(),
            nats_url: config.nats_url.clone(),
            nats_auth: config.provider_nats_auth.as_ref().unwrap_or(&config.nats_auth).clone(),
            host_id: id.clone(),
            provider_id: String::new(),
            kind: String::new(),
            telemetry: config.telemetry.clone(),
            trusted_operators: config.trusted_operators.iter().map(|o| o.to_string()).collect(),
            allow_unsigned: config.allow_unsigned,
        };
        let providers = Providers::new(
            router.clone(),
            pipes,
            events.clone(),
            bootstrap,
            (config.provider_dir.clone(), config.builtins.clone()),
        );
        let host = Self {
            id,
            started: Instant::now(),
            nats,
            subjects,
            state,
            runtime,
            components,
            router,
            providers,
            events,
            config,
            compiling: tokio::sync::Mutex::new(()),
            compile_cache,
            trust,
            tokens: std::sync::Mutex::new(HashMap::new()),
            policy,
            draining: std::sync::atomic::AtomicBool::new(false),
            leave: tokio::sync::Notify::new(),
            stopped_serving: std::sync::Mutex::default(),
            control,
            requests_denied: AtomicU64::new(0),
            requests_busy: AtomicU64::new(0),
            records,
            nats_health: NatsHealth::default(),
            scheduler: Arc::default(),
            secrets,
            load: std::sync::Mutex::default(),
        };
        Ok((Arc::new(host), conn_events))
    }

    /// Leaves cleanly: take no new calls, finish the ones running, stop providers (which finish
    /// their own requests), say goodbye.
    async fn drain(&self) {
        tracing::info!(host = self.id(), "shutting down: draining calls");
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut leaving: Vec<_> =
            self.stopped_serving.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for running in self.components.all() {
            running.stop_serving();
            leaving.extend(running.serving.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
        // Calls still handed to a replica while it leaves its queue group are served, not
        // refused: admission closes only once every replica has left.
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        let left = futures::future::join_all(leaving);
        if tokio::time::timeout_at(deadline, left).await.is_err() {
            tracing::warn!("replicas still leaving their queue groups after the drain timeout");
        }
        let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !self.router.drain(rest).await {
            tracing::warn!("calls still running after the drain timeout; leaving anyway");
        }
        self.providers.stop_all().await;
        self.announce(EventKind::HostStopped).await;
        // NATS may be gone already; leaving must not wait for it.
        match tokio::time::timeout(Duration::from_secs(2), self.nats.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not flush the goodbye to NATS"),
            Err(_) => tracing::warn!("NATS did not take the goodbye within 2 s; leaving anyway"),
        }
        tracing::info!(host = self.id(), "host stopped");
    }
}

/// How this host checks what it receives: calls (verifier) and components (trust). Says loudly
/// when the settings are weak.
fn trust_settings(config: &HostConfig) -> (Verifier, Trust, ControlVerifier) {
    // Deadlines further out than the longest call (plus clock skew) are refused, which bounds
    // the replay cache.
    let window_ms =
        u64::try_from(config.call_timeout.as_millis()).unwrap_or(u64::MAX).saturating_add(60_000);
    let verifier = Verifier::new(config.trusted_clusters.clone(), config.allow_unsigned, window_ms);
    let trust =
        Trust { issuers: config.trusted_issuers.clone(), allow_unsigned: config.allow_unsigned };
    if !config.allow_unsigned && config.trusted_clusters.is_empty() {
        tracing::warn!(
            "no --trusted-cluster: calls must be signed and are checked for tampering and \
             replay, but any host key is accepted; set --trusted-cluster to admit only your hosts"
        );
    }
    if config.allow_unsigned {
        tracing::warn!(
            "accepting unsigned components, calls and control requests (--allow-unsigned): for \
             local development only, never in production"
        );
    }
    let control = ControlVerifier::new(config.trusted_operators.clone(), config.allow_unsigned);
    if control.refuses_all() {
        tracing::warn!(
            "this host trusts no operator, so it refuses every start, stop and change: trust one \
             with --trusted-operator <public key> (TRELLIS_TRUSTED_OPERATORS; make a key with \
             `trellis keys gen operator`)"
        );
    }
    for operator in control.operators() {
        tracing::info!(operator = %operator.key, role = %operator.role, "trusting operator");
    }
    (verifier, trust, control)
}

/// Re-issues the host's identity token well before it expires (hosts with a cluster seed).
async fn refresh_identity(host: Arc<Host>) {
    let mut tick = tokio::time::interval(Duration::from_secs(IDENTITY_TTL_S / 4));
    tick.tick().await; // The first tick is now; the token was just issued.
    loop {
        tick.tick().await;
        match host_identity(&host.config, &host.id) {
            Ok(Some(identity)) => host.router.set_identity(identity),
            Ok(None) => return,
            Err(e) => tracing::error!(error = %e, "cannot re-issue the host identity"),
        }
    }
}

/// The identity token a cluster key vouches for this host with, when the host has the seed.
fn host_identity(config: &HostConfig, host: &str) -> Result<Option<String>, HostError> {
    let Some(seed) = &config.cluster_seed else {
        return Ok(None);
    };
    let cluster = nkeys::KeyPair::from_seed(seed.trim())
        .ok()
        .filter(|k| matches!(k.key_pair_type(), nkeys::KeyPairType::Cluster))
        .ok_or_else(|| {
            HostError::Config(
                "--cluster-seed does not hold a cluster seed (`trellis keys gen cluster`)".into(),
            )
        })?;
    issue_identity(&cluster, host, unix_s()).map(Some).map_err(HostError::Config)
}

fn unix_s() -> u64 {
    trellis_lattice::envelope::unix_ms() / 1000
}

/// After a reconnect the client restores subscriptions; tell the lattice we are back.
async fn reannounce(host: Arc<Host>, mut conn_events: mpsc::Receiver<async_nats::Event>) {
    let mut lost = false;
    while let Some(event) = conn_events.recv().await {
        tracing::info!(%event, "NATS connection event");
        match event {
            async_nats::Event::Disconnected => lost = true,
            async_nats::Event::Connected if lost => {
                lost = false;
                host.nats_health.reconnects.fetch_add(1, Ordering::Relaxed);
                host.announce(EventKind::HostStarted).await;
            }
            async_nats::Event::SlowConsumer(_) => {
                host.nats_health.slow_consumers.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// How often running components' claims are checked for expiry.
const CLAIMS_CHECK: Duration = Duration::from_secs(5);

async fn expire_claims(host: Arc<Host>) {
    let mut tick = tokio::time::interval(CLAIMS_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        host.stop_expired().await;
    }
}

async fn heartbeat(host: Arc<Host>) {
    let mut tick = tokio::time::interval(host.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        host.look_at_load();
        host.announce(EventKind::HostHeartbeat).await;
        if host.nats_connected() {
            let ms = u64::try_from(host.started.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
            host.nats_health.last_heartbeat_ms.store(ms, Ordering::Relaxed);
        }
    }
}

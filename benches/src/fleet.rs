//! Fake hosts for the control plane at scale: many host identities in one process, each on a
//! NATS connection of its own, speaking the host's side of the control plane as `trellis host
//! --allow-unsigned` does (`host/src/control.rs`, `host/src/host.rs`): `host_started` once,
//! then a `host_heartbeat` every interval, ping answers with the same `HostInfo`, inventories,
//! and start/stop answers with the events a real host publishes. Nothing runs behind them: a
//! start records the component (its owner and fingerprint) and changes the inventory hash the
//! way a real host's does.
//!
//! What a real host adds and these leave out: the artifact is not fetched or compiled (a real
//! host answers a start once it has), a component's exports and imports stay empty in the
//! inventory (the scheduler does not read them), and requests are not checked for signatures
//! (development mode accepts unsigned ones).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::{Client, Subscriber};
use futures::{StreamExt, TryStreamExt, stream};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use trellis_lattice::events::Events;
use trellis_lattice::proto::{self as pb, ErrorCode};
use trellis_lattice::subject::{EventKind, HostVerb, Subject, Subjects, validate_id};

use crate::{BenchError, setup};

/// Connections opened at once while the fleet starts.
const CONNECTING: usize = 32;

/// What a fleet looks like.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// NATS URL.
    pub url: String,
    /// The lattice.
    pub lattice: String,
    /// How many hosts.
    pub hosts: usize,
    /// Their heartbeat interval.
    pub interval: Duration,
    /// Labels every host carries.
    pub labels: BTreeMap<String, String>,
}

/// Running fake hosts; their tasks end when it is dropped.
pub struct Fleet {
    pub hosts: Vec<Arc<FakeHost>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Fleet {
    /// Connects `spec.hosts` hosts, each subscribed before it announces itself (as a real host
    /// is). Their heartbeats are spread evenly over one interval, as those of hosts started at
    /// different times are.
    pub async fn start(spec: &FleetSpec) -> Result<Self, BenchError> {
        let subjects = Subjects::new(&spec.lattice).map_err(setup)?;
        let joined: Vec<(Arc<FakeHost>, Subscriber, Subscriber)> =
            stream::iter((0..spec.hosts).map(|i| FakeHost::connect(spec, &subjects, i)))
                .buffered(CONNECTING)
                .try_collect()
                .await?;
        let mut fleet = Fleet { hosts: Vec::new(), tasks: Vec::new() };
        let count = joined.len().max(1) as u32;
        for (i, (host, own, ping)) in joined.into_iter().enumerate() {
            host.events.publish(EventKind::HostStarted, pb::event::Body::Host(host.info())).await;
            let offset = spec.interval * i as u32 / count;
            fleet.tasks.push(tokio::spawn(serve(host.clone(), own, ping)));
            fleet.tasks.push(tokio::spawn(heartbeat(host.clone(), offset)));
            fleet.hosts.push(host);
        }
        Ok(fleet)
    }

    /// Replicas running on hosts that have not vanished, by owning application.
    pub fn replicas_by_app(&self) -> BTreeMap<String, usize> {
        let mut by_app = BTreeMap::new();
        for host in self.hosts.iter().filter(|h| !h.vanished()) {
            for c in host.runs().components.values() {
                let app = c.owner.as_ref().map_or("", |o| o.app.as_str());
                *by_app.entry(app.to_owned()).or_default() += 1;
            }
        }
        by_app
    }
}

/// One fake host.
#[derive(Debug)]
pub struct FakeHost {
    pub id: String,
    pub name: String,
    labels: BTreeMap<String, String>,
    lattice: String,
    interval: Duration,
    started: Instant,
    nats: Client,
    subjects: Subjects,
    events: Events,
    runs: Mutex<Runs>,
    vanished: AtomicBool,
}

/// What a fake host runs.
#[derive(Debug, Default)]
struct Runs {
    components: BTreeMap<String, pb::ComponentDescription>,
    providers: BTreeMap<String, pb::ProviderDescription>,
}

impl FakeHost {
    async fn connect(
        spec: &FleetSpec,
        subjects: &Subjects,
        index: usize,
    ) -> Result<(Arc<Self>, Subscriber, Subscriber), BenchError> {
        let id = nkeys::KeyPair::new_server().public_key();
        let name = format!("scale-{index:04}");
        let nats = trellis_lattice::connect::connect_once(&spec.url, &name, &Default::default())
            .await
            .map_err(setup)?;
        let own = nats.subscribe(subjects.host_control_all(&id)).await.map_err(setup)?;
        let ping = nats.subscribe(subjects.hosts_ping()).await.map_err(setup)?;
        trellis_lattice::connect::sync_with_server(&nats).await.map_err(setup)?;
        let host = FakeHost {
            events: Events::new(nats.clone(), subjects.clone(), id.clone()),
            id,
            name,
            labels: spec.labels.clone(),
            lattice: spec.lattice.clone(),
            interval: spec.interval,
            started: Instant::now(),
            nats,
            subjects: subjects.clone(),
            runs: Mutex::default(),
            vanished: AtomicBool::new(false),
        };
        Ok((Arc::new(host), own, ping))
    }

    /// Stops heartbeating and answering, as a host that froze or was cut off does: its
    /// connection and subscriptions stay, so requests to it time out rather than fail fast.
    pub fn vanish(&self) {
        self.vanished.store(true, Ordering::Relaxed);
    }

    pub fn vanished(&self) -> bool {
        self.vanished.load(Ordering::Relaxed)
    }

    fn runs(&self) -> MutexGuard<'_, Runs> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The digest sent in heartbeats and ping answers, as a real host's `Host::info`.
    fn info(&self) -> pb::HostInfo {
        let runs = self.runs();
        let uptime = self.started.elapsed();
        pb::HostInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            labels: self.labels.clone().into_iter().collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: uptime.as_secs(),
            components: runs.components.len() as u32,
            providers: runs.providers.len() as u32,
            inventory_hash: runs.hash(),
            lattice: self.lattice.clone(),
            invocations_denied: 0,
            requests_denied: 0,
            heartbeat_ms: u32::try_from(self.interval.as_millis()).unwrap_or(u32::MAX),
            // What an idle real host reports, give or take: the size on the wire is the same.
            rss_bytes: 40 << 20,
            cpu_ms: uptime.as_millis() as u64 / 100,
            draining: false,
            secrets_xkey: String::new(),
            active: Vec::new(),
            load: Vec::new(),
        }
    }

    fn inventory(&self) -> pb::Inventory {
        let host = Some(self.info());
        let runs = self.runs();
        pb::Inventory {
            host,
            components: runs.components.values().cloned().collect(),
            providers: runs.providers.values().cloned().collect(),
            posture: Some(pb::HostPosture { development: true, ..Default::default() }),
        }
    }

    /// The answer to one control verb, in the verb's reply type.
    async fn dispatch(&self, verb: HostVerb, payload: &[u8]) -> Vec<u8> {
        match verb {
            HostVerb::Inventory => {
                pb::InventoryReply { status: Some(ok()), inventory: Some(self.inventory()) }
                    .encode_to_vec()
            }
            HostVerb::StartComponent => {
                let status = match pb::StartComponentRequest::decode(payload) {
                    Ok(req) => self.start_component(req).await,
                    Err(e) => undecodable(e),
                };
                pb::StartComponentReply { status: Some(status) }.encode_to_vec()
            }
            HostVerb::StopComponent => {
                let status = match pb::StopComponentRequest::decode(payload) {
                    Ok(req) => self.stop_component(&req.component_id).await,
                    Err(e) => undecodable(e),
                };
                pb::StopComponentReply { status: Some(status) }.encode_to_vec()
            }
            HostVerb::StartProvider => {
                let status = match pb::StartProviderRequest::decode(payload) {
                    Ok(req) => self.start_provider(req).await,
                    Err(e) => undecodable(e),
                };
                pb::StartProviderReply { status: Some(status) }.encode_to_vec()
            }
            HostVerb::StopProvider => {
                let status = match pb::StopProviderRequest::decode(payload) {
                    Ok(req) => self.stop_provider(&req.provider_id).await,
                    Err(e) => undecodable(e),
                };
                pb::StopProviderReply { status: Some(status) }.encode_to_vec()
            }
            HostVerb::Drain => {
                let status =
                    refused(ErrorCode::BadRequest, "the bench's hosts do not drain".into());
                pb::DrainReply { status: Some(status) }.encode_to_vec()
            }
            HostVerb::SecretGet => {
                let status =
                    refused(ErrorCode::BadRequest, "the bench's hosts hold no secrets".into());
                pb::SecretGetReply { status: Some(status), ..Default::default() }.encode_to_vec()
            }
            HostVerb::Compile => {
                let status =
                    refused(ErrorCode::BadRequest, "the bench's hosts compile nothing".into());
                pb::CompileReply { status: Some(status), ..Default::default() }.encode_to_vec()
            }
        }
    }

    /// As `Host::start_component`: the same request again is fine, another artifact under the
    /// same id only with `replace`.
    async fn start_component(&self, req: pb::StartComponentRequest) -> pb::Status {
        if let Err(e) = validate_id("component id", &req.component_id) {
            return refused(ErrorCode::BadRequest, e.to_string());
        }
        if let Some(name) = req.config.iter().find(|n| validate_id("config name", n).is_err()) {
            return refused(ErrorCode::BadRequest, format!("invalid config name `{name}`"));
        }
        {
            let mut runs = self.runs();
            if let Some(existing) = runs.components.get(&req.component_id) {
                let same = existing.digest == req.digest
                    && (!req.replace
                        || (existing.owner == req.owner
                            && existing.limits == req.limits
                            && existing.config == req.config));
                if same {
                    return ok();
                }
                if !req.replace {
                    let message = format!(
                        "component `{}` already runs here from {}; stop it first",
                        req.component_id, existing.digest
                    );
                    return refused(ErrorCode::AlreadyExists, message);
                }
            }
            let description = pb::ComponentDescription {
                id: req.component_id.clone(),
                digest: req.digest.clone(),
                limits: req.limits,
                config: req.config,
                owner: req.owner,
                ..Default::default()
            };
            runs.components.insert(req.component_id.clone(), description);
        }
        let (id, digest) = (&req.component_id, &req.digest);
        self.events.component(EventKind::ComponentStarted, id, digest, "").await;
        ok()
    }

    async fn stop_component(&self, id: &str) -> pb::Status {
        let Some(stopped) = self.runs().components.remove(id) else {
            return refused(ErrorCode::NotFound, format!("no component `{id}` runs on this host"));
        };
        self.events.component(EventKind::ComponentStopped, id, &stopped.digest, "stopped").await;
        ok()
    }

    async fn start_provider(&self, req: pb::StartProviderRequest) -> pb::Status {
        if let Err(e) = validate_id("provider id", &req.provider_id) {
            return refused(ErrorCode::BadRequest, e.to_string());
        }
        {
            let mut runs = self.runs();
            if let Some(existing) = runs.providers.get(&req.provider_id) {
                if existing.kind == req.kind {
                    return ok();
                }
                let message = format!("provider `{}` already runs here", req.provider_id);
                return refused(ErrorCode::AlreadyExists, message);
            }
            let description = pb::ProviderDescription {
                id: req.provider_id.clone(),
                kind: req.kind.clone(),
                pid: std::process::id(),
                running: true,
                builtin: req.builtin,
                healthy: true,
                owner: req.owner,
                ..Default::default()
            };
            runs.providers.insert(req.provider_id.clone(), description);
        }
        let (id, kind) = (&req.provider_id, &req.kind);
        self.events.provider(EventKind::ProviderStarted, id, kind, "").await;
        ok()
    }

    async fn stop_provider(&self, id: &str) -> pb::Status {
        let Some(stopped) = self.runs().providers.remove(id) else {
            return refused(ErrorCode::NotFound, format!("no provider `{id}` runs on this host"));
        };
        self.events.provider(EventKind::ProviderStopped, id, &stopped.kind, "stopped").await;
        ok()
    }
}

impl Runs {
    /// Changes whenever what runs (or who owns it) changes, computed as a real host does.
    fn hash(&self) -> String {
        let mut hash = Sha256::new();
        let fingerprint = |owner: &Option<pb::Owner>| {
            owner.as_ref().map_or(String::new(), |o| format!("{}/{}", o.app, o.fingerprint))
        };
        for c in self.components.values() {
            for part in [&c.id, &c.digest, &fingerprint(&c.owner)] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
        }
        for p in self.providers.values() {
            for part in [&p.id, &p.kind, &fingerprint(&p.owner)] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
        }
        hash.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Answers pings and control requests, one at a time (each is quick: nothing to compile).
async fn serve(host: Arc<FakeHost>, mut own: Subscriber, mut ping: Subscriber) {
    loop {
        let msg = tokio::select! {
            Some(msg) = own.next() => msg,
            Some(msg) = ping.next() => msg,
            else => return,
        };
        let Some(reply) = msg.reply.clone().filter(|_| !host.vanished()) else { continue };
        let body = match host.subjects.parse(&msg.subject) {
            Some(Subject::HostsPing) => host.info().encode_to_vec(),
            Some(Subject::HostControl { verb, .. }) => host.dispatch(verb, &msg.payload).await,
            _ => continue,
        };
        // Lost only when the connection is: the asker times out, as with a real host.
        let _ = host.nats.publish(reply, body.into()).await;
    }
}

async fn heartbeat(host: Arc<FakeHost>, offset: Duration) {
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(host.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !host.vanished() {
            host.events.publish(EventKind::HostHeartbeat, pb::event::Body::Host(host.info())).await;
        }
    }
}

fn ok() -> pb::Status {
    pb::Status { code: ErrorCode::Ok.into(), message: String::new() }
}

fn refused(code: ErrorCode, message: String) -> pb::Status {
    pb::Status { code: code.into(), message }
}

fn undecodable(e: prost::DecodeError) -> pb::Status {
    refused(ErrorCode::BadRequest, format!("undecodable request: {e}"))
}

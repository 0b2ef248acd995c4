//! What the console shows, kept live: hosts from their heartbeats and events, what each runs
//! (inventories), links, applications and their status, and the last events.
//!
//! Events update it at once; inventories are read again when a host's changes and every few
//! seconds (for calls per second), links and applications every second. Every change bumps a
//! revision the page's stream waits on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::sync::watch;
use trellis_lattice::client::LatticeClient;
use trellis_lattice::link::Link;
use trellis_lattice::proto as pb;
use trellis_scheduler::apps::{AppRecord, AppStatus, AppStore};

use crate::cmd::get::{PING_WAIT, event_json};
use crate::output::{host_json, inventory_json};

/// Events kept for the page.
const EVENTS: usize = 500;
/// How often inventories are read again for call rates.
const INVENTORY_EVERY: Duration = Duration::from_secs(2);
/// Heartbeats a host may miss before it shows `unknown`, and before it shows `lost` (the
/// scheduler's threshold: it re-places a lost host's replicas).
const UNKNOWN_AFTER: f64 = 1.5;
const LOST_AFTER: f64 = 3.0;
/// Link and config values the page may see; the rest may be credentials.
const SHOWN_CONFIG: [&str; 2] = ["address", "path"];

/// One host as the console knows it.
#[derive(Debug)]
struct HostView {
    info: pb::HostInfo,
    last_seen: Instant,
    stopped: bool,
    inventory: Option<pb::Inventory>,
    /// Invocations and errors per component at the last read, and when, for rates.
    counts: BTreeMap<String, (u64, u64)>,
    counted_at: Option<Instant>,
    rates: BTreeMap<String, (f64, f64)>,
    /// Share of one core it used between its last two heartbeats, in percent.
    cpu_percent: Option<f64>,
}

impl HostView {
    /// Whether the inventory read last is the one a host with inventory hash `hash` has.
    fn inventory_is(&self, hash: &str) -> bool {
        self.inventory
            .as_ref()
            .and_then(|i| i.host.as_ref())
            .is_some_and(|h| h.inventory_hash == hash)
    }

    /// `up`, `unknown`, `lost` (the scheduler's rule) or `stopped`.
    fn state(&self) -> &'static str {
        let beats = self.last_seen.elapsed().as_secs_f64() / heartbeat(&self.info).as_secs_f64();
        match () {
            () if self.stopped => "stopped",
            () if beats > LOST_AFTER => "lost",
            () if beats > UNKNOWN_AFTER => "unknown",
            () => "up",
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    hosts: BTreeMap<String, HostView>,
    links: Vec<Value>,
    apps: Vec<Value>,
    events: VecDeque<Value>,
}

/// The console's live view of one lattice.
#[derive(Debug)]
pub struct Live {
    model: Mutex<Model>,
    revision: watch::Sender<u64>,
    lattice: String,
}

impl Live {
    /// Starts following `client`'s lattice; the tasks end when the returned value is dropped
    /// by everyone.
    pub async fn follow(client: LatticeClient, apps: AppStore) -> anyhow::Result<Arc<Self>> {
        let live = Arc::new(Self {
            model: Mutex::default(),
            revision: watch::Sender::new(0),
            lattice: client.lattice().to_owned(),
        });
        let mut events = client.nats().subscribe(client.subjects().events_all()).await?;
        trellis_lattice::connect::sync_with_server(client.nats()).await?;
        for info in client.hosts(PING_WAIT).await.unwrap_or_default() {
            live.seen(info);
        }
        live.read_inventories(&client, true).await;
        live.read_state(&client, &apps).await;
        let weak = Arc::downgrade(&live);
        let feed = client.clone();
        tokio::spawn(async move {
            while let Some(msg) = events.next().await {
                let Some(live) = weak.upgrade() else { return };
                let Some(kind) = feed.subjects().event_kind(msg.subject.as_str()) else { continue };
                let Ok(event) = pb::Event::decode(msg.payload) else { continue };
                live.event(kind, event, &feed);
            }
        });
        let weak = Arc::downgrade(&live);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_inventories = Instant::now();
            loop {
                tick.tick().await;
                let Some(live) = weak.upgrade() else { return };
                live.read_state(&client, &apps).await;
                let all = last_inventories.elapsed() >= INVENTORY_EVERY;
                if all {
                    last_inventories = Instant::now();
                }
                live.read_inventories(&client, all).await;
                // Heartbeat ages and liveness move with time alone.
                live.changed();
            }
        });
        Ok(live)
    }

    /// The lattice it follows.
    pub fn lattice(&self) -> &str {
        &self.lattice
    }

    /// A receiver that sees every change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.revision.send_modify(|r| *r += 1);
    }

    /// A host heartbeated or announced itself.
    fn seen(&self, info: pb::HostInfo) {
        let mut model = self.lock();
        let view = model.hosts.entry(info.id.clone()).or_insert_with(|| HostView {
            info: info.clone(),
            last_seen: Instant::now(),
            stopped: false,
            inventory: None,
            counts: BTreeMap::new(),
            counted_at: None,
            rates: BTreeMap::new(),
            cpu_percent: None,
        });
        let elapsed_ms = view.last_seen.elapsed().as_secs_f64() * 1000.0;
        if info.cpu_ms >= view.info.cpu_ms && elapsed_ms >= 100.0 {
            view.cpu_percent = Some((info.cpu_ms - view.info.cpu_ms) as f64 / elapsed_ms * 100.0);
        }
        view.info = info;
        view.last_seen = Instant::now();
        view.stopped = false;
    }

    fn event(self: &Arc<Self>, kind: &str, event: pb::Event, client: &LatticeClient) {
        if kind != "host_heartbeat" {
            let mut model = self.lock();
            if model.events.len() == EVENTS {
                model.events.pop_front();
            }
            model.events.push_back(event_json(kind, &event));
        }
        match (&event.body, kind) {
            (Some(pb::event::Body::Host(info)), "host_stopped") => {
                if let Some(view) = self.lock().hosts.get_mut(&info.id) {
                    view.stopped = true;
                }
            }
            (Some(pb::event::Body::Host(info)), _) => {
                let stale = self
                    .lock()
                    .hosts
                    .get(&info.id)
                    .is_none_or(|v| !v.inventory_is(&info.inventory_hash));
                self.seen(info.clone());
                if stale {
                    self.reread(client, &info.id);
                }
            }
            (Some(pb::event::Body::Component(_) | pb::event::Body::Provider(_)), _) => {
                self.reread(client, &event.host_id);
            }
            _ => {}
        }
        self.changed();
    }

    /// Reads `host`'s inventory again, in the background.
    fn reread(self: &Arc<Self>, client: &LatticeClient, host: &str) {
        let (live, client, host) = (self.clone(), client.clone(), host.to_owned());
        tokio::spawn(async move {
            if let Ok(inventory) = client.inventory(&host).await {
                live.inventory(&host, inventory);
                live.changed();
            }
        });
    }

    /// Reads the inventories of hosts that changed (all live ones when `all`).
    async fn read_inventories(&self, client: &LatticeClient, all: bool) {
        let hosts: Vec<String> = self
            .lock()
            .hosts
            .iter()
            .filter(|(_, v)| matches!(v.state(), "up" | "unknown"))
            .filter(|(_, v)| all || !v.inventory_is(&v.info.inventory_hash))
            .map(|(id, _)| id.clone())
            .collect();
        let reads = hosts.iter().map(|h| client.inventory(h));
        for (host, read) in hosts.iter().zip(futures::future::join_all(reads).await) {
            if let Ok(inventory) = read {
                self.inventory(host, inventory);
            }
        }
    }

    fn inventory(&self, host: &str, inventory: pb::Inventory) {
        let mut model = self.lock();
        let Some(view) = model.hosts.get_mut(host) else { return };
        let now = Instant::now();
        let counts: BTreeMap<String, (u64, u64)> = inventory
            .components
            .iter()
            .map(|c| (c.id.clone(), (c.invocations, c.errors)))
            .collect();
        if let Some(then) = view.counted_at {
            let secs = now.duration_since(then).as_secs_f64().max(0.001);
            view.rates = counts
                .iter()
                .map(|(id, (calls, errors))| {
                    let (c0, e0) = view.counts.get(id).copied().unwrap_or((*calls, *errors));
                    let rate = calls.saturating_sub(c0) as f64 / secs;
                    let error_rate = errors.saturating_sub(e0) as f64 / secs;
                    (id.clone(), (rate, error_rate))
                })
                .collect();
        }
        view.counts = counts;
        view.counted_at = Some(now);
        view.inventory = Some(inventory);
    }

    /// Reads links and applications; marks a change when they differ.
    async fn read_state(&self, client: &LatticeClient, apps: &AppStore) {
        let links: Option<Vec<Value>> = match client.state().await {
            Ok(state) => state.links().await.ok().map(|l| l.iter().map(link_view).collect()),
            Err(_) => None,
        };
        let mut records = Vec::new();
        if let Ok(all) = apps.all().await {
            for record in all {
                let status = apps.status(&record.name).await.ok().flatten();
                records.push(app_view(&record, status.as_ref()));
            }
        }
        let mut model = self.lock();
        let mut differs = false;
        if let Some(links) = links
            && links != model.links
        {
            model.links = links;
            differs = true;
        }
        if records != model.apps {
            model.apps = records;
            differs = true;
        }
        drop(model);
        if differs {
            self.changed();
        }
    }

    /// Everything the page shows, as JSON: nothing secret (config values are hidden).
    pub fn snapshot(&self, actions: bool) -> Value {
        let model = self.lock();
        let hosts: Vec<Value> = model
            .hosts
            .values()
            .map(|v| {
                let age = v.last_seen.elapsed();
                let mut host = host_json(&v.info);
                host["state"] = json!(v.state());
                host["heartbeat_age_ms"] = json!(age.as_millis() as u64);
                host["heartbeat_ms"] = json!(v.info.heartbeat_ms);
                host["cpu_percent"] = json!(v.cpu_percent);
                if let Some(inventory) = &v.inventory {
                    let mut inventory = inventory_json(inventory);
                    for c in inventory["components"].as_array_mut().into_iter().flatten() {
                        let id = c["id"].as_str().unwrap_or_default();
                        let (rate, errors) = v.rates.get(id).copied().unwrap_or_default();
                        c["calls_per_s"] = json!(rate);
                        c["errors_per_s"] = json!(errors);
                    }
                    host["inventory"] = inventory;
                }
                host
            })
            .collect();
        json!({
            "lattice": self.lattice,
            "actions": actions,
            "hosts": hosts,
            "links": model.links,
            "apps": model.apps,
            "events": model.events,
        })
    }
}

/// A host's heartbeat interval (3 s when it does not say).
fn heartbeat(info: &pb::HostInfo) -> Duration {
    Duration::from_millis(if info.heartbeat_ms == 0 { 3000 } else { u64::from(info.heartbeat_ms) })
}

/// A link for the page: its ends, interface and name, and its config with values hidden.
fn link_view(link: &Link) -> Value {
    json!({
        "source": link.source,
        "target": link.target,
        "interface": link.interface.to_string(),
        "name": link.name,
        "config": hide_values(&link.config),
    })
}

/// Config for the page: every key, values only for [`SHOWN_CONFIG`].
fn hide_values(config: &BTreeMap<String, String>) -> Value {
    config
        .iter()
        .map(|(k, v)| {
            let shown = SHOWN_CONFIG.contains(&k.as_str());
            (k.clone(), json!(if shown { v.as_str() } else { "(hidden)" }))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// An application for the page: record, status and every version's manifest (values of
/// named config and link config hidden).
fn app_view(record: &AppRecord, status: Option<&AppStatus>) -> Value {
    let versions: Vec<Value> = record
        .versions
        .iter()
        .map(|m| {
            let mut manifest = serde_json::to_value(m).unwrap_or(Value::Null);
            hide_manifest_values(&mut manifest);
            json!({ "version": m.version.to_string(), "manifest": manifest })
        })
        .collect();
    json!({
        "name": record.name,
        "current": record.current.as_ref().map(|v| v.to_string()),
        "stable": record.stable.as_ref().map(|v| v.to_string()),
        "history": record.history,
        "status": status,
        "versions": versions,
    })
}

/// Hides the values of a manifest's named config (`config: {name: {key: value}}`) and of its
/// links' config.
fn hide_manifest_values(manifest: &mut Value) {
    let hide = |map: &mut serde_json::Map<String, Value>| {
        for (k, v) in map.iter_mut() {
            if v.is_string() && !SHOWN_CONFIG.contains(&k.as_str()) {
                *v = json!("(hidden)");
            }
        }
    };
    if let Some(named) = manifest.get_mut("config").and_then(Value::as_object_mut) {
        named.values_mut().filter_map(Value::as_object_mut).for_each(hide);
    }
    for link in manifest.get_mut("links").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(config) = link.get_mut("config").and_then(Value::as_object_mut) {
            hide(config);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_hidden_but_addresses_shown() {
        let mut manifest = json!({
            "config": { "db": { "url": "redis://:secret@x", "address": "0.0.0.0:80" } },
            "links": [ { "config": { "password": "p", "address": "127.0.0.1:8080" } } ],
            "components": [ { "config": ["db"] } ],
        });
        hide_manifest_values(&mut manifest);
        let text = manifest.to_string();
        assert!(!text.contains("secret") && !text.contains("\"p\""), "{text}");
        assert!(text.contains("0.0.0.0:80") && text.contains("127.0.0.1:8080"), "{text}");
        assert_eq!(manifest["components"][0]["config"][0], "db", "names of configs stay");
        let link = hide_values(&[("token".into(), "t".into())].into());
        assert_eq!(link["token"], "(hidden)");
    }
}

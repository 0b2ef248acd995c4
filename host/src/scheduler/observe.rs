//! The scheduler's view of the lattice's hosts, kept from heartbeats and events. Pure: the loop
//! feeds it events and inventories and asks which hosts to re-read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use trellis_proto as pb;

use super::plan::{Observed, Workload};

/// Heartbeats a host may miss before it counts as gone.
pub const MISSED_HEARTBEATS: u32 = 3;

#[derive(Debug)]
struct View {
    info: pb::HostInfo,
    last_seen: Instant,
    /// The inventory last read, and the hash it had.
    inventory: Option<(String, pb::Inventory)>,
    /// Read the inventory again before planning.
    stale: bool,
}

/// Live hosts and what they run.
#[derive(Debug, Default)]
pub struct Hosts {
    hosts: BTreeMap<String, View>,
}

impl Hosts {
    /// A host announced itself or heartbeated.
    pub fn seen(&mut self, info: pb::HostInfo, now: Instant) {
        let view = self.hosts.entry(info.id.clone()).or_insert_with(|| View {
            info: info.clone(),
            last_seen: now,
            inventory: None,
            stale: true,
        });
        if view.inventory.as_ref().is_none_or(|(hash, _)| *hash != info.inventory_hash) {
            view.stale = true;
        }
        view.info = info;
        view.last_seen = now;
    }

    /// A host said goodbye. True if it was known.
    pub fn gone(&mut self, host: &str) -> bool {
        self.hosts.remove(host).is_some()
    }

    /// Something changed on `host` (a component or provider event): read it again.
    pub fn touched(&mut self, host: &str) {
        if let Some(view) = self.hosts.get_mut(host) {
            view.stale = true;
        }
    }

    /// Forgets hosts that missed [`MISSED_HEARTBEATS`] heartbeats; returns their names. When
    /// the scheduler's own host (`me`) is among the silent, it is the scheduler that is cut off
    /// from NATS, not they: it forgets nobody and counts their silence afresh from `now`, so a
    /// scheduler that loses its bus never re-places (and later scales back) what still runs.
    pub fn expire(&mut self, now: Instant, me: &str) -> Vec<String> {
        let silent = |view: &View| {
            let interval = Duration::from_millis(u64::from(view.info.heartbeat_ms.max(100)));
            now.saturating_duration_since(view.last_seen) > interval * MISSED_HEARTBEATS
        };
        if self.hosts.get(me).is_some_and(silent) {
            for view in self.hosts.values_mut() {
                view.last_seen = now;
            }
            return Vec::new();
        }
        let mut expired = Vec::new();
        self.hosts.retain(|_, view| {
            let alive = !silent(view);
            if !alive {
                expired.push(view.info.name.clone());
            }
            alive
        });
        expired
    }

    /// Hosts whose inventory must be read again.
    pub fn stale(&self) -> Vec<String> {
        self.hosts.iter().filter(|(_, v)| v.stale).map(|(id, _)| id.clone()).collect()
    }

    /// Takes an inventory read from `host`.
    pub fn inventory(&mut self, host: &str, inventory: pb::Inventory) {
        if let Some(view) = self.hosts.get_mut(host) {
            let hash =
                inventory.host.as_ref().map(|h| h.inventory_hash.clone()).unwrap_or_default();
            view.inventory = Some((hash, inventory));
            view.stale = false;
        }
    }

    /// The planner's input: hosts whose inventory is known.
    pub fn observed(&self) -> Vec<Observed> {
        self.hosts
            .iter()
            .filter_map(|(id, view)| {
                let (_, inventory) = view.inventory.as_ref()?;
                let owner = |o: &Option<pb::Owner>| {
                    let o = o.clone().unwrap_or_default();
                    Workload { app: o.app, fingerprint: o.fingerprint }
                };
                let workloads = inventory
                    .components
                    .iter()
                    .map(|c| (c.id.clone(), owner(&c.owner)))
                    .chain(inventory.providers.iter().map(|p| (p.id.clone(), owner(&p.owner))))
                    .collect();
                Some(Observed {
                    id: id.clone(),
                    labels: view.info.labels.clone().into_iter().collect(),
                    workloads,
                })
            })
            .collect()
    }

    /// A host's name, for status and logs (its id when unknown).
    pub fn name(&self, host: &str) -> String {
        self.hosts.get(host).map_or_else(|| host.to_owned(), |v| v.info.name.clone())
    }

    /// Whether a provider replica on `host` reports itself healthy (true for components).
    pub fn healthy(&self, host: &str, id: &str) -> bool {
        let Some((_, inventory)) = self.hosts.get(host).and_then(|v| v.inventory.as_ref()) else {
            return false;
        };
        inventory.providers.iter().find(|p| p.id == id).is_none_or(|p| p.healthy)
    }

    /// Whether `id` on `host` is a provider (else a component).
    pub fn runs_provider(&self, host: &str, id: &str) -> bool {
        self.hosts
            .get(host)
            .and_then(|v| v.inventory.as_ref())
            .is_some_and(|(_, inv)| inv.providers.iter().any(|p| p.id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, hash: &str) -> pb::HostInfo {
        pb::HostInfo {
            id: id.into(),
            name: format!("name-{id}"),
            inventory_hash: hash.into(),
            heartbeat_ms: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn hosts_are_read_when_their_inventory_changes_and_forgotten_when_silent() {
        let t0 = Instant::now();
        let mut hosts = Hosts::default();
        hosts.seen(info("a", "h1"), t0);
        assert_eq!(hosts.stale(), vec!["a".to_owned()]);
        assert!(hosts.observed().is_empty(), "not planned on before its inventory is read");
        hosts.inventory("a", pb::Inventory { host: Some(info("a", "h1")), ..Default::default() });
        assert!(hosts.stale().is_empty());
        assert_eq!(hosts.observed().len(), 1);
        hosts.seen(info("a", "h1"), t0 + Duration::from_secs(1));
        assert!(hosts.stale().is_empty(), "same hash: nothing to read");
        hosts.seen(info("a", "h2"), t0 + Duration::from_secs(2));
        assert_eq!(hosts.stale(), vec!["a".to_owned()]);
        let me = "scheduler";
        assert!(hosts.expire(t0 + Duration::from_secs(5), me).is_empty(), "3 s of 1 s beats");
        assert_eq!(hosts.expire(t0 + Duration::from_millis(5001), me), vec!["name-a".to_owned()]);
        assert_eq!(hosts.name("a"), "a", "forgotten");
    }

    #[test]
    fn a_scheduler_that_cannot_hear_itself_forgets_nobody() {
        let t0 = Instant::now();
        let mut hosts = Hosts::default();
        hosts.seen(info("me", "h"), t0);
        hosts.seen(info("a", "h"), t0);
        // Everyone, the scheduler's own host included, silent for 10 s: the bus is gone.
        assert!(hosts.expire(t0 + Duration::from_secs(10), "me").is_empty());
        // Their silence counts from then: back on the bus, `a` has its full grace again.
        hosts.seen(info("me", "h"), t0 + Duration::from_secs(11));
        assert!(hosts.expire(t0 + Duration::from_secs(12), "me").is_empty());
        // A host silent while the scheduler hears itself is gone.
        hosts.seen(info("me", "h"), t0 + Duration::from_secs(14));
        assert_eq!(hosts.expire(t0 + Duration::from_secs(14), "me"), vec!["name-a".to_owned()]);
    }
}

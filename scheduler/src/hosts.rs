//! The scheduler's view of the lattice's hosts, kept from heartbeats, events and inventories.
//! Pure: the core feeds it what it hears, with the time it heard it, and asks which hosts to
//! read again and which are live.
//!
//! A host is **live** while its heartbeats arrive; **unknown** once it missed
//! [`UNKNOWN_AFTER_BEATS`] of them (or stopped answering): its replicas are replaced elsewhere
//! but never told to stop, since it may merely be slow or cut off; **lost** (forgotten) after
//! a longer silence or when it says goodbye. An unknown host that comes back is live again,
//! with what it still runs, and the planner scales the surplus back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use trellis_proto as pb;

use crate::plan::{Observed, Workload};

/// Heartbeats a host may miss before it counts as unknown.
pub const UNKNOWN_AFTER_BEATS: u32 = 3;

/// Where a host stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heartbeating.
    Live,
    /// Silent for longer than [`UNKNOWN_AFTER_BEATS`] heartbeats, or not answering.
    Unknown,
}

/// What changed when hosts were checked against the clock.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Hosts that went silent (their names).
    pub unknown: Vec<String>,
    /// Hosts silent for so long that they are forgotten (their names).
    pub lost: Vec<String>,
}

/// An inventory as the planner needs it.
#[derive(Debug, Clone)]
struct Known {
    hash: String,
    /// The host as the planner takes it, built when the inventory is read (or the labels
    /// change), so a pass shares it instead of copying every host's workloads.
    observed: Arc<Observed>,
    providers: BTreeSet<String>,
    unhealthy: BTreeSet<String>,
}

#[derive(Debug)]
struct View {
    info: pb::HostInfo,
    last_seen: Duration,
    liveness: Liveness,
    inventory: Option<Known>,
    /// Reads asked for so far; a read answers with the number it was asked under.
    reads: u64,
    /// The read in flight, if any.
    reading: Option<u64>,
    /// Read again once the read in flight is answered (it changed meanwhile).
    again: bool,
    /// Since when reads fail (none answered since).
    unreadable_since: Option<Duration>,
}

impl View {
    fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.info.heartbeat_ms.max(100)))
    }

    /// Never read, and reads have failed for as long as it takes to call a host unknown.
    fn stuck(&self, now: Duration) -> bool {
        self.inventory.is_none()
            && self.unreadable_since.is_some_and(|since| {
                now.saturating_sub(since) > self.interval() * UNKNOWN_AFTER_BEATS
            })
    }
}

/// Hosts and what they run.
#[derive(Debug, Default)]
pub struct Hosts {
    hosts: BTreeMap<String, View>,
    /// Hosts whose inventory should be read and is not being read: [`Self::reads_due`] takes
    /// these and looks at no other host (heartbeats arrive by the thousand per second at
    /// scale, and the core polls after every input).
    due: BTreeSet<String>,
}

/// Marks `view` (of host `id`) to be read: now, or once its read in flight is answered. True
/// if it was not marked already.
fn mark(due: &mut BTreeSet<String>, id: &str, view: &mut View) -> bool {
    if view.reading.is_some() {
        !std::mem::replace(&mut view.again, true)
    } else {
        due.insert(id.to_owned())
    }
}

impl Hosts {
    /// A host announced itself or heartbeated at `now`. True when the planner should look
    /// again: a new host, one back from unknown, or one whose inventory changed.
    pub fn seen(&mut self, info: pb::HostInfo, now: Duration) -> bool {
        let Some(view) = self.hosts.get_mut(&info.id) else {
            let id = info.id.clone();
            let view = View {
                info,
                last_seen: now,
                liveness: Liveness::Live,
                inventory: None,
                reads: 0,
                reading: None,
                again: false,
                unreadable_since: None,
            };
            self.due.insert(id.clone());
            self.hosts.insert(id, view);
            return true;
        };
        let mut changed = false;
        if view.inventory.as_ref().is_none_or(|k| k.hash != info.inventory_hash) {
            changed = mark(&mut self.due, &info.id, view);
        }
        if view.liveness == Liveness::Unknown {
            // Heard again: read it, and count it live unless it is one that heartbeats but
            // does not answer.
            mark(&mut self.due, &info.id, view);
            if !view.stuck(now) {
                view.liveness = Liveness::Live;
                changed = true;
            }
        }
        if (view.info.labels != info.labels || view.info.draining != info.draining)
            && let Some(known) = &mut view.inventory
        {
            let observed = Arc::make_mut(&mut known.observed);
            observed.labels = labels(&info);
            observed.draining = info.draining;
            changed = true;
        }
        view.info = info;
        view.last_seen = now;
        changed
    }

    /// A host said goodbye (or is known to be gone). True if it was known.
    pub fn gone(&mut self, host: &str) -> bool {
        self.due.remove(host);
        self.hosts.remove(host).is_some()
    }

    /// Nobody listens for a host (a request found no responders): it counts as unknown until
    /// it heartbeats again. True if it was live.
    pub fn unanswered(&mut self, host: &str) -> bool {
        match self.hosts.get_mut(host) {
            Some(view) if view.liveness == Liveness::Live => {
                view.liveness = Liveness::Unknown;
                true
            }
            _ => false,
        }
    }

    /// Something changed on `host` (a component or provider event): read it again.
    pub fn touched(&mut self, host: &str) {
        if let Some(view) = self.hosts.get_mut(host) {
            mark(&mut self.due, host, view);
        }
    }

    /// Every host is read again (on taking the lead, and on resync).
    pub fn touch_all(&mut self) {
        for (id, view) in &mut self.hosts {
            mark(&mut self.due, id, view);
        }
    }

    /// Marks hosts unknown that missed [`UNKNOWN_AFTER_BEATS`] heartbeats (or whose inventory
    /// could not be read for as long), and forgets those silent for `lost_after` as well.
    ///
    /// When the scheduler's own host (`me`) is among the silent, it is the scheduler that is
    /// cut off from NATS, not they: nobody changes state and their silence counts afresh from
    /// `now`, so a scheduler that loses its bus never re-places (and later scales back) what
    /// still runs.
    pub fn expire(&mut self, now: Duration, me: &str, lost_after: Duration) -> Expired {
        let silent_for = |view: &View| now.saturating_sub(view.last_seen);
        let missed = |view: &View| silent_for(view) > view.interval() * UNKNOWN_AFTER_BEATS;
        if self.hosts.get(me).is_some_and(missed) {
            for view in self.hosts.values_mut() {
                view.last_seen = now;
            }
            return Expired::default();
        }
        let mut expired = Expired::default();
        let due = &mut self.due;
        self.hosts.retain(|id, view| {
            if silent_for(view) > lost_after.max(view.interval() * UNKNOWN_AFTER_BEATS) {
                expired.lost.push(view.info.name.clone());
                due.remove(id);
                return false;
            }
            if (missed(view) || view.stuck(now)) && view.liveness == Liveness::Live {
                view.liveness = Liveness::Unknown;
                expired.unknown.push(view.info.name.clone());
            }
            true
        });
        expired
    }

    /// Hosts whose inventory should be read and is not being read (live ones, and unknown ones
    /// just heard from), each with the number of its read; they count as being read from now
    /// on.
    pub fn reads_due(&mut self) -> Vec<(String, u64)> {
        let mut due = Vec::with_capacity(self.due.len());
        for id in std::mem::take(&mut self.due) {
            let Some(view) = self.hosts.get_mut(&id) else { continue };
            view.reads += 1;
            view.reading = Some(view.reads);
            due.push((id, view.reads));
        }
        due
    }

    /// The number of the last read asked of `host` (0: none yet).
    pub fn reads(&self, host: &str) -> u64 {
        self.hosts.get(host).map_or(0, |v| v.reads)
    }

    /// Takes read number `read` of `host`, answered at `now`. False when it is not the read
    /// in flight (an older answer) or the host is unknown to the view.
    pub fn inventory(
        &mut self,
        host: &str,
        read: u64,
        inventory: &pb::Inventory,
        now: Duration,
    ) -> bool {
        let Some(view) = self.hosts.get_mut(host) else { return false };
        if view.reading != Some(read) {
            return false;
        }
        view.reading = None;
        if std::mem::take(&mut view.again) {
            self.due.insert(host.to_owned());
        }
        view.unreadable_since = None;
        // Unknown because it did not answer, and heartbeating all along: live again.
        let heard = now.saturating_sub(view.last_seen) <= view.interval() * UNKNOWN_AFTER_BEATS;
        if view.liveness == Liveness::Unknown && heard {
            view.liveness = Liveness::Live;
        }
        let hash = inventory.host.as_ref().map(|h| h.inventory_hash.clone()).unwrap_or_default();
        let owner = |o: &Option<pb::Owner>| {
            let o = o.clone().unwrap_or_default();
            Workload { app: o.app, fingerprint: o.fingerprint }
        };
        let workloads: BTreeMap<String, Workload> = inventory
            .components
            .iter()
            .map(|c| (c.id.clone(), owner(&c.owner)))
            .chain(inventory.providers.iter().map(|p| (p.id.clone(), owner(&p.owner))))
            .collect();
        let providers = inventory.providers.iter().map(|p| p.id.clone()).collect();
        let unhealthy =
            inventory.providers.iter().filter(|p| !p.healthy).map(|p| p.id.clone()).collect();
        // The inventory is as new as the last heartbeat or newer.
        view.info.inventory_hash.clone_from(&hash);
        let observed = Arc::new(Observed {
            id: host.to_owned(),
            labels: labels(&view.info),
            load: workloads.len(),
            workloads,
            draining: view.info.draining,
        });
        view.inventory = Some(Known { hash, observed, providers, unhealthy });
        true
    }

    /// Read number `read` of `host` failed at `now`; it is read again later.
    pub fn unread(&mut self, host: &str, read: u64, now: Duration) {
        if let Some(view) = self.hosts.get_mut(host)
            && view.reading == Some(read)
        {
            view.reading = None;
            view.again = false;
            view.unreadable_since.get_or_insert(now);
            // A live host is read again at once; an unknown one when it is heard again.
            if view.liveness == Liveness::Live {
                self.due.insert(host.to_owned());
            }
        }
    }

    /// Whether every live host's inventory is known: planning on fewer hosts than are there
    /// would place replicas that already run on the unread ones. (A live host that cannot be
    /// read for as long as it would take to call it unknown is called unknown: see
    /// [`Self::expire`].)
    pub fn all_read(&self) -> bool {
        self.hosts.values().all(|v| v.liveness == Liveness::Unknown || v.inventory.is_some())
    }

    /// Forgets what `host` runs until it is read again: planning waits for the read (or for
    /// the host to turn unknown).
    pub fn forget_inventory(&mut self, host: &str) {
        if let Some(view) = self.hosts.get_mut(host) {
            view.inventory = None;
            mark(&mut self.due, host, view);
        }
    }

    /// Forgets every inventory (on taking the lead: what was read in an earlier term may be
    /// long out of date); they are read again before the next pass.
    pub fn forget_inventories(&mut self) {
        for view in self.hosts.values_mut() {
            view.inventory = None;
            view.unreadable_since = None;
        }
        self.touch_all();
    }

    /// The planner's input: live hosts whose inventory is known, by id (shared, not copied).
    pub fn observed(&self) -> Vec<Arc<Observed>> {
        self.hosts
            .values()
            .filter(|view| view.liveness == Liveness::Live)
            .filter_map(|view| Some(view.inventory.as_ref()?.observed.clone()))
            .collect()
    }

    /// Hosts that carry `requirements` but cannot be planned on now: unknown, or live with
    /// an inventory not read yet. While there are any, a shortfall may be a slow lattice,
    /// not an impossible placement.
    pub fn waiting_for(&self, requirements: &BTreeMap<String, String>) -> usize {
        self.hosts
            .values()
            .filter(|v| v.liveness == Liveness::Unknown || v.inventory.is_none())
            .filter(|v| requirements.iter().all(|(k, val)| v.info.labels.get(k) == Some(val)))
            .count()
    }

    /// Where `host` stands, if it is known.
    pub fn liveness(&self, host: &str) -> Option<Liveness> {
        self.hosts.get(host).map(|v| v.liveness)
    }

    /// A host's name, for status and logs (its id when unknown).
    pub fn name<'a>(&'a self, host: &'a str) -> &'a str {
        self.hosts.get(host).map_or(host, |v| v.info.name.as_str())
    }

    /// Whether `host` is draining (as its last heartbeat said).
    pub fn draining(&self, host: &str) -> bool {
        self.hosts.get(host).is_some_and(|v| v.info.draining)
    }

    /// Whether a provider replica on `host` reports itself healthy (true for components).
    pub fn healthy(&self, host: &str, id: &str) -> bool {
        self.hosts
            .get(host)
            .and_then(|v| v.inventory.as_ref())
            .is_some_and(|k| !k.unhealthy.contains(id))
    }

    /// Whether `id` on `host` is a provider (else a component).
    pub fn runs_provider(&self, host: &str, id: &str) -> bool {
        self.hosts
            .get(host)
            .and_then(|v| v.inventory.as_ref())
            .is_some_and(|k| k.providers.contains(id))
    }
}

fn labels(info: &pb::HostInfo) -> BTreeMap<String, String> {
    info.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
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

    fn inventory(id: &str, hash: &str) -> pb::Inventory {
        pb::Inventory { host: Some(info(id, hash)), ..Default::default() }
    }

    const S: Duration = Duration::from_secs(1);
    const LOST: Duration = Duration::from_secs(30);

    #[test]
    fn hosts_are_read_when_their_inventory_changes() {
        let mut hosts = Hosts::default();
        assert!(hosts.seen(info("a", "h1"), S));
        assert_eq!(hosts.reads_due(), vec![("a".to_owned(), 1)]);
        assert!(hosts.reads_due().is_empty(), "one read at a time");
        assert!(hosts.observed().is_empty(), "not planned on before its inventory is read");
        assert!(!hosts.inventory("a", 7, &inventory("a", "h1"), S), "not the read in flight");
        assert!(hosts.inventory("a", 1, &inventory("a", "h1"), S));
        assert_eq!(hosts.observed().len(), 1);
        assert!(!hosts.seen(info("a", "h1"), 2 * S), "same hash: nothing to read");
        assert!(hosts.reads_due().is_empty());
        assert!(hosts.seen(info("a", "h2"), 3 * S));
        assert_eq!(hosts.reads_due(), vec![("a".to_owned(), 2)]);
        hosts.unread("a", 2, 4 * S);
        assert_eq!(hosts.reads_due(), vec![("a".to_owned(), 3)], "a failed read is retried");
    }

    #[test]
    fn a_silent_host_is_unknown_then_lost_and_comes_back_live() {
        let mut hosts = Hosts::default();
        let me = "me";
        for (id, hash) in [("me", "h"), ("a", "h")] {
            hosts.seen(info(id, hash), S);
            let (_, read) = hosts.reads_due().pop().unwrap();
            hosts.inventory(id, read, &inventory(id, hash), S);
        }
        hosts.seen(info("me", "h"), 4 * S);
        assert_eq!(hosts.expire(4 * S, me, LOST), Expired::default(), "3 s of 1 s beats");
        hosts.seen(info("me", "h"), 5 * S);
        let expired = hosts.expire(4 * S + Duration::from_millis(1001), me, LOST);
        assert_eq!(expired.unknown, vec!["name-a".to_owned()]);
        assert_eq!(hosts.liveness("a"), Some(Liveness::Unknown));
        assert_eq!(hosts.observed().len(), 1, "an unknown host is not planned on");
        assert_eq!(hosts.waiting_for(&BTreeMap::new()), 1);
        assert!(hosts.seen(info("a", "h"), 6 * S), "back: look again");
        assert_eq!(hosts.liveness("a"), Some(Liveness::Live));
        hosts.seen(info("me", "h"), 40 * S);
        let expired = hosts.expire(40 * S, me, LOST);
        assert_eq!((expired.unknown, expired.lost), (vec![], vec!["name-a".to_owned()]));
        assert_eq!(hosts.name("a"), "a", "forgotten");
    }

    #[test]
    fn a_scheduler_that_cannot_hear_itself_forgets_nobody() {
        let mut hosts = Hosts::default();
        hosts.seen(info("me", "h"), S);
        hosts.seen(info("a", "h"), S);
        // Everyone, the scheduler's own host included, silent for 60 s: the bus is gone.
        assert_eq!(hosts.expire(61 * S, "me", LOST), Expired::default());
        // Their silence counts from then: back on the bus, `a` has its full grace again.
        hosts.seen(info("me", "h"), 62 * S);
        assert_eq!(hosts.expire(63 * S, "me", LOST), Expired::default());
        // A host silent while the scheduler hears itself goes unknown.
        hosts.seen(info("me", "h"), 65 * S);
        assert_eq!(hosts.expire(65 * S, "me", LOST).unknown, vec!["name-a".to_owned()]);
    }
}

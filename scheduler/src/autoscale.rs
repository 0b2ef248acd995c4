//! Autoscaling: how many replicas, between a workload's floor and `max`, its load wants. Pure;
//! the core feeds it the load hosts report in heartbeats and the clock, and it sets what the
//! planner wants (`docs/design/autoscaling.md`).
//!
//! The rule: replicas = calls in flight over all hosts / `target`, rounded up. Up at once
//! (past a 10% band, and at most every [`UP_COOLDOWN`]); down only after the load wanted fewer
//! for the whole `cooldown`, and then to the most it wanted in that time. Calls refused at a
//! concurrency limit want one more. Only the leader decides; a new leader starts from what
//! runs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use trellis_proto as pb;

use crate::desired::Workload;

/// The least time between two steps up: long enough for the replicas of the last step to
/// start and take calls, so their load is in the next reports.
pub const UP_COOLDOWN: Duration = Duration::from_secs(6);

/// A report counts for this many of its host's heartbeat intervals.
const REPORT_LASTS: u32 = 3;

/// The load reports of the hosts and the replicas each autoscaled workload wants.
#[derive(Debug, Default)]
pub struct Autoscaler {
    /// By host id: until when its last report counts, and the loads of the autoscaled
    /// workloads in it (hosts reporting none are not kept).
    reports: HashMap<String, (Duration, Vec<pb::ComponentLoad>)>,
    /// By workload id, while leading.
    levels: HashMap<String, Level>,
    /// The longest heartbeat interval of a report: within it every host has reported again.
    refresh: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    replicas: u32,
    /// When it last changed (`None`: not since this scheduler leads).
    changed: Option<Duration>,
    /// Since when the load wanted fewer, and the most it wanted since (after the reports
    /// before the fall had all been replaced).
    low: Option<(Duration, u32)>,
}

/// A decision, announced as a `component_scaled` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaled {
    /// Workload id.
    pub id: String,
    /// Its application.
    pub app: String,
    /// Replicas before.
    pub from: u32,
    /// Replicas now.
    pub to: u32,
    /// The load seen and the rule that applied, in words.
    pub reason: String,
}

impl Autoscaler {
    /// Takes in a host's digest: its report replaces the last one.
    pub fn report(
        &mut self,
        info: &pb::HostInfo,
        now: Duration,
        workloads: &BTreeMap<String, Workload>,
    ) {
        let load: Vec<pb::ComponentLoad> = info
            .load
            .iter()
            .filter(|l| workloads.get(&l.id).is_some_and(|w| w.autoscale.is_some()))
            .cloned()
            .collect();
        if load.is_empty() {
            self.reports.remove(&info.id);
            return;
        }
        let interval = Duration::from_millis(u64::from(info.heartbeat_ms.max(1)));
        self.refresh = self.refresh.max(interval);
        let lasts = interval * REPORT_LASTS;
        self.reports.insert(info.id.clone(), (now + lasts, load));
    }

    /// Forgets a host that is gone.
    pub fn gone(&mut self, host: &str) {
        self.reports.remove(host);
    }

    /// This scheduler stopped leading: whoever leads next starts from what runs.
    pub fn stop_deciding(&mut self) {
        self.levels.clear();
    }

    /// Whether an autoscaled workload has no level yet (the pass should
    /// [adopt](Autoscaler::adopt) what runs first).
    pub fn needs_adoption(&self, workloads: &BTreeMap<String, Workload>) -> bool {
        workloads.iter().any(|(id, w)| w.autoscale.is_some() && !self.levels.contains_key(id))
    }

    /// Starts each autoscaled workload without a level from `running(id)` replicas (what the
    /// last leader wanted), within its range.
    pub fn adopt(
        &mut self,
        workloads: &mut BTreeMap<String, Workload>,
        running: impl Fn(&str) -> u32,
    ) {
        for (id, w) in workloads.iter_mut() {
            let Some(a) = w.autoscale else { continue };
            if !self.levels.contains_key(id) {
                let replicas = running(id).clamp(a.floor, a.max);
                self.levels.insert(id.clone(), Level { replicas, changed: None, low: None });
            }
        }
        self.apply(workloads);
    }

    /// Sets what each awake autoscaled workload wants to its level (new records and the idle
    /// rules set the floor).
    pub fn apply(&mut self, workloads: &mut BTreeMap<String, Workload>) {
        self.levels.retain(|id, _| workloads.get(id).is_some_and(|w| w.autoscale.is_some()));
        for (id, level) in &mut self.levels {
            let Some(w) = workloads.get_mut(id) else { continue };
            let Some(a) = w.autoscale else { continue };
            if w.wanted.replicas == 0 {
                // Asleep (scaled to zero): it wakes at the floor.
                level.replicas = a.floor;
                level.low = None;
                continue;
            }
            level.replicas = level.replicas.clamp(a.floor, a.max);
            w.wanted.replicas = level.replicas;
        }
    }

    /// Decides from the reports that still count at `now`; what changed.
    pub fn decide(
        &mut self,
        now: Duration,
        workloads: &mut BTreeMap<String, Workload>,
    ) -> Vec<Scaled> {
        self.reports.retain(|_, (until, _)| *until > now);
        let mut load: HashMap<&str, (u64, u64)> = HashMap::new();
        for (_, loads) in self.reports.values() {
            for l in loads {
                let sum = load.entry(l.id.as_str()).or_default();
                sum.0 += u64::from(l.in_flight_milli);
                sum.1 += u64::from(l.refused);
            }
        }
        let mut scaled = Vec::new();
        for (id, level) in &mut self.levels {
            let Some(w) = workloads.get_mut(id) else { continue };
            let Some(a) = w.autoscale else { continue };
            if w.wanted.replicas == 0 {
                continue;
            }
            let (in_flight_milli, refused) = load.get(id.as_str()).copied().unwrap_or_default();
            let from = level.replicas;
            let per_replica = u64::from(a.target) * 1000;
            let mut want = u32::try_from(in_flight_milli.div_ceil(per_replica)).unwrap_or(u32::MAX);
            if in_flight_milli * 10 <= u64::from(from) * per_replica * 11 {
                want = want.min(from); // within 10% above the target: stay
            }
            if refused > 0 {
                want = want.max(from.saturating_add(1));
            }
            let want = want.clamp(a.floor, a.max);
            let to = if want > from {
                level.low = None;
                if level.changed.is_some_and(|at| now.saturating_sub(at) < UP_COOLDOWN) {
                    continue;
                }
                want
            } else if want < from {
                let (since, most) = level.low.get_or_insert((now, 0));
                // Reports change one host at a time: for one heartbeat interval after the load
                // fell, some still say what it was. Only what it wanted after that counts.
                if now >= *since + self.refresh {
                    *most = (*most).max(want);
                }
                if now.saturating_sub(*since) < a.cooldown {
                    continue;
                }
                let most = (*most).max(want);
                level.low = None;
                most
            } else {
                level.low = None;
                continue;
            };
            // Words only for a decision: most looks change nothing.
            let in_flight = in_flight_milli as f64 / 1000.0;
            let reason = if to > from {
                let refusals = if refused > 0 {
                    format!(", {refused} calls refused at a concurrency limit")
                } else {
                    String::new()
                };
                format!(
                    "{in_flight:.1} calls in flight{refusals}; target {} per replica (max {})",
                    a.target, a.max
                )
            } else {
                format!(
                    "the load wanted at most {to} for the cool-down of {}s ({in_flight:.1} calls \
                     in flight now; target {} per replica)",
                    a.cooldown.as_secs_f64(),
                    a.target
                )
            };
            level.replicas = to;
            level.changed = Some(now);
            w.wanted.replicas = to;
            scaled.push(Scaled { id: id.clone(), app: w.wanted.app.clone(), from, to, reason });
        }
        scaled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::web_and_api as workloads;

    const S: Duration = Duration::from_secs(1);

    /// Host `host` reports `web` with `in_flight` calls at once and `refused` refusals (its
    /// heartbeat every second), and `api` busy too (it does not autoscale: ignored).
    fn report(
        a: &mut Autoscaler,
        w: &BTreeMap<String, Workload>,
        host: &str,
        in_flight: f64,
        refused: u32,
        now: Duration,
    ) {
        let load = |id: &str| pb::ComponentLoad {
            id: id.into(),
            in_flight_milli: (in_flight * 1000.0) as u32,
            calls: 100,
            refused,
        };
        let info = pb::HostInfo {
            id: host.into(),
            heartbeat_ms: 1000,
            load: vec![load("web"), load("api")],
            ..Default::default()
        };
        a.report(&info, now, w);
    }

    fn replicas(w: &BTreeMap<String, Workload>) -> u32 {
        w["web"].wanted.replicas
    }

    #[test]
    fn a_ramp_goes_up_at_once_and_down_after_the_cooldown() {
        let mut w = workloads("{min: 1, max: 4, target: 2, cooldown: 30s}");
        let mut a = Autoscaler::default();
        assert!(a.needs_adoption(&w));
        a.adopt(&mut w, |_| 1);
        assert!(!a.needs_adoption(&w));
        assert!(a.decide(10 * S, &mut w).is_empty(), "no load: stays at the floor");

        // 7.5 calls in flight over two hosts, 2 per replica: 4.
        report(&mut a, &w, "h1", 4.0, 0, 10 * S);
        report(&mut a, &w, "h2", 3.5, 0, 10 * S);
        let up = a.decide(10 * S, &mut w);
        assert_eq!(up.len(), 1, "{up:?}");
        assert_eq!((up[0].from, up[0].to, up[0].app.as_str()), (1, 4, "a"));
        assert!(up[0].reason.contains("7.5 calls in flight"), "{}", up[0].reason);
        assert_eq!(replicas(&w), 4);
        assert_eq!(w["api"].wanted.replicas, 2, "a fixed count is never scaled");

        // More load: capped at max.
        report(&mut a, &w, "h1", 20.0, 0, 20 * S);
        assert!(a.decide(20 * S, &mut w).is_empty());
        assert_eq!(replicas(&w), 4);

        // The load stops (hosts report none): down only after the cool-down, to the most the
        // load wanted in it.
        report(&mut a, &w, "h1", 2.5, 0, 30 * S);
        report(&mut a, &w, "h2", 0.0, 0, 30 * S);
        assert!(a.decide(30 * S, &mut w).is_empty());
        assert!(a.decide(31 * S, &mut w).is_empty(), "a heartbeat later, it still wants 2");
        a.report(
            &pb::HostInfo { id: "h1".into(), heartbeat_ms: 1000, ..Default::default() },
            40 * S,
            &w,
        );
        assert!(a.decide(40 * S, &mut w).is_empty());
        assert!(a.decide(59 * S, &mut w).is_empty(), "cooling down");
        let down = a.decide(60 * S, &mut w);
        assert_eq!((down[0].from, down[0].to), (4, 2), "the most wanted in the cool-down");
        assert!(down[0].reason.contains("cool-down of 30s"), "{}", down[0].reason);
        // Reports expire (three heartbeats); 30 s later it is at the floor.
        assert!(a.decide(75 * S, &mut w).is_empty());
        assert!(a.decide(104 * S, &mut w).is_empty());
        let down = a.decide(105 * S, &mut w);
        assert_eq!((down[0].from, down[0].to), (2, 1));
        assert_eq!(replicas(&w), 1);
    }

    #[test]
    fn no_flapping_within_the_band_or_the_up_cooldown_and_refusals_want_one_more() {
        let mut w = workloads("{min: 1, max: 6, target: 2, cooldown: 10s}");
        let mut a = Autoscaler::default();
        a.adopt(&mut w, |_| 2);
        assert_eq!(replicas(&w), 2, "starts from what runs");
        // 4.4 calls in flight on 2 replicas of target 2: within 10%, stays.
        report(&mut a, &w, "h1", 4.4, 0, 10 * S);
        assert!(a.decide(10 * S, &mut w).is_empty());
        // Refusals at a limit want one more, even at the target.
        report(&mut a, &w, "h1", 4.0, 3, 11 * S);
        let up = a.decide(11 * S, &mut w);
        assert_eq!((up[0].from, up[0].to), (2, 3));
        assert!(up[0].reason.contains("3 calls refused"), "{}", up[0].reason);
        // Right after a step up, another waits for the up cool-down.
        report(&mut a, &w, "h1", 10.0, 0, 12 * S);
        assert!(a.decide(12 * S, &mut w).is_empty());
        report(&mut a, &w, "h1", 10.0, 0, 11 * S + UP_COOLDOWN);
        assert_eq!(a.decide(11 * S + UP_COOLDOWN, &mut w)[0].to, 5);
        // A dip shorter than the cool-down changes nothing.
        report(&mut a, &w, "h1", 1.0, 0, 20 * S);
        assert!(a.decide(20 * S, &mut w).is_empty());
        report(&mut a, &w, "h1", 10.0, 0, 25 * S);
        assert!(a.decide(25 * S, &mut w).is_empty());
        report(&mut a, &w, "h1", 9.0, 0, 31 * S);
        assert!(a.decide(31 * S, &mut w).is_empty(), "the dip ended; no step down");
        assert_eq!(replicas(&w), 5);
    }

    #[test]
    fn new_records_keep_the_level_and_a_workload_asleep_wakes_at_the_floor() {
        let mut w = workloads("{min: 0, max: 4, idle: 1m, target: 1, cooldown: 10s}");
        w.get_mut("web").unwrap().wanted.replicas = 1; // awake, as `Idle::sync` sets it
        let mut a = Autoscaler::default();
        a.adopt(&mut w, |_| 1);
        report(&mut a, &w, "h1", 3.0, 0, S);
        assert_eq!(a.decide(S, &mut w)[0].to, 3);
        // The records are read again: the planner's view is rebuilt at the floor.
        let mut again = workloads("{min: 0, max: 4, idle: 1m, target: 1, cooldown: 10s}");
        again.get_mut("web").unwrap().wanted.replicas = 1;
        a.apply(&mut again);
        assert_eq!(replicas(&again), 3, "the level survives new records");
        // A smaller max clamps it.
        let mut smaller = workloads("{min: 0, max: 2, idle: 1m, target: 1, cooldown: 10s}");
        smaller.get_mut("web").unwrap().wanted.replicas = 1;
        a.apply(&mut smaller);
        assert_eq!(replicas(&smaller), 2);
        // Asleep (the idle rules set 0): it wakes at the floor.
        smaller.get_mut("web").unwrap().wanted.replicas = 0;
        a.apply(&mut smaller);
        assert!(a.decide(2 * S, &mut smaller).is_empty(), "asleep: no decision");
        smaller.get_mut("web").unwrap().wanted.replicas = 1;
        a.apply(&mut smaller);
        assert_eq!(replicas(&smaller), 1);
        // A workload that no longer autoscales is forgotten.
        let mut fixed = workloads("3");
        a.apply(&mut fixed);
        assert!(a.needs_adoption(&workloads("{min: 1, max: 4}")));
        assert_eq!(replicas(&fixed), 3);
    }
}

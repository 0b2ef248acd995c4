//! Scale to zero: which workloads with `replicas: {min: 0}` are awake, and since when they
//! served no call. Pure; the core feeds it heartbeats (a host lists the components that served
//! a call lately), wake requests and the clock, and it sets what the planner wants
//! (`docs/design/scale-to-zero.md`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::desired::Workload;

/// The awake state of every workload that scales to zero.
#[derive(Debug, Default)]
pub struct Idle {
    /// By workload id: `Some(last call or wake)` while awake, `None` while asleep.
    state: HashMap<String, Option<Duration>>,
    /// Workloads awake only because this scheduler met them before it led (a deploy it did
    /// not see, or one asleep since): its first pass as leader puts those with no replica
    /// running to sleep instead of starting one.
    assumed: HashSet<String>,
    /// Whether this scheduler's first pass as leader has looked at what runs.
    adopted: bool,
}

impl Idle {
    /// Follows new records: a workload first seen is awake from `now` (a deploy starts it, and
    /// a new leader keeps what runs for one idle time); one that no longer scales to zero is
    /// forgotten. Sets each one's wanted replicas.
    pub fn sync(&mut self, workloads: &mut BTreeMap<String, Workload>, now: Duration) {
        self.state.retain(|id, _| workloads.get(id).is_some_and(|w| w.scale_to_zero.is_some()));
        self.assumed.retain(|id| self.state.contains_key(id));
        for (id, w) in workloads.iter_mut() {
            if w.scale_to_zero.is_some() && !self.state.contains_key(id) {
                self.state.insert(id.clone(), Some(now));
                if !self.adopted {
                    self.assumed.insert(id.clone());
                }
            }
            self.set(id, w);
        }
    }

    /// A host says `id` served calls lately: it stays awake. Calls served while asleep (by a
    /// replica being stopped) do not wake it; a wake request does.
    pub fn active(&mut self, id: &str, now: Duration) {
        if let Some(Some(last)) = self.state.get_mut(id) {
            *last = (*last).max(now);
            self.assumed.remove(id);
        }
    }

    /// Whether this scheduler leads and has not looked at what runs yet.
    pub fn needs_adoption(&self) -> bool {
        !self.adopted
    }

    /// The first pass as leader: a workload awake only by assumption, with no replica running
    /// (`runs(id)` false) though its application was placed completely before (`placed(app)`:
    /// so it did not just arrive), is asleep; a failover does not start it.
    pub fn adopt(
        &mut self,
        workloads: &mut BTreeMap<String, Workload>,
        runs: impl Fn(&str) -> bool,
        placed: impl Fn(&str) -> bool,
    ) {
        for id in std::mem::take(&mut self.assumed) {
            let Some(w) = workloads.get(&id) else { continue };
            if !runs(&id) && placed(&w.wanted.app) {
                self.state.insert(id.clone(), None);
                if let Some(w) = workloads.get_mut(&id) {
                    self.set(&id, w);
                }
            }
        }
        self.adopted = true;
    }

    /// This scheduler stopped leading: it looks at what runs again when it leads next.
    pub fn stop_deciding(&mut self) {
        self.adopted = false;
    }

    /// A caller found no replica of `id` and asks for one. `None`: `id` does not scale to
    /// zero (the caller should not wait); `Some(true)`: it was asleep and wants replicas now.
    pub fn wake(
        &mut self,
        id: &str,
        now: Duration,
        workloads: &mut BTreeMap<String, Workload>,
    ) -> Option<bool> {
        let state = self.state.get_mut(id)?;
        self.assumed.remove(id);
        let woke = state.is_none();
        *state = Some(state.map_or(now, |last| last.max(now)));
        if woke && let Some(w) = workloads.get_mut(id) {
            self.set(id, w);
        }
        Some(woke)
    }

    /// Puts to sleep what served no call for its idle time; whether any did.
    pub fn expire(&mut self, now: Duration, workloads: &mut BTreeMap<String, Workload>) -> bool {
        let mut changed = false;
        for (id, state) in &mut self.state {
            let Some(w) = workloads.get_mut(id) else { continue };
            let (Some(last), Some((_, idle))) = (*state, w.scale_to_zero) else { continue };
            if now.saturating_sub(last) >= idle {
                *state = None;
                w.wanted.replicas = 0;
                changed = true;
            }
        }
        changed
    }

    /// Whether `id` is awake (`None`: it does not scale to zero).
    pub fn awake(&self, id: &str) -> Option<bool> {
        self.state.get(id).map(Option::is_some)
    }

    fn set(&self, id: &str, w: &mut Workload) {
        if let Some((awake, _)) = w.scale_to_zero {
            let on = matches!(self.state.get(id), Some(Some(_)));
            w.wanted.replicas = if on { awake } else { 0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::web_and_api as workloads;

    #[test]
    fn a_new_leader_does_not_start_what_it_only_assumed_awake() {
        let s = Duration::from_secs;
        let mut w = workloads("{min: 0, max: 3, idle: 10s}");
        let mut idle = Idle::default();
        // Met before leading: awake by assumption until the first pass looks.
        idle.sync(&mut w, s(0));
        assert!(idle.needs_adoption());
        idle.adopt(&mut w, |_| false, |_| true);
        assert_eq!(idle.awake("web"), Some(false), "nothing runs: asleep, not started");
        assert_eq!(w["web"].wanted.replicas, 0);
        // One that runs, or was seen serving, stays awake.
        let (mut w, mut idle) = (workloads("{min: 0, max: 3, idle: 10s}"), Idle::default());
        idle.sync(&mut w, s(0));
        idle.adopt(&mut w, |_| true, |_| true);
        assert_eq!(w["web"].wanted.replicas, 1);
        let (mut w, mut idle) = (workloads("{min: 0, max: 3, idle: 10s}"), Idle::default());
        idle.sync(&mut w, s(0));
        idle.active("web", s(1));
        idle.adopt(&mut w, |_| false, |_| true);
        assert_eq!(w["web"].wanted.replicas, 1, "a host said it served calls");
        // An application never placed yet (deployed just before this scheduler led) starts.
        let (mut new, mut other) = (workloads("{min: 0, max: 3, idle: 10s}"), Idle::default());
        other.sync(&mut new, s(0));
        other.adopt(&mut new, |_| false, |_| false);
        assert_eq!(new["web"].wanted.replicas, 1);
        // Deployed while leading: started.
        let mut fresh = workloads("{min: 0, max: 3, idle: 10s}");
        fresh.get_mut("web").unwrap().wanted.id = "new".into();
        let fresh: BTreeMap<String, Workload> =
            fresh.into_iter().map(|(id, w)| (format!("{id}-2"), w)).collect();
        let mut both = w;
        both.extend(fresh);
        idle.sync(&mut both, s(2));
        assert_eq!(both["web-2"].wanted.replicas, 1, "a deploy seen while leading starts");
        // After leading ends, the next term looks again.
        idle.stop_deciding();
        assert!(idle.needs_adoption());
    }

    #[test]
    fn awake_from_deploy_asleep_after_idle_and_woken_once() {
        let s = Duration::from_secs;
        let mut w = workloads("{min: 0, max: 3, idle: 10s}");
        let mut idle = Idle::default();
        idle.sync(&mut w, s(0));
        assert_eq!((w["web"].wanted.replicas, w["api"].wanted.replicas), (1, 2));
        // Calls keep it awake; only the idle time after the last one puts it to sleep.
        idle.active("web", s(8));
        assert!(!idle.expire(s(15), &mut w));
        assert!(idle.expire(s(18), &mut w));
        assert_eq!(w["web"].wanted.replicas, 0);
        assert_eq!(idle.awake("web"), Some(false));
        // Calls served while it stops do not wake it; a wake does, once.
        idle.active("web", s(19));
        assert_eq!(idle.awake("web"), Some(false));
        assert_eq!(idle.wake("web", s(20), &mut w), Some(true));
        assert_eq!(idle.wake("web", s(20), &mut w), Some(false), "already awake");
        assert_eq!(w["web"].wanted.replicas, 1);
        // New records keep the state; what does not scale to zero is never woken.
        let mut again = workloads("{min: 0, max: 3, idle: 10s}");
        idle.sync(&mut again, s(21));
        assert_eq!(again["web"].wanted.replicas, 1);
        assert_eq!(idle.wake("api", s(21), &mut again), None);
        assert_eq!(idle.wake("nobody", s(21), &mut again), None);
        let mut fixed = workloads("2");
        idle.sync(&mut fixed, s(22));
        assert_eq!(idle.awake("web"), None, "no longer scales to zero: forgotten");
        assert_eq!(fixed["web"].wanted.replicas, 2);
    }
}

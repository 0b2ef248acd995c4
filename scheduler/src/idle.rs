//! Scale to zero: which workloads with `replicas: {min: 0}` are awake, and since when they
//! served no call. Pure; the core feeds it heartbeats (a host lists the components that served
//! a call lately), wake requests and the clock, and it sets what the planner wants
//! (`docs/design/scale-to-zero.md`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::desired::Workload;

/// The awake state of every workload that scales to zero.
#[derive(Debug, Default)]
pub struct Idle {
    /// By workload id: `Some(last call or wake)` while awake, `None` while asleep.
    state: HashMap<String, Option<Duration>>,
}

impl Idle {
    /// Follows new records: a workload first seen is awake from `now` (a deploy starts it, and
    /// a new leader keeps what runs for one idle time); one that no longer scales to zero is
    /// forgotten. Sets each one's wanted replicas.
    pub fn sync(&mut self, workloads: &mut BTreeMap<String, Workload>, now: Duration) {
        self.state.retain(|id, _| workloads.get(id).is_some_and(|w| w.scale_to_zero.is_some()));
        for (id, w) in workloads.iter_mut() {
            if w.scale_to_zero.is_some() {
                self.state.entry(id.clone()).or_insert(Some(now));
            }
            self.set(id, w);
        }
    }

    /// A host says `id` served calls lately: it stays awake. Calls served while asleep (by a
    /// replica being stopped) do not wake it; a wake request does.
    pub fn active(&mut self, id: &str, now: Duration) {
        if let Some(Some(last)) = self.state.get_mut(id) {
            *last = (*last).max(now);
        }
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

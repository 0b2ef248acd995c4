//! An application's status as a planning pass works it out: borrowed from the scheduler's view,
//! compared with the status last written, and copied into an [`AppStatus`] only when it
//! differs. At 1,000 applications over 10,000 hosts most passes change a handful of statuses,
//! and copying every host name of every status on every pass cost more than planning.

use crate::apps::{AppStatus, State, WorkloadStatus};

/// One workload's status, borrowed.
#[derive(Debug)]
pub struct WorkloadDraft<'a> {
    pub name: &'a str,
    pub kind: &'static str,
    pub desired: u32,
    /// Names of the hosts running the wanted version.
    pub hosts: Vec<&'a str>,
    pub state: State,
    pub reason: String,
}

/// An application's status, borrowed.
#[derive(Debug)]
pub struct Draft<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub state: State,
    pub reason: String,
    pub workloads: Vec<WorkloadDraft<'a>>,
}

impl<'a> Draft<'a> {
    /// A draft in `state` for `reason`, with no workloads yet.
    pub fn new(name: &'a str, version: &'a str, state: State, reason: String) -> Self {
        Self { name, version, state, reason, workloads: Vec::new() }
    }

    /// Takes the worst state of the workloads as the application's, with their reasons.
    pub fn settle(&mut self) {
        let Some(worst) = self.workloads.iter().map(|w| w.state).max() else { return };
        self.state = worst;
        self.reason = self
            .workloads
            .iter()
            .filter(|w| w.state == worst && !w.reason.is_empty())
            .map(|w| format!("{}: {}", w.name, w.reason))
            .collect::<Vec<_>>()
            .join("; ");
    }

    /// Whether `written` (by `scheduler`) says the same.
    pub fn same_as(&self, written: &AppStatus, scheduler: &str) -> bool {
        written.name == self.name
            && written.version == self.version
            && written.state == self.state
            && written.reason == self.reason
            && written.scheduler == scheduler
            && written.workloads.len() == self.workloads.len()
            && written.workloads.iter().zip(&self.workloads).all(|(w, d)| {
                w.name == d.name
                    && w.kind == d.kind
                    && w.desired == d.desired
                    && w.state == d.state
                    && w.reason == d.reason
                    && w.hosts.len() == d.hosts.len()
                    && w.hosts.iter().zip(&d.hosts).all(|(a, b)| a == b)
            })
    }

    /// The status to write, as `scheduler`.
    pub fn to_status(&self, scheduler: &str) -> AppStatus {
        AppStatus {
            name: self.name.to_owned(),
            version: self.version.to_owned(),
            state: self.state,
            reason: self.reason.clone(),
            workloads: self
                .workloads
                .iter()
                .map(|w| WorkloadStatus {
                    name: w.name.to_owned(),
                    kind: w.kind.to_owned(),
                    desired: w.desired,
                    hosts: w.hosts.iter().map(|&h| h.to_owned()).collect(),
                    state: w.state,
                    reason: w.reason.clone(),
                })
                .collect(),
            updated_ms: 0,
            scheduler: scheduler.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft<'a>(hosts: Vec<&'a str>, state: State, reason: &str) -> Draft<'a> {
        let mut d = Draft::new("shop", "2", State::Deployed, String::new());
        d.workloads.push(WorkloadDraft {
            name: "web",
            kind: "component",
            desired: 2,
            hosts,
            state,
            reason: reason.into(),
        });
        d.settle();
        d
    }

    #[test]
    fn a_draft_is_the_status_it_becomes_and_tells_a_different_one_apart() {
        let d = draft(vec!["a", "b"], State::Deployed, "");
        let written = d.to_status("me");
        assert!(d.same_as(&written, "me"));
        assert!(!d.same_as(&written, "other"), "another scheduler's status is rewritten");
        assert!(!draft(vec!["a", "c"], State::Deployed, "").same_as(&written, "me"));
        assert!(!draft(vec!["a"], State::Reconciling, "").same_as(&written, "me"));
        let short = draft(vec!["a"], State::Unplaceable, "wants 2");
        assert_eq!(short.state, State::Unplaceable, "the worst workload's state is the app's");
        assert_eq!(short.reason, "web: wants 2");
        assert_eq!(short.to_status("me").workloads[0].hosts, vec!["a".to_owned()]);
    }
}

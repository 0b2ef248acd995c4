//! Draining a host before maintenance (`trellis host drain`, and SIGTERM while a scheduler
//! leads the lattice): the host says `draining` in its heartbeats (at once, not at the next
//! beat), takes no new starts, and waits while the scheduler starts its replicas on other
//! hosts and only then stops them here. What is left once nothing an application placed runs
//! here (hand-started components, providers), or once the wait runs out, is stopped as on
//! shutdown; then the host exits, or stays up, empty and draining, until restarted.

use std::sync::atomic::Ordering;
use std::time::Duration;

use trellis_lattice::client::LatticeClient;
use trellis_lattice::subject::EventKind;

use crate::host::Host;

/// How often the host looks whether its replicas have been moved.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// How long a ping round for other hosts listens at most.
const PING_WAIT: Duration = Duration::from_millis(500);

/// How waiting for the scheduler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evacuated {
    /// Nothing an application placed runs here (any more).
    Moved,
    /// No scheduler leads the lattice: nobody would move them.
    NoScheduler,
    /// No other host could take them (none, or every other one drains too).
    NowhereToGo,
    /// The wait ran out with replicas still here.
    TimedOut,
}

impl Host {
    /// Whether the host drains (before maintenance or on shutdown).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks the host draining and tells the lattice now. False if it was already.
    pub(crate) async fn begin_draining(&self) -> bool {
        if self.draining.swap(true, Ordering::Relaxed) {
            return false;
        }
        tracing::info!(host = self.id(), "draining: taking no new placements");
        self.announce(EventKind::HostHeartbeat).await;
        true
    }

    /// Whether an application's scheduler placed anything that runs here.
    fn runs_placed_work(&self) -> bool {
        let placed = |o: &Option<trellis_lattice::proto::Owner>| {
            o.as_ref().is_some_and(|o| !o.app.is_empty())
        };
        self.components.all().iter().any(|c| placed(&c.owner))
            || self.providers.describe().iter().any(|p| placed(&p.owner))
    }

    /// Drains, then waits up to `wait` for the scheduler to move what applications placed
    /// here; returns early when there is nothing to move, nobody to move it or nowhere to go.
    pub(crate) async fn evacuate(&self, wait: Duration) -> Evacuated {
        self.begin_draining().await;
        let outcome = self.wait_for_moves(wait).await;
        match outcome {
            Evacuated::Moved => tracing::info!(host = self.id(), "drained: nothing placed here"),
            Evacuated::NoScheduler => tracing::warn!(
                host = self.id(),
                "no scheduler leads the lattice: replicas placed here stop without being moved"
            ),
            Evacuated::NowhereToGo => tracing::warn!(
                host = self.id(),
                "no other host takes placements: replicas placed here stop without being moved"
            ),
            Evacuated::TimedOut => tracing::warn!(
                host = self.id(),
                ?wait,
                "the scheduler did not move every replica in time: stopping the rest here"
            ),
        }
        outcome
    }

    async fn wait_for_moves(&self, wait: Duration) -> Evacuated {
        if !self.runs_placed_work() {
            return Evacuated::Moved;
        }
        if !self.scheduler_leads().await {
            return Evacuated::NoScheduler;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut asked_others = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            if !self.runs_placed_work() {
                return Evacuated::Moved;
            }
            // Other hosts may start draining too (a whole rack at once): look again now and
            // then rather than wait for replacements that cannot come.
            if asked_others.elapsed() >= Duration::from_secs(2) {
                asked_others = tokio::time::Instant::now();
                if !self.others_take_placements().await {
                    return Evacuated::NowhereToGo;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Evacuated::TimedOut;
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// Whether a scheduler holds the lattice's leader lease (without creating its bucket).
    async fn scheduler_leads(&self) -> bool {
        let bucket = format!("TRELLIS_{}_SCHEDULER", self.lattice());
        let Ok(kv) = self.jetstream().get_key_value(bucket).await else { return false };
        matches!(
            kv.entry("leader").await,
            Ok(Some(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put
        )
    }

    /// Whether another host answers a ping and is not draining.
    async fn others_take_placements(&self) -> bool {
        let Ok(client) = LatticeClient::new(self.nats().clone(), self.lattice()) else {
            return false;
        };
        match client.hosts(PING_WAIT).await {
            Ok(hosts) => hosts.iter().any(|h| h.id != self.id() && !h.draining),
            // Cannot tell: keep waiting for the scheduler (the wait still ends in time).
            Err(_) => true,
        }
    }

    /// Stops every component and provider (their calls finish first), staying up.
    pub(crate) async fn stop_everything(&self) {
        for running in self.components.all() {
            if let Err(e) = self.stop_component(&running.id).await {
                tracing::warn!(component = %running.id, error = %e, "not stopped while draining");
            }
        }
        self.providers.stop_all().await;
        self.announce(EventKind::HostHeartbeat).await;
        tracing::info!(host = self.id(), "drained: staying up, empty and draining");
    }
}

/// The answer to a drain request: drain in the background, then stay or leave.
pub(crate) fn start(host: &std::sync::Arc<Host>, stay: bool, wait: Option<Duration>) {
    let host = host.clone();
    let wait = wait.unwrap_or(host.config.drain_wait);
    tokio::spawn(async move {
        host.evacuate(wait).await;
        if stay {
            host.stop_everything().await;
        } else {
            host.leave.notify_one();
        }
    });
}

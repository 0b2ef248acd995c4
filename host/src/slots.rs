//! How many calls this host takes at once: admission slots for calls that run here, the
//! component's own concurrency limit, and a bounded intake for messages still being checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};

use crate::limits::Limits;

/// Whether a call comes from outside this host's components (it takes an admission slot) or
/// from one of them (it rides on its caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nesting {
    Outermost,
    Inner,
}

/// The slots one call holds until its instance is gone: the host's and the component's own.
pub(crate) type Held = [Option<OwnedSemaphorePermit>; 2];

/// The host's call slots.
#[derive(Debug)]
pub(crate) struct Slots {
    max_calls: u32,
    /// Calls running on this host; closed permits mean draining.
    admission: Arc<Semaphore>,
    /// Messages received from NATS and being handled (checks included), a few per admission
    /// slot.
    intake: Arc<Semaphore>,
    /// Messages refused at once because the intake was full.
    shed: AtomicU64,
    /// Key agreements made for such refusals in the current second (see [`Slots::may_agree`]).
    agreements: std::sync::Mutex<(u64, u32)>,
}

/// Key agreements with hosts not met yet that refusals under overload may make per second.
const AGREEMENTS_PER_S: u32 = 256;

/// Room for one more message received from NATS, or why not.
#[derive(Debug)]
pub(crate) enum Intake {
    Room(OwnedSemaphorePermit),
    /// Full: refuse the message at once rather than stop reading (NATS would drop calls as a
    /// slow consumer, and their callers would wait out their deadlines).
    Full,
    /// The host is stopping.
    Closed,
}

impl Slots {
    pub fn new(max_calls: u32) -> Self {
        let max = max_calls as usize;
        Self {
            max_calls,
            admission: Arc::new(Semaphore::new(max)),
            intake: Arc::new(Semaphore::new(max.saturating_mul(4))),
            shed: AtomicU64::new(0),
            agreements: std::sync::Mutex::new((0, 0)),
        }
    }

    /// Room for one more received message, without waiting; a full intake counts one shed.
    pub fn intake(&self) -> Intake {
        match self.intake.clone().try_acquire_owned() {
            Ok(permit) => Intake::Room(permit),
            Err(TryAcquireError::NoPermits) => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                Intake::Full
            }
            Err(TryAcquireError::Closed) => Intake::Closed,
        }
    }

    /// Whether a refusal under overload may authenticate itself for a caller this host has not
    /// met (an X25519 agreement, about as costly as checking a signature): a few hundred a
    /// second, so a flood with made-up host keys cannot turn shedding into key agreements.
    pub fn may_agree(&self, now_s: u64) -> bool {
        let mut window = self.agreements.lock().unwrap_or_else(|p| p.into_inner());
        if window.0 != now_s {
            *window = (now_s, 0);
        }
        window.1 = window.1.saturating_add(1);
        window.1 <= AGREEMENTS_PER_S
    }

    /// Messages refused because the intake was full, since start.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Admits a call to a component with `limits` that must be done by `deadline`. The
    /// component's own limit refuses at once (callers learn fast); the host's waits until the
    /// deadline. A call made by a component running here rides on its caller's slot: taking a
    /// second one could wait forever once every slot is held by a caller waiting for its
    /// callee.
    pub async fn admit(
        &self,
        id: &str,
        limits: &Limits,
        nesting: Nesting,
        deadline: Instant,
    ) -> Result<Held, InvokeError> {
        let own = match &limits.concurrency {
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return Err(unavailable(&format!(
                        "component `{id}` is at its limit of {} concurrent calls",
                        limits.max_concurrent
                    )));
                }
            },
            None => None,
        };
        let host = match nesting {
            Nesting::Inner => None,
            Nesting::Outermost => {
                let admitted = self.admission.clone().acquire_owned();
                // Give up a little before the deadline, so the refusal reaches the caller while
                // it still waits (and it can try elsewhere) instead of after it timed out.
                let left = deadline.saturating_duration_since(Instant::now());
                let give_up = deadline - (left / 10).min(std::time::Duration::from_millis(250));
                match tokio::time::timeout_at(give_up, admitted).await {
                    Ok(Ok(permit)) => Some(permit),
                    Ok(Err(_)) => return Err(unavailable("the host is shutting down")),
                    Err(_) => return Err(unavailable("the host is at its concurrent call limit")),
                }
            }
        };
        Ok([host, own])
    }

    /// Admission slots free now.
    pub fn free(&self) -> usize {
        self.admission.available_permits()
    }

    /// Waits until no call runs on this host (or `timeout` passes), then refuses new ones.
    pub async fn drain(&self, timeout: std::time::Duration) -> bool {
        let drained =
            tokio::time::timeout(timeout, self.admission.acquire_many(self.max_calls)).await;
        self.admission.close();
        matches!(drained, Ok(Ok(_)))
    }
}

pub(crate) fn unavailable(why: &str) -> InvokeError {
    InvokeError::new(InvokeErrorKind::Unavailable, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max_concurrent: u32) -> Limits {
        Limits {
            max_memory_bytes: 1 << 20,
            timeout: Duration::from_secs(1),
            concurrency: (max_concurrent > 0)
                .then(|| Arc::new(Semaphore::new(max_concurrent as usize))),
            max_concurrent,
            max_request_bytes: 1 << 20,
            reuse: None,
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(20)
    }

    #[tokio::test]
    async fn the_components_limit_refuses_at_once_and_frees_with_the_call() {
        let slots = Slots::new(8);
        let l = limits(1);
        let held = slots.admit("c", &l, Nesting::Outermost, soon()).await.unwrap();
        assert_eq!(slots.free(), 7);
        let e = slots.admit("c", &l, Nesting::Outermost, soon()).await.unwrap_err();
        assert!(e.message().contains("limit of 1 concurrent"), "{e}");
        drop(held);
        assert_eq!(slots.free(), 8);
        assert!(slots.admit("c", &l, Nesting::Outermost, soon()).await.is_ok());
    }

    #[tokio::test]
    async fn a_full_host_refuses_at_the_deadline_but_inner_calls_ride_along() {
        let slots = Slots::new(1);
        let l = limits(0);
        let _held = slots.admit("a", &l, Nesting::Outermost, soon()).await.unwrap();
        let e = slots.admit("b", &l, Nesting::Outermost, soon()).await.unwrap_err();
        assert_eq!(e.kind(), InvokeErrorKind::Unavailable);
        let inner = slots.admit("b", &l, Nesting::Inner, soon()).await.unwrap();
        assert!(inner.iter().all(Option::is_none), "an inner call takes no host slot");
    }

    #[tokio::test]
    async fn draining_waits_for_calls_then_refuses() {
        let slots = Arc::new(Slots::new(2));
        let l = limits(0);
        let held = slots.admit("a", &l, Nesting::Outermost, soon()).await.unwrap();
        let drain = tokio::spawn({
            let slots = slots.clone();
            async move { slots.drain(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!drain.is_finished(), "a call still runs");
        drop(held);
        assert!(drain.await.unwrap(), "drained");
        let e = slots.admit("a", &l, Nesting::Outermost, soon()).await.unwrap_err();
        assert!(e.message().contains("shutting down"), "{e}");
    }
}

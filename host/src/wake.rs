//! Wake on request: a call over NATS that finds no replica of its target (`NoResponders`) asks
//! the leading scheduler for one and is sent again, with backoff, until a replica answers or
//! the call's deadline passes (`docs/design/scale-to-zero.md`). Calls from components and from
//! providers (the http-server provider calls through its host) alike.

use std::time::Duration;

use async_nats::Client;
use backon::BackoffBuilder as _;
use bytes::Bytes;
use tokio::time::Instant;
use trellis_lattice::answers::Answers;
use trellis_lattice::client::{Call, send_invocation};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::subject::Subjects;
use trellis_lattice::wake::{WakeError, request_wake};

/// How long one wake request waits for the leader's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// The call is sent again this long after the first try at the earliest, then 1.5 times as
/// long each time, up to [`MAX_DELAY`]: a component from the compile cache starts in tens of
/// milliseconds, and a retry that finds nobody costs one NATS round trip (the server answers
/// no responders itself), so the steps stay short.
const MIN_DELAY: Duration = Duration::from_millis(2);
const MAX_DELAY: Duration = Duration::from_millis(25);
const FACTOR: f32 = 1.5;

/// While it waits, it asks the scheduler again this often (a leader that changed meanwhile
/// may not have heard it).
const ASK_AGAIN: Duration = Duration::from_secs(2);

/// What the wake path needs of the router.
pub(crate) struct Waker<'a> {
    pub nats: &'a Client,
    pub subjects: &'a Subjects,
    pub answers: &'a Answers,
}

impl Waker<'_> {
    /// `call` found nobody (`first`, its error, after `started`): asks for a replica and sends
    /// it again until one answers or its deadline passes. A target that does not scale to
    /// zero, or a lattice without a scheduler, fails with `first` after one wake request.
    pub async fn call(
        &self,
        call: Call<'_>,
        first: InvokeError,
        started: Instant,
    ) -> Result<Bytes, InvokeError> {
        let deadline = started + call.timeout;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_factor(FACTOR)
            .without_max_times()
            .build();
        let mut asked: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if asked.is_none_or(|at| now.duration_since(at) >= ASK_AGAIN) {
                let left = deadline.saturating_duration_since(now);
                match request_wake(
                    self.nats,
                    self.subjects,
                    Some(self.answers.signer()),
                    (call.source, call.target),
                    left.min(ASK_TIMEOUT),
                )
                .await
                {
                    Ok(true) => asked = Some(now),
                    Ok(false) | Err(WakeError::NoScheduler) => return Err(first),
                    // No leader right now: asked again at the next round.
                    Err(WakeError::TimedOut(_)) => asked = asked.or(Some(now)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot ask for a replica");
                        return Err(first);
                    }
                }
            }
            let delay = delays.next().unwrap_or(MAX_DELAY);
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= delay {
                return Err(InvokeError::new(
                    InvokeErrorKind::Timeout,
                    format!(
                        "no replica of `{}` answered within {:?}: it scales to zero and was \
                         asked to start, but did not start in time (see `trellis app status`)",
                        call.target, call.timeout
                    ),
                ));
            }
            tokio::time::sleep(delay).await;
            let left = deadline.saturating_duration_since(Instant::now());
            let again = Call { timeout: left, ..call.clone() };
            match send_invocation(self.nats, self.subjects, Some(self.answers), again).await {
                Err(e) if e.kind() == InvokeErrorKind::NoResponders => continue,
                other => return other,
            }
        }
    }
}

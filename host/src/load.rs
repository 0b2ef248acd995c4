//! How busy each component was between two heartbeats, for the scheduler's autoscaling: worked
//! out from the counters the call path keeps anyway (calls, the time they took, refusals), so
//! measuring it adds nothing to a call.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use trellis_lattice::envelope::InvokeErrorKind;
use trellis_proto as pb;

use crate::components::Running;

/// A component's counters when the last heartbeat looked at them.
#[derive(Debug)]
pub(crate) struct LastLook(Mutex<Counted>);

#[derive(Debug, Clone, Copy)]
struct Counted {
    at: Instant,
    calls: u64,
    busy_us: u64,
    refused: u64,
}

impl LastLook {
    pub fn new() -> Self {
        Self(Mutex::new(Counted { at: Instant::now(), calls: 0, busy_us: 0, refused: 0 }))
    }
}

/// The load of `running` since the last look (`None`: it served and refused nothing), and
/// looks again from `now`. Calls in flight on average is the time the calls that ended took
/// over the time between the looks (Little's law); a call counts when it ends.
pub(crate) fn look(running: &Running, now: Instant) -> Option<pb::ComponentLoad> {
    let counted = Counted {
        at: now,
        calls: running.invocations.load(Ordering::Relaxed),
        busy_us: running.durations.sum_us(),
        refused: running.errors_by_kind[InvokeErrorKind::Unavailable as usize]
            .load(Ordering::Relaxed),
    };
    let last = std::mem::replace(
        &mut *running.last_look.0.lock().unwrap_or_else(|p| p.into_inner()),
        counted,
    );
    let calls = counted.calls.saturating_sub(last.calls);
    let refused = counted.refused.saturating_sub(last.refused);
    if calls == 0 && refused == 0 {
        return None;
    }
    let window_us = now.saturating_duration_since(last.at).as_micros().max(1);
    let busy_us = u128::from(counted.busy_us.saturating_sub(last.busy_us));
    Some(pb::ComponentLoad {
        id: running.id.clone(),
        in_flight_milli: u32::try_from(busy_us * 1000 / window_us).unwrap_or(u32::MAX),
        calls: u32::try_from(calls).unwrap_or(u32::MAX),
        refused: u32::try_from(refused).unwrap_or(u32::MAX),
    })
}

//! The replay cache: ids seen within their deadline, per signer, bounded.

use std::collections::HashMap;
use std::sync::Mutex;

/// Ids remembered within the replay window; beyond it new ones are refused.
pub(crate) const MAX_REMEMBERED: usize = 1 << 20;

/// Why an id was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Seen before, within its deadline.
    Replayed,
    /// The cache is full of ids that could still be replayed: fail closed.
    Full,
}

/// Ids (`<signer>/<id>`) seen and until when they matter (their deadline, unix ms).
#[derive(Debug, Default)]
pub(crate) struct Replay {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashMap<String, u64>,
    next_prune_ms: u64,
}

impl Replay {
    /// Takes `id` of `signer` (per signer: one cannot use up another's ids), valid until
    /// `deadline_ms`, unless it was seen.
    pub fn take(
        &self,
        signer: &str,
        id: &str,
        deadline_ms: u64,
        now_ms: u64,
    ) -> Result<(), Refused> {
        let key = format!("{signer}/{id}");
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms >= seen.next_prune_ms || seen.ids.len() >= MAX_REMEMBERED {
            seen.ids.retain(|_, d| *d > now_ms);
            seen.next_prune_ms = now_ms + 1000;
        }
        if seen.ids.contains_key(&key) {
            return Err(Refused::Replayed);
        }
        if seen.ids.len() >= MAX_REMEMBERED {
            return Err(Refused::Full);
        }
        seen.ids.insert(key, deadline_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_taken_once_per_signer_until_its_deadline() {
        let r = Replay::default();
        assert_eq!(r.take("a", "1", 2000, 1000), Ok(()));
        assert_eq!(r.take("a", "1", 2000, 1500), Err(Refused::Replayed));
        assert_eq!(r.take("b", "1", 2000, 1500), Ok(()));
        // Past its deadline a request is refused by its deadline, so the id may be forgotten.
        assert_eq!(r.take("a", "1", 4000, 2500), Ok(()));
    }
}

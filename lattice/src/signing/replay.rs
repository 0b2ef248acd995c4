//! The replay cache: ids seen within their deadline, per signer, bounded.
//!
//! An id is remembered as a 128-bit keyed hash of `<signer>/<id>` (two SipHash-1-3 hashes
//! under keys drawn at start), not as a string: taking an id allocates nothing, and a flood of
//! calls costs a fixed 32 bytes per remembered id. The keys are secret to this process, so
//! nobody can make two ids collide on purpose; by chance, two of 2^20 remembered ids share a
//! hash with a probability of about 2^-89.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
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
    keys: [RandomState; 2],
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Keys are already keyed hashes: the map uses them as they are.
    ids: HashMap<u128, u64, BuildHasherDefault<Prehashed>>,
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
        let key = self.key(signer, id);
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

    fn key(&self, signer: &str, id: &str) -> u128 {
        let half = |keys: &RandomState| {
            let mut h = keys.build_hasher();
            // Lengths first, so ("ab", "c") and ("a", "bc") differ.
            h.write_usize(signer.len());
            h.write(signer.as_bytes());
            h.write_usize(id.len());
            h.write(id.as_bytes());
            h.finish()
        };
        (u128::from(half(&self.keys[0])) << 64) | u128::from(half(&self.keys[1]))
    }
}

/// Hashes a key that is already a keyed hash: its low 64 bits.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys are hashed here; a stray call still hashes something sensible.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        // Truncation intended: the low half of a keyed hash.
        self.0 = n as u64;
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

    #[test]
    fn signer_and_id_are_told_apart_where_they_meet() {
        let r = Replay::default();
        assert_eq!(r.take("ab", "c", 2000, 1000), Ok(()));
        assert_eq!(r.take("a", "bc", 2000, 1000), Ok(()));
        assert_eq!(r.take("a/b", "c", 2000, 1000), Ok(()));
        assert_eq!(r.take("a", "b/c", 2000, 1000), Ok(()));
    }
}

//! Pair keys: once two hosts know each other, calls between them carry a MAC under a key only
//! those two hold, instead of an Ed25519 signature: about 1 µs a call instead of about 40.
//!
//! The key of hosts A and B is SHA-256 of a domain tag, the X25519 agreement of their host keys
//! (each Ed25519 host key converted to its X25519 form, static on both sides: no handshake
//! messages) and both public keys. A caller does not know which replica NATS hands a call to,
//! so it MACs the call for every host it has seen answer for that target (learned from the
//! `trellis-by` header of answers to signed calls). A replica that finds no MAC for itself
//! refuses with `trellis-key-needed`, and the caller sends the call again signed; from its
//! answer it learns that replica too.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use curve25519_dalek::montgomery::MontgomeryPoint;
use nkeys::KeyPair;
use ring::hmac;
use sha2::{Digest, Sha256};

/// Characters of a host key that name it in a MAC list (after its type prefix): 60 bits.
const SHORT: usize = 12;
/// Bytes of HMAC-SHA256 kept in a MAC (128 bits).
const MAC_LEN: usize = 16;
/// Hosts remembered per target; the oldest learned goes first (a replica forgotten this way is
/// learned again by its next signed call).
const MAX_RESPONDERS: usize = 16;
/// Targets and peers remembered; beyond it the caches start over.
const MAX_ENTRIES: usize = 4096;

/// A host's pair keys with its peers, as caller and as receiver.
pub struct PairKeys {
    /// This host's X25519 secret (the Ed25519 key's scalar bytes).
    secret: [u8; 32],
    /// This host's public key.
    public: String,
    keys: Mutex<HashMap<String, hmac::Key>>,
    responders: Mutex<HashMap<String, Vec<Responder>>>,
}

impl std::fmt::Debug for PairKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairKeys").field("public", &self.public).finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Responder {
    short: String,
    key: hmac::Key,
}

/// What a receiver makes of a call's MAC list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacCheck {
    /// A MAC for this host that verifies.
    Valid,
    /// No MAC for this host (the caller has not learned it yet).
    NotForMe,
    /// A MAC for this host that does not verify, or a key that cannot be used.
    Bad,
}

/// The short name of host `key` in MAC lists.
fn short(key: &str) -> &str {
    key.get(1..1 + SHORT).unwrap_or(key)
}

impl PairKeys {
    /// Pair keys of host `key`; `None` for a key without its seed (a public key only).
    pub fn new(key: &KeyPair) -> Option<Self> {
        let seed = key.seed().ok()?;
        let (_, raw) = nkeys::decode_seed(&seed).ok()?;
        let secret = ed25519_dalek::SigningKey::from_bytes(&raw).to_scalar_bytes();
        Some(Self {
            secret,
            public: key.public_key(),
            keys: Mutex::new(HashMap::new()),
            responders: Mutex::new(HashMap::new()),
        })
    }

    /// The key this host shares with `peer` (derived once, then cached); `None` when `peer` is
    /// not a usable host key.
    fn key_with(&self, peer: &str) -> Option<hmac::Key> {
        if let Some(key) = self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(peer) {
            return Some(key.clone());
        }
        let (prefix, raw) = nkeys::from_public_key(peer).ok()?;
        // The server (host) key type prefix, as nkeys encodes it.
        if prefix != (13 << 3) {
            return None;
        }
        let theirs = ed25519_dalek::VerifyingKey::from_bytes(&raw).ok()?.to_montgomery();
        let shared: MontgomeryPoint = theirs.mul_clamped(self.secret);
        // A low-order key gives an all-zero agreement anyone could compute.
        if shared.as_bytes().iter().all(|b| *b == 0) {
            return None;
        }
        let (low, high) = if self.public.as_str() < peer {
            (self.public.as_str(), peer)
        } else {
            (peer, self.public.as_str())
        };
        let mut h = Sha256::new();
        h.update(b"trellis pair key v1");
        h.update(shared.as_bytes());
        h.update(low.as_bytes());
        h.update(high.as_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA256, &h.finalize());
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_ENTRIES {
            keys.clear();
        }
        keys.insert(peer.to_owned(), key.clone());
        Some(key)
    }

    /// Remembers that host `peer` answered for `target`.
    pub fn learn(&self, target: &str, peer: &str) {
        let Some(key) = self.key_with(peer) else { return };
        let mut responders = self.responders.lock().unwrap_or_else(|p| p.into_inner());
        if responders.len() >= MAX_ENTRIES && !responders.contains_key(target) {
            responders.clear();
        }
        let known = responders.entry(target.to_owned()).or_default();
        if known.iter().any(|r| r.short == short(peer)) {
            return;
        }
        if known.len() >= MAX_RESPONDERS {
            known.remove(0);
        }
        known.push(Responder { short: short(peer).to_owned(), key });
    }

    /// The MAC list of a call to `target` with `digest`: `short=mac,...` for every host known
    /// to answer for it; `None` when none is known (sign the call instead).
    pub fn macs(&self, target: &str, digest: &[u8; 32]) -> Option<String> {
        let responders = self.responders.lock().unwrap_or_else(|p| p.into_inner());
        let known = responders.get(target).filter(|k| !k.is_empty())?;
        let mut list = String::with_capacity(known.len() * (SHORT + 24));
        for r in known {
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str(&r.short);
            list.push('=');
            let tag = hmac::sign(&r.key, digest);
            URL_SAFE_NO_PAD.encode_string(&tag.as_ref()[..MAC_LEN], &mut list);
        }
        Some(list)
    }

    /// Checks the MAC for this host in `list`, from host `signer`, over `digest`.
    pub fn check(&self, signer: &str, list: &str, digest: &[u8; 32]) -> MacCheck {
        let mine = short(&self.public);
        let Some(mac) = list.split(',').find_map(|entry| {
            entry.split_once('=').filter(|(name, _)| *name == mine).map(|(_, mac)| mac)
        }) else {
            return MacCheck::NotForMe;
        };
        let mut given = [0u8; MAC_LEN];
        match URL_SAFE_NO_PAD.decode_slice(mac, &mut given) {
            Ok(MAC_LEN) => {}
            _ => return MacCheck::Bad,
        }
        let Some(key) = self.key_with(signer) else { return MacCheck::Bad };
        let expected = hmac::sign(&key, digest);
        // Constant time: no early exit on the first differing byte.
        let diff =
            expected.as_ref()[..MAC_LEN].iter().zip(given).fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff == 0 { MacCheck::Valid } else { MacCheck::Bad }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_hosts_of_a_pair_agree_and_no_third_one_can() {
        let (a, b, c) = (KeyPair::new_server(), KeyPair::new_server(), KeyPair::new_server());
        let (pa, pb, pc) =
            (PairKeys::new(&a).unwrap(), PairKeys::new(&b).unwrap(), PairKeys::new(&c).unwrap());
        let digest = [7u8; 32];
        assert_eq!(pa.macs("web", &digest), None, "nobody learned yet");
        pa.learn("web", &b.public_key());
        pa.learn("web", &b.public_key());
        let list = pa.macs("web", &digest).unwrap();
        assert_eq!(list.split(',').count(), 1, "learned once: {list}");
        assert_eq!(pb.check(&a.public_key(), &list, &digest), MacCheck::Valid);
        assert_eq!(pc.check(&a.public_key(), &list, &digest), MacCheck::NotForMe);
        // Another digest, another signer claimed, a list naming C with B's MAC: all refused.
        assert_eq!(pb.check(&a.public_key(), &list, &[8u8; 32]), MacCheck::Bad);
        assert_eq!(pb.check(&c.public_key(), &list, &digest), MacCheck::Bad);
        let mac_for_b = list.split_once('=').unwrap().1;
        let relabelled = format!("{}={mac_for_b}", short(&c.public_key()));
        assert_eq!(pc.check(&a.public_key(), &relabelled, &digest), MacCheck::Bad);
        assert_eq!(
            pb.check(&a.public_key(), &format!("{}=AAAA", short(&b.public_key())), &digest),
            MacCheck::Bad
        );
        // Not a host key: no pair key.
        let account = KeyPair::new_account().public_key();
        assert_eq!(pb.check(&account, &list, &digest), MacCheck::Bad);
    }

    #[test]
    fn a_caller_keeps_a_bounded_set_of_responders_per_target() {
        let a = PairKeys::new(&KeyPair::new_server()).unwrap();
        let peers: Vec<KeyPair> = (0..MAX_RESPONDERS + 3).map(|_| KeyPair::new_server()).collect();
        for p in &peers {
            a.learn("web", &p.public_key());
        }
        let list = a.macs("web", &[1; 32]).unwrap();
        assert_eq!(list.split(',').count(), MAX_RESPONDERS);
        assert!(!list.contains(short(&peers[0].public_key())), "the oldest went first");
        assert!(list.contains(short(&peers[MAX_RESPONDERS + 2].public_key())));
        assert_eq!(a.macs("other", &[1; 32]), None);
    }
}

//! Pair keys: once two hosts know each other, calls between them carry a MAC under a key only
//! those two hold, instead of an Ed25519 signature: about 1 µs a call instead of about 40.
//!
//! The key of hosts A and B is SHA-256 of a domain tag, the X25519 agreement of their host keys
//! (each Ed25519 host key converted to its X25519 form, static on both sides: no handshake
//! messages) and both public keys. A MAC covers the sender's and the receiver's keys besides the
//! call's digest, so it says who sent the call to whom: it cannot be reflected back to its
//! sender, nor moved to another receiver.
//!
//! A caller does not know which replica NATS hands a call to, so it MACs the call for every host
//! it has seen answer for that target: the most recent [`MAX_RESPONDERS`], learned from the
//! `trellis-by` header hosts put on their answers. A replica that finds no MAC for itself refuses
//! with `trellis-key-needed` and the caller sends the same call again, signed; its answer
//! introduces that replica. A caller that knows [`MAX_RESPONDERS`] replicas of a target signs
//! as well as MACs, so replicas beyond them cost a signature, not a round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use curve25519_dalek::montgomery::MontgomeryPoint;
use nkeys::KeyPair;
use ring::hmac;
use sha2::{Digest, Sha256};

/// Characters of a host key that name it in a MAC list, after its type letter: 57 bits of the
/// key (the first of them carries 3 bits of the type prefix).
const SHORT: usize = 12;
/// Bytes of HMAC-SHA256 kept in a MAC (128 bits).
const MAC_LEN: usize = 16;
/// Hosts MAC'd for per target: the ones that answered last.
pub const MAX_RESPONDERS: usize = 16;
/// Targets and peers remembered; beyond it the caches start over.
const MAX_ENTRIES: usize = 4096;

/// Another host, and the key this host shares with it.
struct Peer {
    public: String,
    key: hmac::Key,
}

impl Peer {
    fn short(&self) -> &str {
        short(&self.public)
    }
}

/// A host's pair keys with its peers, as caller and as receiver.
pub struct PairKeys {
    /// This host's X25519 secret (the Ed25519 key's scalar bytes).
    secret: [u8; 32],
    /// This host's public key.
    public: String,
    peers: RwLock<HashMap<String, Arc<Peer>>>,
    /// Per target, the hosts that answered, with when they last did (a counter).
    responders: Mutex<Responders>,
}

#[derive(Default)]
struct Responders {
    by_target: HashMap<String, Vec<(Arc<Peer>, u64)>>,
    clock: u64,
}

impl std::fmt::Debug for PairKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairKeys").field("public", &self.public).finish_non_exhaustive()
    }
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

/// The MACs a caller puts on a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macs {
    /// `short=mac,...`.
    pub list: String,
    /// It knows as many replicas as it MACs for: others may exist, so sign as well.
    pub full: bool,
}

/// Whether a call's MAC `list` has an entry for host `key`.
pub fn names(list: &str, key: &str) -> bool {
    let name = short(key);
    list.split(',').any(|entry| entry.split_once('=').is_some_and(|(n, _)| n == name))
}

/// The short name of host `key` in MAC lists.
fn short(key: &str) -> &str {
    key.get(1..1 + SHORT).unwrap_or(key)
}

/// The MAC of a call from `sender` to `receiver` with `digest`.
fn mac(key: &hmac::Key, sender: &str, receiver: &str, digest: &[u8; 32]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(sender.as_bytes());
    ctx.update(receiver.as_bytes());
    ctx.update(digest);
    ctx.sign()
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
            peers: RwLock::new(HashMap::new()),
            responders: Mutex::new(Responders::default()),
        })
    }

    /// Host `public`, with the key this host shares with it (derived once, then cached);
    /// `None` when `public` is not a usable host key.
    fn peer(&self, public: &str) -> Option<Arc<Peer>> {
        if let Some(peer) = self.peers.read().unwrap_or_else(|p| p.into_inner()).get(public) {
            return Some(peer.clone());
        }
        let (prefix, raw) = nkeys::from_public_key(public).ok()?;
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
        let (low, high) = if self.public.as_str() < public {
            (self.public.as_str(), public)
        } else {
            (public, self.public.as_str())
        };
        let mut h = Sha256::new();
        h.update(b"trellis pair key v1");
        h.update(shared.as_bytes());
        h.update(low.as_bytes());
        h.update(high.as_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA256, &h.finalize());
        let peer = Arc::new(Peer { public: public.to_owned(), key });
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_ENTRIES {
            peers.clear();
        }
        peers.insert(public.to_owned(), peer.clone());
        Some(peer)
    }

    /// Remembers that host `public` answered for `target` just now.
    pub fn learn(&self, target: &str, public: &str) {
        if public == self.public {
            return;
        }
        let Some(peer) = self.peer(public) else { return };
        let mut responders = self.responders.lock().unwrap_or_else(|p| p.into_inner());
        responders.clock += 1;
        let now = responders.clock;
        if responders.by_target.len() >= MAX_ENTRIES && !responders.by_target.contains_key(target) {
            responders.by_target.clear();
        }
        let known = responders.by_target.entry(target.to_owned()).or_default();
        if let Some(entry) = known.iter_mut().find(|(p, _)| p.public == peer.public) {
            entry.1 = now;
            return;
        }
        // The one that answered longest ago goes: a host that stopped never answers again.
        if known.len() >= MAX_RESPONDERS
            && let Some(oldest) =
                known.iter().enumerate().min_by_key(|(_, (_, t))| *t).map(|(i, _)| i)
        {
            known.swap_remove(oldest);
        }
        known.push((peer, now));
    }

    /// The MACs of a call to `target` with `digest` for every host known to answer for it;
    /// `None` when none is known (sign the call instead).
    pub fn macs(&self, target: &str, digest: &[u8; 32]) -> Option<Macs> {
        let known: Vec<Arc<Peer>> = {
            let responders = self.responders.lock().unwrap_or_else(|p| p.into_inner());
            let known = responders.by_target.get(target).filter(|k| !k.is_empty())?;
            known.iter().map(|(p, _)| p.clone()).collect()
        };
        let mut list = String::with_capacity(known.len() * (SHORT + 24));
        for peer in &known {
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str(peer.short());
            list.push('=');
            let tag = mac(&peer.key, &self.public, &peer.public, digest);
            URL_SAFE_NO_PAD.encode_string(&tag.as_ref()[..MAC_LEN], &mut list);
        }
        Some(Macs { list, full: known.len() >= MAX_RESPONDERS })
    }

    /// The MAC of an answer from this host to host `caller` over `digest`; `None` when
    /// `caller` is not a usable host key, or is not met yet and `may_agree` says no to the key
    /// agreement meeting it takes.
    pub fn answer_mac(
        &self,
        caller: &str,
        digest: &[u8; 32],
        may_agree: impl FnOnce() -> bool,
    ) -> Option<String> {
        let met = self.peers.read().unwrap_or_else(|p| p.into_inner()).get(caller).cloned();
        // A host may answer itself (a call to a target it serves, over NATS): the MAC says so.
        let peer = match met {
            Some(peer) => peer,
            None if may_agree() => self.peer(caller)?,
            None => return None,
        };
        let tag = mac(&peer.key, &self.public, caller, digest);
        Some(URL_SAFE_NO_PAD.encode(&tag.as_ref()[..MAC_LEN]))
    }

    /// Whether `given` is the MAC of an answer from host `answerer` to this host over `digest`.
    pub fn check_answer(&self, answerer: &str, given: &str, digest: &[u8; 32]) -> bool {
        let mut tag = [0u8; MAC_LEN];
        if !matches!(URL_SAFE_NO_PAD.decode_slice(given, &mut tag), Ok(MAC_LEN)) {
            return false;
        }
        let Some(peer) = self.peer(answerer) else { return false };
        let expected = mac(&peer.key, answerer, &self.public, digest);
        expected.as_ref()[..MAC_LEN].iter().zip(tag).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }

    /// Checks the MAC for this host in `list`, from host `sender`, over `digest`.
    pub fn check(&self, sender: &str, list: &str, digest: &[u8; 32]) -> MacCheck {
        let mine = short(&self.public);
        let Some(given) = list.split(',').find_map(|entry| {
            entry.split_once('=').filter(|(name, _)| *name == mine).map(|(_, mac)| mac)
        }) else {
            return MacCheck::NotForMe;
        };
        let mut tag = [0u8; MAC_LEN];
        match URL_SAFE_NO_PAD.decode_slice(given, &mut tag) {
            Ok(MAC_LEN) => {}
            _ => return MacCheck::Bad,
        }
        if sender == self.public {
            return MacCheck::Bad;
        }
        let Some(peer) = self.peer(sender) else { return MacCheck::Bad };
        let expected = mac(&peer.key, sender, &self.public, digest);
        // Constant time: no early exit on the first differing byte.
        let diff = expected.as_ref()[..MAC_LEN].iter().zip(tag).fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff == 0 { MacCheck::Valid } else { MacCheck::Bad }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (KeyPair, PairKeys) {
        let key = KeyPair::new_server();
        let pairs = PairKeys::new(&key).unwrap();
        (key, pairs)
    }

    #[test]
    fn both_hosts_of_a_pair_agree_and_no_third_one_can() {
        let ((a, pa), (b, pb), (c, pc)) = (pair(), pair(), pair());
        let digest = [7u8; 32];
        assert_eq!(pa.macs("web", &digest), None, "nobody learned yet");
        pa.learn("web", &b.public_key());
        pa.learn("web", &b.public_key());
        let macs = pa.macs("web", &digest).unwrap();
        assert_eq!(macs.list.split(',').count(), 1, "learned once: {macs:?}");
        assert!(!macs.full);
        let list = macs.list;
        assert_eq!(pb.check(&a.public_key(), &list, &digest), MacCheck::Valid);
        assert_eq!(pc.check(&a.public_key(), &list, &digest), MacCheck::NotForMe);
        // Another digest, another sender claimed, a list naming C with B's MAC: all refused.
        assert_eq!(pb.check(&a.public_key(), &list, &[8u8; 32]), MacCheck::Bad);
        assert_eq!(pb.check(&c.public_key(), &list, &digest), MacCheck::Bad);
        let mac_for_b = list.split_once('=').unwrap().1;
        let relabelled = format!("{}={mac_for_b}", short(&c.public_key()));
        assert_eq!(pc.check(&a.public_key(), &relabelled, &digest), MacCheck::Bad);
        let garbage = format!("{}=AAAA", short(&b.public_key()));
        assert_eq!(pb.check(&a.public_key(), &garbage, &digest), MacCheck::Bad);
        // Not a host key: no pair key.
        let account = KeyPair::new_account().public_key();
        assert_eq!(pb.check(&account, &list, &digest), MacCheck::Bad);
    }

    #[test]
    fn a_mac_cannot_be_reflected_to_its_sender() {
        let ((a, pa), (b, pb)) = (pair(), pair());
        pa.learn("web", &b.public_key());
        let digest = [9u8; 32];
        let list = pa.macs("web", &digest).unwrap().list;
        let mac_for_b = list.split_once('=').unwrap().1;
        // The same MAC, presented to A as if B had sent it to A.
        let reflected = format!("{}={mac_for_b}", short(&a.public_key()));
        assert_eq!(pa.check(&b.public_key(), &reflected, &digest), MacCheck::Bad);
        // B's own call to A verifies.
        pb.learn("web", &a.public_key());
        let from_b = pb.macs("web", &digest).unwrap().list;
        assert_eq!(pa.check(&b.public_key(), &from_b, &digest), MacCheck::Valid);
    }

    #[test]
    fn the_hosts_that_answered_last_are_kept_and_a_full_list_says_so() {
        let (_, a) = pair();
        let peers: Vec<KeyPair> = (0..MAX_RESPONDERS + 2).map(|_| KeyPair::new_server()).collect();
        for p in &peers[..MAX_RESPONDERS] {
            a.learn("web", &p.public_key());
        }
        // The first answers again; two new ones push out the two that answered longest ago.
        a.learn("web", &peers[0].public_key());
        a.learn("web", &peers[MAX_RESPONDERS].public_key());
        a.learn("web", &peers[MAX_RESPONDERS + 1].public_key());
        let macs = a.macs("web", &[1; 32]).unwrap();
        assert_eq!(macs.list.split(',').count(), MAX_RESPONDERS);
        assert!(macs.full);
        assert!(macs.list.contains(short(&peers[0].public_key())));
        assert!(!macs.list.contains(short(&peers[1].public_key())));
        assert!(!macs.list.contains(short(&peers[2].public_key())));
        assert!(macs.list.contains(short(&peers[MAX_RESPONDERS + 1].public_key())));
        assert_eq!(a.macs("other", &[1; 32]), None);
    }
}

//! Signed invocations: the calling host signs every call that crosses NATS; the receiver checks
//! the signer, the signature, the body, the deadline and replays before any guest code runs.
//!
//! The signature is Ed25519 (the host's nkey) over SHA-256 of the subject, operation, source,
//! unique id, link name, deadline and the body's SHA-256. A lattice may also require hosts to
//! present an identity signed by a cluster key it trusts. The answer goes to the reply subject,
//! which must lie in the signing host's own inbox ([`inbox_prefix`]): a captured call sent again
//! with another reply subject is refused, so a replay cannot fetch an answer for anyone but the
//! host that signed it. Everything here is plain data in, decision out: the caller supplies
//! `now`.
//!
//! Between hosts that know each other, a MAC under their pair key stands in for the signature
//! (see [`pair`]): the same digest, the same checks, a fraction of the cost.

mod code;
pub(crate) mod operator;
mod pair;
mod replay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::{InvokeError, InvokeErrorKind, field, header, set};

pub use code::{CodeRefused, CodeSeal, VerifiedCode, verify_code};
pub use operator::{
    Authorized, ControlVerifier, InvalidOperator, OPERATOR, OperatorKey, RequestDenied, Role,
    TrustedOperator,
};
pub use pair::{MAX_RESPONDERS, MacCheck, Macs, PairKeys};
use replay::{Refused, Replay};

/// Header: the signing host's public key.
pub const HOST: &str = "trellis-host";
/// Header: the signature (base64url).
pub const SIG: &str = "trellis-sig";
/// Header: the host's identity token, signed by a cluster key.
pub const IDENTITY: &str = "trellis-host-identity";
/// Header: MACs under pair keys, `<host short name>=<mac>,...` (instead of [`SIG`]).
pub const MAC: &str = "trellis-mac";
/// Header of an answer to an authenticated call: the answering host's key, so the caller can
/// MAC its next calls for it.
pub const BY: &str = "trellis-by";
/// Header of a successful answer to an authenticated call: `<answering host's key>.<MAC>`, the
/// MAC under the pair key of the two hosts over the call's id and the answer's length and
/// digest. The caller takes no result without it.
pub const ANSWER: &str = "trellis-answer";
/// Header of a refusal: no MAC for the receiving host; send the call signed.
pub const KEY_NEEDED: &str = "trellis-key-needed";
/// The message of that refusal.
const KEY_NEEDED_MESSAGE: &str =
    "no pair key with the receiving host yet: the call must be signed with the host key";

/// Host keys remembered by a verifier.
const MAX_KNOWN_HOSTS: usize = 4096;
/// Longest invocation id accepted (ids are 22-character nuids).
const MAX_JTI: usize = 64;

/// The inbox prefix of the host with public key `host_key`: answers to the calls it signs come
/// under `<prefix>.`, and receivers refuse signed calls whose reply subject lies elsewhere.
pub fn inbox_prefix(host_key: &str) -> String {
    format!("_INBOX.{host_key}")
}

/// The host whose inbox `reply` lies in, if it lies in one (`_INBOX.<host key>.<more>`).
pub fn inbox_owner(reply: &str) -> Option<&str> {
    let (key, rest) = reply.strip_prefix("_INBOX.")?.split_once('.')?;
    (key.len() == 56 && key.starts_with('N') && !rest.is_empty()).then_some(key)
}

/// Whether `reply` lies in the inbox of `host_key` (`_INBOX.<host_key>.` and more).
fn in_inbox_of(reply: &str, host_key: &str) -> bool {
    reply
        .strip_prefix("_INBOX.")
        .and_then(|rest| rest.strip_prefix(host_key))
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
}

/// The fields a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// NATS subject.
    pub subject: &'a str,
    /// `ns:pkg/iface.function`
    pub operation: &'a str,
    /// Caller id.
    pub source: &'a str,
    /// Unique id.
    pub jti: &'a str,
    /// The caller's link name.
    pub link: &'a str,
    /// The calling component's name in its claims, when a component calls.
    pub caller: Option<&'a str>,
    /// Deadline, unix ms.
    pub deadline_ms: u64,
    /// The body's length and SHA-256.
    pub body: BodyDigest,
}

/// What a signature says of a body: its length and SHA-256. A body announced in chunks is
/// checked by these before a single chunk is pulled, and the pulled bytes against them after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDigest {
    /// Length in bytes.
    pub len: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

impl BodyDigest {
    /// The digest of `body`.
    pub fn of(body: &[u8]) -> Self {
        Self { len: body.len() as u64, sha256: Sha256::digest(body).into() }
    }
}

/// A received call's body as the verifier sees it: its bytes, hashed only when the call is
/// signed or MAC'd, or, for a body in chunks, the length and digest it was announced with.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// The body in the message.
    Bytes(&'a [u8]),
    /// The body's announced length and digest.
    Announced(BodyDigest),
}

impl Body<'_> {
    /// Its length and digest (hashing the bytes).
    pub fn digest(self) -> BodyDigest {
        match self {
            Body::Bytes(bytes) => BodyDigest::of(bytes),
            Body::Announced(digest) => digest,
        }
    }
}

impl From<BodyDigest> for Body<'_> {
    fn from(digest: BodyDigest) -> Self {
        Body::Announced(digest)
    }
}

impl<'a> Signed<'a> {
    /// What a signature of `invocation` on `subject` with a body of `body` covers.
    pub fn of(
        invocation: &'a crate::envelope::Invocation,
        subject: &'a str,
        body: BodyDigest,
    ) -> Self {
        Signed {
            subject,
            operation: &invocation.operation,
            source: &invocation.source,
            jti: &invocation.jti,
            link: &invocation.link,
            caller: invocation.caller.as_deref(),
            deadline_ms: invocation.deadline_ms,
            body,
        }
    }

    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        // Length-prefixed, so no two different calls hash alike by moving bytes between fields.
        for part in [self.subject, self.operation, self.source, self.jti, self.link] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        // Present or not is signed too: a component's call cannot pass for a provider's.
        let caller = self.caller.unwrap_or_default();
        h.update([u8::from(self.caller.is_some())]);
        h.update((caller.len() as u64).to_be_bytes());
        h.update(caller.as_bytes());
        h.update(self.deadline_ms.to_be_bytes());
        h.update(self.body.len.to_be_bytes());
        h.update(self.body.sha256);
        h.finalize().into()
    }
}

/// How a call was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Ed25519 signature with the host key (a caller may add MACs for the replicas it knows).
    Signature,
    /// MACs under pair keys with the hosts known to answer for the target, and nothing else:
    /// a replica not among them asks for the signature.
    PairKey,
}

/// What a host signs with.
#[derive(Debug)]
pub struct Signer {
    key: KeyPair,
    public: String,
    /// Replaced before it expires (see [`IDENTITY_TTL_S`]).
    identity: std::sync::RwLock<Option<Arc<str>>>,
    /// `None` for a key without its seed.
    pairs: Option<Arc<PairKeys>>,
    /// Cluster keys whose hosts' answers to signed calls it takes (empty: any host key).
    trusted_clusters: Vec<String>,
    /// Answers refused as forged.
    forged: AtomicU64,
}

impl Signer {
    /// A signer with host key `key` and, optionally, a cluster-signed identity token.
    pub fn new(key: KeyPair, identity: Option<String>) -> Self {
        let identity = std::sync::RwLock::new(identity.map(Arc::from));
        let pairs = PairKeys::new(&key).map(Arc::new);
        Self {
            public: key.public_key(),
            key,
            identity,
            pairs,
            trusted_clusters: Vec::new(),
            forged: AtomicU64::new(0),
        }
    }

    /// Takes answers to its signed calls only from hosts one of `clusters` vouches for (the
    /// answer carries the host's identity).
    pub fn with_trusted_clusters(mut self, clusters: Vec<String>) -> Self {
        self.trusted_clusters = clusters;
        self
    }

    /// Names this host on an answer (`trellis-by`, with its cluster identity when it has one),
    /// so the caller can MAC its next calls for it.
    pub fn introduce(&self, headers: &mut HeaderMap) {
        set(headers, BY, self.public.as_str());
        self.add_identity(headers);
    }

    /// Answers refused as forged so far.
    pub fn forged_answers(&self) -> u64 {
        self.forged.load(Ordering::Relaxed)
    }

    /// Authenticates an answer (`body`, see [`answer_body`]) to call `jti` from host `caller`.
    pub fn authenticate_answer(
        &self,
        headers: &mut HeaderMap,
        caller: &str,
        jti: &str,
        body: BodyDigest,
    ) {
        self.authenticate_answer_if(headers, (caller, jti), body, || true);
    }

    /// [`Self::authenticate_answer`], meeting a `caller` not met yet (a key agreement) only if
    /// `may_agree` says so: for refusals made before any check (an overloaded or leaving
    /// host's), whose cost must stay bounded. Whether the answer got its MAC.
    pub fn authenticate_answer_if(
        &self,
        headers: &mut HeaderMap,
        (caller, jti): (&str, &str),
        body: BodyDigest,
        may_agree: impl FnOnce() -> bool,
    ) -> bool {
        let Some(pairs) = &self.pairs else { return false };
        let Some(mac) = pairs.answer_mac(caller, &answer_digest(jti, body), may_agree) else {
            return false;
        };
        set(headers, ANSWER, format!("{}.{mac}", self.public));
        true
    }

    /// Checks the answer (`headers`, a body of `body`) to this host's call `jti`, which was
    /// authenticated by `proof` with the MAC list `macs` (if any). A MAC'd call's answer must
    /// come from a host the call was MAC'd for; a signed call's from one the trusted clusters
    /// vouch for (when any are set). A refusal is counted.
    pub fn check_answer(
        &self,
        headers: Option<&HeaderMap>,
        (jti, body): (&str, BodyDigest),
        (proof, macs): (Proof, Option<&str>),
        now_s: u64,
    ) -> Result<(), ForgedAnswer> {
        let Some(pairs) = &self.pairs else { return Ok(()) };
        let verdict = (|| {
            let (answerer, mac) = field(headers, ANSWER)
                .and_then(|v| v.split_once('.'))
                .ok_or(ForgedAnswer::Missing)?;
            // A host the call was MAC'd for was met before (and its identity checked then).
            // Any replica may take a signed call, and any may refuse a MAC'd one without running
            // it (it has no MAC in it, is overloaded or is leaving): those are vouched for by a
            // trusted cluster, if any is set.
            let has = |name: &'static str| field(headers, name).is_some();
            use crate::envelope::header::{LEAVING, SHED};
            let not_run = has(KEY_NEEDED) || has(LEAVING) || has(SHED);
            let known = macs.is_some_and(|list| pair::names(list, answerer))
                || match proof {
                    Proof::PairKey if !not_run => false,
                    _ if self.trusted_clusters.is_empty() => true,
                    _ => field(headers, IDENTITY).is_some_and(|t| {
                        check_identity(t, answerer, &self.trusted_clusters, now_s).is_ok()
                    }),
                };
            if !known {
                return Err(ForgedAnswer::Stranger);
            }
            if pairs.check_answer(answerer, mac, &answer_digest(jti, body)) {
                Ok(())
            } else {
                Err(ForgedAnswer::BadMac)
            }
        })();
        if verdict.is_err() {
            self.forged.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// The pair keys of this host, for its [`Verifier`] (one key per peer, both directions).
    pub fn pair_keys(&self) -> Option<Arc<PairKeys>> {
        self.pairs.clone()
    }

    /// Remembers that host `peer` answered a call to `target` just now (from the answer's
    /// [`BY`]).
    pub fn learn(&self, target: &str, peer: &str) {
        if let Some(pairs) = &self.pairs {
            pairs.learn(target, peer);
        }
    }

    /// Authenticates a call to `target`: MACs for the hosts known to answer for it, else the
    /// signature; both when it knows [`MAX_RESPONDERS`] of them.
    pub fn authenticate(
        &self,
        headers: &mut HeaderMap,
        signed: &Signed<'_>,
        target: &str,
    ) -> Proof {
        let digest = signed.digest();
        match self.pairs.as_ref().and_then(|p| p.macs(target, &digest)) {
            Some(Macs { list, full: false }) => {
                set(headers, HOST, self.public.as_str());
                set(headers, MAC, list);
                self.add_identity(headers);
                Proof::PairKey
            }
            // It knows as many replicas as it MACs for: there may be more, which check the
            // signature rather than send the call back.
            Some(Macs { list, full: true }) => {
                set(headers, MAC, list);
                self.sign_digest(headers, &digest);
                Proof::Signature
            }
            None => {
                self.sign_digest(headers, &digest);
                Proof::Signature
            }
        }
    }

    /// Replaces the identity token (a fresh one, before the old one expires).
    pub fn set_identity(&self, identity: String) {
        *self.identity.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(identity));
    }

    /// The host's public key.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// Adds the signature headers for `signed` to `headers`.
    pub fn sign(&self, headers: &mut HeaderMap, signed: &Signed<'_>) {
        self.sign_digest(headers, &signed.digest());
    }

    fn sign_digest(&self, headers: &mut HeaderMap, digest: &[u8; 32]) {
        // Signing with an in-memory Ed25519 key cannot fail; an empty signature would be refused.
        let sig = self.key.sign(digest).unwrap_or_default();
        set(headers, HOST, self.public.as_str());
        set(headers, SIG, URL_SAFE_NO_PAD.encode(sig));
        self.add_identity(headers);
    }

    fn add_identity(&self, headers: &mut HeaderMap) {
        let identity = self.identity.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(identity) = identity {
            set(headers, IDENTITY, &*identity);
        }
    }
}

/// What an answer's MAC covers: a tag, the call's id and the answer body's length and digest.
fn answer_digest(jti: &str, body: BodyDigest) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"trellis-answer/1");
    h.update((jti.len() as u64).to_be_bytes());
    h.update(jti.as_bytes());
    h.update(body.len.to_be_bytes());
    h.update(body.sha256);
    h.finalize().into()
}

/// What an answer's MAC covers of its body: a result's length and digest (`announced` when it
/// comes in chunks), or an error's kind and message.
pub fn answer_body(
    headers: Option<&HeaderMap>,
    payload: &[u8],
    announced: Option<BodyDigest>,
) -> BodyDigest {
    match field(headers, crate::envelope::header::ERROR) {
        Some(kind) => {
            let mut h = Sha256::new();
            h.update(b"trellis-error/1");
            h.update((kind.len() as u64).to_be_bytes());
            h.update(kind.as_bytes());
            h.update(payload);
            BodyDigest { len: payload.len() as u64, sha256: h.finalize().into() }
        }
        None => announced.unwrap_or_else(|| BodyDigest::of(payload)),
    }
}

/// Why an answer was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForgedAnswer {
    /// No `trellis-answer` header, or a malformed one.
    #[error("the answer is not authenticated")]
    Missing,
    /// The answering host is not one the call was MAC'd for, nor one the cluster vouches for.
    #[error("the answer comes from a host this call was not sent to")]
    Stranger,
    /// The MAC does not verify.
    #[error("the answer's MAC does not verify: it was forged or altered")]
    BadMac,
}

/// The refusal of a call that has no MAC for the receiving host.
pub fn key_needed() -> InvokeError {
    InvokeError::new(InvokeErrorKind::Denied, KEY_NEEDED_MESSAGE)
}

/// Whether `e` is [`key_needed`]: routine, answered with [`KEY_NEEDED`], not a denial to report.
pub fn is_key_needed(e: &InvokeError) -> bool {
    e.kind() == InvokeErrorKind::Denied && e.message() == KEY_NEEDED_MESSAGE
}

/// The envelope headers of `invocation` on `subject` with `body`, signed when a signer is given.
pub fn invocation_headers(
    invocation: &crate::envelope::Invocation,
    subject: &str,
    body: &[u8],
    signer: Option<&Signer>,
) -> HeaderMap {
    let mut headers = invocation.to_headers();
    if let Some(signer) = signer {
        signer.sign(&mut headers, &Signed::of(invocation, subject, BodyDigest::of(body)));
    }
    headers
}

/// How long a host identity token is valid; hosts re-issue theirs well before.
pub const IDENTITY_TTL_S: u64 = 6 * 3600;
/// Seconds of clock skew tolerated on an identity's expiry.
const IDENTITY_LEEWAY_S: u64 = 60;

/// A host identity: the cluster vouches for a host key, until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    sub: String,
    iss: String,
    iat: u64,
    #[serde(default)]
    exp: u64,
}

/// Issues the identity token of `host` (a public key), signed by `cluster`, valid for
/// [`IDENTITY_TTL_S`].
pub fn issue_identity(cluster: &KeyPair, host: &str, now_s: u64) -> Result<String, String> {
    let body = serde_json::to_vec(&Identity {
        sub: host.to_owned(),
        iss: cluster.public_key(),
        iat: now_s,
        exp: now_s.saturating_add(IDENTITY_TTL_S),
    })
    .map_err(|e| e.to_string())?;
    let sig = cluster.sign(&body).map_err(|e| format!("cannot sign with the cluster key: {e}"))?;
    Ok(format!("{}.{}", URL_SAFE_NO_PAD.encode(body), URL_SAFE_NO_PAD.encode(sig)))
}

/// Checks an identity token; returns until when (unix s) it is valid.
fn check_identity(token: &str, host: &str, trusted: &[String], now_s: u64) -> Result<u64, String> {
    let (body, sig) = token.split_once('.').ok_or("identity token is malformed")?;
    let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| "identity token is malformed")?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "identity token is malformed")?;
    let identity: Identity =
        serde_json::from_slice(&body).map_err(|_| "identity token is malformed")?;
    if identity.sub != host {
        return Err("identity token names another host".into());
    }
    if !trusted.contains(&identity.iss) {
        return Err(format!("host identity issued by untrusted cluster {}", identity.iss));
    }
    let cluster =
        KeyPair::from_public_key(&identity.iss).map_err(|_| "identity issuer is not a key")?;
    cluster
        .verify(&body, &sig)
        .map_err(|_| "identity token signature does not verify".to_owned())?;
    let valid_until = identity.exp.saturating_add(IDENTITY_LEEWAY_S);
    if identity.exp == 0 || valid_until < now_s {
        return Err(format!("identity token expired at unix time {}", identity.exp));
    }
    Ok(valid_until)
}

/// How a receiver checks invocations.
#[derive(Debug)]
pub struct Verifier {
    trusted_clusters: Vec<String>,
    allow_unsigned: bool,
    /// Longest deadline accepted from now; bounds the replay cache.
    max_window_ms: u64,
    seen: Replay,
    /// Host keys whose identity already verified, and until when (unix s).
    known_hosts: Mutex<HashMap<String, (Arc<KeyPair>, u64)>>,
    /// This host's pair keys: MACs are checked with them (without, every call must be signed).
    pairs: Option<Arc<PairKeys>>,
    /// Calls accepted by signature and by pair key.
    accepted: [AtomicU64; 2],
}

/// A call that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Its deadline, unix ms.
    pub deadline_ms: u64,
    /// How it was authenticated; `None`: unsigned, accepted by `--allow-unsigned`.
    pub proof: Option<Proof>,
}

impl Verifier {
    /// A verifier; with `trusted_clusters` empty any host key is accepted (its signature must
    /// still verify); `allow_unsigned` accepts unsigned calls (development only).
    pub fn new(trusted_clusters: Vec<String>, allow_unsigned: bool, max_window_ms: u64) -> Self {
        Self {
            trusted_clusters,
            allow_unsigned,
            max_window_ms,
            seen: Replay::default(),
            known_hosts: Mutex::new(HashMap::new()),
            pairs: None,
            accepted: Default::default(),
        }
    }

    /// Accepts MACs under `pairs` (the host's own, from [`Signer::pair_keys`]).
    pub fn with_pair_keys(mut self, pairs: Option<Arc<PairKeys>>) -> Self {
        self.pairs = pairs;
        self
    }

    /// Whether it checks MACs (so callers should learn this host and send them).
    pub fn takes_macs(&self) -> bool {
        self.pairs.is_some()
    }

    /// Calls accepted so far by signature and by pair key.
    pub fn accepted(&self) -> (u64, u64) {
        (self.accepted[0].load(Ordering::Relaxed), self.accepted[1].load(Ordering::Relaxed))
    }

    /// Checks a received invocation on `subject`, answered to `reply`, with `body` (hashed only
    /// once the call turns out signed); returns its deadline (unix ms).
    pub fn verify<'b>(
        &self,
        (subject, reply): (&str, &str),
        headers: Option<&HeaderMap>,
        body: impl Into<Body<'b>>,
        now_ms: u64,
    ) -> Result<Verified, InvokeError> {
        let headers = headers.ok_or_else(|| denied("invocation carries no envelope"))?;
        let get = |name: &'static str| field(Some(headers), name);
        let deadline_ms: u64 = get(header::DEADLINE)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| denied("invocation lacks a valid `trellis-deadline`"))?;
        if deadline_ms <= now_ms {
            // Late, not forbidden: the caller has given up on it already.
            return Err(InvokeError::new(
                InvokeErrorKind::Timeout,
                format!("deadline passed {} ms ago", now_ms - deadline_ms),
            ));
        }
        if deadline_ms > now_ms.saturating_add(self.max_window_ms) {
            return Err(denied("deadline is too far in the future"));
        }
        let Some(signer) = get(HOST) else {
            return if self.allow_unsigned {
                Ok(Verified { deadline_ms, proof: None })
            } else {
                Err(denied(
                    "unsigned invocation; this host accepts only calls signed by a lattice host",
                ))
            };
        };
        if !in_inbox_of(reply, signer) {
            return Err(denied(
                "the reply subject is not the signing host's inbox: a signed call is answered \
                 only to the host that signed it",
            ));
        }
        let key = self.host_key(signer, get(IDENTITY), now_ms / 1000)?;
        let (op, src, jti) = match (get(header::OP), get(header::SRC), get(header::JTI)) {
            (Some(op), Some(src), Some(jti)) => (op, src, jti),
            _ => return Err(denied("signed invocation lacks op, source or id")),
        };
        if jti.len() > MAX_JTI {
            return Err(denied("invocation id is too long"));
        }
        let link = crate::envelope::link_name(Some(headers));
        let caller = get(header::CALLER);
        let body = body.into().digest();
        let digest =
            Signed { subject, operation: op, source: src, jti, link, caller, deadline_ms, body }
                .digest();
        // This host's MAC when the call has one, else the signature.
        let check = match (get(MAC), &self.pairs) {
            (Some(macs), Some(pairs)) => pairs.check(signer, macs, &digest),
            _ => MacCheck::NotForMe,
        };
        let proof = match (check, get(SIG), get(MAC)) {
            (MacCheck::Valid, _, _) => Proof::PairKey,
            (MacCheck::Bad, _, _) => {
                return Err(denied(
                    "bad MAC: the call or its body was altered, or not sent by this host",
                ));
            }
            (MacCheck::NotForMe, Some(sig), _) => {
                let sig = URL_SAFE_NO_PAD
                    .decode(sig)
                    .map_err(|_| denied("signature is not base64url"))?;
                key.verify(&digest, &sig).map_err(|_| {
                    denied(
                        "bad signature: the call or its body was altered, or not signed by this host",
                    )
                })?;
                Proof::Signature
            }
            (MacCheck::NotForMe, None, Some(_)) => return Err(key_needed()),
            (MacCheck::NotForMe, None, None) => {
                return Err(denied("signed invocation lacks its signature"));
            }
        };
        self.remember(signer, jti, deadline_ms, now_ms)?;
        self.accepted[proof as usize].fetch_add(1, Ordering::Relaxed);
        Ok(Verified { deadline_ms, proof: Some(proof) })
    }

    /// The signer's verifying key, once its identity is accepted. Cached: decoding a key costs
    /// about as much as a verification.
    fn host_key(
        &self,
        signer: &str,
        identity: Option<&str>,
        now_s: u64,
    ) -> Result<Arc<KeyPair>, InvokeError> {
        let mut known = self.known_hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((key, valid_until)) = known.get(signer)
            && *valid_until >= now_s
        {
            return Ok(key.clone());
        }
        let mut valid_until = u64::MAX;
        if !self.trusted_clusters.is_empty() {
            let identity = identity
                .ok_or_else(|| denied(&format!("host {signer} presents no cluster identity")))?;
            valid_until = check_identity(identity, signer, &self.trusted_clusters, now_s)
                .map_err(|e| denied(&format!("untrusted host {signer}: {e}")))?;
        }
        let key = KeyPair::from_public_key(signer)
            .ok()
            .filter(|k| matches!(k.key_pair_type(), nkeys::KeyPairType::Server))
            .ok_or_else(|| denied("signer is not a host public key"))?;
        // Bounded: a flood of made-up keys must not grow memory.
        if known.len() >= MAX_KNOWN_HOSTS {
            known.clear();
        }
        let key = Arc::new(key);
        known.insert(signer.to_owned(), (key.clone(), valid_until));
        Ok(key)
    }

    fn remember(
        &self,
        signer: &str,
        jti: &str,
        deadline_ms: u64,
        now_ms: u64,
    ) -> Result<(), InvokeError> {
        self.seen.take(signer, jti, deadline_ms, now_ms).map_err(|refused| match refused {
            Refused::Replayed => denied("replayed invocation: this id was already used"),
            // Fail closed rather than forget ids that could still be replayed.
            Refused::Full => denied("too many calls in the replay window; try again shortly"),
        })
    }
}

fn denied(why: &str) -> InvokeError {
    InvokeError::new(InvokeErrorKind::Denied, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Invocation;

    const NOW: u64 = 1_800_000_000_000;

    /// `v`'s verdict on a call on `subject` with `headers` and `body`, answered to its signer.
    fn check(
        v: &Verifier,
        subject: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, InvokeError> {
        v.verify((subject, &reply_to(Some(headers))), Some(headers), BodyDigest::of(body), now)
    }

    /// A reply subject in the inbox of the call's signer, as the signing host's client makes.
    fn reply_to(headers: Option<&HeaderMap>) -> String {
        let signer = field(headers, HOST).unwrap_or("NONE");
        format!("{}.mux.1", inbox_prefix(signer))
    }

    fn signed_headers(
        signer: &Signer,
        subject: &str,
        body: &[u8],
        deadline_ms: u64,
        jti: &str,
    ) -> HeaderMap {
        let op = "a:b/c.f";
        let inv = Invocation::new("web", op, std::time::Duration::ZERO, jti.into());
        let inv = Invocation { deadline_ms, ..inv };
        invocation_headers(&inv, subject, body, Some(signer))
    }

    #[test]
    fn good_calls_pass_and_every_attack_is_denied() {
        let host = Signer::new(KeyPair::new_server(), None);
        let v = Verifier::new(vec![], false, 60_000);
        let h = signed_headers(&host, "s", b"body", NOW + 1000, "j1");
        let ok = check(&v, "s", &h, b"body", NOW);
        assert_eq!(ok, Ok(Verified { deadline_ms: NOW + 1000, proof: Some(Proof::Signature) }));

        let reason = |r: Result<Verified, InvokeError>| r.unwrap_err().message().to_owned();
        assert!(reason(check(&v, "s", &h, b"body", NOW)).contains("replayed"));
        let h2 = signed_headers(&host, "s", b"body", NOW + 1000, "j2");
        assert!(reason(check(&v, "s", &h2, b"BODY", NOW)).contains("bad signature"));
        assert!(reason(check(&v, "other", &h2, b"body", NOW)).contains("bad signature"));
        let late = signed_headers(&host, "s", b"body", NOW - 1, "j3");
        assert!(reason(check(&v, "s", &late, b"body", NOW)).contains("deadline passed"));
        let far = signed_headers(&host, "s", b"body", NOW + 3_600_000, "j4");
        assert!(reason(check(&v, "s", &far, b"body", NOW)).contains("too far"));

        let mut forged = signed_headers(
            &Signer::new(KeyPair::new_server(), None),
            "s",
            b"body",
            NOW + 1000,
            "j5",
        );
        forged.insert(HOST, host.public_key());
        assert!(reason(check(&v, "s", &forged, b"body", NOW)).contains("bad signature"));
        // The link name picks the provider's config: it is signed too.
        let mut relinked = signed_headers(&host, "s", b"body", NOW + 1000, "j7");
        relinked.insert(header::LINK, "admin");
        assert!(reason(check(&v, "s", &relinked, b"body", NOW)).contains("bad signature"));
        // So is the calling component's name, and whether a component calls at all.
        let mut renamed = signed_headers(&host, "s", b"body", NOW + 1000, "j8");
        renamed.insert(header::CALLER, "frontend");
        assert!(reason(check(&v, "s", &renamed, b"body", NOW)).contains("bad signature"));

        let unsigned = Invocation::new("x", "o", std::time::Duration::ZERO, "j6".into());
        let unsigned = Invocation { deadline_ms: NOW + 1000, ..unsigned };
        assert!(
            reason(v.verify(
                ("s", &reply_to(Some(&unsigned.to_headers()))),
                Some(&unsigned.to_headers()),
                BodyDigest::of(b""),
                NOW
            ))
            .contains("unsigned")
        );
        let dev = Verifier::new(vec![], true, 60_000);
        assert!(
            dev.verify(
                ("s", &reply_to(Some(&unsigned.to_headers()))),
                Some(&unsigned.to_headers()),
                BodyDigest::of(b""),
                NOW
            )
            .is_ok()
        );
        assert!(v.verify(("s", &reply_to(None)), None, BodyDigest::of(b""), NOW).is_err());
    }

    #[test]
    fn known_hosts_authenticate_by_pair_key_with_every_check_kept() {
        let (a, b) =
            (Signer::new(KeyPair::new_server(), None), Signer::new(KeyPair::new_server(), None));
        let c = Signer::new(KeyPair::new_server(), None);
        let at_b = Verifier::new(vec![], false, 60_000).with_pair_keys(b.pair_keys());
        let at_c = Verifier::new(vec![], false, 60_000).with_pair_keys(c.pair_keys());
        let call = |jti: &str, body: &'static [u8]| {
            let inv = Invocation::new("web", "a:b/c.f", std::time::Duration::ZERO, jti.into());
            let inv = Invocation { deadline_ms: NOW + 1000, ..inv };
            let mut headers = inv.to_headers();
            (
                a.authenticate(&mut headers, &Signed::of(&inv, "s", BodyDigest::of(body)), "web"),
                headers,
            )
        };
        // First contact is signed; once A knows B answers for `web`, MACs.
        let (proof, first) = call("m1", b"x");
        assert_eq!(proof, Proof::Signature);
        let reply = reply_to(Some(&first));
        assert_eq!(
            at_b.verify(("s", &reply), Some(&first), BodyDigest::of(b"x"), NOW).unwrap().proof,
            Some(Proof::Signature)
        );
        a.learn("web", b.public_key());
        let (proof, mac) = call("m2", b"x");
        assert_eq!(proof, Proof::PairKey);
        assert!(mac.get(SIG).is_none());
        assert_eq!(
            at_b.verify(("s", &reply), Some(&mac), BodyDigest::of(b"x"), NOW).unwrap().proof,
            Some(Proof::PairKey)
        );
        assert_eq!(at_b.accepted(), (1, 1));
        let again = at_b.verify(("s", &reply), Some(&mac), BodyDigest::of(b"x"), NOW).unwrap_err();
        assert!(again.message().contains("replayed"), "{again}");
        let (_, altered) = call("m3", b"x");
        let err =
            at_b.verify(("s", &reply), Some(&altered), BodyDigest::of(b"y"), NOW).unwrap_err();
        assert!(err.message().contains("bad MAC"), "{err}");
        let err = at_b
            .verify(("elsewhere", &reply), Some(&altered), BodyDigest::of(b"x"), NOW)
            .unwrap_err();
        assert!(err.message().contains("bad MAC"), "{err}");
        // A replica A has not met asks for the signature; so does a host without pair keys.
        let (_, other) = call("m4", b"x");
        assert!(is_key_needed(
            &at_c.verify(("s", &reply), Some(&other), BodyDigest::of(b"x"), NOW).unwrap_err()
        ));
        let plain = Verifier::new(vec![], false, 60_000);
        assert!(is_key_needed(
            &plain.verify(("s", &reply), Some(&other), BodyDigest::of(b"x"), NOW).unwrap_err()
        ));
        // A caller that knows as many replicas as it MACs for signs as well: a replica it has
        // not met checks the signature instead of sending the call back.
        for _ in 1..MAX_RESPONDERS {
            a.learn("web", KeyPair::new_server().public_key().as_str());
        }
        let (proof, both) = call("m5", b"x");
        assert_eq!(proof, Proof::Signature);
        assert!(both.get(MAC).is_some() && both.get(SIG).is_some());
        let at_c_signed =
            at_c.verify(("s", &reply), Some(&both), BodyDigest::of(b"x"), NOW).unwrap();
        assert_eq!(at_c_signed.proof, Some(Proof::Signature));
        let (_, both) = call("m6", b"x");
        assert_eq!(
            at_b.verify(("s", &reply), Some(&both), BodyDigest::of(b"x"), NOW).unwrap().proof,
            Some(Proof::PairKey)
        );
        // The MAC list cannot be moved to another signer's name.
        let mut stolen = other.clone();
        stolen.insert(HOST, c.public_key());
        let err = check(&at_b, "s", &stolen, b"x", NOW).unwrap_err();
        assert!(err.message().contains("bad MAC"), "{err}");
    }

    #[test]
    fn answers_are_taken_only_from_a_host_the_call_went_to_and_unaltered() {
        let (caller, replica) =
            (Signer::new(KeyPair::new_server(), None), Signer::new(KeyPair::new_server(), None));
        let stranger = Signer::new(KeyPair::new_server(), None);
        let body = BodyDigest::of(b"result");
        let answer = |from: &Signer, body: BodyDigest| {
            let mut h = HeaderMap::new();
            from.authenticate_answer(&mut h, caller.public_key(), "j1", body);
            h
        };
        let genuine = answer(&replica, body);
        // A signed call: any host's answer (no trusted cluster), if unaltered and for this call.
        let signed = (Proof::Signature, None);
        assert_eq!(caller.check_answer(Some(&genuine), ("j1", body), signed, 0), Ok(()));
        let other = BodyDigest::of(b"other");
        let err = caller.check_answer(Some(&genuine), ("j1", other), signed, 0);
        assert_eq!(err, Err(ForgedAnswer::BadMac));
        let err = caller.check_answer(Some(&genuine), ("j2", body), signed, 0);
        assert_eq!(err, Err(ForgedAnswer::BadMac));
        assert_eq!(caller.check_answer(None, ("j1", body), signed, 0), Err(ForgedAnswer::Missing));
        // A MAC'd call: only from a host it was MAC'd for.
        caller.learn("web", replica.public_key());
        let digest = [7u8; 32];
        let macs = caller.pair_keys().unwrap().macs("web", &digest).unwrap().list;
        let maced = (Proof::PairKey, Some(macs.as_str()));
        assert_eq!(caller.check_answer(Some(&genuine), ("j1", body), maced, 0), Ok(()));
        let theirs = answer(&stranger, body);
        let err = caller.check_answer(Some(&theirs), ("j1", body), maced, 0);
        assert_eq!(err, Err(ForgedAnswer::Stranger));
        assert_eq!(caller.forged_answers(), 4);
        // With a trusted cluster, a signed call's answer must carry the answerer's identity.
        let strict = Signer::new(KeyPair::new_server(), None)
            .with_trusted_clusters(vec![KeyPair::new_cluster().public_key()]);
        let mut h = HeaderMap::new();
        replica.authenticate_answer(&mut h, strict.public_key(), "j1", body);
        let err = strict.check_answer(Some(&h), ("j1", body), signed, NOW / 1000);
        assert_eq!(err, Err(ForgedAnswer::Stranger));
    }

    #[test]
    fn refusals_are_authenticated_and_any_replica_may_refuse_without_running() {
        let caller = Signer::new(KeyPair::new_server(), None);
        let (met, new) =
            (Signer::new(KeyPair::new_server(), None), Signer::new(KeyPair::new_server(), None));
        caller.learn("web", met.public_key());
        let macs = caller.pair_keys().unwrap().macs("web", &[7u8; 32]).unwrap().list;
        let maced = (Proof::PairKey, Some(macs.as_str()));
        let refusal = |by: &Signer, kind: &str, message: &[u8], mark: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(crate::envelope::header::ERROR, kind);
            if let Some(mark) = mark {
                h.insert(mark, "1");
            }
            let body = answer_body(Some(&h), message, None);
            by.authenticate_answer(&mut h, caller.public_key(), "j1", body);
            (h, body)
        };
        // A refusal's MAC covers its kind and message.
        let (h, body) = refusal(&met, "denied", b"no", None);
        assert_eq!(caller.check_answer(Some(&h), ("j1", body), maced, 0), Ok(()));
        let mut relabelled = h.clone();
        relabelled.insert(crate::envelope::header::ERROR, "timeout");
        let body2 = answer_body(Some(&relabelled), b"no", None);
        let err = caller.check_answer(Some(&relabelled), ("j1", body2), maced, 0);
        assert_eq!(err, Err(ForgedAnswer::BadMac));
        // A replica the call was not MAC'd for may refuse it without running it (ask for the
        // signature, be overloaded or be leaving), and only that.
        let (h, body) = refusal(&new, "denied", KEY_NEEDED_MESSAGE.as_bytes(), Some(KEY_NEEDED));
        assert_eq!(caller.check_answer(Some(&h), ("j1", body), maced, 0), Ok(()));
        for mark in [crate::envelope::header::LEAVING, crate::envelope::header::SHED] {
            let (h, body) = refusal(&new, "unavailable", b"not run", Some(mark));
            assert_eq!(caller.check_answer(Some(&h), ("j1", body), maced, 0), Ok(()), "{mark}");
        }
        let (h, body) = refusal(&new, "denied", b"no", None);
        let err = caller.check_answer(Some(&h), ("j1", body), maced, 0);
        assert_eq!(err, Err(ForgedAnswer::Stranger));
    }

    #[test]
    fn a_host_may_answer_its_own_call() {
        let host = Signer::new(KeyPair::new_server(), None);
        let body = BodyDigest::of(b"ok");
        let mut h = HeaderMap::new();
        host.authenticate_answer(&mut h, host.public_key(), "j1", body);
        assert_eq!(host.check_answer(Some(&h), ("j1", body), (Proof::Signature, None), 0), Ok(()));
    }

    #[test]
    fn an_inbox_names_its_host() {
        let host = KeyPair::new_server().public_key();
        assert_eq!(inbox_owner(&format!("{}.a.1", inbox_prefix(&host))), Some(&*host));
        for reply in [inbox_prefix(&host), format!("{}.", inbox_prefix(&host))] {
            assert_eq!(inbox_owner(&reply), None, "{reply}");
        }
        assert_eq!(inbox_owner("_INBOX.abc.1"), None);
        assert_eq!(inbox_owner(&format!("_OTHER.{host}.1")), None);
    }

    #[test]
    fn answers_go_only_to_the_signing_hosts_inbox() {
        let host = Signer::new(KeyPair::new_server(), None);
        let v = Verifier::new(vec![], false, 60_000);
        let h = signed_headers(&host, "s", b"", NOW + 1000, "r1");
        let own = inbox_prefix(host.public_key());
        let elsewhere = ["_INBOX.attacker.1", "_INBOX.mux.1", &own, &format!("{own}."), "x"];
        for reply in elsewhere {
            let err = v.verify(("s", reply), Some(&h), BodyDigest::of(b""), NOW).unwrap_err();
            assert!(err.message().contains("reply subject"), "{reply}: {err}");
        }
        let other = inbox_prefix(&KeyPair::new_server().public_key());
        assert!(
            v.verify(("s", &format!("{other}.m.1")), Some(&h), BodyDigest::of(b""), NOW).is_err()
        );
        assert!(v.verify(("s", &format!("{own}.m.1")), Some(&h), BodyDigest::of(b""), NOW).is_ok());
    }

    #[test]
    fn cluster_identity_is_required_when_configured() {
        let cluster = KeyPair::new_cluster();
        let key = KeyPair::new_server();
        let identity = issue_identity(&cluster, &key.public_key(), NOW / 1000).unwrap();
        let vouched = Signer::new(key, Some(identity));
        let stranger = Signer::new(KeyPair::new_server(), None);
        let other_cluster = KeyPair::new_cluster();
        let k2 = KeyPair::new_server();
        let id2 = issue_identity(&other_cluster, &k2.public_key(), NOW / 1000).unwrap();
        let foreign = Signer::new(k2, Some(id2));

        let v = Verifier::new(vec![cluster.public_key()], false, 60_000);
        let ok = signed_headers(&vouched, "s", b"", NOW + 1000, "a");
        assert!(check(&v, "s", &ok, b"", NOW).is_ok());
        let none = signed_headers(&stranger, "s", b"", NOW + 1000, "b");
        assert!(
            check(&v, "s", &none, b"", NOW).unwrap_err().message().contains("no cluster identity")
        );
        let bad = signed_headers(&foreign, "s", b"", NOW + 1000, "c");
        assert!(
            check(&v, "s", &bad, b"", NOW).unwrap_err().message().contains("untrusted cluster")
        );
    }

    #[test]
    fn identities_expire_and_a_fresh_one_is_accepted() {
        let cluster = KeyPair::new_cluster();
        let key = KeyPair::new_server();
        let public = key.public_key();
        let stale = issue_identity(&cluster, &public, NOW / 1000 - IDENTITY_TTL_S - 120).unwrap();
        let host = Signer::new(key, Some(stale));
        let v = Verifier::new(vec![cluster.public_key()], false, 60_000);
        let old = signed_headers(&host, "s", b"", NOW + 1000, "x1");
        let err = check(&v, "s", &old, b"", NOW).unwrap_err();
        assert!(err.message().contains("expired"), "{err}");
        host.set_identity(issue_identity(&cluster, &public, NOW / 1000).unwrap());
        let fresh = signed_headers(&host, "s", b"", NOW + 1000, "x2");
        assert!(check(&v, "s", &fresh, b"", NOW).is_ok());
        // Cached until it expires; then the identity is checked again.
        let later = NOW + (IDENTITY_TTL_S + 3600) * 1000;
        let late = signed_headers(&host, "s", b"", later + 1000, "x3");
        assert!(check(&v, "s", &late, b"", later).unwrap_err().message().contains("expired"));
    }
}

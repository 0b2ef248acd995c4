//! Operators: who may change a lattice. A request that changes something (start or stop a
//! component or provider, and what else [`Role::Deployer`] or [`Role::Admin`] guards) carries
//! an operator's Ed25519 signature over its subject, a unique id, a deadline and the body's
//! SHA-256; a host checks it against the operators it trusts, each with a role, before acting.
//! Plain data in, a verdict out: the caller supplies `now`.

use std::fmt;
use std::str::FromStr;

use async_nats::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::{KeyPair, KeyPairType};
use sha2::{Digest, Sha256};

use super::replay::{Refused, Replay};
use super::{MAX_JTI, SIG};
use crate::envelope::header;

/// Header: the signing operator's public key.
pub const OPERATOR: &str = "trellis-operator";

/// Domain separation: a control signature is never mistaken for any other.
const TAG: &[u8] = b"trellis-control/1";

/// What an operator may do. Ordered: each role may do what the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Applications, components, providers, links and config.
    Deployer,
    /// Everything, hosts included.
    Admin,
}

impl Role {
    /// The role's name, as flags and manifests spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key or role that cannot be used as an operator's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOperator(String);

impl FromStr for Role {
    type Err = InvalidOperator;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            other => Err(InvalidOperator(format!(
                "unknown operator role `{other}`; use admin, deployer or viewer"
            ))),
        }
    }
}

/// An operator a host takes requests from: `KEY` (an admin) or `KEY:role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedOperator {
    /// Public key (`O...`).
    pub key: String,
    /// What it may do.
    pub role: Role,
}

impl fmt::Display for TrustedOperator {
    /// `KEY:role`, as [`FromStr`] reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key, self.role)
    }
}

impl FromStr for TrustedOperator {
    type Err = InvalidOperator;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, role) = match s.split_once(':') {
            Some((key, role)) => (key, role.parse()?),
            None => (s, Role::Admin),
        };
        let is_operator = KeyPair::from_public_key(key)
            .is_ok_and(|k| matches!(k.key_pair_type(), KeyPairType::Operator));
        if !is_operator {
            return Err(InvalidOperator(format!(
                "`{key}` is not an operator public key (it starts with O; make one with \
                 `trellis keys gen operator`)"
            )));
        }
        Ok(TrustedOperator { key: key.to_owned(), role })
    }
}

/// Trusted operators with their verifying keys decoded once (decoding a key costs about as
/// much as a verification).
#[derive(Debug)]
pub(crate) struct Operators(Vec<(TrustedOperator, KeyPair)>);

impl Operators {
    pub fn new(operators: Vec<TrustedOperator>) -> Self {
        // Keys were checked when parsed; one that still does not decode is trusted by nobody.
        Self(
            operators
                .into_iter()
                .filter_map(|o| KeyPair::from_public_key(&o.key).ok().map(|k| (o, k)))
                .collect(),
        )
    }

    /// The trusted operator with public key `key`, and its verifying key.
    pub fn find(&self, key: &str) -> Option<&(TrustedOperator, KeyPair)> {
        self.0.iter().find(|(o, _)| o.key == key)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn list(&self) -> impl Iterator<Item = &TrustedOperator> {
        self.0.iter().map(|(o, _)| o)
    }
}

/// An operator's signing key.
pub struct OperatorKey {
    key: KeyPair,
    public: String,
}

impl fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorKey").field("public", &self.public).finish_non_exhaustive()
    }
}

impl OperatorKey {
    /// The key of an operator seed (`SO...`, as `trellis keys gen operator` writes it).
    pub fn from_seed(seed: &str) -> Result<Self, InvalidOperator> {
        let key = KeyPair::from_seed(seed.trim())
            .ok()
            .filter(|k| matches!(k.key_pair_type(), KeyPairType::Operator))
            .ok_or_else(|| {
                InvalidOperator(
                    "not an operator seed (it starts with SO; make one with `trellis keys gen \
                     operator`)"
                        .into(),
                )
            })?;
        Ok(Self { public: key.public_key(), key })
    }

    /// A fresh key (tests, `trellis up`).
    pub fn generate() -> Self {
        let key = KeyPair::new_operator();
        Self { public: key.public_key(), key }
    }

    /// The seed, to write to a file.
    pub fn seed(&self) -> String {
        // An in-memory key made from a seed or generated always has its seed.
        self.key.seed().unwrap_or_default()
    }

    /// The public key hosts trust (`--trusted-operator`).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The base64url signature of `digest` (a record's, see [`crate::record`]).
    pub(crate) fn sign_bytes(&self, digest: &[u8; 32]) -> String {
        // Signing with an in-memory Ed25519 key cannot fail; an empty signature is refused.
        URL_SAFE_NO_PAD.encode(self.key.sign(digest).unwrap_or_default())
    }

    /// The headers that sign a request on `subject` with `body`, valid until `deadline_ms`.
    pub fn sign(&self, subject: &str, body: &[u8], deadline_ms: u64) -> HeaderMap {
        let jti = nuid::next().to_string();
        let sig = self.sign_bytes(&digest(subject, &jti, deadline_ms, body));
        let mut headers = HeaderMap::new();
        headers.insert(OPERATOR, self.public.as_str());
        headers.insert(header::JTI, jti.as_str());
        headers.insert(header::DEADLINE, deadline_ms.to_string().as_str());
        headers.insert(SIG, sig.as_str());
        headers
    }
}

fn digest(subject: &str, jti: &str, deadline_ms: u64, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(TAG);
    // Length-prefixed, so no two requests hash alike by moving bytes between fields.
    for part in [subject, jti] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(deadline_ms.to_be_bytes());
    h.update(Sha256::digest(body));
    h.finalize().into()
}

/// Why a request was refused. Each message says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestDenied {
    /// Not in development mode and no operator is trusted: every change is refused.
    #[error(
        "this host trusts no operator, so it refuses every change: start it with \
         --trusted-operator <public key> (make a key with `trellis keys gen operator`), or with \
         --allow-unsigned for local development"
    )]
    NoOperators,
    /// The request carries no operator signature.
    #[error(
        "unsigned request: this host takes changes only from its operators; sign with \
         --operator-key <seed file> (TRELLIS_OPERATOR_KEY)"
    )]
    Unsigned,
    /// Signed by a key the host does not trust.
    #[error("operator {key} is not trusted by this host (see its --trusted-operator)")]
    Untrusted {
        /// The signer's public key.
        key: String,
    },
    /// A field is missing or malformed.
    #[error("malformed signed request: {0}")]
    Malformed(&'static str),
    /// Its deadline passed.
    #[error("request expired {ms} ms ago (or the clocks differ that much)")]
    Expired {
        /// How long ago.
        ms: u64,
    },
    /// Its deadline lies further out than any request may be valid.
    #[error("request deadline is too far in the future (or the clocks differ that much)")]
    TooFarAhead,
    /// The signature does not verify.
    #[error("bad signature: the request or its body was altered, or not signed by {key}")]
    BadSignature {
        /// The claimed signer.
        key: String,
    },
    /// The operator's role does not allow it.
    #[error("operator {key} has role {role}; this request needs {need}")]
    OutOfRole {
        /// The signer.
        key: String,
        /// Its role.
        role: Role,
        /// The role the request needs.
        need: Role,
    },
    /// Its id was used before.
    #[error("replayed request: this id was already used")]
    Replayed,
    /// Too many requests within the replay window.
    #[error("too many requests in the replay window; try again shortly")]
    Busy,
    /// The request may be taken only from a trusted operator, even on a development host (it
    /// reads a secret).
    #[error(
        "this request reads a secret, so it must be signed by an operator this host trusts as \
         admin, even on a development host: sign with --operator-key <seed file> \
         (TRELLIS_OPERATOR_KEY) and trust its key with --trusted-operator <key>"
    )]
    SignatureRequired,
}

/// Who a request was accepted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorized {
    /// A trusted operator, by public key.
    Operator(String),
    /// Nobody: an unsigned (or not trusted) request on a development host.
    Unsigned,
}

/// How a host checks requests that change it.
#[derive(Debug)]
pub struct ControlVerifier {
    operators: Operators,
    allow_unsigned: bool,
    max_window_ms: u64,
    seen: Replay,
}

impl ControlVerifier {
    /// Requests may be valid at most this long ahead.
    pub const MAX_WINDOW_MS: u64 = 10 * 60 * 1000;

    /// A verifier trusting `operators`; `allow_unsigned` (development) also accepts requests
    /// nobody trusted signed.
    pub fn new(operators: Vec<TrustedOperator>, allow_unsigned: bool) -> Self {
        Self {
            operators: Operators::new(operators),
            allow_unsigned,
            max_window_ms: Self::MAX_WINDOW_MS,
            seen: Replay::default(),
        }
    }

    /// Whether it refuses every change (no operator trusted, not in development mode).
    pub fn refuses_all(&self) -> bool {
        self.operators.is_empty() && !self.allow_unsigned
    }

    /// The operators it trusts.
    pub fn operators(&self) -> impl Iterator<Item = &TrustedOperator> {
        self.operators.list()
    }

    /// Checks a request on `subject` with `headers` and `body` that needs role `need`.
    pub fn check(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        body: &[u8],
        need: Role,
        now_ms: u64,
    ) -> Result<Authorized, RequestDenied> {
        let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let Some(key) = get(OPERATOR) else {
            return match (self.allow_unsigned, self.operators.is_empty()) {
                (true, _) => Ok(Authorized::Unsigned),
                (false, true) => Err(RequestDenied::NoOperators),
                (false, false) => Err(RequestDenied::Unsigned),
            };
        };
        let Some((trusted, verifying)) = self.operators.find(key) else {
            return match (self.allow_unsigned, self.operators.is_empty()) {
                (true, _) => Ok(Authorized::Unsigned),
                (false, true) => Err(RequestDenied::NoOperators),
                (false, false) => Err(RequestDenied::Untrusted { key: key.to_owned() }),
            };
        };
        let deadline_ms: u64 = get(header::DEADLINE)
            .and_then(|d| d.parse().ok())
            .ok_or(RequestDenied::Malformed("no valid `trellis-deadline`"))?;
        if deadline_ms <= now_ms {
            return Err(RequestDenied::Expired { ms: now_ms - deadline_ms });
        }
        if deadline_ms > now_ms.saturating_add(self.max_window_ms) {
            return Err(RequestDenied::TooFarAhead);
        }
        let jti = get(header::JTI).ok_or(RequestDenied::Malformed("no `trellis-jti`"))?;
        if jti.len() > MAX_JTI {
            return Err(RequestDenied::Malformed("the id is too long"));
        }
        let sig = get(SIG)
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .ok_or(RequestDenied::Malformed("no base64url `trellis-sig`"))?;
        let bad = || RequestDenied::BadSignature { key: key.to_owned() };
        verifying.verify(&digest(subject, jti, deadline_ms, body), &sig).map_err(|_| bad())?;
        if trusted.role < need {
            return Err(RequestDenied::OutOfRole { key: key.to_owned(), role: trusted.role, need });
        }
        // Only a request that authenticated takes a place in the replay cache.
        self.seen.take(key, jti, deadline_ms, now_ms).map_err(|refused| match refused {
            Refused::Replayed => RequestDenied::Replayed,
            Refused::Full => RequestDenied::Busy,
        })?;
        Ok(Authorized::Operator(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn trust(key: &OperatorKey, role: Role) -> TrustedOperator {
        TrustedOperator { key: key.public_key().to_owned(), role }
    }

    #[test]
    fn a_trusted_operator_in_role_passes_and_every_attack_is_denied() {
        let (admin, deployer, stranger) =
            (OperatorKey::generate(), OperatorKey::generate(), OperatorKey::generate());
        let v = ControlVerifier::new(
            vec![trust(&admin, Role::Admin), trust(&deployer, Role::Viewer)],
            false,
        );
        let check = |h: &HeaderMap, subject: &str, body: &[u8], need| {
            v.check(subject, Some(h), body, need, NOW)
        };
        let h = admin.sign("s", b"stop", NOW + 1000);
        assert_eq!(
            check(&h, "s", b"stop", Role::Deployer),
            Ok(Authorized::Operator(admin.public_key().to_owned()))
        );
        assert_eq!(check(&h, "s", b"stop", Role::Deployer), Err(RequestDenied::Replayed));

        let bad = RequestDenied::BadSignature { key: admin.public_key().to_owned() };
        let h = admin.sign("s", b"stop", NOW + 1000);
        assert_eq!(check(&h, "s", b"start", Role::Deployer), Err(bad.clone()));
        assert_eq!(check(&h, "other", b"stop", Role::Deployer), Err(bad.clone()));
        // A signature moved under a trusted name does not verify.
        let mut moved = stranger.sign("s", b"stop", NOW + 1000);
        moved.insert(OPERATOR, admin.public_key());
        assert_eq!(check(&moved, "s", b"stop", Role::Deployer), Err(bad));
        // A tampered deadline breaks the signature too.
        let mut later = admin.sign("s", b"stop", NOW + 1000);
        later.insert(header::DEADLINE, (NOW + 2000).to_string().as_str());
        assert!(matches!(
            check(&later, "s", b"stop", Role::Deployer),
            Err(RequestDenied::BadSignature { .. })
        ));

        let h = stranger.sign("s", b"", NOW + 1000);
        assert_eq!(
            check(&h, "s", b"", Role::Viewer),
            Err(RequestDenied::Untrusted { key: stranger.public_key().to_owned() })
        );
        let h = admin.sign("s", b"", NOW - 5);
        assert_eq!(check(&h, "s", b"", Role::Viewer), Err(RequestDenied::Expired { ms: 5 }));
        let h = admin.sign("s", b"", NOW + ControlVerifier::MAX_WINDOW_MS + 1);
        assert_eq!(check(&h, "s", b"", Role::Viewer), Err(RequestDenied::TooFarAhead));
        let h = deployer.sign("s", b"", NOW + 1000);
        assert_eq!(
            check(&h, "s", b"", Role::Deployer),
            Err(RequestDenied::OutOfRole {
                key: deployer.public_key().to_owned(),
                role: Role::Viewer,
                need: Role::Deployer
            })
        );
        assert_eq!(v.check("s", None, b"", Role::Viewer, NOW), Err(RequestDenied::Unsigned));
    }

    #[test]
    fn a_request_refused_for_its_role_can_still_be_sent_by_the_right_operator() {
        // Role is checked before the id is remembered: a refused request takes no place.
        let key = OperatorKey::generate();
        let viewer = ControlVerifier::new(vec![trust(&key, Role::Viewer)], false);
        let admin = ControlVerifier::new(vec![trust(&key, Role::Admin)], false);
        let h = key.sign("s", b"", NOW + 1000);
        assert!(viewer.check("s", Some(&h), b"", Role::Admin, NOW).is_err());
        assert!(admin.check("s", Some(&h), b"", Role::Admin, NOW).is_ok());
    }

    #[test]
    fn secure_by_default_and_open_in_development() {
        let key = OperatorKey::generate();
        let nobody = ControlVerifier::new(vec![], false);
        assert!(nobody.refuses_all());
        let h = key.sign("s", b"", NOW + 1000);
        assert_eq!(
            nobody.check("s", None, b"", Role::Viewer, NOW),
            Err(RequestDenied::NoOperators)
        );
        assert_eq!(
            nobody.check("s", Some(&h), b"", Role::Viewer, NOW),
            Err(RequestDenied::NoOperators)
        );
        let dev = ControlVerifier::new(vec![], true);
        assert!(!dev.refuses_all());
        assert_eq!(dev.check("s", None, b"", Role::Admin, NOW), Ok(Authorized::Unsigned));
        assert_eq!(dev.check("s", Some(&h), b"", Role::Admin, NOW), Ok(Authorized::Unsigned));
        // A development host that trusts an operator still checks what that operator signs.
        let dev = ControlVerifier::new(vec![trust(&key, Role::Viewer)], true);
        assert!(dev.check("s", Some(&h), b"x", Role::Viewer, NOW).is_err());
    }

    #[test]
    fn trusted_operators_parse_with_an_optional_role() {
        let key = OperatorKey::generate();
        let k = key.public_key();
        assert_eq!(k.parse(), Ok(TrustedOperator { key: k.to_owned(), role: Role::Admin }));
        assert_eq!(
            format!("{k}:deployer").parse(),
            Ok(TrustedOperator { key: k.to_owned(), role: Role::Deployer })
        );
        let err = format!("{k}:root").parse::<TrustedOperator>().unwrap_err();
        assert!(err.to_string().contains("admin, deployer or viewer"), "{err}");
        let host = KeyPair::new_server().public_key();
        let err = host.parse::<TrustedOperator>().unwrap_err();
        assert!(err.to_string().contains("not an operator public key"), "{err}");
        assert!(OperatorKey::from_seed(&KeyPair::new_server().seed().unwrap()).is_err());
        assert_eq!(OperatorKey::from_seed(&key.seed()).unwrap().public_key(), k);
    }
}

//! Signed component claims: who vouches for a component, which exact bytes, until when, and
//! which capabilities it may import.
//!
//! A claims token is a JWT signed with an account nkey (Ed25519) and embedded in the component
//! as the custom section [`section::SECTION_NAME`]. It covers the SHA-256 of the component
//! without that section, so any other change to the bytes breaks it; the hash is checked every
//! time, whatever the token says.
//!
//! `trellis claims sign` writes them and a host checks them before it starts a component; no
//! provider does either, so they live outside the wire contract (`trellis-lattice`), which does
//! not have to read or write wasm binaries (see `docs/design/crates.md`).
//!
//! ```
//! use std::time::Duration;
//! use trellis_claims::{self as claims, ClaimsInput};
//!
//! let account = nkeys::KeyPair::new_account();
//! let wasm = b"\0asm\x0d\0\x01\0".to_vec(); // an empty component
//! let input = ClaimsInput {
//!     name: "hello".into(),
//!     rev: 1,
//!     allow: vec![],
//!     valid_for: None,
//!     no_reuse: false,
//!     callers: vec![],
//! };
//! let signed = claims::sign(&wasm, &account, &input, 1_700_000_000).unwrap();
//! let verified = claims::verify(&signed, &[account.public_key()], 1_700_000_100).unwrap();
//! assert_eq!(verified.claims.name, "hello");
//! ```

pub mod section;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};

use trellis_lattice::state::digest_of;

/// Seconds of clock skew tolerated on `nbf`/`exp`.
pub const LEEWAY_S: u64 = 60;

/// Largest token accepted (a token is a few hundred bytes).
const MAX_TOKEN: usize = 64 << 10;

/// Interfaces every component may import without claiming them: they reach nothing outside the
/// instance (no preopened directories, no network, no environment are given).
const BASELINE: &[&str] = &[
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:http/types",
];

/// Why claims are missing or do not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// The component carries no claims.
    #[error(
        "the component is not signed (no `trellis-claims` section); sign it with `trellis claims \
         sign`, or run the host with --allow-unsigned for local development"
    )]
    Unsigned,
    /// More than one claims section.
    #[error("the component carries {0} claims sections; re-sign it so it has one")]
    Multiple(usize),
    /// The binary or the token cannot be read.
    #[error("malformed claims: {0}")]
    Malformed(String),
    /// The signature does not verify against the issuer key in the token.
    #[error("the claims signature does not verify against issuer {issuer}")]
    BadSignature {
        /// Issuer named in the token.
        issuer: String,
    },
    /// The issuer is not one the host trusts.
    #[error("claims issuer {issuer} is not trusted here; add it with --trusted-issuer")]
    UntrustedIssuer {
        /// Issuer named in the token.
        issuer: String,
    },
    /// The component bytes changed after signing.
    #[error(
        "the component was modified after signing: it hashes to {actual}, the claims cover {signed}"
    )]
    HashMismatch {
        /// Hash in the token.
        signed: String,
        /// Hash of the bytes.
        actual: String,
    },
    /// Past `exp`.
    #[error("the claims expired at unix time {exp} (now {now}); re-sign the component")]
    Expired {
        /// Expiry.
        exp: u64,
        /// Verification time.
        now: u64,
    },
    /// Before `nbf`.
    #[error("the claims are not valid before unix time {nbf} (now {now}); check the clocks")]
    NotYetValid {
        /// Start of validity.
        nbf: u64,
        /// Verification time.
        now: u64,
    },
    /// An import the claims do not allow.
    #[error(
        "the component imports {interface}, which its claims do not allow; re-sign it with --allow {interface}"
    )]
    NotAllowed {
        /// The interface, without version.
        interface: String,
    },
}

/// What the issuer vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentClaims {
    /// Human name.
    pub name: String,
    /// Revision, increasing.
    pub rev: u32,
    /// `sha256:<hex>` of the component without its claims section.
    pub hash: String,
    /// Interfaces (`ns:pkg/iface` or `ns:pkg/*`) it may import beyond the baseline.
    pub allow: Vec<String>,
    /// Whether the issuer forbids keeping its instances warm between calls (every call then
    /// gets a fresh instance, whatever the operator asks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_reuse: bool,
    /// The names (in their own claims) of the components that may call this one; empty: any.
    /// Calls from providers and operators are not components' and are not limited by it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<String>,
}

impl ComponentClaims {
    /// Whether the component named `caller` in its claims (empty: unsigned) may call this one.
    pub fn admits_caller(&self, caller: &str) -> bool {
        self.callers.is_empty() || self.callers.iter().any(|n| n == caller)
    }
}

/// The signed payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Unique id.
    pub jti: String,
    /// Account public key that signed.
    pub iss: String,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Not before (unix seconds).
    pub nbf: u64,
    /// Expires (unix seconds), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// The claims.
    pub trellis: ComponentClaims,
}

/// What `trellis claims sign` takes.
#[derive(Debug, Clone)]
pub struct ClaimsInput {
    /// Component name.
    pub name: String,
    /// Revision.
    pub rev: u32,
    /// Capabilities beyond the baseline.
    pub allow: Vec<String>,
    /// Validity from now; `None` never expires.
    pub valid_for: Option<std::time::Duration>,
    /// Forbid warm instances (see [`ComponentClaims::no_reuse`]).
    pub no_reuse: bool,
    /// Components that may call it (see [`ComponentClaims::callers`]).
    pub callers: Vec<String>,
}

/// Claims that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The issuer (trusted).
    pub issuer: String,
    /// The claims.
    pub claims: ComponentClaims,
    /// The whole token.
    pub token: Token,
}

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Signs `wasm` (replacing earlier claims) with the account key `issuer` at unix time `now`.
pub fn sign(
    wasm: &[u8],
    issuer: &KeyPair,
    input: &ClaimsInput,
    now: u64,
) -> Result<Vec<u8>, ClaimsError> {
    let split = section::split(wasm).map_err(|e| ClaimsError::Malformed(e.to_string()))?;
    let token = Token {
        jti: nuid::next().to_string(),
        iss: issuer.public_key(),
        iat: now,
        nbf: now,
        exp: input.valid_for.map(|d| now.saturating_add(d.as_secs())),
        trellis: ComponentClaims {
            name: input.name.clone(),
            rev: input.rev,
            hash: digest_of(&split.stripped),
            allow: input.allow.clone(),
            no_reuse: input.no_reuse,
            callers: input.callers.clone(),
        },
    };
    let payload = serde_json::to_vec(&token).map_err(|e| ClaimsError::Malformed(e.to_string()))?;
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(payload));
    let signature = issuer
        .sign(signing_input.as_bytes())
        .map_err(|e| ClaimsError::Malformed(format!("cannot sign with this key: {e}")))?;
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    Ok(section::append(&split.stripped, jwt.as_bytes()))
}

/// Reads the token of `wasm` and checks its signature and hash, without deciding trust or time.
pub fn inspect(wasm: &[u8]) -> Result<Token, ClaimsError> {
    let split = section::split(wasm).map_err(|e| ClaimsError::Malformed(e.to_string()))?;
    let jwt = match split.tokens.as_slice() {
        [] => return Err(ClaimsError::Unsigned),
        [one] => one,
        many => return Err(ClaimsError::Multiple(many.len())),
    };
    let token = decode_jwt(jwt)?;
    let actual = digest_of(&split.stripped);
    if actual != token.trellis.hash {
        return Err(ClaimsError::HashMismatch { signed: token.trellis.hash, actual });
    }
    Ok(token)
}

/// Verifies `wasm`'s claims: signature, issuer in `trusted`, hash, and validity at `now`.
pub fn verify(wasm: &[u8], trusted: &[String], now: u64) -> Result<Verified, ClaimsError> {
    let token = inspect(wasm)?;
    if !trusted.contains(&token.iss) {
        return Err(ClaimsError::UntrustedIssuer { issuer: token.iss });
    }
    if token.nbf > now.saturating_add(LEEWAY_S) {
        return Err(ClaimsError::NotYetValid { nbf: token.nbf, now });
    }
    if let Some(exp) = token.exp.filter(|&exp| exp.saturating_add(LEEWAY_S) < now) {
        return Err(ClaimsError::Expired { exp, now });
    }
    Ok(Verified { issuer: token.iss.clone(), claims: token.trellis.clone(), token })
}

/// The interface a claim names for `interface`: WASI 0.3's HTTP client is the capability WASI
/// 0.2 calls `outgoing-handler`, so one claim allows both generations.
fn claimed_as(interface: &str) -> &str {
    match interface {
        "wasi:http/client" => "wasi:http/outgoing-handler",
        other => other,
    }
}

/// Checks that every import (`ns:pkg/iface@version`) is in the baseline or allowed by `claims`.
pub fn check_imports<'a>(
    claims: &ComponentClaims,
    imports: impl IntoIterator<Item = &'a str>,
) -> Result<(), ClaimsError> {
    for import in imports {
        let interface = import.split_once('@').map_or(import, |(name, _)| name);
        let baseline = BASELINE.iter().any(|b| interface.starts_with(b) || interface == *b);
        let allowed = claims.allow.iter().any(|a| {
            [interface, claimed_as(interface)].into_iter().any(|i| match a.strip_suffix('*') {
                Some(prefix) => i.starts_with(prefix),
                None => i == a,
            })
        });
        if !(baseline || allowed) {
            return Err(ClaimsError::NotAllowed { interface: interface.to_owned() });
        }
    }
    Ok(())
}

fn decode_jwt(jwt: &[u8]) -> Result<Token, ClaimsError> {
    let bad = |what: &str| ClaimsError::Malformed(what.to_owned());
    if jwt.len() > MAX_TOKEN {
        return Err(bad("claims token is larger than 64 KiB"));
    }
    let jwt = std::str::from_utf8(jwt).map_err(|_| bad("claims token is not UTF-8"))?;
    let mut parts = jwt.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("claims token is not a three-part JWT"));
    };
    let header_json =
        URL_SAFE_NO_PAD.decode(header).map_err(|_| bad("JWT header is not base64url"))?;
    let header_value: serde_json::Value =
        serde_json::from_slice(&header_json).map_err(|_| bad("JWT header is not JSON"))?;
    if header_value.get("alg").and_then(|a| a.as_str()) != Some("ed25519-nkey") {
        return Err(bad("JWT algorithm is not ed25519-nkey"));
    }
    let payload_json =
        URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad("JWT payload is not base64url"))?;
    let token: Token = serde_json::from_slice(&payload_json)
        .map_err(|e| ClaimsError::Malformed(format!("JWT payload: {e}")))?;
    let signature =
        URL_SAFE_NO_PAD.decode(signature).map_err(|_| bad("JWT signature is not base64url"))?;
    let issuer = KeyPair::from_public_key(&token.iss)
        .ok()
        .filter(|k| matches!(k.key_pair_type(), nkeys::KeyPairType::Account))
        .ok_or_else(|| {
            ClaimsError::Malformed(format!("issuer `{}` is not an account public key", token.iss))
        })?;
    let signing_input = &jwt[..header.len() + 1 + payload.len()];
    issuer
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| ClaimsError::BadSignature { issuer: token.iss.clone() })?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";
    const NOW: u64 = 1_800_000_000;

    fn input(allow: &[&str], valid_for: Option<u64>) -> ClaimsInput {
        ClaimsInput {
            name: "hello".into(),
            rev: 3,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            valid_for: valid_for.map(std::time::Duration::from_secs),
            no_reuse: false,
            callers: vec![],
        }
    }

    #[test]
    fn signed_components_verify_and_tampering_is_caught() {
        let account = KeyPair::new_account();
        let trusted = [account.public_key()];
        let mut wasm = EMPTY.to_vec();
        wasm.extend_from_slice(&[1, 1, 0]); // a tiny (invalid but well-framed) section
        let signed = sign(&wasm, &account, &input(&[], None), NOW).unwrap();
        let v = verify(&signed, &trusted, NOW).unwrap();
        assert_eq!((v.claims.name.as_str(), v.claims.rev), ("hello", 3));

        let mut tampered = signed.clone();
        tampered[10] ^= 1;
        assert!(matches!(verify(&tampered, &trusted, NOW), Err(ClaimsError::HashMismatch { .. })));

        assert_eq!(verify(&wasm, &trusted, NOW), Err(ClaimsError::Unsigned));
        let other = KeyPair::new_account();
        assert!(matches!(
            verify(&signed, &[other.public_key()], NOW),
            Err(ClaimsError::UntrustedIssuer { .. })
        ));
        // Re-signing replaces the old claims instead of stacking them.
        let resigned = sign(&signed, &account, &input(&[], None), NOW).unwrap();
        assert!(verify(&resigned, &trusted, NOW).is_ok());
    }

    #[test]
    fn validity_window_has_leeway() {
        let account = KeyPair::new_account();
        let trusted = [account.public_key()];
        let signed = sign(EMPTY, &account, &input(&[], Some(3600)), NOW).unwrap();
        assert!(verify(&signed, &trusted, NOW + 3600 + LEEWAY_S).is_ok());
        assert!(matches!(
            verify(&signed, &trusted, NOW + 3601 + LEEWAY_S),
            Err(ClaimsError::Expired { .. })
        ));
        assert!(verify(&signed, &trusted, NOW - LEEWAY_S).is_ok());
        assert!(matches!(
            verify(&signed, &trusted, NOW - LEEWAY_S - 1),
            Err(ClaimsError::NotYetValid { .. })
        ));
    }

    #[test]
    fn forged_signatures_fail() {
        let account = KeyPair::new_account();
        let signed = sign(EMPTY, &account, &input(&[], None), NOW).unwrap();
        let split = section::split(&signed).unwrap();
        let jwt = String::from_utf8(split.tokens[0].clone()).unwrap();
        let (head, _sig) = jwt.rsplit_once('.').unwrap();
        let forged_sig = KeyPair::new_account().sign(head.as_bytes()).unwrap();
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode(forged_sig));
        let forged = section::append(&split.stripped, forged.as_bytes());
        assert!(matches!(inspect(&forged), Err(ClaimsError::BadSignature { .. })));
        let garbage = section::append(&split.stripped, b"a.b");
        assert!(matches!(inspect(&garbage), Err(ClaimsError::Malformed(_))));
    }

    #[test]
    fn imports_need_the_baseline_or_a_claim() {
        let claims = ComponentClaims {
            name: "x".into(),
            rev: 1,
            hash: String::new(),
            allow: vec!["wasi:keyvalue/*".into(), "wasi:http/outgoing-handler".into()],
            no_reuse: false,
            callers: vec![],
        };
        let ok = [
            "wasi:io/streams@0.2.0",
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:http/outgoing-handler@0.2.3",
            "wasi:http/client@0.3.0",
            "wasi:http/types@0.2.0",
        ];
        assert!(check_imports(&claims, ok).is_ok());
        assert_eq!(
            check_imports(&claims, ["wasi:blobstore/blobstore@0.2.0-draft"]),
            Err(ClaimsError::NotAllowed { interface: "wasi:blobstore/blobstore".into() })
        );
        let without_http = ComponentClaims { allow: vec!["wasi:keyvalue/*".into()], ..claims };
        assert_eq!(
            check_imports(&without_http, ["wasi:http/client@0.3.0"]),
            Err(ClaimsError::NotAllowed { interface: "wasi:http/client".into() })
        );
    }
}

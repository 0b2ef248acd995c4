//! Seals on compiled code shared through the lattice's compile cache ([`crate::compiled`]).
//!
//! The host that compiled an artifact signs what it stores: SHA-256 over a tag, the cache key
//! (which names the artifact and the engine it was compiled for) and the code's SHA-256, with
//! its host key, and attaches its cluster identity. A host about to load the code checks the
//! seal exactly as it checks the signer of a call: a host key, vouched for by a trusted cluster
//! when the lattice sets any, and a signature that verifies. Only then does it get a
//! [`VerifiedCode`], the one thing the host's loader takes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use sha2::{Digest, Sha256};

use super::{Signer, check_identity};

/// Who signed a cache entry and how: stored beside the code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeSeal {
    /// The writing host's public key.
    pub host: String,
    /// Ed25519 signature (base64url) over SHA-256 of a tag, the cache key and the code's SHA-256.
    pub signature: String,
    /// The writing host's identity token, signed by its cluster key, when it has one.
    pub identity: Option<String>,
}

/// Compiled code whose seal verified: the only form in which the host loads cached code.
#[derive(Debug)]
pub struct VerifiedCode {
    code: Vec<u8>,
    /// The host that signed it.
    signer: String,
}

impl VerifiedCode {
    /// The code's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.code
    }

    /// The public key of the host that compiled and signed it.
    pub fn signer(&self) -> &str {
        &self.signer
    }
}

/// Why cached code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefused {
    /// The entry carries no seal, or a malformed one.
    #[error("the cache entry is not signed by a host")]
    Unsigned,
    /// The signer is not a host, or not one a trusted cluster vouches for.
    #[error("the cache entry was signed by an untrusted host {host}: {reason}")]
    UntrustedSigner {
        /// The signer's key.
        host: String,
        /// Why it is not trusted.
        reason: String,
    },
    /// The signature does not cover this key and code.
    #[error("the cache entry's signature does not verify: the code or its key was altered")]
    BadSignature,
}

/// What a seal signs: a tag, the cache key and the code's SHA-256.
fn seal_digest(key: &str, code_sha256: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"trellis-compiled/1");
    h.update((key.len() as u64).to_be_bytes());
    h.update(key.as_bytes());
    h.update(code_sha256);
    h.finalize().into()
}

impl Signer {
    /// Seals `code` stored under cache key `key`: this host's signature and identity.
    pub fn seal_code(&self, key: &str, code: &[u8]) -> CodeSeal {
        let digest = seal_digest(key, &Sha256::digest(code).into());
        // Signing with an in-memory Ed25519 key cannot fail; an empty signature is refused.
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(&digest).unwrap_or_default());
        let identity = self.identity.read().unwrap_or_else(|p| p.into_inner()).clone();
        CodeSeal { host: self.public.clone(), signature, identity: identity.map(|i| i.to_string()) }
    }
}

/// Checks that `code`, read under cache key `key`, was sealed by a host of the lattice: with
/// `trusted_clusters` set, one they vouch for now; without, any host key. Gives the code back
/// as [`VerifiedCode`] when it was.
pub fn verify_code(
    seal: &CodeSeal,
    key: &str,
    code: Vec<u8>,
    trusted_clusters: &[String],
    now_s: u64,
) -> Result<VerifiedCode, CodeRefused> {
    if seal.host.is_empty() || seal.signature.is_empty() {
        return Err(CodeRefused::Unsigned);
    }
    let untrusted =
        |reason: String| CodeRefused::UntrustedSigner { host: seal.host.clone(), reason };
    if !trusted_clusters.is_empty() {
        let identity =
            seal.identity.as_deref().ok_or_else(|| untrusted("no cluster identity".into()))?;
        check_identity(identity, &seal.host, trusted_clusters, now_s).map_err(untrusted)?;
    }
    let host = KeyPair::from_public_key(&seal.host)
        .ok()
        .filter(|k| matches!(k.key_pair_type(), nkeys::KeyPairType::Server))
        .ok_or_else(|| untrusted("not a host public key".into()))?;
    let signature = URL_SAFE_NO_PAD.decode(&seal.signature).map_err(|_| CodeRefused::Unsigned)?;
    let digest = seal_digest(key, &Sha256::digest(&code).into());
    host.verify(&digest, &signature).map_err(|_| CodeRefused::BadSignature)?;
    Ok(VerifiedCode { code, signer: seal.host.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::issue_identity;

    const NOW: u64 = 1_800_000_000;

    fn vouched(cluster: &KeyPair) -> Signer {
        let key = KeyPair::new_server();
        let identity = issue_identity(cluster, &key.public_key(), NOW).unwrap();
        Signer::new(key, Some(identity))
    }

    #[test]
    fn code_sealed_by_a_vouched_host_loads_and_every_alteration_is_refused() {
        let cluster = KeyPair::new_cluster();
        let trusted = [cluster.public_key()];
        let host = vouched(&cluster);
        let seal = host.seal_code("k1", b"code");
        let code = verify_code(&seal, "k1", b"code".to_vec(), &trusted, NOW).unwrap();
        assert_eq!((code.bytes(), code.signer()), (&b"code"[..], host.public_key()));

        let verdict = |seal: &CodeSeal, key: &str, code: &[u8]| {
            verify_code(seal, key, code.to_vec(), &trusted, NOW).unwrap_err()
        };
        assert_eq!(verdict(&seal, "k1", b"cod3"), CodeRefused::BadSignature);
        assert_eq!(verdict(&seal, "k2", b"code"), CodeRefused::BadSignature, "moved to a key");
        assert_eq!(verdict(&CodeSeal::default(), "k1", b"code"), CodeRefused::Unsigned);
        // Re-signed by a host of another cluster, or by one no cluster vouches for.
        let foreign = vouched(&KeyPair::new_cluster()).seal_code("k1", b"evil");
        assert!(matches!(verdict(&foreign, "k1", b"evil"), CodeRefused::UntrustedSigner { .. }));
        let loose = Signer::new(KeyPair::new_server(), None).seal_code("k1", b"evil");
        assert!(matches!(verdict(&loose, "k1", b"evil"), CodeRefused::UntrustedSigner { .. }));
        // Another host's key with this host's identity: the identity names the other host.
        let stolen = CodeSeal { identity: seal.identity.clone(), ..loose.clone() };
        assert!(matches!(verdict(&stolen, "k1", b"evil"), CodeRefused::UntrustedSigner { .. }));
        // An identity that expired since is refused too: the entry is compiled and sealed anew.
        let later = NOW + crate::signing::IDENTITY_TTL_S + 3600;
        let expired = verify_code(&seal, "k1", b"code".to_vec(), &trusted, later).unwrap_err();
        assert!(matches!(expired, CodeRefused::UntrustedSigner { .. }));
        // Without trusted clusters (development), any host key whose signature verifies.
        assert!(verify_code(&loose, "k1", b"evil".to_vec(), &[], NOW).is_ok());
        let operator = KeyPair::new_account().public_key();
        let not_host = CodeSeal { host: operator, ..loose };
        assert!(matches!(
            verify_code(&not_host, "k1", b"evil".to_vec(), &[], NOW).unwrap_err(),
            CodeRefused::UntrustedSigner { .. }
        ));
    }
}

//! Whether a component may start here: its claims, checked against the host's trust settings.
//! Pure decisions over bytes, claims and `now`; the host calls them on every start.

use trellis_claims::{self as claims, ClaimsError, Token};

/// The host's trust settings.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    pub issuers: Vec<String>,
    pub allow_unsigned: bool,
}

impl Trust {
    /// Checks an artifact's claims. `Ok(None)`: accepted unsigned (development mode only).
    pub fn check(&self, wasm: &[u8], now: u64) -> Result<Option<Token>, ClaimsError> {
        match claims::verify(wasm, &self.issuers, now) {
            Ok(verified) => Ok(Some(verified.token)),
            // Without claims, or vouched for by someone we do not know: fine only when asked.
            Err(ClaimsError::Unsigned | ClaimsError::UntrustedIssuer { .. })
                if self.allow_unsigned =>
            {
                Ok(None)
            }
            Err(ClaimsError::Unsigned) if self.issuers.is_empty() => Err(ClaimsError::Malformed(
                "this host trusts no issuer and refuses unsigned components: pass \
                 --trusted-issuer <account public key>, or --allow-unsigned for local development"
                    .into(),
            )),
            // Tampered, forged, expired: refused even in development mode.
            Err(e) => Err(e),
        }
    }

    /// Re-checks the validity window of claims verified earlier (a cached artifact).
    pub fn recheck(&self, token: Option<&Token>, now: u64) -> Result<(), ClaimsError> {
        let Some(token) = token else { return Ok(()) };
        if token.nbf > now.saturating_add(claims::LEEWAY_S) {
            return Err(ClaimsError::NotYetValid { nbf: token.nbf, now });
        }
        match token.exp {
            Some(exp) if exp.saturating_add(claims::LEEWAY_S) < now => {
                Err(ClaimsError::Expired { exp, now })
            }
            _ => Ok(()),
        }
    }

    /// Checks the component's imports against its claims (unsigned ones are not restricted).
    pub fn check_imports(
        &self,
        token: Option<&Token>,
        imports: &[String],
    ) -> Result<(), ClaimsError> {
        match token {
            Some(token) => {
                claims::check_imports(&token.trellis, imports.iter().map(String::as_str))
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_claims::ClaimsInput;

    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";
    const NOW: u64 = 1_800_000_000;

    fn signed(account: &nkeys::KeyPair, valid_for: Option<u64>) -> Vec<u8> {
        let input = ClaimsInput {
            name: "c".into(),
            rev: 1,
            allow: vec![],
            valid_for: valid_for.map(std::time::Duration::from_secs),
            no_reuse: false,
            callers: vec![],
        };
        claims::sign(EMPTY, account, &input, NOW).unwrap()
    }

    #[test]
    fn strict_hosts_refuse_what_development_hosts_accept() {
        let account = nkeys::KeyPair::new_account();
        let strict = Trust { issuers: vec![account.public_key()], allow_unsigned: false };
        let dev = Trust { issuers: vec![], allow_unsigned: true };
        let nobody = Trust { issuers: vec![], allow_unsigned: false };

        assert!(strict.check(&signed(&account, None), NOW).unwrap().is_some());
        assert_eq!(strict.check(EMPTY, NOW), Err(ClaimsError::Unsigned));
        assert!(nobody.check(EMPTY, NOW).unwrap_err().to_string().contains("--trusted-issuer"));
        assert_eq!(dev.check(EMPTY, NOW), Ok(None));
        assert_eq!(dev.check(&signed(&account, None), NOW), Ok(None), "untrusted issuer, dev mode");

        let mut tampered = signed(&account, None);
        tampered.insert(8, 0); // breaks the framing: malformed, refused even in dev mode
        assert!(dev.check(&tampered, NOW).is_err());
    }

    #[test]
    fn cached_claims_expire() {
        let account = nkeys::KeyPair::new_account();
        let strict = Trust { issuers: vec![account.public_key()], allow_unsigned: false };
        let token = strict.check(&signed(&account, Some(10)), NOW).unwrap();
        assert!(strict.recheck(token.as_ref(), NOW).is_ok());
        assert!(strict.recheck(token.as_ref(), NOW + 10 + claims::LEEWAY_S + 1).is_err());
        assert!(strict.recheck(None, NOW).is_ok());
    }
}

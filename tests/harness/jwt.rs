//! NATS decentralized auth made by hand, as `nsc` makes it: operator, account and user JWTs
//! (`alg: ed25519-nkey`) and `.creds` files, for tests of hosts and the CLI on such a server.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// A JWT of `claims` (with `iss`, `iat` and `jti` filled in) signed by `issuer`.
pub fn encode(issuer: &KeyPair, mut claims: Value) -> String {
    claims["iss"] = issuer.public_key().into();
    claims["iat"] = (trellis_lattice::envelope::unix_ms() / 1000).into();
    claims["jti"] = nuid::next().to_string().into();
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{body}");
    let sig = issuer.sign(input.as_bytes()).expect("sign a JWT");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The operator's self-signed JWT.
pub fn operator(operator: &KeyPair) -> String {
    let sub = operator.public_key();
    encode(
        operator,
        json!({ "sub": sub, "name": "trellis-test", "nats": { "type": "operator", "version": 2 } }),
    )
}

/// An account with JetStream and no limits, signed by `operator`; users in `revoked` (public key,
/// unix seconds) may not connect with JWTs issued before then.
pub fn account(operator: &KeyPair, account: &KeyPair, revoked: &[(String, u64)]) -> String {
    let revocations: serde_json::Map<String, Value> =
        revoked.iter().map(|(user, at)| (user.clone(), (*at).into())).collect();
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
        "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1,
        "consumer": -1
    });
    encode(
        operator,
        json!({
            "sub": account.public_key(),
            "name": "lattice",
            "nats": { "limits": unlimited, "revocations": revocations, "type": "account", "version": 2 }
        }),
    )
}

/// The system account (no JetStream: the server refuses it there), signed by `operator`.
pub fn system_account(operator: &KeyPair, account: &KeyPair) -> String {
    let limits = json!({ "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1 });
    encode(
        operator,
        json!({
            "sub": account.public_key(),
            "name": "system",
            "nats": { "limits": limits, "type": "account", "version": 2 }
        }),
    )
}

/// A user of `account` with no limits.
pub fn user(account: &KeyPair, user: &KeyPair) -> String {
    encode(
        account,
        json!({
            "sub": user.public_key(),
            "name": "user",
            "nats": { "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2 }
        }),
    )
}

/// The `.creds` file text of a user: its JWT and seed.
pub fn creds(jwt: &str, user: &KeyPair) -> String {
    let seed = user.seed().expect("a user seed");
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

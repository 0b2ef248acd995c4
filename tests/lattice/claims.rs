//! Signed claims: a strict host runs only components vouched for by an issuer it trusts, with
//! bytes, validity window and imports exactly as signed. Each attack gets a typed refusal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use trellis_claims::{self as claims, ClaimsInput};
use trellis_lattice::envelope::unix_ms;
use trellis_lattice::http::{HANDLE, HttpRequest, INCOMING_HANDLER, encode};
use trellis_tests::component;

use crate::Lattice;

fn account(dir: &Path, name: &str) -> (nkeys::KeyPair, PathBuf) {
    let pair = nkeys::KeyPair::new_account();
    let path = dir.join(format!("{name}.nk"));
    std::fs::write(&path, pair.seed().unwrap()).unwrap();
    (pair, path)
}

fn sign_at(
    wasm: &[u8],
    issuer: &nkeys::KeyPair,
    allow: &[&str],
    now: u64,
    valid_for: Option<u64>,
) -> Vec<u8> {
    let input = ClaimsInput {
        name: "hello".into(),
        rev: 1,
        allow: allow.iter().map(|s| s.to_string()).collect(),
        valid_for: valid_for.map(Duration::from_secs),
        no_reuse: false,
        callers: vec![],
    };
    claims::sign(wasm, issuer, &input, now).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn strict_host_runs_only_what_a_trusted_issuer_signed() {
    let lattice = Lattice::new("claims").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let (trusted, trusted_seed) = account(dir.path(), "trusted");
    let (stranger, _) = account(dir.path(), "stranger");
    let host = t.host_with("strict", &[format!("--trusted-issuer={}", trusted.public_key())]).await;
    let wasm = std::fs::read(component("http-hello")).unwrap();
    let now = unix_ms() / 1000;
    let start = |file: String, id: &'static str| {
        let host = host.id.clone();
        async move { t.fails(&["start", "component", &file, "--id", id, "--host", &host]).await }
    };

    let err = start(write(dir.path(), "unsigned.wasm", &wasm), "u").await;
    assert!(err.contains("is not signed") && err.contains("Denied"), "{err}");

    let other = sign_at(&wasm, &stranger, &["wasi:http/outgoing-handler"], now, None);
    let err = start(write(dir.path(), "stranger.wasm", &other), "s").await;
    assert!(
        err.contains(&format!("issuer {} is not trusted here", stranger.public_key())),
        "{err}"
    );

    let good = sign_at(&wasm, &trusted, &["wasi:http/outgoing-handler"], now, None);
    let mut tampered = good.clone();
    let last_code_byte = claims::section::split(&good).unwrap().stripped.len() - 1;
    tampered[last_code_byte] ^= 0x01;
    let err = start(write(dir.path(), "tampered.wasm", &tampered), "t").await;
    assert!(err.contains("modified after signing"), "{err}");

    let expired = sign_at(&wasm, &trusted, &["wasi:http/outgoing-handler"], now - 7200, Some(3600));
    let err = start(write(dir.path(), "expired.wasm", &expired), "e").await;
    assert!(err.contains("claims expired"), "{err}");

    let early = sign_at(&wasm, &trusted, &["wasi:http/outgoing-handler"], now + 7200, None);
    let err = start(write(dir.path(), "early.wasm", &early), "n").await;
    assert!(err.contains("not valid before"), "{err}");

    let unclaimed = sign_at(&wasm, &trusted, &[], now, None);
    let err = start(write(dir.path(), "unclaimed.wasm", &unclaimed), "c").await;
    assert!(
        err.contains("imports wasi:http/outgoing-handler, which its claims do not allow"),
        "{err}"
    );

    // Signed through the CLI, with the capability it uses: it runs and answers.
    let signed = dir.path().join("signed.wasm");
    t.ok(&[
        "claims",
        "sign",
        component("http-hello").to_str().unwrap(),
        "-o",
        signed.to_str().unwrap(),
        "--issuer",
        trusted_seed.to_str().unwrap(),
        "--name",
        "hello",
        "--rev",
        "2",
        "--expires",
        "1d",
        "--allow",
        "wasi:http/outgoing-handler",
    ])
    .await;
    let inspected = t
        .ok(&[
            "claims",
            "inspect",
            signed.to_str().unwrap(),
            "--trusted-issuer",
            &trusted.public_key(),
        ])
        .await;
    assert!(inspected.contains("verifies"), "{inspected}");
    t.ok(&["start", "component", signed.to_str().unwrap(), "--id", "hello", "--host", &host.id])
        .await;
    let request = HttpRequest::get("/signed");
    // A strict host takes only signed calls; with no trusted cluster, any host key will do.
    let client = t
        .client()
        .await
        .with_signer(trellis_lattice::signing::Signer::new(nkeys::KeyPair::new_server(), None));
    let reply = client
        .invoke(
            "hello",
            INCOMING_HANDLER,
            HANDLE,
            encode(&request).unwrap().into(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let response: trellis_lattice::http::HttpResponse =
        trellis_lattice::http::decode(&reply).unwrap();
    assert_eq!(&response.body[..], b"hello from trellis, path=/signed\n");

    let inv = client.inventory(&host.id).await.unwrap();
    assert_eq!(inv.components.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["hello"]);
}

#[tokio::test]
async fn host_without_trusted_issuers_refuses_unsigned_and_says_how() {
    let lattice = Lattice::new("claimsnone").await;
    let t = &lattice.trellis;
    let host = t.host_with("bare", &[]).await;
    let wasm = component("http-hello");
    let err = t
        .fails(&["start", "component", wasm.to_str().unwrap(), "--id", "x", "--host", &host.id])
        .await;
    assert!(err.contains("--trusted-issuer") && err.contains("--allow-unsigned"), "{err}");
}

#[tokio::test]
async fn a_running_component_stops_when_its_claims_expire() {
    let lattice = Lattice::new("claimsexp").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let (trusted, _) = account(dir.path(), "trusted");
    let host = t.host_with("strict", &[format!("--trusted-issuer={}", trusted.public_key())]).await;
    let wasm = std::fs::read(component("http-hello")).unwrap();
    // Valid now, expired (leeway included) a few seconds from now.
    let now = unix_ms() / 1000;
    let signed_at = now - 100;
    let valid_for = 100 - claims::LEEWAY_S + 4;
    let signed =
        sign_at(&wasm, &trusted, &["wasi:http/outgoing-handler"], signed_at, Some(valid_for));
    let file = write(dir.path(), "short.wasm", &signed);
    let client = t.client().await;
    let nats = client.nats().clone();
    let mut stopped = nats
        .subscribe(client.subjects().event(trellis_lattice::subject::EventKind::ComponentStopped))
        .await
        .unwrap();
    trellis_lattice::connect::sync_with_server(&nats).await.unwrap();
    t.ok(&["start", "component", &file, "--id", "short", "--host", &host.id]).await;
    let running = client.inventory(&host.id).await.unwrap();
    assert!(running.components.iter().any(|c| c.id == "short"), "it runs: {running:?}");

    let event = tokio::time::timeout(Duration::from_secs(30), stopped.next())
        .await
        .expect("a component_stopped event")
        .unwrap();
    let event = trellis_proto::Event::decode(event.payload).unwrap();
    let Some(trellis_proto::event::Body::Component(c)) = event.body else { panic!("{event:?}") };
    assert_eq!(c.component_id, "short");
    assert!(c.reason.contains("expired"), "{}", c.reason);
    let inventory = client.inventory(&host.id).await.unwrap();
    assert!(inventory.components.is_empty(), "{inventory:?}");
}

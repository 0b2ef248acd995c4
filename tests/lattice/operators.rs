//! Only operators change a strict host: every unsigned, untrusted, out-of-role, replayed,
//! expired or altered control request is refused with `Denied` before the host acts, counted
//! and announced; the operator's own CLI and the scheduler it keys go through.

use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use trellis_lattice::envelope::unix_ms;
use trellis_lattice::signing::OperatorKey;
use trellis_lattice::subject::{EventKind, HostVerb};
use trellis_proto::{self as pb, ErrorCode};
use trellis_tests::{Trellis, eventually, signed_hello};

use crate::{Lattice, get};

/// Sends a `stop_component` request with `body` and `headers` on `subject`; returns the
/// answer.
async fn stop(
    nats: &async_nats::Client,
    subject: &str,
    body: Vec<u8>,
    headers: Option<async_nats::HeaderMap>,
) -> pb::Status {
    let mut request = async_nats::Request::new().payload(body.into());
    if let Some(headers) = headers {
        request = request.headers(headers);
    }
    let msg = nats.send_request(subject.to_owned(), request).await.expect("the host answers");
    pb::StopComponentReply::decode(msg.payload).expect("a stop reply").status.unwrap_or_default()
}

fn stop_body(id: &str) -> Vec<u8> {
    pb::StopComponentRequest { component_id: id.to_owned() }.encode_to_vec()
}

fn denied(status: &pb::Status, why: &str) {
    assert_eq!(status.code, i32::from(ErrorCode::Denied), "{status:?}");
    assert!(status.message.contains(why), "expected `{why}` in {status:?}");
}

async fn runs(t: &Trellis, host: &str, id: &str) -> bool {
    let inventory = t.client().await.inventory(host).await.expect("inventory");
    inventory.components.iter().any(|c| c.id == id)
}

#[tokio::test]
async fn a_strict_host_changes_only_for_its_operators() {
    let lattice = Lattice::new("operators").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let account = nkeys::KeyPair::new_account();
    let (viewer, stranger) = (OperatorKey::generate(), OperatorKey::generate());
    let host = t
        .host_with(
            "strict",
            &[
                format!("--trusted-issuer={}", account.public_key()),
                format!("--trusted-operator={}", t.operator.public_key()),
                format!("--trusted-operator={}:viewer", viewer.public_key()),
            ],
        )
        .await;
    // The operator's CLI (TRELLIS_OPERATOR_KEY) starts it.
    let file = signed_hello(dir.path(), &account, false);
    t.ok(&["start", "component", &file, "--id", "hello", "--host", &host.id]).await;

    let nats = async_nats::connect(&lattice.nats.url()).await.unwrap();
    let mut events = nats
        .subscribe(format!("trellis.operators.evt.{}", EventKind::RequestDenied.as_str()))
        .await
        .unwrap();
    trellis_lattice::connect::sync_with_server(&nats).await.unwrap();
    let subject =
        format!("trellis.operators.ctl.host.{}.{}", host.id, HostVerb::StopComponent.as_str());
    let soon = || unix_ms() + 10_000;

    // What any NATS user of the account could send: the few bytes that used to stop it.
    let body = stop_body("hello");
    denied(&stop(&nats, &subject, body.clone(), None).await, "unsigned request");
    let by_stranger = stranger.sign(&subject, &body, soon());
    denied(&stop(&nats, &subject, body.clone(), Some(by_stranger)).await, "not trusted");
    let by_viewer = viewer.sign(&subject, &body, soon());
    denied(&stop(&nats, &subject, body.clone(), Some(by_viewer)).await, "has role viewer");
    let expired = t.operator.sign(&subject, &body, unix_ms() - 1);
    denied(&stop(&nats, &subject, body.clone(), Some(expired)).await, "expired");
    // Signed for a harmless body, sent with another.
    let ghost = stop_body("ghost");
    let for_ghost = t.operator.sign(&subject, &ghost, soon());
    denied(&stop(&nats, &subject, body.clone(), Some(for_ghost.clone())).await, "bad signature");
    // Sent as signed, it passes (and finds nothing to stop); sent again, it is a replay.
    let first = stop(&nats, &subject, ghost.clone(), Some(for_ghost.clone())).await;
    assert_eq!(first.code, i32::from(ErrorCode::NotFound), "{first:?}");
    denied(&stop(&nats, &subject, ghost, Some(for_ghost)).await, "replayed");
    // Signed for another host, sent to this one.
    let elsewhere =
        t.operator.sign("trellis.operators.ctl.host.OTHER.stop_component", &body, soon());
    denied(&stop(&nats, &subject, body.clone(), Some(elsewhere)).await, "bad signature");
    assert!(runs(t, &host.id, "hello").await, "no refused request stopped it");

    // Each refusal was announced and counted.
    for _ in 0..7 {
        let msg = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("a request_denied event")
            .unwrap();
        let event = pb::Event::decode(msg.payload).unwrap();
        let Some(pb::event::Body::Request(r)) = event.body else { panic!("{event:?}") };
        assert_eq!(r.subject, subject);
        assert!(!r.reason.is_empty());
    }
    let hosts = t.client().await.hosts(Duration::from_millis(500)).await.unwrap();
    let info = hosts.iter().find(|h| h.id == host.id).unwrap();
    assert_eq!(info.requests_denied, 7, "{info:?}");

    // The CLI without the key is refused with what to do; with it, the stop goes through.
    let mut keyless = t.clone();
    keyless.env.retain(|(k, _)| k != "TRELLIS_OPERATOR_KEY");
    let err = keyless.fails(&["stop", "component", "hello", "--host", &host.id]).await;
    assert!(err.contains("--operator-key"), "{err}");
    t.ok(&["stop", "component", "hello", "--host", &host.id]).await;
    assert!(!runs(t, &host.id, "hello").await);
}

#[tokio::test]
async fn a_host_trusting_no_operator_refuses_every_change_and_says_how() {
    let lattice = Lattice::new("no-operator").await;
    let mut t = lattice.trellis.clone();
    t.env.retain(|(k, _)| k != "TRELLIS_TRUSTED_OPERATORS");
    let account = nkeys::KeyPair::new_account();
    let host = t.host_with("closed", &[format!("--trusted-issuer={}", account.public_key())]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = signed_hello(dir.path(), &account, false);
    let err = t.fails(&["start", "component", &file, "--id", "hello", "--host", &host.id]).await;
    assert!(err.contains("trusts no operator") && err.contains("--trusted-operator"), "{err}");
    let err =
        t.fails(&["start", "provider", "http-server", "--id", "web", "--host", &host.id]).await;
    assert!(err.contains("trusts no operator"), "{err}");
    // Reads still answer.
    assert!(t.client().await.inventory(&host.id).await.unwrap().components.is_empty());
}

#[tokio::test]
async fn the_scheduler_places_on_strict_hosts_with_its_operator_key_and_ignores_forged_apps() {
    let lattice = Lattice::new("operator-scheduler").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let account = nkeys::KeyPair::new_account();
    let strict = |labels: &str| {
        vec![
            format!("--label={labels}"),
            format!("--trusted-issuer={}", account.public_key()),
            "--scheduler".into(),
            "--scheduler-lease".into(),
            "2".into(),
        ]
    };
    // Both hosts trust the test's operator; the scheduler signs with its key.
    let a = t.host_with("a", &strict("zone=a")).await;
    let _b = t.host_with("b", &strict("zone=b")).await;
    let file = signed_hello(dir.path(), &account, false);
    let manifest = dir.path().join("app.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: signed\nversion: '1'\ncomponents:\n  - name: hello\n    source: {file}\n    replicas: 2\n"
        ),
    )
    .unwrap();
    t.ok(&["app", "deploy", manifest.to_str().unwrap()]).await;
    let running = || async {
        let client = t.client().await;
        let mut on = 0;
        for h in client.hosts(Duration::from_millis(300)).await.unwrap_or_default() {
            on += usize::from(runs(t, &h.id, "hello").await);
        }
        on
    };
    eventually("both strict hosts to run hello", Duration::from_secs(30), || async {
        (running().await == 2).then_some(())
    })
    .await;
    assert!(runs(t, &a.id, "hello").await);

    // A NATS user undeploys it by writing the record plainly, then by deleting it: the
    // scheduler keeps the last sealed version placed.
    let nats = async_nats::connect(&lattice.nats.url()).await.unwrap();
    let mut events = nats.subscribe("trellis.operator-scheduler.evt.record_denied").await.unwrap();
    trellis_lattice::connect::sync_with_server(&nats).await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let apps = js.get_key_value("TRELLIS_operator-scheduler_APPS").await.unwrap();
    let sealed = apps.get("spec.signed").await.unwrap().unwrap();
    let stored = trellis_lattice::record::Stored::parse(&sealed);
    let mut forged: serde_json::Value = serde_json::from_slice(stored.contents().unwrap()).unwrap();
    forged["current"] = serde_json::Value::Null;
    apps.put("spec.signed", serde_json::to_vec(&forged).unwrap().into()).await.unwrap();
    let why = record_denied(&mut events, "TRELLIS_operator-scheduler_APPS/spec.signed").await;
    assert!(why.contains("not sealed"), "{why}");
    apps.delete("spec.signed").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running().await, 2, "the forged undeploy stopped nothing");

    // The operator's own undeploy goes through.
    apps.put("spec.signed", sealed).await.unwrap();
    t.ok(&["app", "undeploy", "signed"]).await;
    assert_eq!(running().await, 0);
}

/// Waits for a `record_denied` event about `record` (`<bucket>/<key>`); returns its reason.
async fn record_denied(events: &mut async_nats::Subscriber, record: &str) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("no record_denied event for {record}"))
            .unwrap();
        let event = pb::Event::decode(msg.payload).unwrap();
        if let Some(pb::event::Body::Request(r)) = event.body
            && r.subject == record
        {
            return r.reason;
        }
    }
}

#[tokio::test]
async fn state_written_without_an_operator_key_changes_nothing_a_strict_lattice_applies() {
    let lattice = Lattice::new("sealed").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let account = nkeys::KeyPair::new_account();
    let host = t.host_with("h", &[format!("--trusted-issuer={}", account.public_key())]).await;
    let allow = [
        "wasi:config/store",
        "wasi:config/runtime",
        "wasi:logging/logging",
        "wasmcloud:secrets/store",
        "wasmcloud:secrets/reveal",
    ];
    let file =
        trellis_tests::signed_component(dir.path(), "configured", &account, (&allow, &[]), false);
    // The operator's CLI seals the config and the link it writes.
    t.ok(&["config", "put", "base", "greeting=hello"]).await;
    t.ok(&["start", "component", &file, "--id", "cfg", "--config", "base", "--host", &host.id])
        .await;
    let addr = lattice.serve_http(&host.id, "cfg", &[]).await;
    assert_eq!(get(addr, "/config/greeting").await.text(), "hello");

    // Any NATS user of the account can write the buckets; nothing they write applies.
    let nats = async_nats::connect(&lattice.nats.url()).await.unwrap();
    let mut events = nats.subscribe("trellis.sealed.evt.record_denied").await.unwrap();
    trellis_lattice::connect::sync_with_server(&nats).await.unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let config = js.get_key_value("TRELLIS_sealed_CONFIG").await.unwrap();
    let links = js.get_key_value("TRELLIS_sealed_LINKS").await.unwrap();
    let signed_hello = config.get("base").await.unwrap().unwrap();

    config.put("base", r#"{"greeting":"pwned"}"#.into()).await.unwrap();
    let why = record_denied(&mut events, "TRELLIS_sealed_CONFIG/base").await;
    assert!(why.contains("unsigned"), "{why}");
    let key = links.keys().await.unwrap().next().await.unwrap().unwrap();
    let link = links.get(&key).await.unwrap().unwrap();
    let stored = trellis_lattice::record::Stored::parse(&link);
    let redirected = String::from_utf8(stored.contents().unwrap().to_vec())
        .unwrap()
        .replace("\"cfg\"", "\"evil\"");
    assert!(redirected.contains("evil"), "{redirected}");
    links.put(&key, redirected.into()).await.unwrap();
    record_denied(&mut events, &format!("TRELLIS_sealed_LINKS/{key}")).await;
    links.delete(&key).await.unwrap();
    let why = record_denied(&mut events, &format!("TRELLIS_sealed_LINKS/{key}")).await;
    assert!(why.contains("deleted without a signature"), "{why}");
    assert_eq!(get(addr, "/config/greeting").await.text(), "hello", "still the operator's");

    // An operator's change applies; their older record written again does not roll it back.
    t.ok(&["config", "put", "base", "greeting=hi"]).await;
    eventually("the operator's new config", Duration::from_secs(10), || async move {
        (get(addr, "/config/greeting").await.text() == "hi").then_some(())
    })
    .await;
    config.put("base", signed_hello).await.unwrap();
    let why = record_denied(&mut events, "TRELLIS_sealed_CONFIG/base").await;
    assert!(why.contains("before the version applied here"), "{why}");
    assert_eq!(get(addr, "/config/greeting").await.text(), "hi");

    // The CLI without the key saves a link, and the provider says why it did not apply it.
    let mut keyless = t.clone();
    keyless.env.retain(|(k, _)| k != "TRELLIS_OPERATOR_KEY");
    let err = keyless
        .fails(&[
            "link",
            "put",
            "--source",
            "web",
            "--target",
            "cfg",
            "--interface",
            "wasi:http/incoming-handler",
            "--name",
            "other",
            "--config",
            "address=127.0.0.1:1",
        ])
        .await;
    assert!(err.contains("could not apply it: unsigned"), "{err}");
}

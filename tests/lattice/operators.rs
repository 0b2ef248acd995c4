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

use crate::Lattice;

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
    nats.flush().await.unwrap();
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
async fn the_scheduler_places_on_strict_hosts_with_its_operator_key() {
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
    eventually("both strict hosts to run hello", Duration::from_secs(30), || async {
        let client = t.client().await;
        let mut on = 0;
        for h in client.hosts(Duration::from_millis(300)).await.ok()? {
            on += usize::from(runs(t, &h.id, "hello").await);
        }
        (on == 2).then_some(())
    })
    .await;
    assert!(runs(t, &a.id, "hello").await);
}

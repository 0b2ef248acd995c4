//! The policy service: hosts with `--policy` ask it before starts and calls, cache its answers
//! until a change notice, and deny when nobody answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use trellis_lattice::envelope::InvokeErrorKind;
use trellis_lattice::http::{HANDLE, HttpRequest, INCOMING_HANDLER, encode};
use trellis_proto::{PolicyReply, PolicyRequest};
use trellis_tests::{component, eventually};

use crate::Lattice;

#[tokio::test]
async fn policy_decides_starts_and_calls_caches_and_fails_closed() {
    let lattice = Lattice::new("policy").await;
    let t = &lattice.trellis;
    let client = t.client().await;

    // The policy service: no component called `forbidden`; `cli` may not call `secret` until
    // the rules change.
    let secret_open = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let mut requests = client.nats().subscribe(client.subjects().policy()).await.unwrap();
    let service = tokio::spawn({
        let (nats, secret_open, asked) =
            (client.nats().clone(), secret_open.clone(), asked.clone());
        async move {
            while let Some(msg) = requests.next().await {
                asked.fetch_add(1, Ordering::SeqCst);
                let req = PolicyRequest::decode(msg.payload).unwrap();
                let deny = |reason: &str| PolicyReply { allow: false, reason: reason.into() };
                let reply = match (req.kind.as_str(), req.id.as_str()) {
                    ("start_component", "forbidden") => deny("not on the list"),
                    ("invoke", "secret")
                        if req.source == "cli" && !secret_open.load(Ordering::SeqCst) =>
                    {
                        deny("cli may not call secret")
                    }
                    ("invoke", "secret") if req.source == "web" => deny("web may not call secret"),
                    _ => PolicyReply { allow: true, reason: String::new() },
                };
                nats.publish(msg.reply.unwrap(), reply.encode_to_vec().into()).await.unwrap();
            }
        }
    });
    trellis_lattice::connect::sync_with_server(client.nats()).await.unwrap();

    let host = t.host_with("h", &["--allow-unsigned".into(), "--policy".into()]).await;
    let wasm = component("http-hello");
    let start = |id: &'static str| {
        let (wasm, host) = (wasm.clone(), host.id.clone());
        async move {
            t.cli(&["start", "component", wasm.to_str().unwrap(), "--id", id, "--host", &host])
                .await
        }
    };
    assert!(start("hello").await.status.success());
    assert!(start("secret").await.status.success());
    let refused = start("forbidden").await;
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("policy denies start_component `forbidden`: not on the list"), "{err}");

    let payload = encode(&HttpRequest::get("/")).unwrap();
    let call = |target: &'static str| {
        let (client, payload) = (client.clone(), payload.clone());
        async move {
            client
                .invoke(target, INCOMING_HANDLER, HANDLE, payload.into(), Duration::from_secs(5))
                .await
        }
    };
    call("hello").await.unwrap();
    let denied = call("secret").await.unwrap_err();
    assert_eq!(denied.kind(), InvokeErrorKind::Denied);
    assert!(denied.message().contains("cli may not call secret"), "{denied}");

    // Cached: asking again does not reach the service.
    let before = asked.load(Ordering::SeqCst);
    call("hello").await.unwrap();
    assert!(call("secret").await.is_err());
    assert_eq!(asked.load(Ordering::SeqCst), before, "decisions are cached");

    // A change notice makes hosts ask again.
    secret_open.store(true, Ordering::SeqCst);
    client.nats().publish(client.subjects().policy_changed(), "".into()).await.unwrap();
    eventually("the new rules to apply", Duration::from_secs(10), || async {
        call("secret").await.ok()
    })
    .await;

    // A call that stays on the host (the http-server provider next to the component) asks too.
    let addr = lattice.serve_http(&host.id, "secret", &[]).await;
    let reply = crate::get(addr, "/").await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("web may not call secret"), "{}", reply.text());

    // Nobody answers: denied, not allowed.
    service.abort();
    client.nats().publish(client.subjects().policy_changed(), "".into()).await.unwrap();
    let silent = eventually("silence to deny", Duration::from_secs(10), || async {
        let out = start("late").await;
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    assert!(silent.contains("no policy service answers"), "{silent}");
}

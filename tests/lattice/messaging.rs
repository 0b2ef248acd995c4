//! wasmcloud:messaging through the messaging-nats provider: subscriptions deliver to a
//! component on another host, which publishes and makes requests back through the provider.

use std::time::Duration;

use futures::StreamExt;
use trellis_lattice::trace::{TRACEPARENT, TraceContext};
use trellis_tests::component;

use crate::Lattice;

#[tokio::test]
async fn messages_round_trip_through_a_component_and_back() {
    let lattice = Lattice::new("messaging").await;
    let t = &lattice.trellis;
    let a = t.host("a", &[]).await;
    let b = t.host("b", &[]).await;
    let wasm = component("messenger");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "messenger", "--host", &a.id])
        .await;
    t.ok(&["start", "provider", "messaging-nats", "--id", "msg", "--host", &b.id]).await;
    t.ok(&[
        "link",
        "put",
        "--source",
        "msg",
        "--interface",
        "wasmcloud:messaging/handler",
        "--target",
        "messenger",
        "--config",
        "subscriptions=app.ping,app.ask",
    ])
    .await;
    t.ok(&[
        "link",
        "put",
        "--source",
        "messenger",
        "--interface",
        "wasmcloud:messaging/consumer",
        "--target",
        "msg",
    ])
    .await;

    let client = t.client().await;
    let nats = client.nats().clone();
    let reply = nats.request("app.ping", "hi".into()).await.expect("pong");
    assert_eq!(&reply.payload[..], b"pong: hi");

    // The component asks a service through the provider, then answers; the trace the asker
    // started reaches the service across the provider and the component's host.
    let mut service = nats.subscribe("app.service").await.unwrap();
    let responder = nats.clone();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = service.next().await {
            let traceparent = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(TRACEPARENT))
                .map(|v| v.as_str().to_owned());
            let _ = seen_tx.send(traceparent);
            let answer = [b"42: ".as_slice(), &msg.payload].concat();
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, answer.into()).await;
            }
        }
    });
    trellis_lattice::connect::sync_with_server(&nats).await.unwrap();
    let asker = TraceContext::root();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(TRACEPARENT, asker.to_string().as_str());
    let ask = nats.request_with_headers("app.ask", headers, "q".into());
    let reply =
        tokio::time::timeout(Duration::from_secs(10), ask).await.expect("in time").expect("answer");
    assert_eq!(&reply.payload[..], b"asked: 42: q");
    let at_service = seen.recv().await.flatten().expect("the service got a traceparent");
    let at_service = TraceContext::parse(&at_service).expect("a valid traceparent");
    assert_eq!(at_service.trace_id, asker.trace_id, "one trace across the messaging hops");
    assert_ne!(at_service.span_id, asker.span_id);

    // The lattice's own subjects are out of reach.
    let err = t
        .fails(&[
            "link",
            "put",
            "--source",
            "msg",
            "--interface",
            "wasmcloud:messaging/handler",
            "--target",
            "messenger",
            "--name",
            "spy",
            "--config",
            "subscriptions=trellis.>",
        ])
        .await;
    assert!(err.contains("lattice's own subjects"), "{err}");
}

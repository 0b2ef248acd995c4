//! wasmcloud:messaging through the messaging-nats provider: subscriptions deliver to a
//! component on another host, which publishes and makes requests back through the provider.

use std::time::Duration;

use futures::StreamExt;
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

    // The component asks a service through the provider, then answers.
    let mut service = nats.subscribe("app.service").await.unwrap();
    let responder = nats.clone();
    tokio::spawn(async move {
        while let Some(msg) = service.next().await {
            let answer = [b"42: ".as_slice(), &msg.payload].concat();
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, answer.into()).await;
            }
        }
    });
    trellis_lattice::connect::sync_with_server(&nats).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), nats.request("app.ask", "q".into()))
        .await
        .expect("in time")
        .expect("answer");
    assert_eq!(&reply.payload[..], b"asked: 42: q");

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

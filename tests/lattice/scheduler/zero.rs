//! Scale to zero: an idle application stops its replicas, and the first requests start one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use trellis_tests::{component, eventually, free_port, http_request};

use super::{manifest, path, scheduler_args};
use crate::Lattice;

/// Hosts running component `id`.
async fn running(t: &trellis_tests::Trellis, id: &str) -> usize {
    let inventories = t.client().await.inventories(Duration::from_millis(300)).await;
    let inventories = inventories.expect("inventories");
    inventories
        .into_iter()
        .filter_map(|(_, inv)| inv.ok())
        .filter(|inv| inv.components.iter().any(|c| c.id == id))
        .count()
}

/// An edge host (scheduler, http-server) and two workers heartbeating every second, and an
/// app `lazy` whose component `web` scales to zero after `idle`, deployed and answering.
async fn deployed(name: &str, idle: &str) -> (Lattice, Vec<trellis_tests::Host>, SocketAddr) {
    let lattice = Lattice::new(name).await;
    let t = &lattice.trellis;
    let beat = ["--heartbeat-interval".to_owned(), "1".to_owned()];
    let mut edge = scheduler_args(&["role=edge"]);
    edge.extend(beat.clone());
    let mut worker = vec!["--label=role=worker".to_owned(), "--allow-unsigned".to_owned()];
    worker.extend(beat);
    let hosts = vec![
        t.host_with("edge", &edge).await,
        t.host_with("w1", &worker).await,
        t.host_with("w2", &worker).await,
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let yaml = format!(
        "name: lazy\nversion: '1'\ncomponents:\n  - name: web\n    source: {}\n    replicas: {{min: 0, max: 2, idle: {idle}}}\n    requirements: {{role: worker}}\nproviders:\n  - name: front\n    kind: http-server\n    builtin: true\n    requirements: {{role: edge}}\nlinks:\n  - source: front\n    target: web\n    interface: wasi:http/incoming-handler\n    config: {{address: '{addr}'}}\n",
        component("http-hello").display()
    );
    let file = manifest(dir.path(), "lazy.yaml", &yaml);
    t.ok(&["app", "deploy", path(&file)]).await;
    let reply = http_request(addr, "GET", "/", b"").await.expect("the front listens");
    assert_eq!(reply.status, 200, "{}", reply.text());
    (lattice, hosts, addr)
}

/// Waits until no host runs `web`.
async fn asleep(t: &trellis_tests::Trellis) {
    eventually("the idle app has no replica", Duration::from_secs(30), || async {
        (running(t, "web").await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_idle_app_goes_to_zero_and_twenty_first_requests_start_one_replica() {
    let (lattice, _hosts, addr) = deployed("sched-zero", "2s").await;
    let t = &lattice.trellis;
    // Idle for 2 s (plus the two heartbeats a host counts a call in): no replica left.
    asleep(t).await;

    // Twenty first requests at once: all answered, by one new replica.
    let nats = async_nats::connect(&lattice.nats.url()).await.expect("nats");
    let mut started = nats.subscribe("trellis.sched-zero.evt.component_started").await.unwrap();
    trellis_lattice::connect::sync_with_server(&nats).await.unwrap();
    let asked = Instant::now();
    let requests = (0..20).map(|_| async move {
        let began = Instant::now();
        let reply = http_request(addr, "GET", "/", b"").await;
        (reply, began.elapsed())
    });
    let replies = futures::future::join_all(requests).await;
    let mut waits = Vec::new();
    for (reply, took) in replies {
        let reply = reply.expect("answered");
        assert_eq!(reply.status, 200, "{}", reply.text());
        waits.push(took);
    }
    waits.sort();
    println!(
        "20 first requests after scale to zero: all in {:?}; wake latency p50 {:?}, max {:?}",
        asked.elapsed(),
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );
    // Later starts would show in the next second: none come.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut starts = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), started.next()).await {
        starts += 1;
    }
    assert_eq!(starts, 1, "one replica started for twenty first requests");
    assert_eq!(running(t, "web").await, 1);
    // Awake, it keeps serving.
    let reply = http_request(addr, "GET", "/", b"").await.expect("answered");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

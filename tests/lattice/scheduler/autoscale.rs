//! Autoscaling: a load ramp takes an application from its floor to `max` replicas, spread by
//! its rules, and back once the load stops, every step an event with its reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use prost::Message as _;
use trellis_proto as pb;
use trellis_tests::{component, eventually, free_port, http_request};

use super::{manifest, path, scheduler_args, status};
use crate::Lattice;

/// The zones of the hosts running `web`, sorted.
async fn zones_running(t: &trellis_tests::Trellis) -> Vec<String> {
    let s = status(t, "ramp").await;
    let mut zones: Vec<String> = super::hosts_of(&s, "web")
        .iter()
        .map(|h| if h.starts_with("a") { "a".to_owned() } else { "b".to_owned() })
        .collect();
    zones.sort();
    zones
}

#[tokio::test]
async fn a_load_ramp_takes_an_app_from_one_to_four_replicas_by_its_spread_and_back_to_one() {
    let lattice = Lattice::new("sched-auto").await;
    let t = &lattice.trellis;
    let beat = ["--heartbeat-interval".to_owned(), "1".to_owned()];
    let mut edge = scheduler_args(&["role=edge"]);
    edge.extend(beat.clone());
    let worker = |zone: &str| {
        let mut args = vec![
            "--label=role=worker".to_owned(),
            format!("--label=zone={zone}"),
            "--allow-unsigned".to_owned(),
        ];
        args.extend(beat.clone());
        args
    };
    let _hosts = [
        t.host_with("edge", &edge).await,
        t.host_with("a1", &worker("a")).await,
        t.host_with("a2", &worker("a")).await,
        t.host_with("b1", &worker("b")).await,
        t.host_with("b2", &worker("b")).await,
    ];
    let nats = async_nats::connect(&lattice.nats.url()).await.expect("nats");
    let mut scaled = nats.subscribe("trellis.sched-auto.evt.component_scaled").await.unwrap();
    trellis_lattice::connect::sync_with_server(&nats).await.unwrap();

    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let yaml = format!(
        "name: ramp\nversion: '1'\ncomponents:\n  - name: web\n    source: {}\n    replicas: {{min: 1, max: 4, target: 2, cooldown: 5s}}\n    requirements: {{role: worker}}\n    spread:\n      - name: a\n        requirements: {{zone: a}}\n      - name: b\n        requirements: {{zone: b}}\nproviders:\n  - name: front\n    kind: http-server\n    builtin: true\n    requirements: {{role: edge}}\nlinks:\n  - source: front\n    target: web\n    interface: wasi:http/incoming-handler\n    config: {{address: '{addr}'}}\n",
        component("http-hello").display()
    );
    let file = manifest(dir.path(), "ramp.yaml", &yaml);
    t.ok(&["app", "deploy", path(&file)]).await;
    assert_eq!(zones_running(t).await.len(), 1, "idle, it runs its floor");

    // The ramp: 16 clients at once, each request 50 ms in the component: about 16 calls in
    // flight, which at 2 per replica want 8; `max` caps it at 4, two per zone.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match http_request(addr, "GET", "/sleep/50", b"").await {
                        Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let up = next_scale(&mut scaled).await;
    assert_eq!((up.component_id.as_str(), up.app.as_str(), up.from), ("web", "ramp", 1));
    assert!(up.to > 1 && up.reason.contains("calls in flight"), "{up:?}");
    println!("scaled {} -> {}: {}", up.from, up.to, up.reason);
    eventually("four replicas, two per zone", Duration::from_secs(60), || async {
        (zones_running(t).await == ["a", "a", "b", "b"]).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let (served, failed) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "no request failed while it scaled up ({served} served)");

    // The load stops: after the cool-down (5 s) it goes back to its floor, with the reason.
    let mut to = up.to;
    while to > 1 {
        let down = next_scale(&mut scaled).await;
        assert!(down.to < down.from, "{down:?}");
        assert!(down.reason.contains("cool-down of 5s"), "{down:?}");
        println!("scaled {} -> {}: {}", down.from, down.to, down.reason);
        to = down.to;
    }
    eventually("back to one replica", Duration::from_secs(60), || async {
        (zones_running(t).await.len() == 1).then_some(())
    })
    .await;
    let s = status(t, "ramp").await;
    assert_eq!(s["status"]["state"], "deployed", "{s}");
}

/// The next `component_scaled` event, within a minute.
async fn next_scale(events: &mut async_nats::Subscriber) -> pb::ScaleEvent {
    let msg = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("a component_scaled event within a minute")
        .expect("subscribed");
    let event = pb::Event::decode(msg.payload).expect("an event");
    match event.body {
        Some(pb::event::Body::Scale(s)) => s,
        other => panic!("not a scale event: {other:?}"),
    }
}

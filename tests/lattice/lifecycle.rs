//! Hosts and providers coming and going: SIGKILL, SIGTERM, NATS late or restarted, provider crash.

use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use trellis_lattice::http::{HANDLE, HttpRequest, HttpResponse, INCOMING_HANDLER};
use trellis_lattice::subject::EventKind;
use trellis_tests::{NatsServer, Trellis, eventually, free_port};

use crate::{Lattice, get};

#[tokio::test]
async fn killed_host_fails_requests_fast_then_another_replica_serves() {
    let lattice = Lattice::new("kill").await;
    let t = &lattice.trellis;
    let edge = t.host("edge", &["role=edge"]).await;
    let mut worker = t.host("worker", &["role=worker"]).await;
    lattice.start_hello("hello", &["--host", &worker.id]).await;
    let addr = lattice.serve_http(&edge.id, "hello", &[]).await;
    assert_eq!(get(addr, "/before").await.status, 200);

    worker.kill().await;
    let reply = eventually(
        "requests to fail once the replica is gone",
        Duration::from_secs(10),
        || async move {
            let reply = get(addr, "/during").await;
            (reply.status != 200).then_some(reply)
        },
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("trellis-error"), Some("NoResponders"));
    assert!(reply.text().contains("no replica of `hello`"), "{}", reply.text());

    let _spare = t.host("spare", &["role=worker"]).await;
    lattice.start_hello("hello", &["--label", "role=worker"]).await;
    assert_eq!(get(addr, "/after").await.status, 200);
}

#[tokio::test]
async fn host_started_before_nats_joins_when_it_comes_up() {
    let port = free_port();
    let t = Trellis::new(&format!("nats://127.0.0.1:{port}"), "late");
    let _host = t.spawn_host("early", &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _nats = NatsServer::start(Some(port)).await.expect("nats-server starts");
    let client = t.client().await;
    eventually("the early host to join", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let hosts = client.hosts(Duration::from_millis(300)).await.ok()?;
            hosts.iter().any(|h| h.name == "early").then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn host_reconnects_and_serves_again_after_nats_restarts() {
    let mut lattice = Lattice::new("reconnect").await;
    let host = lattice.trellis.host("steady", &[]).await;
    lattice.start_hello("hello", &["--host", &host.id]).await;
    lattice.nats.restart().await.expect("nats-server restarts");

    // Control and invocation subscriptions come back on their own, and heartbeats resume.
    let client = lattice.trellis.client().await;
    let mut beats =
        client.nats().subscribe(client.subjects().event(EventKind::HostHeartbeat)).await.unwrap();
    let beat = tokio::time::timeout(Duration::from_secs(20), beats.next())
        .await
        .expect("heartbeats resume")
        .unwrap();
    assert_eq!(trellis_proto::Event::decode(beat.payload).unwrap().host_id, host.id);
    let request = HttpRequest::get("/after-restart");
    let payload = trellis_lattice::http::encode(&request).unwrap();
    let reply = eventually("hello to answer after the reconnect", Duration::from_secs(20), || {
        let (client, payload) = (client.clone(), payload.clone());
        async move {
            client
                .invoke("hello", INCOMING_HANDLER, HANDLE, payload.into(), Duration::from_secs(5))
                .await
                .ok()
        }
    })
    .await;
    let response: HttpResponse = trellis_lattice::http::decode(&reply).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(&response.body[..], b"hello from trellis, path=/after-restart\n");
    let out = lattice.trellis.ok(&["get", "inventory", &host.id, "--output", "json"]).await;
    assert!(out.contains("\"hello\""), "{out}");
}

#[tokio::test]
async fn sigterm_drains_announces_host_stopped_and_exits_zero() {
    let lattice = Lattice::new("sigterm").await;
    let mut host = lattice.trellis.host("leaving", &[]).await;
    let client = lattice.trellis.client().await;
    let mut stopped = client
        .nats()
        .subscribe(client.subjects().event(trellis_lattice::subject::EventKind::HostStopped))
        .await
        .unwrap();
    trellis_lattice::connect::sync_with_server(client.nats()).await.unwrap();

    let status = host.terminate().await;
    assert!(status.success(), "exit status {status}");
    let event = tokio::time::timeout(Duration::from_secs(20), stopped.next())
        .await
        .expect("host_stopped")
        .unwrap();
    assert_eq!(trellis_proto::Event::decode(event.payload).unwrap().host_id, host.id);
}

#[tokio::test]
async fn crashed_provider_is_restarted_and_serves_its_links_again() {
    let lattice = Lattice::new("provcrash").await;
    let host = lattice.trellis.host("solo", &[]).await;
    lattice.start_hello("hello", &["--host", &host.id]).await;
    let addr = lattice.serve_http(&host.id, "hello", &[]).await;
    let client = lattice.trellis.client().await;
    let pid = client.inventory(&host.id).await.unwrap().providers[0].pid;

    let pid = rustix::process::Pid::from_raw(pid as i32).expect("provider pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();

    eventually("the provider to restart", Duration::from_secs(20), || {
        let client = client.clone();
        let id = host.id.clone();
        async move {
            let inv = client.inventory(&id).await.ok()?;
            let p = &inv.providers[0];
            (p.restarts >= 1 && p.running).then_some(())
        }
    })
    .await;
    let reply = eventually(
        "the restarted provider to serve its link",
        Duration::from_secs(20),
        || async move {
            trellis_tests::http_request(addr, "GET", "/again", b"")
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await;
    assert_eq!(reply.text(), "hello from trellis, path=/again\n");
}

#[tokio::test]
async fn health_follows_the_nats_connection_and_labels_come_from_the_environment() {
    let mut lattice = crate::Lattice::new("health").await;
    let mut t = lattice.trellis.clone();
    t.env.push(("TRELLIS_LABEL_REGION".into(), "eu-west".into()));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let args = ["--allow-unsigned".to_owned(), "--health-listen".into(), addr.to_string()];
    let _host = t.host_with("probed", &args).await;
    let hosts = t.client().await.hosts(Duration::from_millis(500)).await.unwrap();
    assert_eq!(hosts[0].labels.get("region").map(String::as_str), Some("eu-west"));

    let get = |path: &'static str| async move {
        trellis_tests::http_request(addr, "GET", path, b"").await.unwrap()
    };
    assert_eq!(get("/livez").await.status, 200);
    assert_eq!(get("/readyz").await.status, 200);
    lattice.nats.kill().await;
    let reply = eventually("readiness to drop with NATS", Duration::from_secs(20), || async move {
        let reply = get("/readyz").await;
        (reply.status == 503).then_some(reply)
    })
    .await;
    assert!(reply.text().contains("not connected to NATS"), "{}", reply.text());
    assert_eq!(get("/livez").await.status, 200, "alive without NATS");
    lattice.nats.restart().await.unwrap();
    eventually("readiness to come back", Duration::from_secs(30), || async move {
        (get("/readyz").await.status == 200).then_some(())
    })
    .await;
}

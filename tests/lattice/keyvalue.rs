//! `wasi:keyvalue` through links: HTTP → component → key-value provider, on real Redis and NATS
//! JetStream KV, across hosts, with a live link switch.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use trellis_tests::{RedisServer, component, http_request};

use crate::{Lattice, get};

const STORE: &str = "wasi:keyvalue/store";

async fn link_store(lattice: &Lattice, target: &str, config: &[&str]) -> String {
    let mut args =
        vec!["link", "put", "--source", "counter", "--interface", STORE, "--target", target];
    for c in config {
        args.extend_from_slice(&["--config", c]);
    }
    lattice.trellis.ok(&args).await
}

/// `n` concurrent `/count/hits` requests to each address; the counter values they got.
async fn count_concurrently(addrs: &[SocketAddr], n: usize) -> Vec<u64> {
    let requests =
        addrs.iter().flat_map(|&addr| (0..n).map(move |_| addr)).map(|addr| async move {
            let reply = get(addr, "/count/hits").await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            reply.text().trim().parse::<u64>().expect("a number")
        });
    futures::stream::iter(requests).buffer_unordered(64).collect().await
}

fn assert_each_value_once(mut values: Vec<u64>, from: u64) {
    values.sort_unstable();
    let expected: Vec<u64> = (from..from + values.len() as u64).collect();
    assert_eq!(values, expected, "every increment is counted exactly once");
}

#[tokio::test]
async fn counter_counts_across_hosts_on_redis_then_nats_after_a_live_switch() {
    let redis = RedisServer::start().await;
    let lattice = Lattice::new("kv").await;
    let t = &lattice.trellis;
    let a = t.host("a", &[]).await;
    let b = t.host("b", &[]).await;
    let wasm = component("kv-counter");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "counter", "--replicas", "2"])
        .await;
    let addr_a = lattice.serve_http_as("web-a", &a.id, "counter", &[]).await;
    let addr_b = lattice.serve_http_as("web-b", &b.id, "counter", &[]).await;

    // No link yet: a typed NoLink error, at once, with an event.
    let nats = t.client().await;
    let mut no_link = nats
        .nats()
        .subscribe(nats.subjects().event(trellis_lattice::subject::EventKind::NoLink))
        .await
        .unwrap();
    trellis_lattice::connect::sync_with_server(nats.nats()).await.unwrap();
    let reply = get(addr_a, "/count/hits").await;
    assert_eq!(reply.status, 500);
    assert!(
        reply.text().contains("NoLink") && reply.text().contains("counter"),
        "{}",
        reply.text()
    );
    let event = tokio::time::timeout(Duration::from_secs(5), no_link.next()).await;
    assert!(matches!(event, Ok(Some(_))), "no no_link event");

    // Redis provider on host a only: host b's replica reaches it over NATS.
    t.ok(&["start", "provider", "keyvalue-redis", "--id", "redis", "--host", &a.id]).await;
    let url = format!("url={}", redis.url());
    link_store(&lattice, "redis", &[&url]).await;
    let values = count_concurrently(&[addr_a, addr_b], 40).await;
    assert_each_value_once(values, 1);
    assert_eq!(get(addr_b, "/get/hits").await.text(), "80");
    assert!(redis.command(&["GET", "default:hits"]).await.unwrap().contains("80"));
    assert!(lattice.invocations(&b.id, "counter").await > 0, "host b served some requests");

    // Switch the running component to NATS KV (provider on host b): no restart.
    t.ok(&["start", "provider", "keyvalue-nats", "--id", "natskv", "--host", &b.id]).await;
    link_store(&lattice, "natskv", &[]).await;
    let values = count_concurrently(&[addr_a, addr_b], 30).await;
    assert_each_value_once(values, 1);
    assert_eq!(get(addr_a, "/get/hits").await.text(), "60");
    assert!(
        redis.command(&["GET", "default:hits"]).await.unwrap().contains("80"),
        "redis untouched"
    );
}

/// Every store, atomics and batch operation, against one provider.
async fn exercise_every_operation(addr: SocketAddr) {
    let put = |path: &'static str, body: &'static [u8]| async move {
        http_request(addr, "POST", path, body).await.expect("HTTP request")
    };
    assert_eq!(put("/set/greeting", b"hello").await.text(), "ok");
    assert_eq!(put("/set/with%20space.and:colon", b"odd").await.text(), "ok");
    assert_eq!(get(addr, "/get/greeting").await.text(), "hello");
    assert_eq!(get(addr, "/get/nothing").await.status, 404);
    assert_eq!(get(addr, "/exists/greeting").await.text(), "true");
    assert_eq!(get(addr, "/count/n?bucket=other").await.text(), "1");
    let keys: BTreeSet<String> =
        get(addr, "/keys").await.text().lines().map(str::to_owned).collect();
    let expected: BTreeSet<String> =
        ["greeting", "with%20space.and:colon"].into_iter().map(str::to_owned).collect();
    assert_eq!(keys, expected, "buckets are separate namespaces");
    assert_eq!(get(addr, "/keys?bucket=other").await.text(), "n");
    assert_eq!(get(addr, "/del/greeting").await.text(), "ok");
    assert_eq!(get(addr, "/exists/greeting").await.text(), "false");
    assert_eq!(get(addr, "/batch").await.text(), "a=1,b=2,none a-after-delete=false");
}

#[tokio::test]
async fn every_operation_works_on_both_providers_and_bucket_lists_are_enforced() {
    let redis = RedisServer::start().await;
    let lattice = Lattice::new("kvops").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let wasm = component("kv-counter");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "counter"]).await;
    let addr = lattice.serve_http(&host.id, "counter", &[]).await;
    t.ok(&["start", "provider", "keyvalue-redis", "--id", "redis"]).await;
    t.ok(&["start", "provider", "keyvalue-nats", "--id", "natskv"]).await;

    let url = format!("url={}", redis.url());
    link_store(&lattice, "redis", &[&url]).await;
    exercise_every_operation(addr).await;
    link_store(&lattice, "natskv", &["bucket=ops"]).await;
    exercise_every_operation(addr).await;

    // A bucket the link does not list is refused by the host before any call.
    link_store(&lattice, "natskv", &["bucket=ops", "buckets=default"]).await;
    assert_eq!(get(addr, "/count/x").await.status, 200);
    let refused = get(addr, "/count/x?bucket=other").await;
    assert_eq!(refused.status, 500);
    assert!(refused.text().contains("NoSuchStore"), "{}", refused.text());

    // A link whose store cannot be reached is refused at `link put`, naming why.
    let err = lattice
        .trellis
        .fails(&[
            "link",
            "put",
            "--source",
            "counter",
            "--interface",
            STORE,
            "--target",
            "redis",
            "--config",
            "url=redis://127.0.0.1:1",
        ])
        .await;
    assert!(err.contains("cannot connect to redis"), "{err}");
    // A link from a component that does not import the interface is refused.
    let err = lattice
        .trellis
        .fails(&[
            "link",
            "put",
            "--source",
            "counter",
            "--interface",
            "wasi:blobstore/blobstore",
            "--target",
            "redis",
        ])
        .await;
    assert!(err.contains("does not import"), "{err}");
}

#[tokio::test]
async fn calls_during_a_provider_crash_fail_typed_and_calls_after_its_restart_succeed() {
    let redis = RedisServer::start().await;
    let lattice = Lattice::new("kvcrash").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let wasm = component("kv-counter");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "counter"]).await;
    let addr = lattice.serve_http(&host.id, "counter", &[]).await;
    t.ok(&["start", "provider", "keyvalue-redis", "--id", "redis", "--host", &host.id]).await;
    let url = format!("url={}", redis.url());
    link_store(&lattice, "redis", &[&url]).await;
    assert_eq!(get(addr, "/count/c").await.text(), "1");

    let client = t.client().await;
    let inventory = client.inventory(&host.id).await.unwrap();
    let pid = inventory.providers.iter().find(|p| p.id == "redis").unwrap().pid;
    // Requests keep coming while the provider dies and comes back.
    let load = tokio::spawn(async move {
        let mut replies = Vec::new();
        for _ in 0..200 {
            let reply = get(addr, "/count/c").await;
            let ok = reply.status == 200;
            replies.push((reply.status, reply.text()));
            if ok && replies.len() > 50 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replies
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("provider pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let replies = load.await.unwrap();
    let failed = replies.iter().filter(|(status, _)| *status != 200).count();
    eprintln!("{failed} of {} calls failed (typed) while the provider restarted", replies.len());
    for (status, text) in &replies {
        assert!(
            *status == 200 || (*status == 500 && text.contains("Unavailable")),
            "a call during the crash failed untyped: {status} {text}"
        );
    }
    let last = replies.last().unwrap();
    assert_eq!(last.0, 200, "calls succeed after the restart: {replies:?}");
    // Redis kept the count: the restarted provider serves the same link config.
    let before = last.1.trim().parse::<u64>().unwrap();
    assert_eq!(get(addr, "/count/c").await.text(), (before + 1).to_string());
    let inventory = client.inventory(&host.id).await.unwrap();
    assert!(inventory.providers.iter().any(|p| p.id == "redis" && p.restarts >= 1));
}

#[tokio::test]
async fn builtin_providers_serve_links_inside_the_host() {
    let lattice = Lattice::new("builtin").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let wasm = component("kv-counter");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "counter"]).await;
    t.ok(&["start", "provider", "http-server", "--id", "web", "--builtin"]).await;
    t.ok(&["start", "provider", "keyvalue-nats", "--id", "natskv", "--builtin"]).await;
    let addr: SocketAddr = format!("127.0.0.1:{}", trellis_tests::free_port()).parse().unwrap();
    let address = format!("address={addr}");
    t.ok(&[
        "link",
        "put",
        "--source",
        "web",
        "--interface",
        "wasi:http/incoming-handler",
        "--target",
        "counter",
        "--config",
        &address,
    ])
    .await;
    link_store(&lattice, "natskv", &[]).await;
    assert_eq!(get(addr, "/count/b").await.text(), "1");
    assert_eq!(get(addr, "/count/b").await.text(), "2");

    let inventory = t.client().await.inventory(&host.id).await.unwrap();
    assert_eq!(inventory.providers.len(), 2);
    for p in &inventory.providers {
        assert!(p.builtin && p.running, "{p:?}");
    }
    // Stopped like a process: its listener closes.
    t.ok(&["stop", "provider", "web"]).await;
    assert!(http_request(addr, "GET", "/count/b", b"").await.is_err(), "still listening");

    let err = t.fails(&["start", "provider", "no-such-kind", "--id", "x", "--builtin"]).await;
    assert!(
        err.contains("no builtin provider `no-such-kind`") && err.contains("keyvalue-nats"),
        "{err}"
    );
}

#[tokio::test]
async fn a_provider_reports_its_health_in_the_inventory() {
    let redis = RedisServer::start().await;
    let lattice = Lattice::new("health").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let wasm = component("kv-counter");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "counter"]).await;
    t.ok(&["start", "provider", "keyvalue-redis", "--id", "redis"]).await;
    let url = format!("url={}", redis.url());
    link_store(&lattice, "redis", &[&url]).await;
    let client = t.client().await;
    let health = |client: trellis_lattice::client::LatticeClient, id: String| async move {
        let inventory = client.inventory(&id).await.ok()?;
        let p = inventory.providers.into_iter().find(|p| p.id == "redis")?;
        Some((p.healthy, p.problem))
    };
    assert_eq!(health(client.clone(), host.id.clone()).await, Some((true, String::new())));

    drop(redis);
    let problem =
        trellis_tests::eventually("redis to be reported down", Duration::from_secs(30), || {
            let (client, id) = (client.clone(), host.id.clone());
            async move {
                let (healthy, problem) = health(client, id).await?;
                (!healthy).then_some(problem)
            }
        })
        .await;
    assert!(problem.contains("redis at redis://127.0.0.1"), "{problem}");
}

#[tokio::test]
async fn a_component_picks_a_named_link_at_run_time() {
    let lattice = Lattice::new("named").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let wasm = component("kv-counter");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "counter"]).await;
    let addr = lattice.serve_http(&host.id, "counter", &[]).await;
    t.ok(&["start", "provider", "keyvalue-nats", "--id", "natskv", "--builtin"]).await;
    link_store(&lattice, "natskv", &["bucket=main-store"]).await;
    t.ok(&[
        "link",
        "put",
        "--source",
        "counter",
        "--interface",
        STORE,
        "--target",
        "natskv",
        "--name",
        "cache",
        "--config",
        "bucket=cache-store",
    ])
    .await;

    assert_eq!(get(addr, "/count/x").await.text(), "1");
    assert_eq!(get(addr, "/count/x").await.text(), "2");
    assert_eq!(get(addr, "/count/x?link=cache").await.text(), "1", "another store");
    assert_eq!(get(addr, "/count/x").await.text(), "3");
    let missing = get(addr, "/count/x?link=nope").await;
    assert_eq!(missing.status, 500);
    assert!(
        missing.text().contains("NoLink") && missing.text().contains("nope"),
        "{}",
        missing.text()
    );
}

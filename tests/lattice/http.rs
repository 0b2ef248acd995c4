//! HTTP requests reaching components across hosts.

use std::time::Duration;

use futures::StreamExt;

use crate::{Lattice, get};

#[tokio::test]
async fn request_crosses_hosts_and_returns_the_components_response() {
    let lattice = Lattice::new("cross").await;
    let t = &lattice.trellis;
    let edge = t.host("edge", &["role=edge"]).await;
    let worker = t.host("worker", &["role=worker"]).await;
    lattice.start_hello("hello", &["--label", "role=worker"]).await;
    let addr = lattice.serve_http(&edge.id, "hello", &[]).await;

    let reply = get(addr, "/some/path?x=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello from trellis, path=/some/path?x=1\n");
    assert_eq!(reply.header("x-component"), Some("http-hello"));
    assert!(lattice.invocations(&worker.id, "hello").await >= 2);
    assert_eq!(lattice.invocations(&edge.id, "hello").await, 0, "edge runs no replica");

    let echoed =
        trellis_tests::http_request(addr, "POST", "/echo", b"payload bytes").await.unwrap();
    assert_eq!(echoed.body, b"payload bytes");
}

#[tokio::test]
async fn co_located_replica_is_called_in_process_without_nats() {
    let lattice = Lattice::new("local").await;
    let t = &lattice.trellis;
    let host = t.host("solo", &[]).await;
    let _other = t.host("other", &[]).await;
    lattice.start_hello("hello", &["--host", &host.id]).await;
    lattice.start_hello("hello", &["--host", &_other.id]).await;
    let addr = lattice.serve_http(&host.id, "hello", &[]).await;

    let nats = t.client().await;
    let mut rpc = nats.nats().subscribe(nats.subjects().rpc_all("hello")).await.unwrap();
    trellis_lattice::connect::sync_with_server(nats.nats()).await.unwrap();
    let before = lattice.invocations(&host.id, "hello").await;
    for _ in 0..10 {
        assert_eq!(get(addr, "/local").await.status, 200);
    }
    assert_eq!(lattice.invocations(&host.id, "hello").await - before, 10, "all served locally");
    assert_eq!(lattice.invocations(&_other.id, "hello").await, 0);
    let leaked = tokio::time::timeout(Duration::from_millis(300), rpc.next()).await;
    assert!(leaked.is_err(), "a co-located call went over NATS: {leaked:?}");
}

#[tokio::test]
async fn replicas_on_two_hosts_share_the_load() {
    let lattice = Lattice::new("spread").await;
    let t = &lattice.trellis;
    let edge = t.host("edge", &["role=edge"]).await;
    let a = t.host("worker-a", &["role=worker"]).await;
    let b = t.host("worker-b", &["role=worker"]).await;
    lattice.start_hello("hello", &["--label", "role=worker", "--replicas", "2"]).await;
    let addr = lattice.serve_http(&edge.id, "hello", &[]).await;

    for _ in 0..30 {
        assert_eq!(get(addr, "/spread").await.status, 200);
    }
    let (on_a, on_b) =
        (lattice.invocations(&a.id, "hello").await, lattice.invocations(&b.id, "hello").await);
    assert!(on_a > 0 && on_b > 0, "both replicas serve: a={on_a} b={on_b}");
    assert!(on_a + on_b >= 30);
}

#[tokio::test]
async fn components_built_against_older_wasi_releases_run() {
    let lattice = Lattice::new("semver").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let wasm = trellis_tests::component("http-hello-v020");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "old", "--host", &host.id]).await;
    let addr = lattice.serve_http(&host.id, "old", &[]).await;
    let reply = get(addr, "/v020").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello from wasi 0.2.0, path=/v020\n");
}

#[tokio::test]
async fn components_from_other_toolchains_run() {
    // CPython compiled to a component by componentize-py: another toolchain, another runtime.
    let wasm = trellis_tests::python_component("py-hello");
    let lattice = Lattice::new("python").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "py", "--host", &host.id]).await;
    let addr = lattice.serve_http(&host.id, "py", &[]).await;
    let reply = get(addr, "/snake?x=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello from python, path=/snake?x=1\n");
}

#[tokio::test]
async fn links_share_an_address_routed_by_host_and_path_prefix() {
    let lattice = Lattice::new("vhosts").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    lattice.start_hello("hello", &["--host", &host.id]).await;
    let old = trellis_tests::component("http-hello-v020");
    t.ok(&["start", "component", old.to_str().unwrap(), "--id", "old", "--host", &host.id]).await;
    // The first link (any host, any path) goes to hello.
    let addr = lattice.serve_http(&host.id, "hello", &[]).await;
    let address = format!("address={addr}");
    let link = |name: &'static str, config: &'static str| {
        let address = address.clone();
        async move {
            t.ok(&[
                "link",
                "put",
                "--source",
                "web",
                "--interface",
                "wasi:http/incoming-handler",
                "--target",
                "old",
                "--name",
                name,
                "--config",
                &address,
                "--config",
                config,
            ])
            .await
        }
    };
    link("vhost", "host=old.example").await;
    link("legacy", "path_prefix=/legacy").await;

    let at = |host: &'static str, path: &'static str| async move {
        trellis_tests::http_request_to_host(addr, host, "GET", path, b"").await.unwrap().text()
    };
    assert_eq!(at("new.example", "/x").await, "hello from trellis, path=/x\n");
    assert_eq!(at("old.example:8080", "/x").await, "hello from wasi 0.2.0, path=/x\n");
    assert_eq!(at("new.example", "/legacy/y").await, "hello from wasi 0.2.0, path=/legacy/y\n");
    assert_eq!(at("new.example", "/legacyz").await, "hello from trellis, path=/legacyz\n");

    // The same host and prefix twice is refused, naming the link that has it.
    let err = t
        .fails(&[
            "link",
            "put",
            "--source",
            "web",
            "--interface",
            "wasi:http/incoming-handler",
            "--target",
            "hello",
            "--name",
            "dup",
            "--config",
            &address,
            "--config",
            "host=old.example",
        ])
        .await;
    assert!(err.contains("already serves") && err.contains("vhost"), "{err}");

    // Deleting a link removes only its route; the address keeps serving the others.
    t.ok(&[
        "link",
        "del",
        "--source",
        "web",
        "--interface",
        "wasi:http/incoming-handler",
        "--name",
        "vhost",
    ])
    .await;
    crate::eventually_text(addr, "old.example", "/x", "hello from trellis, path=/x\n").await;
}

#[tokio::test]
async fn bodies_larger_than_a_nats_message_cross_hosts_in_chunks() {
    let lattice = Lattice::new("chunks").await;
    let t = &lattice.trellis;
    let edge = t.host("edge", &["role=edge"]).await;
    let worker = t.host("worker", &["role=worker"]).await;
    lattice.start_hello("hello", &["--host", &worker.id, "--max-request-bytes", "8388608"]).await;
    lattice.start_hello("small", &["--host", &worker.id]).await;
    let addr = lattice.serve_http(&edge.id, "hello", &["max_body_bytes=8388608"]).await;

    // 3 MiB each way through a server whose messages carry 1 MiB.
    let body: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let echoed = trellis_tests::http_request(addr, "POST", "/echo", &body).await.unwrap();
    assert_eq!(echoed.status, 200, "{}", echoed.text());
    assert!(echoed.body == body, "the body came back changed ({} bytes)", echoed.body.len());
    assert!(lattice.invocations(&worker.id, "hello").await >= 1);

    // The receiving component's own limit still applies, before the body is pulled.
    t.ok(&[
        "link",
        "put",
        "--source",
        "web",
        "--interface",
        "wasi:http/incoming-handler",
        "--target",
        "small",
        "--name",
        "small",
        "--config",
        &format!("address={addr}"),
        "--config",
        "path_prefix=/small",
        "--config",
        "max_body_bytes=8388608",
    ])
    .await;
    let refused = trellis_tests::http_request(addr, "POST", "/small/echo", &body).await.unwrap();
    assert_eq!(refused.status, 413, "{}", refused.text());
}

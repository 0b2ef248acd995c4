//! Every bad input gets a typed error that says what was wrong, and the hosts keep running.

use std::time::Duration;

use trellis_tests::{Trellis, component, http_request};

use crate::{Lattice, get};

#[tokio::test]
async fn bad_component_files_are_refused_by_name() {
    let lattice = Lattice::new("badfiles").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let dir = tempfile::tempdir().unwrap();

    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, b"hello, I am text").unwrap();
    let err = t.fails(&["start", "component", text.to_str().unwrap(), "--id", "x"]).await;
    assert!(err.contains("not a WebAssembly file"), "{err}");

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = t.fails(&["start", "component", core.to_str().unwrap(), "--id", "x"]).await;
    assert!(err.contains("core WebAssembly module, not a component"), "{err}");

    let missing = dir.path().join("missing.wasm");
    let err = t.fails(&["start", "component", missing.to_str().unwrap(), "--id", "x"]).await;
    assert!(err.contains("cannot read component file"), "{err}");

    // A valid component that exports nothing Trellis can call.
    let cli = component("cli-only");
    let err = t
        .fails(&["start", "component", cli.to_str().unwrap(), "--id", "cli", "--host", &host.id])
        .await;
    assert!(err.contains("exports no `wasi:http/incoming-handler"), "{err}");
    assert!(err.contains("InvalidComponent"), "{err}");

    let err = t.fails(&["start", "component", cli.to_str().unwrap(), "--id", "bad.id"]).await;
    assert!(err.contains("invalid component id `bad.id`"), "{err}");

    // The host is still there and runs nothing.
    let inv = t.client().await.inventory(&host.id).await.unwrap();
    assert!(inv.components.is_empty());
}

#[tokio::test]
async fn unknown_ids_and_bad_links_name_what_is_wrong() {
    let lattice = Lattice::new("unknown").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let bogus = "NBOGUSHOSTID";

    let err = t.fails(&["get", "inventory", bogus]).await;
    assert!(err.contains("no host `NBOGUSHOSTID` in lattice `unknown`"), "{err}");
    let wasm = component("http-hello");
    let err = t
        .fails(&["start", "component", wasm.to_str().unwrap(), "--id", "h1", "--host", bogus])
        .await;
    assert!(err.contains("no host `NBOGUSHOSTID`"), "{err}");
    let err = t
        .fails(&[
            "start",
            "component",
            wasm.to_str().unwrap(),
            "--id",
            "h1",
            "--label",
            "zone=mars",
        ])
        .await;
    assert!(err.contains("no host in lattice `unknown` matches labels zone=mars"), "{err}");

    let err = t.fails(&["stop", "component", "ghost"]).await;
    assert!(err.contains("component `ghost` runs on no host"), "{err}");
    let err = t.fails(&["stop", "component", "ghost", "--host", &host.id]).await;
    assert!(err.contains("no component `ghost` runs on this host"), "{err}");

    let link = [
        "link",
        "put",
        "--source",
        "web",
        "--interface",
        "wasi:http/incoming-handler",
        "--config",
        "address=127.0.0.1:1",
    ];
    let err = t.fails(&[&link[..], &["--target", "ghost"]].concat()).await;
    assert!(err.contains("no component or provider `ghost` runs in lattice"), "{err}");

    lattice.start_hello("hello", &["--host", &host.id]).await;
    let err = t
        .fails(&[
            "link",
            "put",
            "--source",
            "app",
            "--target",
            "hello",
            "--interface",
            "wasi:keyvalue/store",
        ])
        .await;
    assert!(err.contains("does not export wasi:keyvalue/store"), "{err}");
    let err = t
        .fails(&["link", "put", "--source", "app", "--target", "hello", "--interface", "keyvalue"])
        .await;
    assert!(err.contains("invalid interface `keyvalue`"), "{err}");
    let err =
        t.fails(&["link", "del", "--source", "app", "--interface", "wasi:keyvalue/store"]).await;
    assert!(err.contains("no link from `app`"), "{err}");

    let err =
        t.fails(&["start", "provider", "no-such-kind", "--id", "p", "--host", &host.id]).await;
    assert!(err.contains("trellis-provider-no-such-kind"), "{err}");

    assert_eq!(
        t.client().await.hosts(Duration::from_millis(300)).await.unwrap().len(),
        1,
        "host still up"
    );
}

#[tokio::test]
async fn cli_without_nats_says_how_to_fix_it() {
    let t = Trellis::new("nats://127.0.0.1:1", "none");
    let err = t.fails(&["get", "hosts"]).await;
    assert!(err.contains("cannot reach NATS at nats://127.0.0.1:1"), "{err}");
    assert!(err.contains("trellis up"), "{err}");
}

#[tokio::test]
async fn http_errors_are_typed_statuses_and_the_host_keeps_serving() {
    let lattice = Lattice::new("httperr").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    lattice.start_hello("hello", &["--host", &host.id]).await;
    let addr =
        lattice.serve_http(&host.id, "hello", &["max_body_bytes=1024", "timeout_ms=1000"]).await;

    let big = vec![b'x'; 4096];
    let reply = http_request(addr, "POST", "/echo", &big).await.unwrap();
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.text().contains("exceeds 1024 bytes"), "{}", reply.text());

    let reply = get(addr, "/trap").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("trellis-error"), Some("Trap"));
    assert!(reply.text().contains("component `hello` trapped"), "{}", reply.text());

    // A link the provider cannot apply (its address is taken by another process) says so.
    let occupier = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("address={}", occupier.local_addr().unwrap());
    let err = t
        .fails(&[
            "link",
            "put",
            "--source",
            "web",
            "--target",
            "hello",
            "--name",
            "second",
            "--interface",
            "wasi:http/incoming-handler",
            "--config",
            &taken,
        ])
        .await;
    assert!(err.contains("could not apply it") && err.contains("cannot listen"), "{err}");

    // A guest that never returns is cut off at the deadline and does not hold the host.
    let reply = get(addr, "/spin").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.header("trellis-error"), Some("Timeout"));
    assert_eq!(get(addr, "/after-spin").await.status, 200);

    // Runaway memory and recursion trap with a reason; the host keeps serving.
    for (path, reason) in [("/grow", "memory"), ("/recurse", "out of bounds memory access")] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 500, "{path}: {}", reply.text());
        assert_eq!(reply.header("trellis-error"), Some("Trap"), "{path}");
        assert!(reply.text().contains(reason), "{path}: {}", reply.text());
        assert_eq!(get(addr, "/still-here").await.status, 200, "after {path}");
    }

    t.ok(&["stop", "component", "hello"]).await;
    let reply = get(addr, "/gone").await;
    assert_eq!(reply.status, 503);
    assert!(reply.text().contains("no replica of `hello` is running"), "{}", reply.text());

    lattice.start_hello("hello", &["--host", &host.id]).await;
    assert_eq!(get(addr, "/back").await.status, 200);
}

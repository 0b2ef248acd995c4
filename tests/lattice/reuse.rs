//! Warm instances: a component started with `--reuse` serves calls from instances kept between
//! calls (`/calls` of http-hello counts the requests its instance served), up to its
//! `max_calls`, until idle too long, and never after a failed call; without `--reuse` every call
//! gets a fresh instance; claims with `no_reuse` forbid it.

use std::time::Duration;

use bytes::Bytes;
use trellis_lattice::client::LatticeClient;
use trellis_lattice::envelope::InvokeErrorKind;
use trellis_lattice::http::{HANDLE, HttpRequest, HttpResponse, INCOMING_HANDLER, decode, encode};
use trellis_tests::component;

use crate::Lattice;

/// The body `/path` of component `id` answers, or the error's kind.
async fn get(client: &LatticeClient, id: &str, path: &str) -> Result<String, InvokeErrorKind> {
    let request = HttpRequest {
        method: "GET".into(),
        path_and_query: path.into(),
        authority: None,
        headers: vec![],
        body: Vec::new().into(),
        scheme: None,
    };
    let payload = Bytes::from(encode(&request).unwrap());
    let reply = client
        .invoke(id, INCOMING_HANDLER, HANDLE, payload, Duration::from_secs(10))
        .await
        .map_err(|e| e.kind())?;
    let response: HttpResponse = decode(&reply).unwrap();
    Ok(String::from_utf8(response.body.into_vec()).unwrap())
}

async fn counts(client: &LatticeClient, id: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(client, id, "/calls").await.unwrap());
    }
    out
}

#[tokio::test]
async fn warm_instances_serve_calls_in_turn_and_are_dropped_when_they_should() {
    let lattice = Lattice::new("reuse").await;
    let t = &lattice.trellis;
    let metrics: std::net::SocketAddr =
        format!("127.0.0.1:{}", trellis_tests::free_port()).parse().unwrap();
    let host =
        t.host_with("h", &["--allow-unsigned".into(), format!("--metrics-listen={metrics}")]).await;
    let wasm = component("http-hello");
    let wasm = wasm.to_str().unwrap();
    let start = |id: &'static str, extra: &'static [&'static str]| {
        let mut args = vec!["start", "component", wasm, "--id", id, "--host", &host.id];
        args.extend_from_slice(extra);
        async move { t.ok(&args).await }
    };
    start("fresh", &[]).await;
    // Idle times far above a call's, so a slow machine does not expire instances mid-test.
    start("warm", &["--reuse", "--reuse-idle-ms", "60000"]).await;
    start("short", &["--reuse", "--reuse-max-calls", "2", "--reuse-idle-ms", "1500"]).await;
    let client = t.client().await;

    assert_eq!(counts(&client, "fresh", 3).await, ["1", "1", "1"], "a fresh instance per call");
    assert_eq!(counts(&client, "warm", 3).await, ["1", "2", "3"], "one instance, kept warm");

    // A trap discards the instance that served it: the next call starts over.
    assert_eq!(get(&client, "warm", "/trap").await, Err(InvokeErrorKind::Trap));
    assert_eq!(counts(&client, "warm", 2).await, ["1", "2"]);

    // Two calls per instance, then a new one; an instance idle too long is dropped.
    assert_eq!(counts(&client, "short", 5).await, ["1", "2", "1", "2", "1"]);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(counts(&client, "short", 1).await, ["1"], "idle past 1.5 s: dropped");

    // Concurrent calls each get an instance of their own (warm or new) and all answer.
    let concurrent: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get(&client, "warm", "/calls").await })
        })
        .collect();
    for call in concurrent {
        let n: u32 = call.await.unwrap().unwrap().parse().unwrap();
        assert!(n >= 1, "{n}");
    }

    // The host's metrics show the idle warm instances (the 8 concurrent calls left at least
    // one), and none for a component without reuse.
    let text = trellis_tests::http_request(metrics, "GET", "/metrics", b"").await.unwrap().text();
    let warm_instances = |component: &str| -> u64 {
        let prefix =
            format!("trellis_warm_instances{{host=\"{}\",component=\"{component}\"}} ", host.id);
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    };
    assert!(warm_instances("warm") >= 1, "{text}");
    assert_eq!(warm_instances("fresh"), 0);

    // The inventory says which components reuse instances.
    let inventory = t.ok(&["get", "inventory", &host.id, "--output", "json"]).await;
    let inventory: serde_json::Value = serde_json::from_str(&inventory).unwrap();
    let reuse_of = |id: &str| {
        let components = inventory["components"].as_array().unwrap();
        let c = components.iter().find(|c| c["id"] == id).unwrap();
        c["limits"]["reuse"].clone()
    };
    assert_eq!(reuse_of("fresh"), serde_json::Value::Null);
    assert_eq!(reuse_of("short"), serde_json::json!({"max_calls": 2, "idle_ms": 1500}));
}

#[tokio::test]
async fn custom_functions_answer_with_reuse_on() {
    let lattice = Lattice::new("reusefn").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let wasm = component("greeter");
    let wasm = wasm.to_str().unwrap();
    t.ok(&["start", "component", wasm, "--id", "greeter", "--host", &host.id, "--reuse"]).await;
    for name in ["ann", "bob", "cy"] {
        let args = format!(r#"["{name}"]"#);
        let out = t.ok(&["call", "greeter", "trellis:test/types.greet", "--args", &args]).await;
        assert_eq!(out.trim(), format!(r#""hello, {name}""#));
    }
    // A call whose arguments do not fit is refused and the next one still runs.
    t.fails(&["call", "greeter", "trellis:test/types.greet", "--args", "[1]"]).await;
    let out = t.ok(&["call", "greeter", "trellis:test/types.greet", "--args", r#"["dee"]"#]).await;
    assert_eq!(out.trim(), r#""hello, dee""#);
}

#[tokio::test]
async fn claims_can_forbid_warm_instances() {
    let lattice = Lattice::new("noreuse").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let account = nkeys::KeyPair::new_account();
    let host = t.host_with("strict", &[format!("--trusted-issuer={}", account.public_key())]).await;
    let file = &trellis_tests::signed_hello(dir.path(), &account, true);

    let refused =
        t.fails(&["start", "component", file, "--id", "h1", "--host", &host.id, "--reuse"]).await;
    assert!(refused.contains("forbid keeping its instances warm"), "{refused}");
    // Without --reuse it runs, a fresh instance per call.
    t.ok(&["start", "component", file, "--id", "h1", "--host", &host.id]).await;
}

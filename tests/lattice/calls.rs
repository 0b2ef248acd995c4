//! Component-to-component calls over a custom WIT interface, in process and across hosts, and
//! `trellis call`.

use std::time::Duration;

use futures::StreamExt;
use trellis_tests::component;

use crate::{Lattice, get};

const TYPES: &str = "trellis:test/types";

/// What `caller`'s `/all` answers when `greeter` serves it: every kind of value, both ways.
const ALL: &str = "hello, lattice
Point { x: 20, y: -30, label: Some(\"p x10\") }
18446744073709551615
circle r=1.5
rect 1x2 None
empty
Some(1)
None
Ok(3)
Err(\"cannot divide 1 by 0\")
Color::Blue Perms(READ | EXEC) (7, 'λ') Some(None)
[3, 2, 1]";

async fn start(lattice: &Lattice, name: &str, host: &str) {
    let wasm = component(name);
    lattice
        .trellis
        .ok(&["start", "component", wasm.to_str().unwrap(), "--id", name, "--host", host])
        .await;
}

async fn link(lattice: &Lattice) {
    lattice
        .trellis
        .ok(&["link", "put", "--source", "caller", "--interface", TYPES, "--target", "greeter"])
        .await;
}

#[tokio::test]
async fn co_located_components_call_each_other_in_process() {
    let lattice = Lattice::new("c2clocal").await;
    let host = lattice.trellis.host("h", &[]).await;
    start(&lattice, "greeter", &host.id).await;
    start(&lattice, "caller", &host.id).await;
    let addr = lattice.serve_http(&host.id, "caller", &[]).await;

    // Before the link: the call fails at once, naming what is missing.
    let reply = get(addr, "/greet/x").await;
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("NoLink"), "{}", reply.text());

    link(&lattice).await;
    let nats = lattice.trellis.client().await;
    let mut rpc = nats.nats().subscribe(nats.subjects().rpc_all("greeter")).await.unwrap();
    trellis_lattice::connect::sync_with_server(nats.nats()).await.unwrap();
    let reply = get(addr, "/all").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), ALL);
    let leaked = tokio::time::timeout(Duration::from_millis(300), rpc.next()).await;
    assert!(leaked.is_err(), "a co-located call went over NATS: {leaked:?}");
    assert!(lattice.invocations(&host.id, "greeter").await >= 11);
}

#[tokio::test]
async fn components_call_each_other_across_hosts() {
    let lattice = Lattice::new("c2cremote").await;
    let a = lattice.trellis.host("a", &[]).await;
    let b = lattice.trellis.host("b", &[]).await;
    start(&lattice, "caller", &a.id).await;
    start(&lattice, "greeter", &b.id).await;
    link(&lattice).await;
    let addr = lattice.serve_http(&a.id, "caller", &[]).await;
    let reply = get(addr, "/all").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), ALL);
    assert!(lattice.invocations(&b.id, "greeter").await >= 11, "greeter on b served the calls");

    // A link's timeout_ms bounds its calls: the caller traps with Timeout at the link's deadline.
    lattice
        .trellis
        .ok(&[
            "link",
            "put",
            "--source",
            "caller",
            "--interface",
            TYPES,
            "--target",
            "greeter",
            "--config",
            "timeout_ms=300",
        ])
        .await;
    let reply = get(addr, "/spin").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    // The deadline named in the error is the link's (milliseconds), not the caller's 30 s.
    let text = reply.text();
    assert!(text.contains("Timeout") && text.contains("did not answer within"), "{text}");
    assert!(text.contains("ms"), "{text}");

    // The link's target is checked: it must export the interface.
    let err = lattice
        .trellis
        .fails(&["link", "put", "--source", "caller", "--interface", TYPES, "--target", "caller"])
        .await;
    assert!(err.contains("does not export"), "{err}");
}

#[tokio::test]
async fn trellis_call_invokes_any_exported_function() {
    let lattice = Lattice::new("c2ccli").await;
    let host = lattice.trellis.host("h", &[]).await;
    start(&lattice, "greeter", &host.id).await;
    let t = &lattice.trellis;
    let out = t.ok(&["call", "greeter", "trellis:test/types.greet", "--args", r#"["bob"]"#]).await;
    assert_eq!(out.trim(), r#""hello, bob""#);
    let out = t
        .ok(&[
            "call",
            "greeter",
            "trellis:test/types.scale",
            "--args",
            r#"[{"x": 1, "y": 2}, 3]"#,
            "--output",
            "json",
        ])
        .await;
    let point: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(point, serde_json::json!({"x": 3, "y": 6, "label": null}));
    let out = t
        .ok(&["call", "greeter", "trellis:test/types.describe", "--args", r#"[{"circle": 2}]"#])
        .await;
    assert_eq!(out.trim(), r#""circle r=2""#);
    let out =
        t.ok(&["call", "greeter", "trellis:test/types.checked-div", "--args", "[1, 0]"]).await;
    assert_eq!(out.trim(), r#"{"err":"cannot divide 1 by 0"}"#);

    // Arguments that do not fit the function's types are refused before the guest runs.
    let err = t
        .fails(&["call", "greeter", "trellis:test/types.scale", "--args", r#"[{"x": "one"}, 3]"#])
        .await;
    assert!(err.contains("BadRequest") && err.contains("p.x"), "{err}");
    let err = t.fails(&["call", "greeter", "trellis:test/types.sum", "--args", "[[1, -1]]"]).await;
    assert!(err.contains("out of range for u64"), "{err}");
    let err = t.fails(&["call", "greeter", "trellis:test/types.nope", "--args", "[]"]).await;
    assert!(err.contains("does not export"), "{err}");
}

#[tokio::test]
async fn in_process_calls_do_not_wait_for_their_callers_admission_slots() {
    let lattice = Lattice::new("c2cfull").await;
    // Two admission slots, both taken by callers whose callees run on the same host.
    let host = lattice
        .trellis
        .host_with("h", &["--allow-unsigned".into(), "--max-instances=2".into()])
        .await;
    start(&lattice, "greeter", &host.id).await;
    start(&lattice, "caller", &host.id).await;
    link(&lattice).await;
    let addr = lattice.serve_http(&host.id, "caller", &["timeout_ms=60000"]).await;
    let calls = (0..8).map(|_| get(addr, "/all"));
    for reply in futures::future::join_all(calls).await {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), ALL);
    }
}

#[tokio::test]
async fn a_components_claims_admit_only_the_callers_they_name_near_and_far() {
    let lattice = Lattice::new("c2ccallers").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let account = nkeys::KeyPair::new_account();
    let strict = [format!("--trusted-issuer={}", account.public_key())];
    let (a, b) = (t.host_with("a", &strict).await, t.host_with("b", &strict).await);
    let sign = |name: &str, allow: &[&str], callers: &[&str]| {
        let sub = dir.path().join(format!("{name}-{}", callers.join("-")));
        std::fs::create_dir_all(&sub).unwrap();
        trellis_tests::signed_component(&sub, name, &account, (allow, callers), false)
    };
    let caller = sign("caller", &[TYPES], &[]);
    let closed = sign("greeter", &[], &["someone-else"]);
    let open = sign("greeter", &[], &["caller"]);
    let start = |file: String, id: &'static str, host: String| async move {
        t.ok(&["start", "component", &file, "--id", id, "--host", &host]).await;
    };
    start(caller, "caller", a.id.clone()).await;
    start(closed.clone(), "greeter", a.id.clone()).await;
    link(&lattice).await;
    let addr = lattice.serve_http(&a.id, "caller", &[]).await;

    // A callee whose claims name other callers refuses this one, in process and across hosts.
    for host in [&a.id, &b.id] {
        if host == &b.id {
            start(closed.clone(), "greeter", host.clone()).await;
        }
        let reply = get(addr, "/greet/x").await;
        assert_eq!(reply.status, 500, "{}", reply.text());
        let text = reply.text();
        assert!(text.contains("Denied") && text.contains("someone-else"), "{text}");
        assert!(text.contains("`caller`"), "names the caller: {text}");
        t.ok(&["stop", "component", "greeter", "--host", host]).await;
    }
    // One that names it takes its calls, in process and across hosts.
    for host in [&a.id, &b.id] {
        start(open.clone(), "greeter", host.clone()).await;
        let reply = get(addr, "/all").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), ALL);
        t.ok(&["stop", "component", "greeter", "--host", host]).await;
    }
    // Calls that are not a component's (here a host-signed call from outside any component)
    // are not limited by it.
    start(closed, "greeter", b.id.clone()).await;
    let signer = trellis_lattice::signing::Signer::new(nkeys::KeyPair::new_server(), None);
    let client = t.client().await.with_signer(signer);
    let mut args = Vec::new();
    rmpv::encode::write_value(&mut args, &rmpv::Value::Array(vec!["bob".into()])).unwrap();
    let answer = client
        .invoke("greeter", TYPES, "greet", args.into(), Duration::from_secs(5))
        .await
        .expect("a call from no component is admitted");
    assert!(String::from_utf8_lossy(&answer).contains("bob"));
}

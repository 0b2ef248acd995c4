//! WASI 0.3 components next to WASI 0.2 ones: `http-hello-p3` (built with the `wasip3` crate,
//! so importing `@0.3.2` interfaces and some 0.2 ones) answers over HTTP through the
//! http-server provider and across hosts, calls out through the http-client provider, serves
//! several requests at once from one instance when started with reuse, calls a WASI 0.2
//! component on another host over a custom WIT link; a component importing
//! a WASI version no host serves is refused at start, by name.

use trellis_tests::component;

use crate::{Lattice, get};

#[tokio::test]
async fn wasi_0_3_and_0_2_handlers_answer_http_side_by_side_across_hosts() {
    let lattice = Lattice::new("wasi03").await;
    let t = &lattice.trellis;
    let edge = t.host("edge", &[]).await;
    let worker = t.host("worker", &[]).await;
    let p3 = component("http-hello-p3");
    t.ok(&["start", "component", p3.to_str().unwrap(), "--id", "v3", "--host", &worker.id]).await;
    lattice.start_hello("v2", &["--host", &worker.id]).await;
    let at_v3 = lattice.serve_http_as("web3", &edge.id, "v3", &[]).await;
    let at_v2 = lattice.serve_http_as("web2", &edge.id, "v2", &[]).await;

    let reply = get(at_v3, "/some/path?x=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello from trellis p3, path=/some/path?x=1\n");
    assert_eq!(reply.header("x-component"), Some("http-hello-p3"));
    let echoed = trellis_tests::http_request(at_v3, "POST", "/echo", b"p3 bytes").await.unwrap();
    assert_eq!(echoed.body, b"p3 bytes");
    // Without reuse, a fresh instance per request, as for 0.2 components.
    assert_eq!(get(at_v3, "/calls").await.text(), "1");
    assert_eq!(get(at_v3, "/calls").await.text(), "1");

    let reply = get(at_v2, "/v2").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello from trellis, path=/v2\n");

    assert!(lattice.invocations(&worker.id, "v3").await >= 4, "served on the worker");
    assert_eq!(lattice.invocations(&edge.id, "v3").await, 0, "the edge runs no replica");
}

#[tokio::test]
async fn a_wasi_0_3_component_calls_a_wasi_0_2_one_on_another_host_over_a_custom_link() {
    let lattice = Lattice::new("wasi03link").await;
    let t = &lattice.trellis;
    let a = t.host("a", &[]).await;
    let b = t.host("b", &[]).await;
    let p3 = component("http-hello-p3");
    t.ok(&["start", "component", p3.to_str().unwrap(), "--id", "v3", "--host", &a.id]).await;
    let greeter = component("greeter");
    t.ok(&["start", "component", greeter.to_str().unwrap(), "--id", "greeter", "--host", &b.id])
        .await;
    let addr = lattice.serve_http_as("web", &a.id, "v3", &[]).await;
    let interface = "trellis:test/types";
    t.ok(&["link", "put", "--source", "v3", "--interface", interface, "--target", "greeter"]).await;

    let reply = get(addr, "/greet/p3").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello, p3", "greet ran in the 0.2 greeter, its answer came back");
    assert!(lattice.invocations(&b.id, "greeter").await >= 1, "served on the other host");
}

#[tokio::test]
async fn a_shared_wasi_0_3_instance_serves_requests_at_once() {
    let lattice = Lattice::new("wasi03shared").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let p3 = component("http-hello-p3");
    let wasm = p3.to_str().unwrap();
    let args = ["--id", "shared", "--host", &host.id, "--reuse", "--reuse-idle-ms", "60000"];
    let mut start = vec!["start", "component", wasm];
    start.extend_from_slice(&args);
    start.extend_from_slice(&["--max-concurrent", "8"]);
    t.ok(&start).await;
    let addr = lattice.serve_http(&host.id, "shared", &[]).await;

    // Eight requests that each wait 400 ms on the host's clock, sent together.
    let requests: Vec<_> =
        (0..8).map(|_| tokio::spawn(async move { get(addr, "/sleep/400").await })).collect();
    let mut most = 0;
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let text = reply.text();
        let at_once: u32 = text
            .trim_end()
            .strip_suffix(" at once")
            .and_then(|t| t.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected answer {text:?}"));
        most = most.max(at_once);
    }
    assert!(most > 1, "one instance had at most {most} request in flight at a time");
    // The instance stays: it has served the eight, and serves on.
    let served: u32 = get(addr, "/calls").await.text().parse().unwrap();
    assert!(served > 1, "{served}");
}

#[tokio::test]
async fn a_wasi_0_3_handler_awaits_an_outgoing_call_through_the_http_client() {
    let up = crate::outgoing::upstream("hello from upstream").await;
    let lattice = Lattice::new("wasi03out").await;
    let t = &lattice.trellis;
    let a = t.host("a", &[]).await;
    let b = t.host("b", &[]).await;
    let p3 = component("http-hello-p3");
    t.ok(&["start", "component", p3.to_str().unwrap(), "--id", "v3", "--host", &a.id]).await;
    let addr = lattice.serve_http(&a.id, "v3", &[]).await;

    let reply = get(addr, &format!("/fetch?to={up}")).await.text();
    assert!(reply.contains("HttpRequestDenied"), "no link yet: {reply}");
    lattice.call_out_through_client(&b.id, "v3", &[&format!("allowed_hosts={up}")]).await;
    let reply = get(addr, &format!("/fetch?to={up}")).await.text();
    assert_eq!(reply, "fetched: 200 hello from upstream /from-component");
}

#[tokio::test]
async fn a_component_importing_a_wasi_version_no_host_serves_is_refused_by_name() {
    let lattice = Lattice::new("wasi03refused").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    for import in ["wasi:http/types@0.3.0-rc-2025-09-16", "wasi:clocks/monotonic-clock@0.4.0"] {
        let file = dir.path().join("future.wasm");
        std::fs::write(&file, importing(import)).unwrap();
        let err = t
            .fails(&["start", "component", file.to_str().unwrap(), "--id", "f", "--host", &host.id])
            .await;
        assert!(err.contains(import), "{err}");
        assert!(err.contains("0.2.x") && err.contains("0.3.x"), "names what is served: {err}");
        assert!(err.contains("InvalidComponent"), "{err}");
    }
    // The host is still there and runs nothing.
    let inv = t.client().await.inventory(&host.id).await.unwrap();
    assert!(inv.components.is_empty());
    // And still runs a 0.3 component.
    let p3 = component("http-hello-p3");
    t.ok(&["start", "component", p3.to_str().unwrap(), "--id", "v3", "--host", &host.id]).await;
}

/// A component whose only import is an (empty) instance named `import`.
fn importing(import: &str) -> Vec<u8> {
    use wasm_encoder::{
        Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType,
    };
    let mut component = Component::new();
    let mut types = ComponentTypeSection::new();
    types.instance(&InstanceType::new());
    component.section(&types);
    let mut imports = ComponentImportSection::new();
    imports.import(import, ComponentTypeRef::Instance(0));
    component.section(&imports);
    component.finish()
}

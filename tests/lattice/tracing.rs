//! W3C trace context on every hop: an HTTP request with a `traceparent` enters the http-server
//! provider on one host, runs a component on another, which calls out through the http-client
//! provider; the upstream sees the same trace with a parent span of its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_lattice::trace::TraceContext;
use trellis_tests::otlp::{Collector, ReceivedSpan, metric_value};
use trellis_tests::{component, eventually, read_head};

use crate::Lattice;

/// An upstream that answers 200 and records each request's `traceparent` (or `-`).
async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let head = read_head(&mut conn).await.unwrap_or_default();
                let traceparent = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
                    .map_or("-".to_owned(), |(_, v)| v.trim().to_owned());
                record.lock().unwrap().push(traceparent);
                let reply = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

/// GET `path` with an optional `traceparent` header; returns the body.
async fn get_traced(addr: SocketAddr, path: &str, traceparent: Option<&str>) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let header = traceparent.map(|t| format!("traceparent: {t}\r\n")).unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{header}connection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).await.unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn one_request_is_one_trace_across_hosts_and_providers() {
    let (up, seen) = recording_upstream().await;
    let lattice = Lattice::new("tracing").await;
    let t = &lattice.trellis;
    let edge = t.host("edge", &[]).await;
    let worker = t.host("worker", &[]).await;
    lattice.start_hello("hello", &["--host", &worker.id]).await;
    let addr = lattice.serve_http(&edge.id, "hello", &[]).await;
    lattice.call_out_through_client(&edge.id, "hello", &[&format!("allowed_hosts={up}")]).await;

    // The client's trace reaches the upstream: same trace id, a span of the lattice's as parent.
    let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = get_traced(addr, &format!("/fetch?to={up}"), Some(sent)).await;
    assert!(reply.contains("fetched: 200"), "{reply}");
    let upstream = seen.lock().unwrap().pop().expect("the upstream was called");
    let received =
        TraceContext::parse(&upstream).unwrap_or_else(|| panic!("bad traceparent {upstream}"));
    let client = TraceContext::parse(sent).unwrap();
    assert_eq!(received.trace_id, client.trace_id, "one trace: {upstream}");
    assert_ne!(received.span_id, client.span_id, "each hop has a span of its own");
    assert_eq!(received.flags, client.flags);

    // No traceparent, or a malformed one: the lattice starts a trace, and still carries it.
    for incoming in [None, Some("00-nonsense-01")] {
        get_traced(addr, &format!("/fetch?to={up}"), incoming).await;
        let upstream = seen.lock().unwrap().pop().expect("the upstream was called");
        let started =
            TraceContext::parse(&upstream).unwrap_or_else(|| panic!("bad traceparent {upstream}"));
        assert_ne!(started.trace_id, client.trace_id);
    }
}

/// The spans of trace `trace_id` the collector has.
fn of_trace(collector: &Collector, trace_id: u128) -> Vec<ReceivedSpan> {
    let id = trace_id.to_be_bytes().to_vec();
    collector.with(|r| r.spans.iter().filter(|s| s.span.trace_id == id).cloned().collect())
}

#[tokio::test]
async fn every_process_exports_its_spans_of_one_request_as_one_trace() {
    let collector = Collector::start().await;
    let lattice = Lattice::new("otlp").await;
    let mut t = lattice.trellis.clone();
    t.env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), format!("http://{}", collector.addr)));
    // Three hosts: the HTTP edge, the component, the key-value store (each provider a process).
    let edge = t.host("edge", &[]).await;
    let worker = t.host("worker", &[]).await;
    let store = t.host("store", &[]).await;
    let wasm = component("kv-counter");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "counter", "--host", &worker.id])
        .await;
    t.ok(&["start", "provider", "keyvalue-nats", "--id", "kv", "--host", &store.id]).await;
    t.ok(&[
        "link",
        "put",
        "--source",
        "counter",
        "--interface",
        "wasi:keyvalue/store",
        "--target",
        "kv",
    ])
    .await;
    let lattice = Lattice { nats: lattice.nats, trellis: t };
    let addr = lattice.serve_http(&edge.id, "counter", &[]).await;

    let sent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let reply = get_traced(addr, "/count/traced", Some(sent)).await;
    assert!(reply.ends_with("\r\n\r\n1"), "{reply}");
    let client = TraceContext::parse(sent).unwrap();

    // The spans of six hops, from five processes, each the child of the one before.
    let spans = eventually("every hop's span at the collector", Duration::from_secs(20), || {
        let spans = of_trace(&collector, client.trace_id);
        async move { (spans.len() >= 6).then_some(spans) }
    })
    .await;
    let by_id: std::collections::HashMap<Vec<u8>, &ReceivedSpan> =
        spans.iter().map(|r| (r.span.span_id.clone(), r)).collect();
    let root = spans
        .iter()
        .find(|r| r.span.parent_span_id == client.span_id.to_be_bytes())
        .expect("the http-server's span, child of the client's");
    assert_eq!(root.service, "trellis-provider-http-server");
    assert_eq!(root.span.kind, SpanKind::Server as i32);
    for r in &spans {
        if r.span.span_id != root.span.span_id {
            assert!(by_id.contains_key(&r.span.parent_span_id), "a parent for {r:?}");
        }
    }
    // Walk the chain from the key-value provider's span back to the http-server's.
    let kv = spans
        .iter()
        .find(|r| r.service == "trellis-provider-keyvalue-nats")
        .expect("the key-value provider's span");
    let mut chain = vec![(kv.service.clone(), kv.host.clone(), kv.span.kind)];
    let mut at = kv;
    while at.span.span_id != root.span.span_id {
        at = by_id[&at.span.parent_span_id];
        chain.push((at.service.clone(), at.host.clone(), at.span.kind));
    }
    chain.reverse();
    let (server, client_kind) = (SpanKind::Server as i32, SpanKind::Client as i32);
    let expected = [
        ("trellis-provider-http-server", edge.id.as_str(), server),
        ("trellis-host", edge.id.as_str(), client_kind),
        ("trellis-host", worker.id.as_str(), server),
        ("trellis-host", worker.id.as_str(), client_kind),
        ("trellis-host", store.id.as_str(), server),
        ("trellis-provider-keyvalue-nats", store.id.as_str(), server),
    ];
    let chain: Vec<(&str, &str, i32)> =
        chain.iter().map(|(s, h, k)| (s.as_str(), h.as_str(), *k)).collect();
    assert_eq!(chain, expected);
    let worker_span = spans.iter().find(|r| r.host == worker.id && r.span.kind == server).unwrap();
    assert_eq!(worker_span.span.name, "wasi:http/incoming-handler/handle");
}

#[tokio::test]
async fn grpc_export_carries_spans_and_metrics_from_flags_to_providers() {
    let collector = Collector::start().await;
    let lattice = Lattice::new("otlpgrpc").await;
    let mut t = lattice.trellis.clone();
    t.env.push(("OTEL_METRIC_EXPORT_INTERVAL".into(), "300".into()));
    // Flags only: the provider processes learn the collector from their host, not the
    // environment.
    let endpoint = format!("http://{}", collector.addr);
    let args: Vec<String> =
        ["--allow-unsigned", "--otlp-endpoint", &endpoint, "--otlp-protocol", "grpc"]
            .map(String::from)
            .to_vec();
    let edge = t.host_with("edge", &args).await;
    let wasm = component("http-hello");
    t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "hello", "--host", &edge.id])
        .await;
    let lattice = Lattice { nats: lattice.nats, trellis: t };
    let addr = lattice.serve_http(&edge.id, "hello", &[]).await;
    let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = get_traced(addr, "/", Some(sent)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let client = TraceContext::parse(sent).unwrap();

    // The provider's server span and the host's span of the call, both over gRPC.
    let spans = eventually("the provider's and the host's spans", Duration::from_secs(20), || {
        let spans = of_trace(&collector, client.trace_id);
        let services: Vec<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        let both = services.contains(&"trellis-provider-http-server")
            && services.contains(&"trellis-host");
        async move { both.then_some(spans) }
    })
    .await;
    assert!(spans.iter().all(|s| s.host == edge.id), "{spans:?}");

    // Metrics pushed every 300 ms, with the call counted and timed.
    let labels = [("host", edge.id.as_str()), ("component", "hello")];
    eventually("the call in the pushed metrics", Duration::from_secs(20), || {
        let counted = collector.with(|r| {
            let latest = |name: &str| {
                r.metrics
                    .iter()
                    .rev()
                    .find(|m| m.metric.name == name && m.host == edge.id)
                    .and_then(|m| metric_value(&m.metric, &labels))
            };
            latest("trellis_invocations_total").is_some_and(|v| v >= 1.0)
                && latest("trellis_invocation_duration_seconds").is_some_and(|v| v >= 1.0)
        });
        async move { counted.then_some(()) }
    })
    .await;
    collector.with(|r| {
        let connected = r
            .metrics
            .iter()
            .find(|m| m.metric.name == "trellis_nats_connected")
            .and_then(|m| metric_value(&m.metric, &[("host", edge.id.as_str())]));
        assert_eq!(connected, Some(1.0));
        assert!(r.requests.iter().all(|(how, _)| *how == "grpc"), "{:?}", r.requests);
        let paths: std::collections::BTreeSet<&str> =
            r.requests.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(
            paths.into_iter().collect::<Vec<_>>(),
            [
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            ]
        );
    });
}

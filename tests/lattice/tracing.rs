//! W3C trace context on every hop: an HTTP request with a `traceparent` enters the http-server
//! provider on one host, runs a component on another, which calls out through the http-client
//! provider; the upstream sees the same trace with a parent span of its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trellis_lattice::trace::TraceContext;

use trellis_tests::read_head;

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

//! Outgoing HTTP from a component through a linked http-client provider on another host.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::{Lattice, get};

/// A plain HTTP/1.1 server on loopback that answers every request with `body`.
pub(crate) async fn upstream(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let path =
                    String::from_utf8_lossy(&seen).split(' ').nth(1).unwrap_or("").to_owned();
                let text = format!("{body} {path}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

/// A server that accepts connections and never answers.
async fn silent() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn components_call_out_through_a_linked_http_client_with_an_allow_list() {
    let up = upstream("hello from upstream").await;
    let (quiet, _quiet) = silent().await;
    let lattice = Lattice::new("outgoing").await;
    let t = &lattice.trellis;
    let a = t.host("a", &[]).await;
    let b = t.host("b", &[]).await;
    lattice.start_hello("hello", &["--host", &a.id]).await;
    let addr = lattice.serve_http(&a.id, "hello", &[]).await;

    // No link: refused, and the guest is told so.
    let reply = get(addr, &format!("/fetch?to={up}")).await.text();
    assert!(reply.contains("HttpRequestDenied"), "{reply}");

    let allowed = format!("allowed_hosts={up},{quiet}");
    lattice.call_out_through_client(&b.id, "hello", &[&allowed, "timeout_ms=500"]).await;
    let reply = get(addr, &format!("/fetch?to={up}")).await.text();
    assert_eq!(reply, "fetched: 200 hello from upstream /from-component");

    // A host not on the list is denied by the provider.
    let reply = get(addr, "/fetch?to=127.0.0.1:9").await.text();
    assert!(reply.contains("HttpRequestDenied"), "{reply}");
    // An upstream that never answers times out at the link's timeout.
    let reply = get(addr, &format!("/fetch?to={quiet}")).await.text();
    assert!(reply.contains("Timeout"), "{reply}");
}

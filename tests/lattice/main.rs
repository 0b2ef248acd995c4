//! Multi-host scenarios on a real nats-server, driven through the `trellis` CLI and the lattice
//! client library.

mod accounts;
mod bench;
mod blobstore;
mod calls;
mod claims;
mod cli;
mod compile_cache;
mod config;
mod console;
mod deploy_files;
mod dev;
mod errors;
mod faults;
mod http;
mod keyvalue;
mod lifecycle;
mod limits;
mod listing;
mod messaging;
mod observe;
mod operators;
mod outgoing;
mod partitions;
mod permissions;
mod policy;
mod regions;
mod reuse;
mod scheduler;
mod secrets;
mod security;
mod tracing;
mod values;
mod wadm;
mod wasi03;

use std::net::SocketAddr;
use std::time::Duration;

use trellis_tests::{
    HttpReply, NatsServer, Trellis, component, eventually, free_port, http_request,
};

/// A NATS server and a CLI bound to a lattice of its own.
#[derive(Debug)]
pub struct Lattice {
    pub nats: NatsServer,
    pub trellis: Trellis,
}

impl Lattice {
    pub async fn new(name: &str) -> Self {
        let nats = NatsServer::start(None).await.expect("nats-server starts");
        let trellis = Trellis::new(&nats.url(), name);
        Self { nats, trellis }
    }

    /// Uploads and starts http-hello as `id` with extra CLI args (placement).
    pub async fn start_hello(&self, id: &str, placement: &[&str]) {
        let wasm = component("http-hello");
        let mut args = vec!["start", "component", wasm.to_str().expect("utf-8 path"), "--id", id];
        args.extend_from_slice(placement);
        self.trellis.ok(&args).await;
    }

    /// Starts an http-server provider `web` on `host` and links it to `target` on a free port.
    pub async fn serve_http(&self, host: &str, target: &str, extra_config: &[&str]) -> SocketAddr {
        self.serve_http_as("web", host, target, extra_config).await
    }

    /// [`Self::serve_http`] with provider id `id`.
    pub async fn serve_http_as(
        &self,
        id: &str,
        host: &str,
        target: &str,
        extra_config: &[&str],
    ) -> SocketAddr {
        self.trellis.ok(&["start", "provider", "http-server", "--id", id, "--host", host]).await;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let address = format!("address={addr}");
        let mut args = vec![
            "link",
            "put",
            "--source",
            id,
            "--target",
            target,
            "--interface",
            "wasi:http/incoming-handler",
            "--config",
            &address,
        ];
        for c in extra_config {
            args.extend_from_slice(&["--config", c]);
        }
        self.trellis.ok(&args).await;
        // The provider applies the link asynchronously; wait until it listens.
        eventually("the http-server to listen", Duration::from_secs(20), || async move {
            http_request(addr, "GET", "/ready", b"").await.ok().map(drop)
        })
        .await;
        addr
    }

    /// Starts an http-client provider `client` on `host` and links `source`'s outgoing HTTP to
    /// it with `config` (`allowed_hosts=...`, ...).
    pub async fn call_out_through_client(&self, host: &str, source: &str, config: &[&str]) {
        self.trellis
            .ok(&["start", "provider", "http-client", "--id", "client", "--host", host])
            .await;
        let mut args = vec![
            "link",
            "put",
            "--source",
            source,
            "--interface",
            "wasi:http/outgoing-handler",
            "--target",
            "client",
        ];
        for c in config {
            args.extend_from_slice(&["--config", c]);
        }
        self.trellis.ok(&args).await;
    }

    /// Invocations served by `component` on `host`, from the host's inventory.
    pub async fn invocations(&self, host: &str, component: &str) -> u64 {
        let inv = self.trellis.client().await.inventory(host).await.expect("inventory");
        inv.components.iter().find(|c| c.id == component).map_or(0, |c| c.invocations)
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> HttpReply {
    http_request(addr, "GET", path, b"").await.expect("HTTP request")
}

/// Waits until a request for `host` and `path` answers `expected` (links apply asynchronously).
pub async fn eventually_text(addr: SocketAddr, host: &str, path: &str, expected: &str) {
    eventually("the expected answer", Duration::from_secs(10), || async move {
        let reply = trellis_tests::http_request_to_host(addr, host, "GET", path, b"").await.ok()?;
        (reply.text() == expected).then_some(())
    })
    .await;
}

//! Test harness: real `nats-server` and `trellis` processes on loopback, cleaned up on drop.
//!
//! Binaries come from the cargo target directory of the running test (`cargo build --workspace`
//! builds them; the README's test command does). Test components are built from
//! `tests/components` for `wasm32-wasip2` on first use.

mod browser;
mod components;
mod http;
pub mod jwt;
pub mod load;
mod netns;
mod oci;
pub mod otlp;
mod process;
mod redis;

pub use browser::Browser;
pub use components::{component, python_component, signed_component, signed_hello, wasi_http_wit};
pub use http::{HttpReply, http_request, http_request_to_host, read_head};
pub use netns::{InnerRelay, Netns, Relay};
pub use oci::OciRegistry;
pub use process::{Host, Trellis, bin, free_port, target_dir};
pub use redis::RedisServer;
pub use trellis_ops::nats_server::LocalNatsServer as NatsServer;

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 100 ms until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! `trellis-provider-http-client`: makes the outgoing HTTP requests of linked components
//! (`wasi:http/outgoing-handler`), with pooled connections, timeouts and a host allow-list.
//!
//! Link a component to it with `trellis link put --source <component> --interface
//! wasi:http/outgoing-handler --target <provider-id> [--config k=v ...]`. Link config:
//! - `allowed_hosts`: comma-separated `host` or `host:port`; requests elsewhere are `Denied`
//!   (absent: any host).
//! - `timeout_ms` (default 30000): the longest one request may take, response body included.
//! - `max_response_bytes` (default 16 MiB): larger responses fail with `TooLarge`.

mod client;

use trellis_provider::Context;

pub use client::HttpClient;

/// The provider kind (`trellis start provider http-client`).
pub const KIND: &str = "http-client";

/// A new instance of the provider, for [`trellis_provider::run`] or [`trellis_provider::serve_on`].
pub fn new(_ctx: &Context) -> HttpClient {
    client::HttpClient::new()
}

//! `trellis-provider-http-server`: listens on the address of each `wasi:http/incoming-handler`
//! link from this provider and sends every request to the link's target component, wherever it
//! runs in the lattice.
//!
//! Link config:
//! - `address` (required): `host:port` to listen on.
//! - `max_body_bytes` (default 1 MiB): larger request bodies get 413.
//! - `timeout_ms` (default 30000): how long a request may take.
//! - `host`, `path_prefix` (optional): several links may share one address; a request goes to
//!   the most specific link whose `host` matches its Host header and whose `path_prefix` starts
//!   its path (the path is passed on unchanged). No match: 404.

mod routes;
mod server;

use trellis_provider::Context;

pub use server::HttpServer;

/// The provider kind (`trellis start provider http-server`).
pub const KIND: &str = "http-server";

/// A new instance of the provider, for [`trellis_provider::run`] or [`trellis_provider::serve_on`].
pub fn new(ctx: &Context) -> HttpServer {
    server::HttpServer::new(ctx.clone())
}

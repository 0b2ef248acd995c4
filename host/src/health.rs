//! Health for orchestrators on `--health-listen`: `/livez` answers 200 while the process runs;
//! `/readyz` answers 200 while the host is connected to NATS and taking work, 503 with the
//! reason otherwise (still connecting, NATS unreachable, draining).

use std::sync::{Arc, OnceLock};

use hyper::StatusCode;
use tokio::net::TcpListener;

use crate::host::Host;

/// Serves `/livez` and `/readyz` until the task is dropped; `host` is set once the host has
/// joined the lattice.
pub(crate) async fn serve(host: Arc<OnceLock<Arc<Host>>>, listener: TcpListener) {
    crate::endpoint::serve(listener, move |path| match path {
        "/livez" => (StatusCode::OK, "text/plain", "live\n".to_owned()),
        "/readyz" => match host.get().map_or(Some("connecting to NATS"), |h| h.not_ready()) {
            None => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
            Some(why) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n")),
        },
        _ => (StatusCode::NOT_FOUND, "text/plain", "try /livez or /readyz\n".to_owned()),
    })
    .await
}

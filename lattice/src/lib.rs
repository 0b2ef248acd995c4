//! The Trellis wire contract.
//!
//! Everything two Trellis processes must agree on lives here: subject names ([`subject`]),
//! connecting to NATS ([`connect`]), the invocation envelope and its typed errors
//! ([`envelope`]), wire types ([`http`], [`link`]), lattice state in JetStream ([`state`]) and the
//! typed control-plane client ([`client`]). It never depends on wasmtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use trellis_lattice::{client::LatticeClient, connect::connect_once};
//!
//! let nats = connect_once("nats://127.0.0.1:4222", "example", &Default::default()).await?;
//! let lattice = LatticeClient::new(nats, "default")?;
//! for host in lattice.hosts(Duration::from_millis(500)).await? {
//!     println!("{} {:?}", host.id, host.labels);
//! }
//! # Ok(()) }
//! ```

pub mod answers;
pub mod artifact;
pub mod blobstore;
pub mod chunks;
pub mod claims;
pub mod client;
pub mod compiled;
pub mod connect;
pub mod envelope;
pub mod events;
pub mod hostlink;
pub mod http;
pub mod keyvalue;
pub mod link;
pub mod manifest;
pub mod nats_server;
#[cfg(feature = "oci")]
pub mod oci;
pub mod outbox;
pub mod permissions;
pub mod policy;
pub mod record;
pub mod signing;
pub mod state;
pub mod subject;
pub mod telemetry;
pub mod trace;

pub use trellis_proto as proto;

// Only here for its `fast` feature (see the workspace Cargo.toml): nkeys signs through it.
use ed25519_dalek as _;

#[cfg(feature = "oci")]
/// An error with its causes, `: `-separated (hyper's own says little: "client error (Connect)").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

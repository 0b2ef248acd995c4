//! The Trellis wire contract.
//!
//! Everything two Trellis processes must agree on lives here: subject names ([`subject`]),
//! connecting to NATS ([`connect`]), the invocation envelope and its typed errors
//! ([`envelope`]), wire types ([`http`], [`link`]), lattice state in JetStream ([`state`]) and the
//! typed control-plane client ([`client`]). It never depends on wasmtime.
//!
//! It is what a provider links (through the `trellis-provider` SDK), so it holds nothing that
//! only operators, hosts or exporting binaries need: component claims are `trellis-claims`,
//! application manifests `trellis_scheduler::manifest`, the nats-server launcher and the OCI
//! puller `trellis-ops`, the OTLP exporter `trellis-otlp` (see `docs/design/crates.md`).
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
pub mod client;
pub mod compiled;
pub mod connect;
pub mod envelope;
pub mod events;
pub mod hostlink;
pub mod http;
pub mod keyvalue;
pub mod link;
mod objects;
pub mod outbox;
pub mod permissions;
pub mod policy;
pub mod record;
pub mod secrets;
pub mod signing;
pub mod state;
pub mod subject;
pub mod telemetry;
pub mod trace;
pub mod wake;

pub use trellis_proto as proto;

// Only here for its `fast` feature (see the workspace Cargo.toml): nkeys signs through it.
use ed25519_dalek as _;

//! Trellis operator tooling: what the `trellis` command (and the tests and benchmarks that stand
//! in for an operator) use to set a lattice up, and no host or provider needs.
//!
//! - [`nats_server`]: a local `nats-server -js` child process (`trellis up`, `trellis dev`, the
//!   integration tests' harness, the benchmarks).
//! - [`oci`]: pulling wasm components from OCI registries (`trellis app deploy` with `oci://`
//!   sources), which builds an HTTP client with `oci-client`.
//!
//! The wire contract is `trellis-lattice`; this crate depends on nothing of it, and nothing that
//! a provider links depends on this crate (see `docs/design/crates.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use trellis_ops::nats_server::LocalNatsServer;
//!
//! let server = LocalNatsServer::start(None).await?; // any free port
//! println!("NATS at {}", server.url());
//! # Ok(()) }
//! ```

pub mod nats_server;
pub mod oci;

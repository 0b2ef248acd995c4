//! The Trellis host.
//!
//! A host joins a lattice over NATS, runs WebAssembly components with wasmtime (a fresh store
//! per call from a pre-instantiated component), supervises capability provider processes, routes
//! calls (in process when the target is here, over NATS otherwise), answers control requests and
//! heartbeats. It speaks no raw subjects: names and codecs come from `trellis-lattice`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), trellis_host::HostError> {
//! let config = trellis_host::HostConfig::new("nats://127.0.0.1:4222", "default");
//! trellis_host::run(config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod admission;
mod compile_cache;
mod components;
pub mod config;
mod control;
mod endpoint;
mod evacuate;
mod health;
mod histogram;
mod host;
mod inbound;
mod limits;
mod links;
mod live;
mod load;
mod metrics;
mod providers;
mod refused;
mod route;
mod router;
pub mod runtime;
mod secrets;
mod slots;
mod wake;

pub use config::HostConfig;
pub use host::{Host, HostError, run};
pub use providers::{BuiltinPipe, BuiltinRun, Builtins};

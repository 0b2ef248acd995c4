//! What every Trellis capability provider needs.
//!
//! A provider is a process its host starts with a bootstrap on stdin. [`serve`] (or [`run`], its
//! `main` form) reads the bootstrap, connects to NATS, follows the links that start or end at the
//! provider (every current link first, then changes, live) and hands each to
//! [`Provider::link_put`] / [`Provider::link_deleted`]. Once the current links are applied it
//! tells the host it is ready, and calls from linked components arrive at [`Provider::invoke`]
//! with the link they came over (its config is that caller's settings). Calls *to* components
//! go through [`Context::invoke`]; the host routes them (in process when the target runs there,
//! signed over NATS otherwise). When the host closes stdin or sends SIGTERM,
//! [`Provider::shutdown`] runs and the process exits. Logs go to stderr: stdout carries the pipe.
//!
//! The SDK depends on the wire contract (`trellis-lattice`) only. Spans are exported by what the
//! executable passes as [`Export`]: `trellis_otlp::init` sends them over OTLP where the host
//! sends its own (the providers in this repository do), `|_| {}` drops them.
//!
//! A complete provider: `wasi:keyvalue` in memory (the [`keyvalue`] module does the decoding,
//! bucket checks and encoding). Build it as `trellis-provider-memkv` beside `trellis` and start it
//! with `trellis start provider memkv --id mem`.
//!
//! ```no_run
//! use std::collections::HashMap;
//! use std::sync::Mutex;
//!
//! use trellis_lattice::envelope::InvokeError;
//! use trellis_lattice::keyvalue::{Error, Request, Response};
//! use trellis_lattice::link::Link;
//! use trellis_provider::{Call, Context, Provider};
//!
//! #[derive(Default)]
//! struct MemKv(Mutex<HashMap<(String, String), Vec<u8>>>);
//!
//! impl Provider for MemKv {
//!     async fn link_put(&self, _ctx: &Context, _link: Link) -> Result<(), String> {
//!         Ok(()) // check the link's config here; an error is shown by `trellis link put`
//!     }
//!     async fn link_deleted(&self, _ctx: &Context, _link: Link) {}
//!     async fn invoke(&self, _ctx: &Context, call: Call) -> Result<Vec<u8>, InvokeError> {
//!         trellis_provider::keyvalue::serve(call, |_link, request| async move {
//!             let mut map = self.0.lock().unwrap();
//!             match request {
//!                 Request::Get { bucket, key } => {
//!                     Ok(Response::Value(map.get(&(bucket, key)).cloned().map(Into::into)))
//!                 }
//!                 Request::Set { bucket, key, value } => {
//!                     map.insert((bucket, key), value.into_vec());
//!                     Ok(Response::Done)
//!                 }
//!                 other => Err(Error::Other(format!("{} is not supported", other.function()))),
//!             }
//!         })
//!         .await
//!     }
//!     async fn shutdown(&self) {}
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     trellis_provider::run(trellis_otlp::init, |_ctx| MemKv::default()).await
//! }
//! ```

mod context;
mod hostlink;
pub mod keyvalue;
mod serve;

pub use context::Context;
pub use serve::{Call, Export, Provider, SdkError, run, serve, serve_builtin, serve_on};
pub use trellis_lattice::hostlink::DirectHost;

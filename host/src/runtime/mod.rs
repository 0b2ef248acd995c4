//! The wasmtime side of a host: one engine, one linker, components compiled once and
//! pre-instantiated, a fresh store per call.
//!
//! `engine` configures wasmtime (pooling allocator, epochs); `state` is the per-call store data
//! and the WASI views; `component` loads and validates artifacts; `http` runs
//! `wasi:http/incoming-handler`; `keyvalue` serves `wasi:keyvalue` imports through links
//! (`outbound`).

mod blobstore;
mod bus;
mod call;
pub(crate) mod compile;
mod component;
mod config;
mod engine;
mod forward;
mod http;
mod keyvalue;
mod outbound;
mod output;
mod precompiled;
mod secrets;
mod state;
pub mod values;
mod warm;

pub use component::{Component, LoadError, list_imports};
pub use engine::{Runtime, RuntimeConfig};
pub use outbound::{CallFuture, CallSettings, Outbound};
pub use warm::Reuse;

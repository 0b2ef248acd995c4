//! The wasmtime side of a host: an engine and linker per WASI generation, components compiled
//! once and pre-instantiated, a fresh store per call (or warm instances).
//!
//! `generation` tells WASI 0.2 components from 0.3 ones before compiling; `engine` configures
//! wasmtime (pooling allocator, epochs, concurrency support for 0.3 only); `state` is the
//! per-call store data and the WASI views; `component` loads and validates artifacts; `http`
//! runs `wasi:http/incoming-handler` (0.2), `http_p3` `wasi:http/handler` (0.3); `keyvalue`
//! serves `wasi:keyvalue` imports through links (`outbound`).

mod blobstore;
mod bus;
mod call;
pub(crate) mod compile;
mod component;
mod config;
mod engine;
mod forward;
mod generation;
mod http;
mod http_p3;
mod keyvalue;
mod outbound;
mod output;
mod precompiled;
mod secrets;
mod shared;
mod state;
pub mod values;
mod warm;

pub use component::{Component, LoadError, list_imports};
pub use engine::{Runtime, RuntimeConfig};
pub use generation::Generation;
pub use outbound::{CallFuture, CallSettings, Outbound};
pub use warm::Reuse;

//! What every Trellis capability provider needs.
//!
//! A provider is a process its host starts with a bootstrap on stdin. [`serve`] reads the
//! bootstrap, connects to NATS, follows the provider's links in the lattice's LINKS bucket (every
//! current link first, then changes, live), and hands each to the [`Provider`]. Calls to
//! components go through [`Context::invoke`], which asks the host over the pipe; the host routes
//! them (in process when the target runs there). When the host closes stdin or sends SIGTERM,
//! [`Provider::shutdown`] runs and the process exits.
//!
//! Logs go to stderr: stdout carries the pipe.
//!
//! ```no_run
//! use trellis_provider::{Context, Provider, serve};
//! use trellis_lattice::link::Link;
//!
//! struct Echo;
//!
//! impl Provider for Echo {
//!     async fn link_put(&self, _ctx: &Context, link: Link) -> Result<(), String> {
//!         eprintln!("linked to {}", link.target);
//!         Ok(())
//!     }
//!     async fn link_deleted(&self, _ctx: &Context, _link: Link) {}
//!     async fn shutdown(&self) {}
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), trellis_provider::SdkError> {
//!     serve(|_ctx| Echo).await
//! }
//! ```

mod context;
mod hostlink;
pub mod keyvalue;
mod serve;

pub use context::Context;
pub use serve::{Call, Provider, SdkError, run, serve};

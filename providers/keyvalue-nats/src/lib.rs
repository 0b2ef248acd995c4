//! `trellis-provider-keyvalue-nats`: serves `wasi:keyvalue` (store, atomics, batch) from a
//! NATS JetStream key-value bucket.
//!
//! Link a component to it with `trellis link put <component> wasi:keyvalue/store <provider-id>
//! [bucket=<jetstream bucket>] [buckets=a,b]`. The JetStream bucket defaults to
//! `trellis-kv-<lattice>` on the lattice's own NATS; each bucket identifier a component opens is
//! a namespace in it (see [`keys`]).

mod keys;
mod store;

use trellis_provider::Context;

pub use store::NatsKv;

/// The provider kind (`trellis start provider keyvalue-nats`).
pub const KIND: &str = "keyvalue-nats";

/// A new instance of the provider, for [`trellis_provider::run`] or [`trellis_provider::serve_on`].
pub fn new(_ctx: &Context) -> NatsKv {
    store::NatsKv::default()
}

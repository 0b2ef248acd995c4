//! `trellis-provider-keyvalue-redis`: serves `wasi:keyvalue` (store, atomics, batch) from Redis.
//!
//! Link a component to it with `trellis link put <component> wasi:keyvalue/store <provider-id>
//! url=redis://host:6379 [buckets=a,b]`. Each bucket identifier is a namespace: key `k` of
//! bucket `b` is the Redis key `b:k` (the empty identifier is `default`).

mod store;

use trellis_provider::Context;

pub use store::RedisKv;

/// The provider kind (`trellis start provider keyvalue-redis`).
pub const KIND: &str = "keyvalue-redis";

/// A new instance of the provider, for [`trellis_provider::run`] or [`trellis_provider::serve_on`].
pub fn new(_ctx: &Context) -> RedisKv {
    store::RedisKv::default()
}

//! `trellis-provider-keyvalue-redis`: serves `wasi:keyvalue` (store, atomics, batch) from Redis.
//!
//! Link a component to it with `trellis link put <component> wasi:keyvalue/store <provider-id>
//! url=redis://host:6379 [buckets=a,b]`. Each bucket identifier is a namespace: key `k` of
//! bucket `b` is the Redis key `b:k` (the empty identifier is `default`).

mod store;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    trellis_provider::run(|_ctx| store::RedisKv::default()).await
}

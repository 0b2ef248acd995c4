//! `trellis-provider-keyvalue-nats`: serves `wasi:keyvalue` (store, atomics, batch) from a
//! NATS JetStream key-value bucket.
//!
//! Link a component to it with `trellis link put <component> wasi:keyvalue/store <provider-id>
//! [bucket=<jetstream bucket>] [buckets=a,b]`. The JetStream bucket defaults to
//! `trellis-kv-<lattice>` on the lattice's own NATS; each bucket identifier a component opens is
//! a namespace in it (see [`keys`]).

mod keys;
mod store;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    trellis_provider::run(|_ctx| store::NatsKv::default()).await
}

//! `trellis-provider-messaging-nats`: `wasmcloud:messaging@0.2.0` on NATS (see `wit/`).
//!
//! - Deliver messages to a component: `trellis link put --source <provider-id> --interface
//!   wasmcloud:messaging/handler --target <component> --config subscriptions=a.b,c.>
//!   [--config queue=<group>]`; each message calls the component's `handle-message`.
//! - Let a component publish and make requests: `trellis link put --source <component>
//!   --interface wasmcloud:messaging/consumer --target <provider-id>`.
//!
//! Both use the lattice's NATS connection unless the link config names another with `url`.
//! Subjects under `trellis.` are the lattice's own and are refused.

mod messages;
mod provider;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    trellis_provider::run(|_ctx| provider::Messaging::default()).await
}

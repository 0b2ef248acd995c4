//! `trellis-provider-messaging-nats`: `wasmcloud:messaging@0.2.0` on NATS (see `wit/`).
//!
//! - Deliver messages to a component: `trellis link put --source <provider-id> --interface
//!   wasmcloud:messaging/handler --target <component> --config subscriptions=a.b,c.>
//!   [--config queue=<group>]`; each message calls the component's `handle-message`.
//! - Let a component publish and make requests: `trellis link put --source <component>
//!   --interface wasmcloud:messaging/consumer --target <provider-id>`.
//!
//! Both use the lattice's NATS connection unless the link config names another with `url`.
//! Subjects under `trellis.` (the lattice's own) and `$...` (the server's APIs, JetStream KV
//! included) are refused. In production, also give hosts NATS users whose permissions deny
//! those subjects to what providers publish for components.

mod messages;
mod provider;

use trellis_provider::Context;

pub use provider::Messaging;

/// The provider kind (`trellis start provider messaging-nats`).
pub const KIND: &str = "messaging-nats";

/// A new instance of the provider, for [`trellis_provider::run`] or [`trellis_provider::serve_on`].
pub fn new(_ctx: &Context) -> Messaging {
    provider::Messaging::default()
}

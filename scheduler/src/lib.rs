//! The Trellis scheduler: places the deployed applications' components and providers on hosts
//! by label and keeps them there while hosts come and go (`docs/manifest.md`,
//! `docs/design/scheduler.md`).
//!
//! - [`manifest`]: application manifests, the YAML an operator deploys, and their JSON Schema;
//! - [`apps`]: the application store in JetStream and the leader lease;
//! - [`desired`]: application records as the planner's input;
//! - [`plan`]: the one placement function: what to start, replace and stop;
//! - [`hosts`]: the view of hosts (live, unknown, lost) kept from heartbeats and inventories;
//! - [`core`]: the scheduler as a state machine with no I/O: inputs and `now` in, effects out;
//! - [`nats`]: the adapter that runs the core on NATS beside a host (`trellis host
//!   --scheduler`);
//! - [`sim`]: a deterministic simulator of a lattice (hosts, network, JetStream) that drives
//!   the same core, for property tests at scale.
//!
//! It depends on the wire contract (`trellis-lattice`), never on wasmtime.

pub mod apps;
pub mod autoscale;
pub mod core;
pub mod desired;
pub mod hosts;
pub mod idle;
pub mod manifest;
pub mod nats;
pub mod plan;
pub mod replicas;
pub mod sim;
mod status;

pub use nats::{Context, SchedulerConfig, Stats, run};

//! The scheduler: places the deployed applications' components and providers on hosts by
//! label and keeps them there while hosts come and go (`docs/manifest.md`,
//! `docs/design/scheduler.md`).
//!
//! [`plan`] decides, with no I/O, what to start, replace and stop; [`observe`] keeps the view of
//! hosts it decides on; [`desired`] turns application records into its input; the loop in
//! `reconcile` runs it on a host started with `--scheduler`, while that host holds the lease.

pub mod desired;
pub mod observe;
pub mod plan;
mod reconcile;

pub use reconcile::SchedulerConfig;
pub(crate) use reconcile::run;

use std::sync::atomic::{AtomicBool, AtomicU64};

/// What a host's scheduler shows on `/metrics`: whether it leads, in which term, and how many
/// commands it sent. A term is the revision of the lease entry with which it took the lease, so
/// two schedulers never share one; a leader cut off stops sending commands before another
/// can take the lease (see `reconcile::keep_lease`).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub leading: AtomicBool,
    /// The term it leads in; 0 when it does not lead.
    pub term: AtomicU64,
    /// Start, stop and replace commands sent to hosts since start.
    pub commands: AtomicU64,
    /// When (unix ms, the host's clock) its current or last term began: when it asked for the
    /// lease it then got.
    pub term_start_ms: AtomicU64,
    /// Until when (unix ms) the last lease it was granted lets it act; it acts no later.
    pub lease_until_ms: AtomicU64,
}

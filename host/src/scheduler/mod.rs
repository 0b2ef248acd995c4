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

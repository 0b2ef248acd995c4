//! Why a change to an application was not made.

use trellis_lattice::state::StateError;

/// Why [`AppStore`](super::AppStore) did not change an application. Each message says what was
/// wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// No application of that name.
    #[error("no application `{name}` in lattice `{lattice}`; list them with `trellis app list`")]
    NoSuchApp {
        /// The name asked for.
        name: String,
        /// The lattice looked in.
        lattice: String,
    },
    /// The version name is taken by a manifest with other content: versions never change.
    #[error(
        "application `{name}` already has a version `{version}` with other content; give this \
         one a new version"
    )]
    VersionTaken {
        /// The application.
        name: String,
        /// The version deployed.
        version: String,
    },
    /// The application does not keep that version.
    #[error("application `{name}` has no version `{version}` (it has: {known})")]
    NoSuchVersion {
        /// The application.
        name: String,
        /// The version asked for.
        version: String,
        /// The versions it keeps, oldest first, comma-separated.
        known: String,
    },
    /// A rollback without a version, and no earlier version was ever completely placed.
    #[error(
        "application `{name}` has no earlier version that was completely placed; name the \
         version to run again (it has: {known})"
    )]
    NothingToRollBackTo {
        /// The application.
        name: String,
        /// The versions it keeps, oldest first, comma-separated.
        known: String,
    },
    /// An undeploy of an application that runs nothing.
    #[error("application `{name}` is not deployed")]
    NotDeployed {
        /// The application.
        name: String,
    },
    /// A component or provider name (a lattice id) belongs to another application's current
    /// version.
    #[error("`{workload}` is already a component or provider of application `{owner}`; {fix}")]
    NameTaken {
        /// The component or provider name.
        workload: String,
        /// The application it belongs to.
        owner: String,
        /// What to do about it.
        fix: String,
    },
    /// Other writers changed the application every time it was read.
    #[error("application `{name}` keeps changing under us; try again")]
    Busy {
        /// The application.
        name: String,
    },
    /// The bucket could not be read or written, or holds something unreadable.
    #[error(transparent)]
    Store(#[from] StateError),
}

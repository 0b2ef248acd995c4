//! Capability providers: processes this host starts (or builtins it runs in process), feeds a bootstrap, serves calls for over a
//! pipe (see `trellis_lattice::hostlink`), and restarts with backoff when they crash.

mod builtin;
mod executable;
mod link;
mod supervisor;

pub use builtin::{BuiltinPipe, BuiltinRun, Builtins};
pub(crate) use executable::find_executable;
pub(crate) use link::{Pipes, ProviderCall};
pub(crate) use supervisor::{Providers, StartError};

//! Providers that run inside the host process ("builtins"): the same provider code as the
//! executable, speaking the same frames over in-memory pipes instead of stdin/stdout. No process
//! hop on the hot path; components cannot tell the difference. The `trellis` binary registers the
//! providers it links in; `trellis start provider <kind> --builtin` picks one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::DuplexStream;
use tokio::sync::oneshot;
use trellis_lattice::client::Call;
use trellis_lattice::hostlink::{DirectHost, HostCall, HostCallFuture};
use trellis_lattice::link::DEFAULT_LINK_NAME;

use crate::router::Router;

/// The provider's ends of its pipe to the host, the host's request to stop, and the way to
/// make calls in process.
pub struct BuiltinPipe {
    /// What the host writes (bootstrap, calls, replies).
    pub from_host: DuplexStream,
    /// What the provider writes back (readiness, health, replies).
    pub to_host: DuplexStream,
    /// Fires when the host stops the provider.
    pub stop: oneshot::Receiver<()>,
    /// The host's router, for the calls the provider makes.
    pub host: Arc<dyn DirectHost>,
}

impl std::fmt::Debug for BuiltinPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinPipe").finish_non_exhaustive()
    }
}

/// The calls of builtin provider `provider_id`, routed by its host in process: as they would
/// be when they arrive as frames (the provider is the source, over the default link).
pub(crate) struct InProcess {
    pub router: Arc<Router>,
    pub provider_id: String,
}

impl DirectHost for InProcess {
    fn invoke<'a>(&'a self, call: HostCall<'a>) -> HostCallFuture<'a> {
        Box::pin(self.router.invoke(Call {
            source: &self.provider_id,
            target: call.target,
            interface: call.interface,
            function: call.function,
            link: DEFAULT_LINK_NAME,
            payload: call.payload,
            timeout: call.timeout,
            trace: Some(call.trace),
            caller: None,
            depth: 0,
        }))
    }
}

/// Runs one builtin provider until it stops.
pub type BuiltinRun =
    Arc<dyn Fn(BuiltinPipe) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The builtin providers a host can run, by kind.
#[derive(Clone, Default)]
pub struct Builtins(HashMap<String, BuiltinRun>);

impl std::fmt::Debug for Builtins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds()).finish()
    }
}

impl Builtins {
    /// Registers provider `kind`.
    pub fn insert(&mut self, kind: &str, run: BuiltinRun) {
        self.0.insert(kind.to_owned(), run);
    }

    /// The runner of `kind`.
    pub fn get(&self, kind: &str) -> Option<BuiltinRun> {
        self.0.get(kind).cloned()
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.0.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }
}

/// Size of each direction's in-memory buffer.
const PIPE_BUFFER: usize = 256 << 10;

/// The host's ends of a new builtin's pipe (read, write), the provider's, and its stop switch.
///
/// One in-memory stream per direction, like a process's stdout and stdin: when the provider drops
/// its writing end the host reads end-of-stream, whatever the host still holds.
pub(crate) fn pipe(
    host: Arc<dyn DirectHost>,
) -> ((DuplexStream, DuplexStream), BuiltinPipe, oneshot::Sender<()>) {
    let (to_provider, from_host) = tokio::io::duplex(PIPE_BUFFER);
    let (from_provider, to_host) = tokio::io::duplex(PIPE_BUFFER);
    let (stop_tx, stop) = oneshot::channel();
    ((from_provider, to_provider), BuiltinPipe { from_host, to_host, stop, host }, stop_tx)
}

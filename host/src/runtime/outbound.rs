//! How a running component reaches what it imports through links: the host's router resolves
//! the link and carries the call (in process, over the provider pipe, or over NATS).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::link::Link;
use trellis_lattice::trace::TraceContext;

/// A boxed call future.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Bytes, InvokeError>> + Send + 'a>>;

/// The way out of a component: implemented by the host's router.
pub trait Outbound: Send + Sync {
    /// The link `source` has for `interface` (unversioned) under `name`; a typed `NoLink`
    /// error (logged and reported) when there is none.
    fn resolve(&self, source: &str, interface: &str, name: &str) -> Result<Arc<Link>, InvokeError>;

    /// The runtime config of component `source` (its named configs, merged).
    fn config(&self, source: &str) -> Vec<(String, String)>;

    /// The value of secret `name` if it is granted to component `source`.
    fn secret(&self, source: &str, name: &str) -> Option<String>;

    /// Calls `function` of the link's interface on the link's target, on behalf of `source`
    /// running in span `trace`, `depth` calls deep in its chain, with `payload`, waiting at
    /// most `timeout`.
    fn call<'a>(
        &'a self,
        source: &'a str,
        link: &'a Link,
        function: &'a str,
        request: (Bytes, Duration, TraceContext, u32),
    ) -> CallFuture<'a>;
}

/// What one call into a component runs with.
pub struct CallSettings<'a> {
    /// The component's id (the source of its outgoing calls).
    pub component_id: &'a str,
    /// How long the call may take.
    pub timeout: Duration,
    /// Largest linear memory for this component.
    pub max_memory_bytes: usize,
    /// Where its imports lead; `None` refuses every linked import.
    pub outbound: Option<Arc<dyn Outbound>>,
    /// The host's admission slot and the component's own concurrency slot for this call,
    /// released when the instance is dropped (which may be after the answer: a guest may work
    /// on after responding).
    pub slots: [Option<tokio::sync::OwnedSemaphorePermit>; 2],
    /// The span this call runs in: the parent of the calls the component makes.
    pub trace: TraceContext,
    /// Calls before this one in its chain: the component's calls are one deeper.
    pub depth: u32,
}

impl std::fmt::Debug for CallSettings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSettings")
            .field("component_id", &self.component_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The error of a linked import used where nothing routes calls.
pub(crate) fn no_outbound(source: &str, interface: &str) -> InvokeError {
    InvokeError::new(
        InvokeErrorKind::NoLink,
        format!("component `{source}` runs without a lattice here, so {interface} has no link"),
    )
}

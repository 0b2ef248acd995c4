//! What a provider can use while it runs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use trellis_lattice::envelope::InvokeError;
use trellis_lattice::hostlink::Bootstrap;
use trellis_lattice::trace::TraceContext;

use crate::hostlink::HostLink;

/// The provider's view of its host and lattice. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) bootstrap: Bootstrap,
    pub(crate) host: HostLink,
    pub(crate) nats: Arc<OnceLock<async_nats::Client>>,
}

impl Context {
    /// This provider's id.
    pub fn provider_id(&self) -> &str {
        &self.bootstrap.provider_id
    }

    /// The lattice name.
    pub fn lattice(&self) -> &str {
        &self.bootstrap.lattice
    }

    /// The provider's NATS connection (the lattice's server, with its host's credentials).
    /// Set before any link or call reaches the provider; `None` only inside the `make` closure
    /// of [`crate::serve`].
    pub fn nats(&self) -> Option<&async_nats::Client> {
        self.nats.get()
    }

    /// The JetStream context of the lattice's state (in the lattice's JetStream domain, if it
    /// has one); `None` before NATS is connected.
    pub fn jetstream(&self) -> Option<async_nats::jetstream::Context> {
        Some(trellis_lattice::connect::jetstream(
            self.nats()?,
            self.bootstrap.nats_auth.js_domain.as_deref(),
        ))
    }

    /// The supervising host's id.
    pub fn host_id(&self) -> &str {
        &self.bootstrap.host_id
    }

    /// Invokes `interface.function` of component `target` with msgpack `payload`, wherever the
    /// target runs, from span `trace` (the host continues it: pass the span of the request
    /// being served, or `TraceContext::root()`); errors are typed ([`InvokeError::kind`]).
    pub async fn invoke(
        &self,
        target: &str,
        interface: &str,
        function: &str,
        payload: Vec<u8>,
        timeout: Duration,
        trace: TraceContext,
    ) -> Result<Vec<u8>, InvokeError> {
        self.host.invoke(target, (interface, function), payload, timeout, trace).await
    }
}

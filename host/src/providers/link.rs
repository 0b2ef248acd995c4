//! The host end of one provider process's pipe: calls both ways. The provider's calls to
//! components are routed by the host; calls to the provider (from components, here or on other
//! hosts) are written to it and matched with its replies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use trellis_lattice::client::Call;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::hostlink::{
    Bootstrap, Peer, PeerError, ToHost, ToProvider, WireError, encode_frame, read_frame,
    write_frame,
};
use trellis_lattice::link::DEFAULT_LINK_NAME;
use trellis_lattice::trace::TraceContext;

use crate::router::Router;

type Reply = Result<Bytes, InvokeError>;

/// What a provider last reported wrong (`None`: healthy), shared with its handle.
pub(crate) type Health = Arc<Mutex<Option<String>>>;

/// The pipes of this host's running provider processes, by provider id.
#[derive(Debug, Default)]
pub(crate) struct Pipes {
    by_id: Mutex<HashMap<String, Arc<Pipe>>>,
}

impl Pipes {
    /// The pipe of provider `id`, when it runs here.
    pub fn get(&self, id: &str) -> Option<Arc<Pipe>> {
        self.lock().get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Pipe>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One provider process's pipe, as seen by callers.
pub(crate) struct Pipe {
    provider_id: String,
    /// Callers write their frames themselves, in turn: no hop through a writer task.
    peer: Arc<Peer>,
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe").field("provider_id", &self.provider_id).finish_non_exhaustive()
    }
}

/// What a call to a provider carries.
#[derive(Debug)]
pub(crate) struct ProviderCall<'a> {
    pub source: &'a str,
    pub link: &'a str,
    pub interface: &'a str,
    pub function: &'a str,
    pub payload: &'a [u8],
    pub timeout: Duration,
    /// The caller's span.
    pub trace: Option<TraceContext>,
}

impl Pipe {
    /// Calls the provider and waits for its reply, at most `timeout`. A provider that dies
    /// meanwhile fails the call at once with `Unavailable`.
    pub async fn call(self: Arc<Self>, call: ProviderCall<'_>) -> Reply {
        let id = self.peer.next_id();
        let frame = ToProvider::Invoke {
            id,
            source: call.source.to_owned(),
            link: call.link.to_owned(),
            interface: call.interface.to_owned(),
            function: call.function.to_owned(),
            timeout_ms: u64::try_from(call.timeout.as_millis()).unwrap_or(u64::MAX),
            payload: call.payload.to_vec(),
            traceparent: call.trace.map(|t| t.to_string()),
        };
        let frame = encode_frame(&frame)
            .map_err(|e| InvokeError::new(InvokeErrorKind::TooLarge, e.to_string()))?;
        let provider = &self.provider_id;
        match self.peer.call(id, frame, call.timeout, Duration::ZERO).await {
            Ok(answer) => answer,
            Err(PeerError::Closed) => Err(InvokeError::new(
                InvokeErrorKind::Unavailable,
                format!(
                    "provider `{provider}` exited before answering; it is being restarted, try again"
                ),
            )),
            Err(PeerError::NotTaken(t)) => Err(InvokeError::new(
                InvokeErrorKind::Timeout,
                format!("provider `{provider}` did not take the call within {t:?}"),
            )),
            Err(PeerError::NoAnswer(t)) => Err(InvokeError::new(
                InvokeErrorKind::Timeout,
                format!("provider `{provider}` did not answer within {t:?}"),
            )),
        }
    }
}

/// Writes `bootstrap`, then serves the provider's pipe until its stdout closes. Once the provider
/// says it is ready, and while it runs, the pipe is in `pipes` for callers.
pub(crate) async fn serve<R, W>(
    bootstrap: Bootstrap,
    (from_provider, mut to_provider): (R, W),
    router: Arc<Router>,
    pipes: Arc<Pipes>,
    health: Health,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let provider_id = bootstrap.provider_id.clone();
    let mut from_provider = tokio::io::BufReader::new(from_provider);
    if let Err(e) = write_frame(&mut to_provider, &bootstrap).await {
        tracing::warn!(provider = %provider_id, error = %e, "provider bootstrap not written");
        return;
    }
    let pipe = Arc::new(Pipe { provider_id: provider_id.clone(), peer: Peer::new(to_provider) });
    loop {
        match read_frame::<_, ToHost>(&mut from_provider).await {
            Ok(Some(ToHost::Invoke {
                id,
                target,
                interface,
                function,
                timeout_ms,
                payload,
                traceparent,
            })) => {
                let (router, pipe, source) = (router.clone(), pipe.clone(), provider_id.clone());
                tokio::spawn(async move {
                    let timeout = Duration::from_millis(timeout_ms);
                    let call = Call {
                        source: &source,
                        target: &target,
                        interface: &interface,
                        function: &function,
                        link: DEFAULT_LINK_NAME,
                        payload: Bytes::from(payload),
                        timeout,
                        trace: traceparent.as_deref().and_then(TraceContext::parse),
                        caller: None,
                        depth: 0,
                    };
                    let result = router
                        .invoke(call)
                        .await
                        .map(|b| serde_bytes::ByteBuf::from(Vec::from(b)))
                        .map_err(|e| WireError::from(&e));
                    let reply = ToProvider::Reply { id, result };
                    if let Err(e) = pipe.peer.send_frame(&reply).await {
                        tracing::debug!(error = %e, "reply to provider not written");
                    }
                });
            }
            Ok(Some(ToHost::Reply { id, result })) => {
                let answer = result.map(|b| Bytes::from(b.into_vec())).map_err(Into::into);
                pipe.peer.deliver(id, answer);
            }
            // Its links are applied: calls may reach it now (until then they get `Unavailable`).
            Ok(Some(ToHost::Ready)) => {
                pipes.lock().insert(provider_id.clone(), pipe.clone());
            }
            Ok(Some(ToHost::Health { problem })) => {
                match &problem {
                    Some(p) => {
                        tracing::warn!(provider = %provider_id, problem = %p, "provider unhealthy")
                    }
                    None => tracing::info!(provider = %provider_id, "provider healthy"),
                }
                *health.lock().unwrap_or_else(|p| p.into_inner()) = problem;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(provider = %provider_id, error = %e, "bad frame from provider; closing its pipe");
                break;
            }
        }
    }
    // Only our own entry: a restarted process may have registered its pipe already.
    let mut map = pipes.lock();
    if map.get(&provider_id).is_some_and(|p| Arc::ptr_eq(p, &pipe)) {
        map.remove(&provider_id);
    }
    drop(map);
    // Calls waiting for this process fail now (`Unavailable`), not at their timeout.
    pipe.peer.close();
}

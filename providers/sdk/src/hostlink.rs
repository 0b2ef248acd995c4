//! The provider end of the pipe to the host.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::hostlink::{
    DirectHost, HostCall, Peer, PeerError, ToHost, ToProvider, WireError, encode_frame, read_frame,
};
use trellis_lattice::trace::TraceContext;

/// A call from the host to this provider.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub id: u64,
    pub source: String,
    pub link: String,
    pub interface: String,
    pub function: String,
    pub timeout: Duration,
    pub payload: Vec<u8>,
    /// The caller's span, if it sent one.
    pub parent: Option<TraceContext>,
}

/// Sends calls to the host and matches replies.
#[derive(Clone)]
pub(crate) struct HostLink {
    /// Callers write their frames themselves, in turn: no hop through a writer task.
    peer: Arc<Peer>,
    /// A builtin's host, called in process instead of through frames.
    direct: Option<Arc<dyn DirectHost>>,
}

impl std::fmt::Debug for HostLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLink").finish_non_exhaustive()
    }
}

impl HostLink {
    /// Starts the reader task; `closed` fires when the host closes the pipe, and calls to the
    /// provider arrive on `incoming`.
    pub fn start<R, W>(
        mut from_host: R,
        to_host: W,
    ) -> (Self, oneshot::Receiver<()>, mpsc::Receiver<Incoming>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let peer = Peer::new(to_host);
        let (closed_tx, closed) = oneshot::channel();
        let (incoming_tx, incoming) = mpsc::channel(256);
        let replies = peer.clone();
        tokio::spawn(async move {
            loop {
                match read_frame::<_, ToProvider>(&mut from_host).await {
                    Ok(Some(ToProvider::Reply { id, result })) => {
                        let answer = result.map(|b| Bytes::from(b.into_vec())).map_err(Into::into);
                        replies.deliver(id, answer);
                    }
                    Ok(Some(ToProvider::Invoke {
                        id,
                        source,
                        link,
                        interface,
                        function,
                        timeout_ms,
                        payload,
                        traceparent,
                    })) => {
                        let call = Incoming {
                            id,
                            source,
                            link,
                            interface,
                            function,
                            timeout: Duration::from_millis(timeout_ms),
                            payload,
                            parent: traceparent.as_deref().and_then(TraceContext::parse),
                        };
                        // Bounded: a provider that falls behind slows its callers down.
                        if incoming_tx.send(call).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "bad frame from host; shutting down");
                        break;
                    }
                }
            }
            // Calls waiting for the host fail now, not at their timeout.
            replies.close();
            let _ = closed_tx.send(());
        });
        (Self { peer, direct: None }, closed, incoming)
    }

    /// Makes calls to the host in process (a builtin provider).
    pub fn with_direct(mut self, direct: Option<Arc<dyn DirectHost>>) -> Self {
        self.direct = direct;
        self
    }

    /// Tells the host the provider takes calls now.
    pub async fn ready(&self) {
        self.send(&ToHost::Ready).await;
    }

    /// Tells the host the provider's health changed.
    pub async fn health(&self, problem: Option<String>) {
        self.send(&ToHost::Health { problem }).await;
    }

    /// Writes one frame that answers nothing.
    async fn send(&self, message: &ToHost) {
        if let Err(e) = self.peer.send_frame(message).await {
            tracing::debug!(error = %e, "frame not written to the host");
        }
    }

    /// Answers the host's call `id`.
    pub async fn reply(&self, id: u64, result: Result<Vec<u8>, InvokeError>) {
        let result = result.map(serde_bytes::ByteBuf::from).map_err(|e| WireError::from(&e));
        let frame = match encode_frame(&ToHost::Reply { id, result }) {
            Ok(frame) => frame,
            Err(e) => {
                let error = InvokeError::new(InvokeErrorKind::TooLarge, e.to_string());
                let reply = ToHost::Reply { id, result: Err(WireError::from(&error)) };
                match encode_frame(&reply) {
                    Ok(frame) => frame,
                    Err(_) => return,
                }
            }
        };
        if let Err(e) = self.peer.send(&frame).await {
            tracing::debug!(error = %e, "reply to the host not written");
        }
    }

    /// Invokes `interface.function` of `target` through the host, from span `trace`.
    pub async fn invoke(
        &self,
        target: &str,
        (interface, function): (&str, &str),
        payload: Vec<u8>,
        timeout: Duration,
        trace: TraceContext,
    ) -> Result<Vec<u8>, InvokeError> {
        if let Some(direct) = &self.direct {
            let call =
                HostCall { target, interface, function, payload: payload.into(), timeout, trace };
            return direct.invoke(call).await.map(Vec::from);
        }
        let id = self.peer.next_id();
        let call = ToHost::Invoke {
            id,
            target: target.to_owned(),
            interface: interface.to_owned(),
            function: function.to_owned(),
            timeout_ms: timeout.as_millis() as u64,
            payload,
            traceparent: Some(trace.to_string()),
        };
        let frame = encode_frame(&call)
            .map_err(|e| InvokeError::new(InvokeErrorKind::TooLarge, e.to_string()))?;
        // The host enforces the deadline and says so; the margin only guards against a lost
        // answer.
        match self.peer.call(id, frame, timeout, Duration::from_secs(1)).await {
            Ok(answer) => answer.map(Vec::from),
            Err(PeerError::Closed) => Err(InvokeError::new(
                InvokeErrorKind::Unavailable,
                "the host closed the provider pipe",
            )),
            Err(PeerError::NotTaken(t)) => Err(InvokeError::new(
                InvokeErrorKind::Timeout,
                format!("the host did not take the call to `{target}` within {t:?}"),
            )),
            Err(PeerError::NoAnswer(t)) => Err(InvokeError::new(
                InvokeErrorKind::Timeout,
                format!("`{target}` did not answer within {t:?}"),
            )),
        }
    }
}

//! The provider end of the pipe to the host.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::hostlink::{
    DirectHost, HostCall, ToHost, ToProvider, WireError, encode_frame, read_frame,
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

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Vec<u8>, InvokeError>>>>>;
type Writer = Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>;

/// Sends calls to the host and matches replies.
#[derive(Clone)]
pub(crate) struct HostLink {
    /// Callers write their frames themselves, in turn: no hop through a writer task.
    to_host: Writer,
    pending: Pending,
    next_id: Arc<AtomicU64>,
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
        let to_host: Writer = Arc::new(tokio::sync::Mutex::new(Box::new(to_host)));
        let pending: Pending = Arc::default();
        let (closed_tx, closed) = oneshot::channel();
        let (incoming_tx, incoming) = mpsc::channel(256);
        let replies = pending.clone();
        tokio::spawn(async move {
            loop {
                match read_frame::<_, ToProvider>(&mut from_host).await {
                    Ok(Some(ToProvider::Reply { id, result })) => {
                        let waiter = replies.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(result.map(|b| b.into_vec()).map_err(Into::into));
                        }
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
            replies.lock().unwrap_or_else(|p| p.into_inner()).clear();
            let _ = closed_tx.send(());
        });
        (Self { to_host, pending, next_id: Arc::default(), direct: None }, closed, incoming)
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
        let Ok(frame) = encode_frame(message) else { return };
        if let Err(e) = write(&self.to_host, &frame).await {
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
        if let Err(e) = write(&self.to_host, &frame).await {
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
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
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        let host_gone =
            || InvokeError::new(InvokeErrorKind::Unavailable, "the host closed the provider pipe");
        // Written by a task of its own: a caller dropped mid-write must not leave half a frame.
        let to_host = self.to_host.clone();
        let written = tokio::spawn(async move { write(&to_host, &frame).await });
        match tokio::time::timeout(timeout, written).await {
            Ok(Ok(Ok(()))) => {}
            Ok(_) => {
                self.forget(id);
                return Err(host_gone());
            }
            Err(_) => {
                self.forget(id);
                return Err(InvokeError::new(
                    InvokeErrorKind::Timeout,
                    format!("the host did not take the call to `{target}` within {timeout:?}"),
                ));
            }
        }
        // The host enforces the deadline; this margin only guards against a lost reply.
        match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(host_gone()),
            Err(_) => {
                self.forget(id);
                Err(InvokeError::new(
                    InvokeErrorKind::Timeout,
                    format!("`{target}` did not answer within {timeout:?}"),
                ))
            }
        }
    }

    fn forget(&self, id: u64) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

/// Writes one whole frame to the host, in turn with other writers.
async fn write(to_host: &Writer, frame: &[u8]) -> std::io::Result<()> {
    let mut to_host = to_host.lock().await;
    to_host.write_all(frame).await?;
    to_host.flush().await
}

//! The provider end of the pipe to the host.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::hostlink::{ToHost, ToProvider, encode_frame, read_frame};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Vec<u8>, InvokeError>>>>>;

/// Sends calls to the host and matches replies.
#[derive(Debug, Clone)]
pub(crate) struct HostLink {
    outbox: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
}

impl HostLink {
    /// Starts the reader and writer tasks; `closed` fires when the host closes the pipe.
    pub fn start<R, W>(mut from_host: R, mut to_host: W) -> (Self, oneshot::Receiver<()>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (outbox, mut frames) = mpsc::channel::<Vec<u8>>(256);
        tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                if to_host.write_all(&frame).await.is_err() || to_host.flush().await.is_err() {
                    return;
                }
            }
        });
        let pending: Pending = Arc::default();
        let (closed_tx, closed) = oneshot::channel();
        let replies = pending.clone();
        tokio::spawn(async move {
            loop {
                match read_frame::<_, ToProvider>(&mut from_host).await {
                    Ok(Some(ToProvider::Reply { id, result })) => {
                        let waiter = replies
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(result.map(|b| b.into_vec()).map_err(Into::into));
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
        (
            Self {
                outbox,
                pending,
                next_id: Arc::default(),
            },
            closed,
        )
    }

    /// Invokes `interface.function` of `target` through the host.
    pub async fn invoke(
        &self,
        target: &str,
        interface: &str,
        function: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, InvokeError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let call = ToHost::Invoke {
            id,
            target: target.to_owned(),
            interface: interface.to_owned(),
            function: function.to_owned(),
            timeout_ms: timeout.as_millis() as u64,
            payload,
        };
        let frame = encode_frame(&call)
            .map_err(|e| InvokeError::new(InvokeErrorKind::TooLarge, e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let host_gone = || {
            InvokeError::new(
                InvokeErrorKind::Unavailable,
                "the host closed the provider pipe",
            )
        };
        if self.outbox.send(frame).await.is_err() {
            self.forget(id);
            return Err(host_gone());
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
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

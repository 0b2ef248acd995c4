//! The request/reply end of a host–provider pipe, the same on both sides: calls are numbered,
//! written whole (in turn with other writers, by a task of their own so a caller that gives up
//! mid-write never leaves half a frame), and matched with their answers as the reader delivers
//! them. When the pipe closes, every call still waiting fails at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::{FrameError, encode_frame};
use crate::envelope::InvokeError;

/// What the other end answered: its result, or its typed error.
pub type Answer = Result<Bytes, InvokeError>;

type Writer = tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>;

/// Why a call got no answer from the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The pipe closed (the other end exited) before the answer came.
    #[error("the pipe closed before the answer came")]
    Closed,
    /// The frame could not be written within the call's time.
    #[error("the call was not taken within {0:?}")]
    NotTaken(Duration),
    /// No answer came within the call's time.
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
}

/// One end of a pipe that makes calls and sends answers.
pub struct Peer {
    writer: Writer,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("next_id", &self.next_id).finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer writing its frames to `writer`.
    pub fn new(writer: impl AsyncWrite + Send + Unpin + 'static) -> Arc<Self> {
        Arc::new(Self {
            writer: tokio::sync::Mutex::new(Box::new(writer)),
            pending: Mutex::default(),
            next_id: AtomicU64::new(0),
        })
    }

    /// The id of the next call.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes one whole frame that answers nothing (an answer, a notice).
    pub async fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let mut writer = self.writer.lock().await;
        writer.write_all(frame).await?;
        writer.flush().await
    }

    /// Encodes `value` and writes it as one frame that answers nothing.
    pub async fn send_frame<T: serde::Serialize>(&self, value: &T) -> Result<(), FrameError> {
        let frame = encode_frame(value)?;
        Ok(self.send(&frame).await?)
    }

    /// Writes call `id` (`frame`, encoded with that id) and waits for its answer: at most
    /// `timeout` for the frame to be taken, and `timeout + margin` for the answer (a margin when
    /// the other end enforces the deadline itself and its answer says so).
    pub async fn call(
        self: &Arc<Self>,
        id: u64,
        frame: Vec<u8>,
        timeout: Duration,
        margin: Duration,
    ) -> Result<Answer, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        let peer = self.clone();
        let written = tokio::spawn(async move { peer.send(&frame).await });
        match tokio::time::timeout(timeout, written).await {
            Ok(Ok(Ok(()))) => {}
            Ok(_) => {
                self.lock().remove(&id);
                return Err(PeerError::Closed);
            }
            Err(_) => {
                self.lock().remove(&id);
                return Err(PeerError::NotTaken(timeout));
            }
        }
        match tokio::time::timeout(timeout + margin, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(PeerError::Closed),
            Err(_) => {
                self.lock().remove(&id);
                Err(PeerError::NoAnswer(timeout))
            }
        }
    }

    /// Hands the answer to call `id` to its caller (if it still waits).
    pub fn deliver(&self, id: u64, answer: Answer) {
        if let Some(waiter) = self.lock().remove(&id) {
            let _ = waiter.send(answer);
        }
    }

    /// The pipe closed: every call still waiting fails now, not at its timeout.
    pub fn close(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Answer>>> {
        // Inserts and removes cannot panic half-way; a poisoned map is still whole.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::InvokeErrorKind;

    #[tokio::test]
    async fn answers_find_their_calls_and_a_close_fails_the_rest() {
        let (ours, _theirs) = tokio::io::duplex(1 << 16);
        let peer = Peer::new(ours);
        let (a, b) = (peer.next_id(), peer.next_id());
        assert_ne!(a, b);
        let call_a = tokio::spawn({
            let peer = peer.clone();
            async move { peer.call(a, vec![1], Duration::from_secs(5), Duration::ZERO).await }
        });
        let call_b = tokio::spawn({
            let peer = peer.clone();
            async move { peer.call(b, vec![2], Duration::from_secs(5), Duration::ZERO).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        peer.deliver(a, Ok(Bytes::from_static(b"a")));
        assert_eq!(call_a.await.unwrap().unwrap().unwrap(), Bytes::from_static(b"a"));
        peer.close();
        assert_eq!(call_b.await.unwrap(), Err(PeerError::Closed));
        // An answer for nobody is dropped.
        peer.deliver(99, Err(InvokeError::new(InvokeErrorKind::Trap, "late")));
    }

    #[tokio::test]
    async fn a_silent_or_stuck_other_end_times_out() {
        let (ours, _theirs) = tokio::io::duplex(1 << 16);
        let peer = Peer::new(ours);
        let t = Duration::from_millis(30);
        let id = peer.next_id();
        assert_eq!(peer.call(id, vec![0], t, t).await, Err(PeerError::NoAnswer(t)));
        // A pipe nobody reads fills up: the next frame is not taken.
        let (ours, _theirs) = tokio::io::duplex(4);
        let peer = Peer::new(ours);
        let id = peer.next_id();
        assert_eq!(peer.call(id, vec![0; 64], t, t).await, Err(PeerError::NotTaken(t)));
        // A closed pipe fails the write.
        let (ours, theirs) = tokio::io::duplex(4);
        drop(theirs);
        let peer = Peer::new(ours);
        let id = peer.next_id();
        assert_eq!(peer.call(id, vec![0; 64], t, t).await, Err(PeerError::Closed));
    }
}

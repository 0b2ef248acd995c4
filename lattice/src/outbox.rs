//! Messages published together: whoever has one posts it, and one sender task publishes every
//! message posted by then at once, after letting the other ready tasks run once.
//!
//! Publishing straight from many tasks wakes async-nats' connection task once per message, and
//! it writes each in a socket write of its own: with many calls in flight that is a system call
//! per message here and a read per message in nats-server. Messages posted at about the same
//! time (calls made together, answers of calls that ran together) leave in one write instead.
//! A lone message waits for one turn of the scheduler, no longer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_nats::{Client, HeaderMap, PublishError, Subject};
use bytes::Bytes;
use tokio::sync::Notify;

/// One message to publish.
#[derive(Debug)]
pub struct Outgoing {
    pub subject: Subject,
    /// Where its answer goes, for a request.
    pub reply: Option<Subject>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Whose it is: told back with the error when it cannot be published.
    pub token: u64,
}

/// Messages posted and not yet published (see the module docs).
#[derive(Debug, Default)]
pub struct Outbox {
    posted: Mutex<Vec<Outgoing>>,
    /// The sender's wake-up: a message was posted to an empty outbox.
    ready: Notify,
    /// Posted and not yet handed to the client.
    unsent: AtomicUsize,
    /// A batch was handed to the client.
    handed: Notify,
}

impl Outbox {
    /// Posts `message` for the sender task.
    pub fn post(&self, message: Outgoing) {
        self.unsent.fetch_add(1, Ordering::AcqRel);
        let first = {
            let mut posted = self.lock();
            posted.push(message);
            posted.len() == 1
        };
        // The sender takes everything posted when it wakes, so one wake-up per batch will do.
        if first {
            self.ready.notify_one();
        }
    }

    /// Returns once every message posted so far is handed to the NATS client (a flush of the
    /// client then sends it).
    pub async fn handed(&self) {
        loop {
            let handed = self.handed.notified();
            tokio::pin!(handed);
            handed.as_mut().enable();
            if self.unsent.load(Ordering::Acquire) == 0 {
                return;
            }
            handed.await;
        }
    }

    /// Publishes what is posted over `nats` until the task is aborted; a message the client
    /// refuses is told to `failed` with its token.
    pub async fn send(&self, nats: Client, mut failed: impl FnMut(u64, PublishError)) {
        let mut batch = Vec::new();
        loop {
            self.ready.notified().await;
            // Tasks ready to run now (calls woken by the same read) post theirs meanwhile.
            tokio::task::yield_now().await;
            std::mem::swap(&mut *self.lock(), &mut batch);
            let count = batch.len();
            for Outgoing { subject, reply, headers, body, token } in batch.drain(..) {
                let sent = match reply {
                    Some(reply) => {
                        nats.publish_with_reply_and_headers(subject, reply, headers, body).await
                    }
                    None if headers.is_empty() => nats.publish(subject, body).await,
                    None => nats.publish_with_headers(subject, headers, body).await,
                };
                if let Err(e) = sent {
                    failed(token, e);
                }
            }
            self.unsent.fetch_sub(count, Ordering::AcqRel);
            self.handed.notify_waiters();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Outgoing>> {
        self.posted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message(token: u64) -> Outgoing {
        Outgoing {
            subject: Subject::from_static("s"),
            reply: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            token,
        }
    }

    #[tokio::test]
    async fn handed_waits_for_what_is_posted_and_nothing_else() {
        let outbox = Outbox::default();
        // Nothing posted: nothing to wait for.
        outbox.handed().await;
        outbox.post(message(1));
        outbox.post(message(2));
        assert_eq!(outbox.lock().len(), 2, "two messages in one batch");
        let waiting = tokio::time::timeout(Duration::from_millis(50), outbox.handed());
        assert!(waiting.await.is_err(), "handed returned while two messages were unsent");
        // A client whose server is not up yet buffers what it is given.
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .unwrap();
        let outbox = std::sync::Arc::new(outbox);
        let sender = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(nats, |token, e| panic!("{token} not published: {e}")).await }
        });
        tokio::time::timeout(Duration::from_secs(5), outbox.handed()).await.unwrap();
        assert!(outbox.lock().is_empty());
        sender.abort();
    }
}

//! Answers to a host's authenticated calls, taken only when they authenticate.
//!
//! A signed or MAC'd call names its answer's subject in the caller's inbox, which any NATS user
//! who sees the call could publish to first. So a caller does not take the first message there,
//! as a plain NATS request would: one subscription under the signer's inbox receives every
//! answer, and an answer reaches its call only if its `trellis-answer` MAC verifies (see
//! [`Signer::check_answer`]). A forged answer is dropped and counted, and the call goes on
//! waiting for its genuine answer until its deadline.
//!
//! The one message taken without a MAC is the server's own "no responders" status, which no
//! host can authenticate.
//!
//! A replica that has not answered a call within [`NOTICE_EVERY`] says it still runs it
//! (`trellis-running`), and again every [`NOTICE_EVERY`]. A call that hears nothing for
//! [`SILENCE`] (no answer, no notice) ends with [`AnswerError::Silent`]: the replica that took
//! it is gone (killed, or cut off), and waiting out the deadline would not bring an answer.
//! Notices need no MAC: a forged one can only make a call wait for its deadline, as it would
//! without them.
//!
//! Calls go out through an [`Outbox`]: calls made at about the same time (many in flight) leave
//! in one socket write instead of one each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::{Client, HeaderMap, Message, StatusCode, Subject};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OnceCell, oneshot};

use crate::outbox::{Outbox, Outgoing};
use crate::signing::{Proof, Signer};

/// How often a replica running a call says so, until it answers.
pub const NOTICE_EVERY: Duration = Duration::from_millis(250);
/// How long a call waits without hearing from the replica that took it.
pub const SILENCE: Duration = Duration::from_secs(1);

/// What makes an answer the one a call waits for.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The call's id, which the answer's MAC covers.
    pub jti: String,
    /// How the call was authenticated.
    pub proof: Proof,
    /// The call's MAC list, if it had one: the hosts it was MAC'd for.
    pub macs: Option<String>,
}

/// Why no answer was taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The server says nobody subscribes to the call's subject.
    #[error("no responders")]
    NoResponders,
    /// No authentic answer before the deadline.
    #[error("timed out waiting for an authentic answer")]
    TimedOut,
    /// Neither an answer nor a word that the call still runs, for [`SILENCE`].
    #[error("the replica that took the call went silent")]
    Silent,
    /// The call or the subscription for its answer could not be made.
    #[error("{0}")]
    Failed(String),
}

struct Waiting {
    /// The answer, or why the call could not be sent.
    answer: oneshot::Sender<Result<Message, AnswerError>>,
    expect: Expect,
    /// When the replica last said it runs the call.
    heard: tokio::time::Instant,
}

type Table = Arc<Mutex<HashMap<u64, Waiting>>>;

/// The answers of one connection's authenticated calls (see the module docs).
pub struct Answers {
    nats: Client,
    signer: Arc<Signer>,
    /// `_INBOX.<signer's key>.<unique>`: a call's answer comes to `<prefix>.<token>`.
    prefix: String,
    next: AtomicU64,
    waiting: Table,
    outbox: Arc<Outbox>,
    /// The tasks that hand answers to calls and send calls out, started by the first call.
    listener: OnceCell<[tokio::task::AbortHandle; 2]>,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        for task in self.listener.get().into_iter().flatten() {
            task.abort();
        }
    }
}

/// Takes a call off the table when it ends, answered or not.
struct Forget<'a>(&'a Table, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

fn lock(table: &Table) -> MutexGuard<'_, HashMap<u64, Waiting>> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

impl Answers {
    /// Answers to calls `signer` authenticates, over `nats`.
    pub fn new(nats: Client, signer: Arc<Signer>) -> Self {
        let prefix =
            format!("{}.{}", crate::signing::inbox_prefix(signer.public_key()), nuid::next());
        Self {
            nats,
            signer,
            prefix,
            next: AtomicU64::new(0),
            waiting: Table::default(),
            outbox: Arc::default(),
            listener: OnceCell::new(),
        }
    }

    /// The signer whose calls these are.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Sends a call and waits up to `within` for its authentic answer.
    pub async fn request(
        &self,
        subject: Subject,
        headers: HeaderMap,
        body: Bytes,
        expect: Expect,
        within: Duration,
    ) -> Result<Message, AnswerError> {
        self.listen().await?;
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (answer, mut answered) = oneshot::channel();
        let sent = tokio::time::Instant::now();
        lock(&self.waiting).insert(token, Waiting { answer, expect, heard: sent });
        let _forget = Forget(&self.waiting, token);
        let reply = Subject::from(format!("{}.{token}", self.prefix));
        self.outbox.post(Outgoing { subject, reply: Some(reply), headers, body, token });
        let deadline = sent + within;
        let mut silent_at = sent + SILENCE;
        loop {
            let wake = deadline.min(silent_at);
            return match tokio::time::timeout_at(wake, &mut answered).await {
                Ok(Ok(Ok(msg))) if msg.status == Some(StatusCode::NO_RESPONDERS) => {
                    Err(AnswerError::NoResponders)
                }
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(AnswerError::Failed("the NATS connection closed".to_owned())),
                Err(_) if wake == deadline => Err(AnswerError::TimedOut),
                Err(_) => {
                    let heard = lock(&self.waiting).get(&token).map(|w| w.heard);
                    match heard.map(|h| h + SILENCE).filter(|&at| at > silent_at) {
                        Some(later) => {
                            silent_at = later;
                            continue;
                        }
                        None => Err(AnswerError::Silent),
                    }
                }
            };
        }
    }

    /// Subscribes to the answers once, and hands them to their calls from then on.
    async fn listen(&self) -> Result<(), AnswerError> {
        self.listener
            .get_or_try_init(|| async {
                let sub = self.nats.subscribe(format!("{}.*", self.prefix)).await.map_err(|e| {
                    AnswerError::Failed(format!("cannot subscribe to answers: {e}"))
                })?;
                let answers =
                    tokio::spawn(hand_out(sub, self.waiting.clone(), self.signer.clone()));
                let (nats, outbox, waiting) =
                    (self.nats.clone(), self.outbox.clone(), self.waiting.clone());
                let sender = tokio::spawn(async move {
                    let failed = |token, e: async_nats::PublishError| {
                        if let Some(call) = lock(&waiting).remove(&token) {
                            let _ = call.answer.send(Err(AnswerError::Failed(e.to_string())));
                        }
                    };
                    outbox.send(nats, failed).await;
                });
                Ok([answers.abort_handle(), sender.abort_handle()])
            })
            .await
            .map(drop)
    }
}

/// Gives each answer to its call if it authenticates; drops (and counts) the rest.
async fn hand_out(mut sub: async_nats::Subscriber, waiting: Table, signer: Arc<Signer>) {
    while let Some(msg) = sub.next().await {
        let Some(token) = msg.subject.rsplit('.').next().and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        };
        if crate::envelope::field(msg.headers.as_ref(), crate::envelope::header::RUNNING).is_some()
        {
            if let Some(call) = lock(&waiting).get_mut(&token) {
                call.heard = tokio::time::Instant::now();
            }
            continue;
        }
        let Some(call) = lock(&waiting).remove(&token) else { continue };
        if msg.status == Some(StatusCode::NO_RESPONDERS) || authentic(&signer, &msg, &call.expect) {
            let _ = call.answer.send(Ok(msg));
        } else if !call.answer.is_closed() {
            // Forged: the call waits on for its own answer.
            lock(&waiting).insert(token, call);
        }
    }
}

fn authentic(signer: &Signer, msg: &Message, expect: &Expect) -> bool {
    let headers = msg.headers.as_ref();
    let announced = match crate::chunks::announced(headers).transpose() {
        Ok(announced) => announced.map(|a| a.body),
        Err(_) => None,
    };
    let body = crate::signing::answer_body(headers, &msg.payload, announced);
    let now_s = crate::envelope::unix_ms() / 1000;
    signer
        .check_answer(headers, (&expect.jti, body), (expect.proof, expect.macs.as_deref()), now_s)
        .inspect_err(|forged| tracing::debug!(subject = %msg.subject, %forged, "answer dropped"))
        .is_ok()
}

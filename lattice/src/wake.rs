//! Scale to zero on the wire: a caller that found no replica of a component asks the leading
//! scheduler to start one (`trellis.<lattice>.ctl.sched.wake`), signed by its host like a call,
//! and is told whether to wait for it (`docs/design/scale-to-zero.md`).

use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use prost::Message as _;
use trellis_proto as pb;

use crate::envelope::Invocation;
use crate::signing::{Body, BodyDigest, Signed, Signer, Verifier};
use crate::subject::Subjects;

/// The operation a wake request names in its envelope.
pub const WAKE_OPERATION: &str = "trellis:scheduler/wake.wake";

/// Why a wake request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// No scheduler listens: the lattice runs none (start a host with `--scheduler`).
    #[error(
        "no scheduler answers wake requests in this lattice; run one (`trellis host --scheduler`) to wake components that scale to zero"
    )]
    NoScheduler,
    /// No answer in time (no leader right now, or a slow one): ask again.
    #[error("no scheduler answered the wake request for `{0}` in time; asking again")]
    TimedOut(String),
    /// Anything else: the connection, or an answer that does not decode.
    #[error("wake request for `{component}` failed: {message}")]
    Failed {
        /// The component.
        component: String,
        /// What went wrong.
        message: String,
    },
}

/// Asks the leading scheduler to wake `component`, as `source` (the host's id), signed by
/// `signer` when given. `Ok(true)`: a replica is wanted now, retry the call; `Ok(false)`: the
/// component does not scale to zero.
pub async fn request_wake(
    nats: &Client,
    subjects: &Subjects,
    signer: Option<&Signer>,
    (source, component): (&str, &str),
    timeout: Duration,
) -> Result<bool, WakeError> {
    let subject = subjects.scheduler_wake();
    let (headers, body) = wake_message(&subject, signer, (source, component), timeout);
    let request = async_nats::Request::new().headers(headers).payload(body).timeout(Some(timeout));
    let failed = |message: String| WakeError::Failed { component: component.to_owned(), message };
    let msg = nats.send_request(subject, request).await.map_err(|e| match e.kind() {
        async_nats::RequestErrorKind::NoResponders => WakeError::NoScheduler,
        async_nats::RequestErrorKind::TimedOut => WakeError::TimedOut(component.to_owned()),
        _ => failed(e.to_string()),
    })?;
    let reply = pb::WakeReply::decode(msg.payload).map_err(|e| failed(e.to_string()))?;
    Ok(reply.waking)
}

/// The headers (envelope and signature) and body of a wake request on `subject`.
fn wake_message(
    subject: &str,
    signer: Option<&Signer>,
    (source, component): (&str, &str),
    timeout: Duration,
) -> (async_nats::HeaderMap, Bytes) {
    let body = Bytes::from(pb::WakeRequest { component_id: component.to_owned() }.encode_to_vec());
    let inv = Invocation::new(source, WAKE_OPERATION, timeout, nuid::next().to_string());
    let mut headers = inv.to_headers();
    if let Some(signer) = signer {
        signer.sign(&mut headers, &Signed::of(&inv, subject, BodyDigest::of(&body)));
    }
    (headers, body)
}

/// What a scheduler reads from a wake request it received: the component, once the request's
/// signature (and deadline, and replay) checks out with `verifier`.
pub fn verify_wake(
    verifier: &Verifier,
    (subject, reply): (&str, &str),
    headers: Option<&async_nats::HeaderMap>,
    body: &[u8],
    now_ms: u64,
) -> Result<String, crate::envelope::InvokeError> {
    verifier.verify((subject, reply), headers, Body::Bytes(body), now_ms)?;
    let request = pb::WakeRequest::decode(body).map_err(|e| {
        crate::envelope::InvokeError::new(
            crate::envelope::InvokeErrorKind::BadRequest,
            format!("wake request does not decode: {e}"),
        )
    })?;
    crate::subject::validate_id("component id", &request.component_id).map_err(|e| {
        crate::envelope::InvokeError::new(
            crate::envelope::InvokeErrorKind::BadRequest,
            e.to_string(),
        )
    })?;
    Ok(request.component_id)
}

/// The answer to a wake request.
pub fn wake_reply(waking: bool) -> Bytes {
    Bytes::from(pb::WakeReply { waking }.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::inbox_prefix;

    #[test]
    fn a_signed_wake_request_is_read_once_and_an_unsigned_one_refused() {
        let signer = Signer::new(nkeys::KeyPair::new_server(), None);
        let verifier = Verifier::new(vec![], false, 60_000);
        let subject = Subjects::new("l1").unwrap().scheduler_wake();
        let reply = format!("{}.1", inbox_prefix(signer.public_key()));
        let timeout = Duration::from_secs(5);
        let now = crate::envelope::unix_ms();
        let (headers, body) = wake_message(&subject, Some(&signer), ("front", "web"), timeout);
        let read = verify_wake(&verifier, (&subject, &reply), Some(&headers), &body, now);
        assert_eq!(read.unwrap(), "web");
        let again = verify_wake(&verifier, (&subject, &reply), Some(&headers), &body, now);
        assert!(again.is_err(), "a replayed wake request is refused");
        let (other, _) = wake_message(&subject, Some(&signer), ("front", "web"), timeout);
        let forged = pb::WakeRequest { component_id: "admin".into() }.encode_to_vec();
        assert!(verify_wake(&verifier, (&subject, &reply), Some(&other), &forged, now).is_err());
        let (unsigned, body) = wake_message(&subject, None, ("front", "web"), timeout);
        assert!(verify_wake(&verifier, (&subject, &reply), Some(&unsigned), &body, now).is_err());
        let strangers = "_INBOX.someone-else.1";
        let (headers, body) = wake_message(&subject, Some(&signer), ("front", "web"), timeout);
        assert!(verify_wake(&verifier, (&subject, strangers), Some(&headers), &body, now).is_err());
    }
}

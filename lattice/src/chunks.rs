//! Bodies larger than one NATS message: the sender offers the body on an inbox of its own and
//! the receiver pulls it in chunks.
//!
//! An invocation (or its reply) whose body does not fit in the server's `max_payload` travels
//! with an empty payload and three headers: [`BODY`], the inbox where the body is served,
//! [`BODY_LEN`], its length, and [`BODY_SHA256`], its digest. The receiver requests chunk 0, 1,
//! ... from that inbox (the request payload is the chunk index, big-endian `u32`) until it has
//! the length, so chunks always reach the one replica that handles the call, whatever the queue
//! group picked. The signature of a signed call covers the announced length and digest, so a
//! strict receiver authenticates the call before it pulls a single chunk, and checks the pulled
//! bytes against the digest: a swapped or altered chunk is refused. The offer ends when the last
//! chunk was served or the deadline passed.

use std::time::Duration;

use async_nats::{Client, HeaderMap};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::envelope::{InvokeError, InvokeErrorKind};
use crate::signing::BodyDigest;

/// Header: the inbox subject that serves the body.
pub const BODY: &str = "trellis-body";
/// Header: the body's length in bytes.
pub const BODY_LEN: &str = "trellis-body-len";
/// Header: the body's SHA-256 (base64url).
pub const BODY_SHA256: &str = "trellis-body-sha256";
/// Largest body accepted in chunks.
pub const MAX_BODY: usize = 64 << 20;
/// Room left in each message for headers.
const HEADROOM: usize = 16 << 10;

/// The chunk size for a server whose messages carry at most `max_payload` bytes.
pub fn chunk_size(max_payload: usize) -> usize {
    max_payload.saturating_sub(HEADROOM).max(1024)
}

/// Whether `body` must travel in chunks on this connection.
///
/// Reads the connection's `max_payload` (an atomic), not `server_info()`, which clones every
/// string the server sent: this runs on every call and every answer.
pub fn needs_chunks(nats: &Client, body: &[u8]) -> bool {
    body.len() > chunk_size(nats.max_payload())
}

fn too_large(len: usize) -> InvokeError {
    InvokeError::new(
        InvokeErrorKind::TooLarge,
        format!("the body is {len} bytes; the lattice carries at most {MAX_BODY} in chunks"),
    )
}

/// Serves `body` (whose digest is `digest`) in chunks on a new inbox until every chunk was
/// fetched or `within` passed, and announces it in `headers`.
pub async fn offer(
    nats: &Client,
    headers: &mut HeaderMap,
    body: Bytes,
    digest: &BodyDigest,
    within: Duration,
) -> Result<(), InvokeError> {
    if body.len() > MAX_BODY {
        return Err(too_large(body.len()));
    }
    let chunk = chunk_size(nats.max_payload());
    let inbox = nats.new_inbox();
    let mut requests = nats.subscribe(inbox.clone()).await.map_err(|e| {
        InvokeError::new(InvokeErrorKind::Unavailable, format!("cannot offer a large body: {e}"))
    })?;
    let (len, chunks) = (body.len(), body.len().div_ceil(chunk));
    let server = nats.clone();
    tokio::spawn(async move {
        let serve = async {
            while let Some(request) = requests.next().await {
                let Some(reply) = request.reply else { continue };
                let index = <[u8; 4]>::try_from(request.payload.as_ref())
                    .map(|b| u32::from_be_bytes(b) as usize)
                    .unwrap_or(usize::MAX);
                let part = match index.checked_mul(chunk) {
                    Some(start) if index < chunks => {
                        body.slice(start..(start + chunk).min(body.len()))
                    }
                    _ => Bytes::new(),
                };
                if server.publish(reply, part).await.is_err() {
                    return;
                }
                if index + 1 == chunks {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(within, serve).await;
    });
    crate::envelope::set(headers, BODY, inbox.as_str());
    crate::envelope::set(headers, BODY_LEN, len.to_string());
    crate::envelope::set(headers, BODY_SHA256, URL_SAFE_NO_PAD.encode(digest.sha256));
    Ok(())
}

/// A body announced in chunks: where it is served and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The inbox that serves it.
    pub inbox: String,
    /// Its length and SHA-256, as announced (and signed, on a signed call).
    pub body: BodyDigest,
}

impl Announced {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        // At most MAX_BODY: checked when announced.
        self.body.len as usize
    }

    /// Whether it is empty (never, in practice: small bodies travel inline).
    pub fn is_empty(&self) -> bool {
        self.body.len == 0
    }
}

/// The announced body, when `headers` announce one (or why the announcement is unusable).
pub fn announced(headers: Option<&HeaderMap>) -> Option<Result<Announced, InvokeError>> {
    let headers = headers?;
    let inbox = crate::envelope::field(Some(headers), BODY)?;
    Some(parse_announcement(headers, inbox))
}

fn parse_announcement(headers: &HeaderMap, inbox: &str) -> Result<Announced, InvokeError> {
    let bad = |what: &str| InvokeError::new(InvokeErrorKind::BadRequest, format!("bad `{what}`"));
    if !inbox.starts_with("_INBOX.") || inbox.contains(['*', '>', ' ']) {
        return Err(bad(BODY));
    }
    let len = crate::envelope::field(Some(headers), BODY_LEN)
        .and_then(|l| l.parse::<u64>().ok())
        .ok_or_else(|| bad(BODY_LEN))?;
    if len > MAX_BODY as u64 {
        return Err(too_large(usize::try_from(len).unwrap_or(usize::MAX)));
    }
    let sha256 = crate::envelope::field(Some(headers), BODY_SHA256)
        .and_then(|d| URL_SAFE_NO_PAD.decode(d).ok())
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .ok_or_else(|| bad(BODY_SHA256))?;
    Ok(Announced { inbox: inbox.to_owned(), body: BodyDigest { len, sha256 } })
}

/// Pulls an announced body, chunk by chunk, within `within`, and checks it against its digest.
pub async fn fetch(
    nats: &Client,
    announced: &Announced,
    within: Duration,
) -> Result<Bytes, InvokeError> {
    let (inbox, len) = (announced.inbox.as_str(), announced.len());
    let pull = async {
        let mut body = BytesMut::with_capacity(len.min(1 << 20));
        let mut index = 0u32;
        while body.len() < len {
            let part = nats
                .request(inbox.to_owned(), Bytes::copy_from_slice(&index.to_be_bytes()))
                .await
                .map_err(|e| {
                    InvokeError::new(
                        InvokeErrorKind::Unavailable,
                        format!("lost the body while fetching chunk {index}: {e}"),
                    )
                })?;
            if part.payload.is_empty() || body.len() + part.payload.len() > len {
                return Err(InvokeError::new(
                    InvokeErrorKind::BadRequest,
                    format!("chunk {index} of the body does not fit its announced length {len}"),
                ));
            }
            body.extend_from_slice(&part.payload);
            index += 1;
        }
        Ok(body.freeze())
    };
    let body = tokio::time::timeout(within, pull).await.unwrap_or_else(|_| {
        Err(InvokeError::new(InvokeErrorKind::Timeout, "the body did not arrive in time"))
    })?;
    if BodyDigest::of(&body) != announced.body {
        return Err(InvokeError::new(
            InvokeErrorKind::Denied,
            "the body pulled does not match its announced digest: a chunk was altered or swapped",
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_leave_room_for_headers() {
        assert_eq!(chunk_size(1 << 20), (1 << 20) - (16 << 10));
        assert_eq!(chunk_size(10), 1024);
        let mut headers = HeaderMap::new();
        assert!(announced(Some(&headers)).is_none());
        headers.insert(BODY, "_INBOX.x");
        headers.insert(BODY_LEN, (MAX_BODY + 1).to_string().as_str());
        let err = announced(Some(&headers)).unwrap().unwrap_err();
        assert_eq!(err.kind(), InvokeErrorKind::TooLarge);
    }

    #[test]
    fn an_announcement_names_an_inbox_a_length_and_a_digest() {
        let digest = BodyDigest::of(b"body");
        let mut headers = HeaderMap::new();
        headers.insert(BODY, "_INBOX.x");
        headers.insert(BODY_LEN, "4");
        let err = announced(Some(&headers)).unwrap().unwrap_err();
        assert!(err.message().contains(BODY_SHA256), "{err}");
        headers.insert(BODY_SHA256, URL_SAFE_NO_PAD.encode(digest.sha256).as_str());
        let ok = announced(Some(&headers)).unwrap().unwrap();
        assert_eq!(ok, Announced { inbox: "_INBOX.x".into(), body: digest });
        headers.insert(BODY, "_INBOX.>");
        assert!(announced(Some(&headers)).unwrap().is_err());
        headers.insert(BODY, "elsewhere");
        assert!(announced(Some(&headers)).unwrap().is_err());
    }
}

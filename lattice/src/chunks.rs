//! Bodies larger than one NATS message: the sender offers the body on an inbox of its own and
//! the receiver pulls it in chunks.
//!
//! An invocation (or its reply) whose body does not fit in the server's `max_payload` travels
//! with an empty payload and two headers: [`BODY`], the inbox where the body is served, and
//! [`BODY_LEN`], its length. The receiver requests chunk 0, 1, ... from that inbox (the request
//! payload is the chunk index, big-endian `u32`) until it has the length, so chunks always reach
//! the one replica that handles the call, whatever the queue group picked. The signature of a
//! signed call covers the SHA-256 of the whole body, so a swapped or altered chunk fails
//! verification. The offer ends when the last chunk was served or the deadline passed.

use std::time::Duration;

use async_nats::{Client, HeaderMap};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::envelope::{InvokeError, InvokeErrorKind};

/// Header: the inbox subject that serves the body.
pub const BODY: &str = "trellis-body";
/// Header: the body's length in bytes.
pub const BODY_LEN: &str = "trellis-body-len";
/// Largest body accepted in chunks.
pub const MAX_BODY: usize = 64 << 20;
/// Room left in each message for headers.
const HEADROOM: usize = 16 << 10;

/// The chunk size for a server whose messages carry at most `max_payload` bytes.
pub fn chunk_size(max_payload: usize) -> usize {
    max_payload.saturating_sub(HEADROOM).max(1024)
}

/// Whether `body` must travel in chunks on this connection.
pub fn needs_chunks(nats: &Client, body: &[u8]) -> bool {
    body.len() > chunk_size(nats.server_info().max_payload)
}

fn too_large(len: usize) -> InvokeError {
    InvokeError::new(
        InvokeErrorKind::TooLarge,
        format!("the body is {len} bytes; the lattice carries at most {MAX_BODY} in chunks"),
    )
}

/// Serves `body` in chunks on a new inbox until every chunk was fetched or `within` passed,
/// and announces it in `headers`.
pub async fn offer(
    nats: &Client,
    headers: &mut HeaderMap,
    body: Bytes,
    within: Duration,
) -> Result<(), InvokeError> {
    if body.len() > MAX_BODY {
        return Err(too_large(body.len()));
    }
    let chunk = chunk_size(nats.server_info().max_payload);
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
    headers.insert(BODY, inbox.as_str());
    headers.insert(BODY_LEN, len.to_string().as_str());
    Ok(())
}

/// The announced body's inbox and length, when `headers` announce one.
pub fn announced(headers: Option<&HeaderMap>) -> Option<(String, Result<usize, InvokeError>)> {
    let headers = headers?;
    let inbox = headers.get(BODY)?.as_str().to_owned();
    let len = headers
        .get(BODY_LEN)
        .and_then(|l| l.as_str().parse::<usize>().ok())
        .ok_or_else(|| InvokeError::new(InvokeErrorKind::BadRequest, "bad `trellis-body-len`"))
        .and_then(|len| if len > MAX_BODY { Err(too_large(len)) } else { Ok(len) });
    Some((inbox, len))
}

/// Pulls a body of `len` bytes from `inbox`, chunk by chunk, within `within`.
pub async fn fetch(
    nats: &Client,
    inbox: &str,
    len: usize,
    within: Duration,
) -> Result<Bytes, InvokeError> {
    if !inbox.starts_with("_INBOX.") || inbox.contains(['*', '>', ' ']) {
        return Err(InvokeError::new(InvokeErrorKind::BadRequest, "bad `trellis-body` inbox"));
    }
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
    tokio::time::timeout(within, pull).await.unwrap_or_else(|_| {
        Err(InvokeError::new(InvokeErrorKind::Timeout, "the body did not arrive in time"))
    })
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
        let (_, len) = announced(Some(&headers)).unwrap();
        assert_eq!(len.unwrap_err().kind(), InvokeErrorKind::TooLarge);
    }
}

//! The pipe between a host and the provider processes it supervises.
//!
//! The host writes a [`Bootstrap`] frame and then [`ToProvider`] frames to the provider's stdin;
//! the provider writes [`ToHost`] frames to its stdout (its logs go to stderr). A frame is a
//! big-endian `u32` length and that many bytes of msgpack. Calls a provider makes go through its
//! host's router, so a co-located component is called in process and remote ones over NATS,
//! signed by the host. Closing stdin tells the provider to shut down, so a provider never
//! outlives its host.
//!
//! A builtin provider (one running inside its host's process) speaks the same frames over
//! in-memory pipes, except for the calls it makes: those go straight to the host's router
//! through a [`DirectHost`], with no frame to encode, no pipe to cross and no task to wake.

mod peer;

pub use peer::{Answer, Peer, PeerError};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::envelope::{InvokeError, InvokeErrorKind};
use crate::trace::TraceContext;

/// A call a provider makes through its host.
#[derive(Debug)]
pub struct HostCall<'a> {
    /// Component or provider id.
    pub target: &'a str,
    /// `ns:pkg/iface` without version.
    pub interface: &'a str,
    /// Function name.
    pub function: &'a str,
    /// msgpack arguments.
    pub payload: bytes::Bytes,
    /// How long the caller waits.
    pub timeout: std::time::Duration,
    /// The provider's span the call is made from.
    pub trace: TraceContext,
}

/// The answer to a [`HostCall`].
pub type HostCallFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<bytes::Bytes, InvokeError>> + Send + 'a>,
>;

/// The host of a builtin provider, called in process.
pub trait DirectHost: Send + Sync {
    /// Routes `call` as the host routes the provider's calls that arrive as frames.
    fn invoke<'a>(&'a self, call: HostCall<'a>) -> HostCallFuture<'a>;
}

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 64 << 20;

/// What a provider learns at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Lattice name.
    pub lattice: String,
    /// NATS address the provider uses for lattice state (links).
    pub nats_url: String,
    /// How to authenticate to NATS (the host's own credentials).
    #[serde(default)]
    pub nats_auth: crate::connect::NatsAuth,
    /// The supervising host.
    pub host_id: String,
    /// This provider's id (the source of its links).
    pub provider_id: String,
    /// Which implementation, for example `http-server`.
    pub kind: String,
    /// Where the host exports telemetry; the provider exports its spans there too.
    #[serde(default)]
    pub telemetry: Option<crate::telemetry::Config>,
    /// Operators (`KEY:role`) whose sealed links the provider applies (see [`crate::record`]).
    #[serde(default)]
    pub trusted_operators: Vec<String>,
    /// Apply unsealed links too (a development host).
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// Provider to host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToHost {
    /// Invoke `interface.function` of `target`; answered by a [`ToProvider::Reply`] with `id`.
    Invoke {
        /// Correlates the reply.
        id: u64,
        /// Component or provider id.
        target: String,
        /// `ns:pkg/iface` without version.
        interface: String,
        /// Function name.
        function: String,
        /// How long the caller waits.
        timeout_ms: u64,
        /// msgpack arguments.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        /// The provider's span (`traceparent`) the call is made from.
        #[serde(default)]
        traceparent: Option<String>,
    },
    /// The provider has applied its current links and takes calls now.
    Ready,
    /// The provider's health changed: `None` is healthy, `Some` says what is wrong.
    Health {
        /// What is wrong, if anything.
        problem: Option<String>,
    },
    /// The answer to [`ToProvider::Invoke`] `id`.
    Reply {
        /// Correlates with the call.
        id: u64,
        /// msgpack result or the error.
        result: Result<serde_bytes::ByteBuf, WireError>,
    },
}

/// A failed call as it crosses the pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// [`InvokeErrorKind`] wire name.
    pub kind: String,
    /// Explanation.
    pub message: String,
}

impl From<&InvokeError> for WireError {
    fn from(e: &InvokeError) -> Self {
        Self { kind: e.kind().as_str().to_owned(), message: e.message().to_owned() }
    }
}

impl From<WireError> for InvokeError {
    fn from(e: WireError) -> Self {
        InvokeError::new(InvokeErrorKind::from_wire(&e.kind), e.message)
    }
}

/// Host to provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToProvider {
    /// The answer to [`ToHost::Invoke`] `id`.
    Reply {
        /// Correlates with the call.
        id: u64,
        /// msgpack result or the error.
        result: Result<serde_bytes::ByteBuf, WireError>,
    },
    /// A call to the provider: `source` (a component) calls `interface.function` over its link
    /// `link`; answered by a [`ToHost::Reply`] with `id`.
    Invoke {
        /// Correlates the reply.
        id: u64,
        /// The caller.
        source: String,
        /// The caller's link name: which link's config applies.
        link: String,
        /// `ns:pkg/iface` without version.
        interface: String,
        /// Function name.
        function: String,
        /// How long the caller waits.
        timeout_ms: u64,
        /// msgpack arguments.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        /// The caller's span (`traceparent`).
        #[serde(default)]
        traceparent: Option<String>,
    },
}

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The pipe failed.
    #[error("host link I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A frame announced more than [`MAX_FRAME`] bytes.
    #[error("host link frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The bytes are not a valid frame.
    #[error("undecodable host link frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The value could not be encoded.
    #[error("unencodable host link frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Encodes one frame (length prefix included).
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0; 4];
    rmp_serde::encode::write(&mut buf, value)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), FrameError> {
    w.write_all(&encode_frame(value)?).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(decode_frame(&buf)?))
}

/// Decodes a frame body (without its length prefix); never panics on bad input.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let call = ToHost::Invoke {
            id: 7,
            target: "hello".into(),
            interface: "wasi:http/incoming-handler".into(),
            function: "handle".into(),
            timeout_ms: 1000,
            payload: vec![1, 2, 3],
            traceparent: Some(crate::trace::TraceContext::root().to_string()),
        };
        let reply = ToProvider::Reply {
            id: 7,
            result: Err(WireError { kind: "NoResponders".into(), message: "none".into() }),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &call).await.unwrap();
        write_frame(&mut buf, &reply).await.unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_frame::<_, ToHost>(&mut r).await.unwrap(), Some(call));
        assert_eq!(read_frame::<_, ToProvider>(&mut r).await.unwrap(), Some(reply));
        assert_eq!(read_frame::<_, ToHost>(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn oversized_and_garbage_frames_are_errors() {
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame::<_, ToHost>(&mut r).await, Err(FrameError::TooLarge(_))));
        let mut r: &[u8] = &[0, 0, 0, 2, 0xc1, 0xc1];
        assert!(matches!(read_frame::<_, ToHost>(&mut r).await, Err(FrameError::Decode(_))));
        let mut r: &[u8] = &[0, 0, 0, 9, 1];
        assert!(matches!(read_frame::<_, ToHost>(&mut r).await, Err(FrameError::Io(_))));
    }
}

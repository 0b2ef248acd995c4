//! HTTP requests and responses as they cross the lattice (msgpack).
//!
//! The http-server provider turns an incoming request into an [`HttpRequest`]; the host that runs
//! the component hands it to `wasi:http/incoming-handler` and answers with an [`HttpResponse`].

use serde::{Deserialize, Serialize};

/// The operation name of `wasi:http/incoming-handler.handle`.
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";
/// The interface of outgoing HTTP (a component calling out, served by an http-client provider).
pub const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler";
/// The function of [`INCOMING_HANDLER`] and [`OUTGOING_HANDLER`].
pub const HANDLE: &str = "handle";

/// The interface a link names for an (unversioned) import or export: WASI 0.3's
/// `wasi:http/client` and `wasi:http/handler` are linked as their 0.2 counterparts
/// [`OUTGOING_HANDLER`] and [`INCOMING_HANDLER`], so one link serves both generations.
pub fn link_interface(interface: &str) -> &str {
    match interface {
        "wasi:http/client" => OUTGOING_HANDLER,
        "wasi:http/handler" => INCOMING_HANDLER,
        other => other,
    }
}

/// An HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, for example `/hello?x=1`.
    pub path_and_query: String,
    /// Host header or URI authority, if any.
    pub authority: Option<String>,
    /// Header name/value pairs in order (names may repeat).
    pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    /// Whole body.
    pub body: serde_bytes::ByteBuf,
    /// `http` or `https`, on outgoing requests (a component calling out).
    #[serde(default)]
    pub scheme: Option<String>,
}

impl HttpRequest {
    /// A `GET` of `path_and_query` with no headers and no body.
    pub fn get(path_and_query: &str) -> Self {
        Self {
            method: "GET".into(),
            path_and_query: path_and_query.into(),
            authority: None,
            headers: Vec::new(),
            body: Vec::new().into(),
            scheme: None,
        }
    }
}

impl HttpRequest {
    /// The request of `parts` with `body`, as it crosses the lattice.
    pub fn from_parts(parts: &::http::request::Parts, body: bytes::Bytes) -> Self {
        Self {
            method: parts.method.to_string(),
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            authority: parts.uri.authority().map(|a| a.to_string()),
            headers: header_pairs(&parts.headers),
            body: Vec::from(body).into(),
            scheme: parts.uri.scheme_str().map(str::to_owned),
        }
    }
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header name/value pairs in order.
    pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    /// Whole body.
    pub body: serde_bytes::ByteBuf,
}

impl HttpResponse {
    /// The response of `parts` with `body`, as it crosses the lattice.
    pub fn from_parts(parts: &::http::response::Parts, body: bytes::Bytes) -> Self {
        Self {
            status: parts.status.as_u16(),
            headers: header_pairs(&parts.headers),
            body: Vec::from(body).into(),
        }
    }
}

/// Header name/value pairs in order.
fn header_pairs(headers: &::http::HeaderMap) -> Vec<(String, serde_bytes::ByteBuf)> {
    headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec().into())).collect()
}

/// Encodes a value as compact msgpack.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec(value)
}

/// Decodes msgpack from the network; never panics on bad input.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_0_3_http_interfaces_are_linked_as_their_0_2_counterparts() {
        assert_eq!(link_interface("wasi:http/client"), OUTGOING_HANDLER);
        assert_eq!(link_interface("wasi:http/handler"), INCOMING_HANDLER);
        assert_eq!(link_interface("wasi:keyvalue/store"), "wasi:keyvalue/store");
    }

    #[test]
    fn request_round_trips() {
        let req = HttpRequest {
            method: "POST".into(),
            path_and_query: "/a?b=c".into(),
            authority: Some("example.com".into()),
            headers: vec![("x-a".into(), b"1".to_vec().into())],
            body: b"payload".to_vec().into(),
            scheme: Some("https".into()),
        };
        let bytes = encode(&req).unwrap();
        assert_eq!(decode::<HttpRequest>(&bytes).unwrap(), req);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xff\xff", b"\x95\x01", &[0x93, 0xa1, b'G', 0xc0, 0xc0][..]] {
            assert!(decode::<HttpRequest>(bytes).is_err());
        }
    }
}

//! Sending one OTLP request to an [`Endpoint`]: a protobuf body POSTed over HTTP/1.1
//! (`http/protobuf`) or framed as a unary gRPC call over HTTP/2 (`grpc`).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::config::{Endpoint, Protocol};

/// A collector that takes longer than this to answer has failed the request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends OTLP requests to one endpoint, reusing connections.
#[derive(Debug)]
pub struct Exporter {
    endpoint: Endpoint,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Exporter {
    /// An exporter to `endpoint`; connects on first use.
    pub fn new(endpoint: Endpoint) -> Self {
        // The system's CA certificates (a collector behind a private CA), else the web's.
        let roots = hyper_rustls::HttpsConnectorBuilder::new();
        let roots = match roots.with_native_roots() {
            Ok(native) => native,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
        };
        let roots = roots.https_or_http();
        // gRPC offers only h2 in ALPN: a server that picked HTTP/1.1 could not answer it.
        let https = match endpoint.protocol {
            Protocol::Grpc => roots.enable_http2().build(),
            Protocol::HttpProtobuf => roots.enable_http1().enable_http2().build(),
        };
        let mut builder = Client::builder(TokioExecutor::new());
        // gRPC is HTTP/2 only: with prior knowledge on plaintext, by ALPN on TLS.
        builder.http2_only(endpoint.protocol == Protocol::Grpc);
        Self { client: builder.build(https), endpoint }
    }

    /// Where it sends.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one encoded export request (`ExportTraceServiceRequest` or
    /// `ExportMetricsServiceRequest`); `Err` says why the collector did not take it.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), String> {
        match tokio::time::timeout(TIMEOUT, self.exchange(message)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("the collector did not answer within {TIMEOUT:?}")),
        }
    }

    async fn exchange(&self, message: Vec<u8>) -> Result<(), String> {
        let mut request = http::Request::post(&self.endpoint.url);
        let body = match self.endpoint.protocol {
            Protocol::HttpProtobuf => {
                request = request.header(http::header::CONTENT_TYPE, "application/x-protobuf");
                Bytes::from(message)
            }
            Protocol::Grpc => {
                request = request
                    .header(http::header::CONTENT_TYPE, "application/grpc")
                    .header(http::header::TE, "trailers");
                grpc_frame(&message)
            }
        };
        for (name, value) in &self.endpoint.headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).map_err(|e| format!("bad request: {e}"))?;
        let response = self.client.request(request).await.map_err(|e| crate::error_chain(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            let text =
                String::from_utf8_lossy(&body.to_bytes()).chars().take(200).collect::<String>();
            return Err(format!("the collector answered {status}: {}", text.trim()));
        }
        if self.endpoint.protocol == Protocol::Grpc {
            // A gRPC status comes in the trailers, or in the headers of a trailers-only answer.
            let trailers = body.trailers().cloned().unwrap_or_default();
            let field = |name: &str| {
                trailers
                    .get(name)
                    .or_else(|| headers.get(name))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            match field("grpc-status").as_deref() {
                Some("0") => {}
                Some(code) => {
                    let message = field("grpc-message").unwrap_or_default();
                    return Err(format!("the collector answered gRPC status {code}: {message}"));
                }
                None => return Err("the collector's answer carries no gRPC status".into()),
            }
        }
        Ok(())
    }
}

/// A gRPC message: uncompressed flag, big-endian length, the message.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

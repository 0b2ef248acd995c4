//! The OTLP exporters of one [`Endpoint`]: `http/protobuf` through a hyper client on the
//! process's tokio runtime, or `grpc` through tonic; TLS with the system's CA certificates.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::ClientTlsConfig;
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, SpanExporter, WithExportConfig, WithHttpConfig,
    WithTonicConfig,
};

use trellis_lattice::telemetry::{Endpoint, Protocol};

/// A collector that takes longer than this to answer has failed the request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The span exporter of `endpoint`. Call on a tokio runtime: the exporter sends through it.
pub(crate) fn spans(endpoint: &Endpoint) -> Result<SpanExporter, ExporterBuildError> {
    let builder = SpanExporter::builder();
    match endpoint.protocol {
        Protocol::HttpProtobuf => http(builder.with_http(), endpoint).build(),
        Protocol::Grpc => grpc(builder.with_tonic(), endpoint).build(),
    }
}

/// The metric exporter of `endpoint` (cumulative temporality). Call on a tokio runtime.
pub(crate) fn metrics(endpoint: &Endpoint) -> Result<MetricExporter, ExporterBuildError> {
    let builder = MetricExporter::builder();
    match endpoint.protocol {
        Protocol::HttpProtobuf => http(builder.with_http(), endpoint).build(),
        Protocol::Grpc => grpc(builder.with_tonic(), endpoint).build(),
    }
}

fn http<B: WithExportConfig + WithHttpConfig>(builder: B, endpoint: &Endpoint) -> B {
    builder
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(&endpoint.url)
        .with_timeout(TIMEOUT)
        .with_http_client(Hyper::new())
        .with_headers(endpoint.headers.iter().cloned().collect::<HashMap<_, _>>())
}

fn grpc<B: WithExportConfig + WithTonicConfig>(builder: B, endpoint: &Endpoint) -> B {
    let headers: http::HeaderMap = endpoint
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
        .collect();
    let builder = builder
        .with_protocol(opentelemetry_otlp::Protocol::Grpc)
        .with_endpoint(&endpoint.url)
        .with_timeout(TIMEOUT)
        .with_metadata(MetadataMap::from_headers(headers));
    if endpoint.url.starts_with("https://") {
        // The system's CA certificates: a collector behind a private CA.
        builder.with_tls_config(ClientTlsConfig::new().with_native_roots())
    } else {
        builder
    }
}

/// The SDK's HTTP client trait over hyper. The SDK's batch processor and metric reader export
/// from threads of their own, outside any runtime: each exchange runs as a task on the runtime
/// the client was made on.
#[derive(Debug, Clone)]
struct Hyper {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

impl Hyper {
    /// Panics outside a tokio runtime (Trellis starts telemetry from async code).
    fn new() -> Self {
        // The system's CA certificates (a collector behind a private CA), else the web's.
        let roots = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(native) => native,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
        };
        let https = roots.https_or_http().enable_http1().enable_http2().build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Self { client, runtime: tokio::runtime::Handle::current() }
    }
}

#[async_trait::async_trait]
impl HttpClient for Hyper {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (head, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(head, body))
        };
        // The timer too is the runtime's: made in the task, not on the caller's thread.
        let timed = async move { tokio::time::timeout(TIMEOUT, exchange).await };
        match self.runtime.spawn(timed).await? {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("the collector did not answer within {TIMEOUT:?}").into()),
        }
    }
}

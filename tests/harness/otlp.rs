//! An OpenTelemetry collector on loopback for tests: takes OTLP traces and metrics over HTTP
//! (`/v1/traces`, `/v1/metrics`, protobuf) and gRPC (HTTP/2 without TLS), and keeps what it
//! receives with the sender's resource. It decodes with `opentelemetry-proto`'s messages, not
//! with the exporter's code: what it checks is what a real collector would read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::net::TcpListener;

/// A span and who sent it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the sender.
    pub service: String,
    /// `trellis.host.id` of the sender.
    pub host: String,
    /// The span.
    pub span: Span,
}

/// A metric and who sent it.
#[derive(Debug, Clone)]
pub struct ReceivedMetric {
    /// `service.name` of the sender.
    pub service: String,
    /// `trellis.host.id` of the sender.
    pub host: String,
    /// The metric with its data points.
    pub metric: Metric,
}

/// What arrived, and how.
#[derive(Debug, Default)]
pub struct Received {
    /// Every span.
    pub spans: Vec<ReceivedSpan>,
    /// Every metric of every export.
    pub metrics: Vec<ReceivedMetric>,
    /// Requests per transport: (`http` or `grpc`, path).
    pub requests: Vec<(&'static str, String)>,
}

/// The collector; stops with the test's runtime.
#[derive(Debug)]
pub struct Collector {
    /// Where it listens (for `OTEL_EXPORTER_OTLP_ENDPOINT=http://{addr}`).
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl Collector {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("collector port");
        let addr = listener.local_addr().expect("collector address");
        let received = Arc::new(Mutex::new(Received::default()));
        let keep = received.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let keep = keep.clone();
                        async move { Ok::<_, Infallible>(handle(request, &keep).await) }
                    });
                    // HTTP/1.1 or, with prior knowledge, HTTP/2 (gRPC).
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(conn), service)
                        .await;
                });
            }
        });
        Self { addr, received }
    }

    /// Looks at what arrived so far.
    pub fn with<T>(&self, look: impl FnOnce(&Received) -> T) -> T {
        look(&self.received.lock().unwrap())
    }
}

type Body = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn reply(status: u16, frames: Vec<Frame<Bytes>>) -> Response<Body> {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = frames.into_iter().map(Ok).collect();
    let mut response = Response::new(StreamBody::new(futures::stream::iter(frames)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    response
}

async fn handle(request: Request<Incoming>, keep: &Mutex<Received>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let grpc = request
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(400, vec![]);
    };
    let message = if grpc {
        // One uncompressed message: flag, length, bytes.
        if body.len() < 5 || body[0] != 0 {
            return reply(400, vec![]);
        }
        body.slice(5..)
    } else {
        body
    };
    let traces = path.ends_with("/v1/traces") || path.ends_with("TraceService/Export");
    let metrics = path.ends_with("/v1/metrics") || path.ends_with("MetricsService/Export");
    let decoded = if traces {
        ExportTraceServiceRequest::decode(message).map(|r| record_spans(r, keep))
    } else if metrics {
        ExportMetricsServiceRequest::decode(message).map(|r| record_metrics(r, keep))
    } else {
        return reply(404, vec![]);
    };
    if decoded.is_err() {
        return reply(400, vec![]);
    }
    keep.lock().unwrap().requests.push((if grpc { "grpc" } else { "http" }, path));
    if !grpc {
        return reply(200, vec![]);
    }
    // An empty Export*ServiceResponse, then the status in the trailers.
    let mut framed = BytesMut::new();
    framed.put_u8(0);
    framed.put_u32(0);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().expect("header"));
    let mut response = reply(200, vec![Frame::data(framed.freeze()), Frame::trailers(trailers)]);
    response.headers_mut().insert("content-type", "application/grpc".parse().expect("header"));
    response
}

fn attribute(resource: Option<&Resource>, key: &str) -> String {
    resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone())
        .and_then(|v| match v.value {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        })
        .unwrap_or_default()
}

fn record_spans(request: ExportTraceServiceRequest, keep: &Mutex<Received>) {
    let mut keep = keep.lock().unwrap();
    for resource in request.resource_spans {
        let service = attribute(resource.resource.as_ref(), "service.name");
        let host = attribute(resource.resource.as_ref(), "trellis.host.id");
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            keep.spans.push(ReceivedSpan { service: service.clone(), host: host.clone(), span });
        }
    }
}

fn record_metrics(request: ExportMetricsServiceRequest, keep: &Mutex<Received>) {
    let mut keep = keep.lock().unwrap();
    for resource in request.resource_metrics {
        let service = attribute(resource.resource.as_ref(), "service.name");
        let host = attribute(resource.resource.as_ref(), "trellis.host.id");
        for metric in resource.scope_metrics.into_iter().flat_map(|s| s.metrics) {
            keep.metrics.push(ReceivedMetric {
                service: service.clone(),
                host: host.clone(),
                metric,
            });
        }
    }
}

/// The value of `metric`'s data point whose attributes include every one of `labels`, as a
/// number (sums and gauges; a histogram's count).
pub fn metric_value(metric: &Metric, labels: &[(&str, &str)]) -> Option<f64> {
    let matches = |attributes: &[KeyValue]| {
        labels.iter().all(|(k, v)| {
            attributes.iter().any(|a| {
                a.key == *k
                    && matches!(&a.value, Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }) if s == v)
            })
        })
    };
    let number = |p: &NumberDataPoint| match p.value {
        Some(number_data_point::Value::AsInt(v)) => Some(v as f64),
        Some(number_data_point::Value::AsDouble(v)) => Some(v),
        None => None,
    };
    match metric.data.as_ref()? {
        metric::Data::Sum(s) => {
            s.data_points.iter().find(|p| matches(&p.attributes)).and_then(number)
        }
        metric::Data::Gauge(g) => {
            g.data_points.iter().find(|p| matches(&p.attributes)).and_then(number)
        }
        metric::Data::Histogram(h) => {
            h.data_points.iter().find(|p| matches(&p.attributes)).map(|p| p.count as f64)
        }
        // Trellis sends none of these.
        metric::Data::ExponentialHistogram(_) | metric::Data::Summary(_) => None,
    }
}

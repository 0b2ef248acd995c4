//! The HTTP side: one pooled hyper client for every link; each link's config limits its calls.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::http::{self, HANDLE, HttpRequest, HttpResponse, OUTGOING_HANDLER};
use trellis_lattice::link::Link;
use trellis_lattice::trace::{HeaderInjector, TraceContext};
use trellis_provider::{Call, Context, Provider};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_RESPONSE: usize = 16 << 20;

/// The provider.
#[derive(Debug)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// One link's settings.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    allowed_hosts: Option<Vec<String>>,
    timeout: Duration,
    max_response_bytes: usize,
}

impl Settings {
    fn of(link: &Link) -> Result<Self, String> {
        let number = |key: &str| -> Result<Option<u64>, String> {
            link.config
                .get(key)
                .map(|v| v.parse().map_err(|_| format!("`{key}` must be a number, got `{v}`")))
                .transpose()
        };
        Ok(Self {
            allowed_hosts: link.config.get("allowed_hosts").map(|list| {
                list.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect()
            }),
            timeout: number("timeout_ms")?.map_or(DEFAULT_TIMEOUT, Duration::from_millis),
            max_response_bytes: number("max_response_bytes")?
                .map_or(DEFAULT_MAX_RESPONSE, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        })
    }

    /// Whether `host` (and `port`) may be called: `host` or `host:port` in the list.
    fn allows(&self, host: &str, port: u16) -> bool {
        let Some(allowed) = &self.allowed_hosts else { return true };
        let host = host.to_ascii_lowercase();
        let with_port = format!("{host}:{port}");
        allowed.iter().any(|a| *a == host || *a == with_port)
    }
}

fn error(kind: InvokeErrorKind, message: String) -> InvokeError {
    InvokeError::new(kind, message)
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Self { client }
    }

    async fn send(
        &self,
        link: &Link,
        request: HttpRequest,
        (deadline, trace): (Duration, TraceContext),
    ) -> Result<HttpResponse, InvokeError> {
        let settings = Settings::of(link).map_err(|e| error(InvokeErrorKind::BadRequest, e))?;
        let scheme = request.scheme.as_deref().unwrap_or("http");
        let authority = request.authority.as_deref().ok_or_else(|| {
            error(InvokeErrorKind::BadRequest, "the request names no host".into())
        })?;
        let uri: hyper::Uri =
            format!("{scheme}://{authority}{}", request.path_and_query)
                .parse()
                .map_err(|e| error(InvokeErrorKind::BadRequest, format!("invalid URL: {e}")))?;
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        if !settings.allows(host, port) {
            return Err(error(
                InvokeErrorKind::Denied,
                format!("{host}:{port} is not in the link's allowed_hosts"),
            ));
        }
        let mut builder = hyper::Request::builder().method(request.method.as_str()).uri(&uri);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_slice());
        }
        let mut outgoing = builder
            .body(Full::new(Bytes::from(request.body.into_vec())))
            .map_err(|e| error(InvokeErrorKind::BadRequest, format!("invalid request: {e}")))?;
        // The upstream continues this call's trace: our span is its parent, whatever the guest
        // set (the injector replaces the guest's `traceparent`).
        trace.inject(&mut HeaderInjector(outgoing.headers_mut()));
        let timeout = settings.timeout.min(deadline);
        let max = settings.max_response_bytes;
        let exchange = async {
            let response = self
                .client
                .request(outgoing)
                .await
                .map_err(|e| error(InvokeErrorKind::Unavailable, format!("{uri}: {e}")))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max).collect().await.map_err(|e| {
                error(
                    InvokeErrorKind::TooLarge,
                    format!("{uri}: response body failed or exceeds {max} bytes: {e}"),
                )
            })?;
            Ok::<_, InvokeError>(HttpResponse::from_parts(&parts, body.to_bytes()))
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or_else(|_| {
            Err(error(InvokeErrorKind::Timeout, format!("{uri} did not answer within {timeout:?}")))
        })
    }
}

impl Provider for HttpClient {
    async fn link_put(&self, ctx: &Context, link: Link) -> Result<(), String> {
        if link.target != ctx.provider_id() {
            return Err("http-client makes no calls of its own; link components to it".into());
        }
        if link.interface.to_string() != OUTGOING_HANDLER {
            return Err(format!("http-client serves {OUTGOING_HANDLER}, not {}", link.interface));
        }
        Settings::of(&link).map(drop)
    }

    async fn link_deleted(&self, _ctx: &Context, _link: Link) {}

    async fn invoke(&self, _ctx: &Context, call: Call) -> Result<Vec<u8>, InvokeError> {
        if call.function != HANDLE {
            return Err(error(
                InvokeErrorKind::BadRequest,
                format!("http-client has no function `{}`", call.function),
            ));
        }
        let request: HttpRequest = http::decode(&call.payload).map_err(|e| {
            error(InvokeErrorKind::BadRequest, format!("undecodable HTTP request: {e}"))
        })?;
        let response = self.send(&call.link, request, (call.timeout, call.trace)).await?;
        http::encode(&response).map_err(|e| error(InvokeErrorKind::TooLarge, e.to_string()))
    }

    async fn shutdown(&self) {}
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use trellis_lattice::link::InterfaceName;

    use super::*;

    fn link(config: &[(&str, &str)]) -> Link {
        Link {
            source: "c".into(),
            target: "p".into(),
            interface: InterfaceName::parse(OUTGOING_HANDLER).unwrap(),
            name: "default".into(),
            config: config
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn allow_lists_match_hosts_and_ports() {
        let open = Settings::of(&link(&[])).unwrap();
        assert!(open.allows("anything", 1));
        let s = Settings::of(&link(&[("allowed_hosts", "Example.com, api.local:8080")])).unwrap();
        assert!(s.allows("example.com", 443));
        assert!(s.allows("api.local", 8080));
        assert!(!s.allows("api.local", 80));
        assert!(!s.allows("evil.com", 443));
        assert!(Settings::of(&link(&[("timeout_ms", "soon")])).unwrap_err().contains("timeout_ms"));
    }
}

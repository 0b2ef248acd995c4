//! Pulling wasm components from OCI registries: the pull side of the distribution API (a
//! manifest, then its wasm layer), each checked against its digest, with registry tokens.
//!
//! `trellis app deploy` pulls `oci://` sources once and stores them in the lattice artifact
//! store by digest; hosts fetch from there (see `docs/design/scheduler.md`).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::state::digest_of;

/// Largest manifest read.
const MAX_MANIFEST: usize = 4 << 20;
/// Largest component read.
pub const MAX_COMPONENT: usize = 256 << 20;
/// How long one registry request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A pull failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference does not parse.
    #[error(
        "invalid OCI reference `{0}`: expected registry/repository[:tag][@sha256:<hex>], for \
         example ghcr.io/acme/hello:1.0"
    )]
    BadReference(String),
    /// The registry could not be reached.
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable {
        /// Registry host.
        registry: String,
        /// Why.
        reason: String,
    },
    /// The registry wants credentials we do not have, or refused the ones we gave.
    #[error(
        "registry {registry} refused access to {repository}: {reason}. Set --oci-username and \
         TRELLIS_OCI_PASSWORD"
    )]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository asked for.
        repository: String,
        /// What the registry said.
        reason: String,
    },
    /// The registry answered with an error.
    #[error("registry answered {status} for {url}")]
    Status {
        /// What was asked.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// The manifest is not one we can use.
    #[error("{reference}: {reason}")]
    BadManifest {
        /// The reference pulled.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// Content does not hash to its digest.
    #[error("{what} of {reference} has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// Manifest or layer.
        what: &'static str,
        /// The reference pulled.
        reference: String,
        /// The digest asked for.
        expected: String,
        /// What it hashes to.
        actual: String,
    },
}

/// `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (and port).
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Tag, when no digest pins it (default `latest`).
    pub tag: String,
    /// Manifest digest it is pinned to.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a reference without the `oci://` prefix.
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let bad = || OciError::BadReference(text.to_owned());
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest.strip_prefix("sha256:").ok_or_else(bad)?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                (rest, Some(digest.to_ascii_lowercase()))
            }
            None => (text, None),
        };
        let (registry, path) = rest.split_once('/').ok_or_else(bad)?;
        // A tag follows the last `:` after the last `/` (a port is in the registry part).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (path, "latest"),
        };
        let ok = |s: &str| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/:[]".contains(&b))
        };
        if !(ok(registry) && ok(repository) && ok(tag)) || repository.contains(':') {
            return Err(bad());
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            digest,
        })
    }

    fn base(&self) -> String {
        // Registries on this machine speak plain HTTP; everything else HTTPS.
        let host = self.registry.rsplit_once(':').map_or(self.registry.as_str(), |(h, _)| h);
        let scheme =
            if matches!(host, "localhost" | "127.0.0.1" | "[::1]") { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.registry, self.repository)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.digest {
            Some(d) => write!(f, "{}/{}@{d}", self.registry, self.repository),
            None => write!(f, "{}/{}:{}", self.registry, self.repository, self.tag),
        }
    }
}

/// Registry credentials.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// What a pull brought back.
#[derive(Debug)]
pub struct Pulled {
    /// The component.
    pub bytes: Vec<u8>,
    /// The manifest's digest (what a reference can be pinned to).
    pub manifest_digest: String,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
struct TokenReply {
    token: Option<String>,
    access_token: Option<String>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Pulls the wasm component `reference` names.
pub async fn pull(
    reference: &Reference,
    credentials: Option<&Credentials>,
) -> Result<Pulled, OciError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: HttpsClient = Client::builder(TokioExecutor::new()).build(https);
    let mut session = Session { client, reference, credentials, authorization: None };
    let target = reference.digest.clone().unwrap_or_else(|| reference.tag.clone());
    let accept = "application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json";
    let manifest_bytes = session
        .get(&format!("{}/manifests/{target}", reference.base()), accept, MAX_MANIFEST)
        .await?;
    let manifest_digest = digest_of(&manifest_bytes);
    if let Some(pinned) = &reference.digest
        && *pinned != manifest_digest
    {
        return Err(OciError::DigestMismatch {
            what: "the manifest",
            reference: reference.to_string(),
            expected: pinned.clone(),
            actual: manifest_digest,
        });
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        OciError::BadManifest { reference: reference.to_string(), reason: e.to_string() }
    })?;
    let wasm: Vec<&Descriptor> =
        manifest.layers.iter().filter(|l| l.media_type.contains("wasm")).collect();
    let layer = match (wasm.as_slice(), manifest.layers.as_slice()) {
        ([one], _) => *one,
        ([], [one]) => one,
        _ => {
            return Err(OciError::BadManifest {
                reference: reference.to_string(),
                reason: format!(
                    "expected one wasm layer (media type application/wasm), found {} layers",
                    manifest.layers.len()
                ),
            });
        }
    };
    if layer.size > MAX_COMPONENT as u64 {
        return Err(OciError::BadManifest {
            reference: reference.to_string(),
            reason: format!("its layer is {} bytes, over the {MAX_COMPONENT} limit", layer.size),
        });
    }
    let bytes = session
        .get(&format!("{}/blobs/{}", reference.base(), layer.digest), "*/*", MAX_COMPONENT)
        .await?;
    let actual = digest_of(&bytes);
    if actual != layer.digest {
        return Err(OciError::DigestMismatch {
            what: "the wasm layer",
            reference: reference.to_string(),
            expected: layer.digest.clone(),
            actual,
        });
    }
    Ok(Pulled { bytes: bytes.to_vec(), manifest_digest })
}

struct Session<'a> {
    client: HttpsClient,
    reference: &'a Reference,
    credentials: Option<&'a Credentials>,
    /// `Authorization` once a challenge was answered.
    authorization: Option<HeaderValue>,
}

impl Session<'_> {
    /// GETs `url`, answering one authentication challenge on the way.
    /// GETs `url`, answering one authentication challenge and following up to five redirects
    /// (registries send blobs from CDNs); credentials never leave the registry's host.
    async fn get(&mut self, url: &str, accept: &str, limit: usize) -> Result<Bytes, OciError> {
        let mut url = url.to_owned();
        let (mut redirects, mut challenged) = (0, false);
        loop {
            let at_registry = authority(&url).as_deref() == Some(self.reference.registry.as_str());
            let auth = if at_registry { self.authorization.clone() } else { None };
            let response = self.send(&url, accept, auth).await?;
            match response.status() {
                StatusCode::OK => return self.read(response, limit).await,
                status if status.is_redirection() && redirects < 5 => {
                    let location = response
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| OciError::Status { url: url.clone(), status })?;
                    url = redirect(&url, location)
                        .ok_or_else(|| OciError::Status { url: url.clone(), status })?;
                    redirects += 1;
                }
                StatusCode::UNAUTHORIZED if at_registry && !challenged => {
                    challenged = true;
                    let challenge = response
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    self.authorization = Some(self.answer(&challenge).await?);
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(self.unauthorized(format!("{} for {url}", response.status())));
                }
                status => return Err(OciError::Status { url, status }),
            }
        }
    }

    async fn send(
        &self,
        url: &str,
        accept: &str,
        authorization: Option<HeaderValue>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, OciError> {
        let mut request = Request::get(url).header(header::ACCEPT, accept);
        if let Some(auth) = authorization {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = request
            .body(Empty::new())
            .map_err(|_| OciError::BadReference(self.reference.to_string()))?;
        match tokio::time::timeout(TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.unreachable(crate::error_chain(&e))),
            Err(_) => Err(self.unreachable(format!("no answer within {TIMEOUT:?}"))),
        }
    }

    async fn read(
        &self,
        response: hyper::Response<hyper::body::Incoming>,
        limit: usize,
    ) -> Result<Bytes, OciError> {
        let body = Limited::new(response.into_body(), limit);
        match tokio::time::timeout(TIMEOUT, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) => Err(self.unreachable(format!("reading the answer: {e}"))),
            Err(_) => Err(self.unreachable(format!("answer not read within {TIMEOUT:?}"))),
        }
    }

    /// Answers a `Basic` or `Bearer` challenge with our credentials.
    async fn answer(&self, challenge: &str) -> Result<HeaderValue, OciError> {
        use base64::Engine as _;
        let basic = self.credentials.map(|c| {
            let pair = format!("{}:{}", c.username, c.password);
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        });
        let header_value =
            |s: String| HeaderValue::from_str(&s).map_err(|e| self.unauthorized(e.to_string()));
        if let Some(params) = challenge.strip_prefix("Bearer ") {
            let param = |name: &str| {
                params.split(',').find_map(|p| {
                    let (k, v) = p.trim().split_once('=')?;
                    (k == name).then(|| v.trim_matches('"').to_owned())
                })
            };
            let realm = param("realm").ok_or_else(|| {
                self.unauthorized(format!("a Bearer challenge without a realm: {challenge}"))
            })?;
            let mut url = format!("{realm}?");
            for name in ["service", "scope"] {
                if let Some(value) = param(name) {
                    url.push_str(&format!("{name}={}&", encode(&value)));
                }
            }
            let auth = basic.map(header_value).transpose()?;
            let response = self.send(&url, "application/json", auth).await?;
            if response.status() != StatusCode::OK {
                return Err(
                    self.unauthorized(format!("token service answered {}", response.status()))
                );
            }
            let body = self.read(response, 1 << 20).await?;
            let reply: TokenReply = serde_json::from_slice(&body)
                .map_err(|e| self.unauthorized(format!("unreadable token: {e}")))?;
            let token = reply
                .token
                .or(reply.access_token)
                .ok_or_else(|| self.unauthorized("the token service sent no token".into()))?;
            return header_value(format!("Bearer {token}"));
        }
        match basic {
            Some(basic) if challenge.starts_with("Basic") => header_value(basic),
            _ => Err(self.unauthorized(if challenge.is_empty() {
                "credentials required".into()
            } else {
                format!("credentials required ({challenge})")
            })),
        }
    }

    fn unreachable(&self, reason: String) -> OciError {
        OciError::Unreachable { registry: self.reference.registry.clone(), reason }
    }

    fn unauthorized(&self, reason: String) -> OciError {
        OciError::Unauthorized {
            registry: self.reference.registry.clone(),
            repository: self.reference.repository.clone(),
            reason,
        }
    }
}

/// The `host[:port]` of an absolute URL.
fn authority(url: &str) -> Option<String> {
    url.parse::<http::Uri>().ok()?.authority().map(|a| a.to_string())
}

/// Where a redirect from `from` to `location` (absolute, or absolute-path) leads.
fn redirect(from: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    let uri = from.parse::<http::Uri>().ok()?;
    let path = location.starts_with('/').then_some(location)?;
    Some(format!("{}://{}{path}", uri.scheme_str()?, uri.authority()?))
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = Reference::parse("127.0.0.1:5000/apps/hello:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "apps/hello", "1.0")
        );
        assert_eq!(r.base(), "http://127.0.0.1:5000/v2/apps/hello");
        let r = Reference::parse("ghcr.io/acme/hello").unwrap();
        assert_eq!(r.tag, "latest");
        assert_eq!(r.base(), "https://ghcr.io/v2/acme/hello");
        let pinned = format!("ghcr.io/acme/hello@sha256:{}", "a".repeat(64));
        assert_eq!(
            Reference::parse(&pinned).unwrap().digest.unwrap(),
            format!("sha256:{}", "a".repeat(64))
        );
        for bad in
            ["hello", "ghcr.io/", "ghcr.io/acme/hello@sha256:abc", "ghcr.io/a b", "ghcr.io/x@md5:1"]
        {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_resolve() {
        let from = "https://ghcr.io/v2/a/blobs/sha256:1";
        assert_eq!(redirect(from, "/x?y=1").unwrap(), "https://ghcr.io/x?y=1");
        assert_eq!(redirect(from, "https://cdn.example/b").unwrap(), "https://cdn.example/b");
        assert_eq!(redirect(from, "relative"), None);
        assert_eq!(authority(from).unwrap(), "ghcr.io");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("repository:apps/hello:pull"), "repository%3Aapps%2Fhello%3Apull");
    }
}

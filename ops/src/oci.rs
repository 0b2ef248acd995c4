//! Pulling wasm components from OCI registries, with `oci-client`: a manifest, then its wasm
//! layer, each checked against its digest, with registry tokens (and credentials that never
//! follow a redirect off the registry). This module keeps Trellis's rules on top: a reference
//! names its registry, loopback registries speak plain HTTP, one wasm layer of bounded size, and
//! errors that say what to do.
//!
//! `trellis app deploy` pulls `oci://` sources once and stores them in the lattice artifact
//! store by digest; hosts fetch from there (see `docs/design/scheduler.md`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciEnvelope};
use oci_client::manifest::{
    IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};

/// Largest component pulled.
pub const MAX_COMPONENT: usize = 256 << 20;
/// How long connecting, or waiting for the next bytes of an answer, may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A pull failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference does not parse.
    #[error(
        "invalid OCI reference `{reference}` ({reason}): expected \
         registry/repository[:tag][@sha256:<hex>], for example ghcr.io/acme/hello:1.0"
    )]
    BadReference {
        /// What was given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
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
    /// The registry answered with an HTTP error.
    #[error("registry answered {status} for {url}")]
    Status {
        /// What was asked.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// The registry answered with errors of the distribution API.
    #[error("registry answered {errors} for {url}")]
    Registry {
        /// What was asked.
        url: String,
        /// Its error codes and messages.
        errors: String,
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
    /// The OCI client gave up on what the registry sent (it panicked on it; the pull runs on a
    /// task of its own, so only the pull fails).
    #[error(
        "pulling {reference}: the OCI client could not handle the registry's answer ({reason})"
    )]
    ClientFailed {
        /// The reference pulled.
        reference: String,
        /// The client's own words.
        reason: String,
    },
    /// Anything else the OCI client reported.
    #[error("pulling {reference}: {source}")]
    Other {
        /// The reference pulled.
        reference: String,
        /// What went wrong.
        #[source]
        source: OciDistributionError,
    },
}

/// `registry/repository[:tag][@digest]`, always naming its registry (no Docker Hub default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference(oci_client::Reference);

impl Reference {
    /// Parses a reference without the `oci://` prefix.
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let bad = |reason: &str| OciError::BadReference {
            reference: text.to_owned(),
            reason: reason.to_owned(),
        };
        // What the OCI grammar takes for a registry rather than a repository's first part.
        let names_registry = text.split_once('/').is_some_and(|(first, _)| {
            first.contains('.') || first.contains(':') || first == "localhost"
        });
        if !names_registry {
            return Err(bad("no registry"));
        }
        let reference: oci_client::Reference =
            text.parse().map_err(|e: oci_client::ParseError| bad(&e.to_string()))?;
        Ok(Self(reference))
    }

    /// Registry host (and port).
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// Repository path.
    pub fn repository(&self) -> &str {
        self.0.repository()
    }

    /// Manifest digest it is pinned to.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// Registries on this machine speak plain HTTP; everything else HTTPS.
    fn is_loopback(&self) -> bool {
        let registry = self.registry();
        let host = registry.rsplit_once(':').map_or(registry, |(host, _)| host);
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }

    /// What `error`, met while pulling `what` (the manifest or the wasm layer), means here.
    fn error(&self, what: &'static str, error: OciDistributionError) -> OciError {
        let (registry, repository) = (self.registry().to_owned(), self.repository().to_owned());
        let reference = self.to_string();
        match error {
            OciDistributionError::AuthenticationFailure(reason) => OciError::Unauthorized {
                registry,
                repository,
                reason: format!("its token service said {:?}", reason.trim()),
            },
            OciDistributionError::UnauthorizedError { url } => OciError::Unauthorized {
                registry,
                repository,
                reason: format!("{} for {url}", StatusCode::UNAUTHORIZED),
            },
            OciDistributionError::RequestError(e) => {
                OciError::Unreachable { registry, reason: error_chain(&e) }
            }
            OciDistributionError::ServerError { code, url, .. } => match StatusCode::from_u16(code)
            {
                Ok(status) => OciError::Status { url, status },
                Err(_) => OciError::Registry { url, errors: format!("status {code}") },
            },
            OciDistributionError::RegistryError { envelope, url } => {
                OciError::Registry { url, errors: envelope_text(&envelope) }
            }
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => OciError::DigestMismatch { what, reference, expected, actual },
            OciDistributionError::IoError(e) => {
                OciError::BadManifest { reference, reason: format!("{what}: {e}") }
            }
            source => OciError::Other { reference, source },
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.0;
        match r.digest() {
            Some(d) => write!(f, "{}/{}@{d}", r.registry(), r.repository()),
            None => {
                write!(f, "{}/{}:{}", r.registry(), r.repository(), r.tag().unwrap_or("latest"))
            }
        }
    }
}

fn envelope_text(envelope: &OciEnvelope) -> String {
    let errors: Vec<String> =
        envelope.errors.iter().map(|e| format!("{:?} ({})", e.code, e.message)).collect();
    errors.join(", ")
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

/// Pulls the wasm component `reference` names.
pub async fn pull(
    reference: &Reference,
    credentials: Option<&Credentials>,
) -> Result<Pulled, OciError> {
    // oci-client unwraps some of what a registry sends (a token that is no valid header value):
    // on a task of its own, such a panic fails this pull and nothing else.
    let (owned, credentials) = (reference.clone(), credentials.cloned());
    match tokio::spawn(async move { pull_here(&owned, credentials.as_ref()).await }).await {
        Ok(pulled) => pulled,
        Err(e) => {
            let reason = match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "it panicked".to_owned()),
                Err(e) => e.to_string(),
            };
            Err(OciError::ClientFailed { reference: reference.to_string(), reason })
        }
    }
}

async fn pull_here(
    reference: &Reference,
    credentials: Option<&Credentials>,
) -> Result<Pulled, OciError> {
    let client = client(reference)?;
    let image = &reference.0;
    let auth = credentials.map_or(RegistryAuth::Anonymous, |c| {
        RegistryAuth::Basic(c.username.clone(), c.password.clone())
    });
    let manifest_error = |e| reference.error("the manifest", e);
    // Asked first so that a refused token says why, not only "401" for the manifest.
    client.auth(image, &auth, RegistryOperation::Pull).await.map_err(manifest_error)?;
    let (manifest, manifest_digest) = client
        .pull_manifest_raw(image, &auth, &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE])
        .await
        .map_err(manifest_error)?;
    let (layer, size) = wasm_layer(&manifest)
        .map_err(|reason| OciError::BadManifest { reference: reference.to_string(), reason })?;
    let mut bytes = Bounded { bytes: Vec::with_capacity(size), limit: size };
    client
        .pull_blob(image, &layer, &mut bytes)
        .await
        .map_err(|e| reference.error("the wasm layer", e))?;
    Ok(Pulled { bytes: bytes.bytes, manifest_digest })
}

fn client(reference: &Reference) -> Result<Client, OciError> {
    // reqwest is built without a crypto provider of its own (its default, aws-lc, is a long C
    // build) and takes the process's default: ring, which Trellis uses everywhere else. Only the
    // first call installs it; an error means one is already there.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ClientConfig {
        protocol: if reference.is_loopback() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // A wasm artifact has one manifest, never an index of platforms.
        platform_resolver: None,
        read_timeout: Some(TIMEOUT),
        connect_timeout: Some(TIMEOUT),
        user_agent: concat!("trellis/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(|e| reference.error("the manifest", e))
}

/// The one wasm layer of a manifest, and its size, checked against [`MAX_COMPONENT`].
fn wasm_layer(manifest: &[u8]) -> Result<(OciDescriptor, usize), String> {
    let manifest: OciImageManifest = match serde_json::from_slice(manifest) {
        Ok(OciManifest::Image(image)) => image,
        Ok(OciManifest::ImageIndex(_)) => {
            return Err("an image index (several platforms), not a wasm component".into());
        }
        Err(e) => return Err(format!("unreadable manifest: {e}")),
    };
    let wasm: Vec<&OciDescriptor> =
        manifest.layers.iter().filter(|l| l.media_type.contains("wasm")).collect();
    let layer = match (wasm.as_slice(), manifest.layers.as_slice()) {
        ([one], _) => *one,
        ([], [one]) => one,
        _ => {
            return Err(format!(
                "expected one wasm layer (media type application/wasm), found {} layers",
                manifest.layers.len()
            ));
        }
    };
    match usize::try_from(layer.size) {
        Ok(size) if size <= MAX_COMPONENT => Ok((layer.clone(), size)),
        _ => Err(format!("its layer is {} bytes, over the {MAX_COMPONENT} limit", layer.size)),
    }
}

/// Where a layer is read to: a buffer that refuses more bytes than the manifest announced.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.limit {
            let limit = self.limit;
            return Poll::Ready(Err(io::Error::other(format!(
                "the registry sent more than the {limit} bytes its manifest gives"
            ))));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// An error with its causes, `: `-separated (hyper's own says little: "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = Reference::parse("127.0.0.1:5000/apps/hello:1.0").unwrap();
        assert_eq!((r.registry(), r.repository()), ("127.0.0.1:5000", "apps/hello"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/apps/hello:1.0");
        assert!(r.is_loopback());
        let r = Reference::parse("ghcr.io/acme/hello").unwrap();
        assert_eq!(r.to_string(), "ghcr.io/acme/hello:latest");
        assert!(!r.is_loopback());
        let pinned = format!("ghcr.io/acme/hello@sha256:{}", "a".repeat(64));
        let r = Reference::parse(&pinned).unwrap();
        assert_eq!(r.digest().unwrap(), format!("sha256:{}", "a".repeat(64)));
        assert_eq!(r.to_string(), pinned);
        for bad in [
            "hello",
            "acme/hello",
            "ghcr.io/",
            "ghcr.io/acme/hello@sha256:abc",
            "ghcr.io/a b",
            "ghcr.io/x@md5:1",
            "ghcr.io/Acme/hello",
        ] {
            let err = Reference::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid OCI reference `{bad}` (")), "{err}");
        }
    }

    #[tokio::test]
    async fn a_layer_cannot_outgrow_its_manifest() {
        use tokio::io::AsyncWriteExt as _;
        let mut out = Bounded { bytes: Vec::new(), limit: 4 };
        out.write_all(b"wasm").await.unwrap();
        let err = out.write_all(b"!").await.unwrap_err();
        assert!(err.to_string().contains("more than the 4 bytes"), "{err}");
        assert_eq!(out.bytes, b"wasm");
    }

    fn manifest(layers: &[(&str, i64)]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|(media, size)| {
                serde_json::json!({"mediaType": media, "digest": "sha256:00", "size": size})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": "sha256:01", "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn the_wasm_layer_is_chosen_and_bounded() {
        let one = manifest(&[("application/wasm", 10)]);
        assert_eq!(wasm_layer(&one).unwrap().1, 10);
        let with_other = manifest(&[("text/plain", 1), ("application/wasm", 10)]);
        assert_eq!(wasm_layer(&with_other).unwrap().0.media_type, "application/wasm");
        // One layer of another type is taken as the component: not every tool names it.
        assert!(wasm_layer(&manifest(&[("application/octet-stream", 10)])).is_ok());
        let two = manifest(&[("application/wasm", 1), ("application/wasm", 2)]);
        assert!(wasm_layer(&two).unwrap_err().contains("found 2 layers"));
        let huge = manifest(&[("application/wasm", 1 << 40)]);
        assert!(wasm_layer(&huge).unwrap_err().contains("over the"));
        assert!(wasm_layer(&manifest(&[("application/wasm", -1)])).is_err());
        let index = serde_json::json!({"schemaVersion": 2, "manifests": []});
        let err = wasm_layer(&serde_json::to_vec(&index).unwrap()).unwrap_err();
        assert!(err.contains("image index"), "{err}");
        assert!(wasm_layer(b"{").unwrap_err().starts_with("unreadable manifest"));
    }
}

//! A small OCI registry on loopback: the pull side of the distribution API (manifests and blobs
//! by tag or digest) behind registry token authentication, as real registries do it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "test-registry-token";

#[derive(Debug, Default)]
struct Content {
    /// Blobs and manifests by digest.
    blobs: HashMap<String, Vec<u8>>,
    /// `<repository>:<tag>` → manifest digest.
    tags: HashMap<String, String>,
}

/// A registry that serves what was pushed to it until dropped or stopped.
#[derive(Debug)]
pub struct OciRegistry {
    addr: SocketAddr,
    content: Arc<Mutex<Content>>,
    task: tokio::task::JoinHandle<()>,
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

impl OciRegistry {
    /// Starts a registry that gives tokens to `username`/`password` only.
    pub async fn start(username: &str, password: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind registry");
        let addr = listener.local_addr().expect("addr");
        let content = Arc::new(Mutex::new(Content::default()));
        let pair = format!("{username}:{password}");
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
        let served = content.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (content, basic) = (served.clone(), basic.clone());
                tokio::spawn(async move { serve(stream, addr, &content, &basic).await });
            }
        });
        Self { addr, content, task }
    }

    /// `127.0.0.1:<port>`, the registry part of a reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Pushes `wasm` as `repository:tag` (one `application/wasm` layer); returns the manifest
    /// digest.
    pub fn push(&self, repository: &str, tag: &str, wasm: &[u8]) -> String {
        let config = b"{}".to_vec();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.wasm.config.v0+json",
                "digest": digest(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/wasm",
                "digest": digest(wasm),
                "size": wasm.len(),
            }],
        });
        let manifest = serde_json::to_vec(&manifest).expect("json");
        let manifest_digest = digest(&manifest);
        let mut content = self.content.lock().expect("lock");
        content.blobs.insert(digest(&config), config);
        content.blobs.insert(digest(wasm), wasm.to_vec());
        content.blobs.insert(manifest_digest.clone(), manifest);
        content.tags.insert(format!("{repository}:{tag}"), manifest_digest.clone());
        manifest_digest
    }

    /// Serves other bytes (as many) under `digest` from now on, as a compromised registry or
    /// mirror would.
    pub fn tamper(&self, digest: &str) {
        let mut content = self.content.lock().expect("lock");
        if let Some(last) = content.blobs.get_mut(digest).and_then(|bytes| bytes.last_mut()) {
            *last ^= 1;
        }
    }

    /// Stops serving: connections are refused from now on.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, addr: SocketAddr, content: &Mutex<Content>, basic: &str) {
    let Some(head) = crate::read_head(&mut stream).await else { return };
    let mut lines = head.split("\r\n");
    let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/").to_owned();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let (status, headers, body) = answer(&path, &authorization, addr, content, basic);
    let mut response =
        format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        response.push_str(&format!("{k}: {v}\r\n"));
    }
    response.push_str("\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.write_all(&body).await;
}

type Answer = (&'static str, Vec<(&'static str, String)>, Vec<u8>);

fn answer(
    path: &str,
    authorization: &str,
    addr: SocketAddr,
    content: &Mutex<Content>,
    basic: &str,
) -> Answer {
    // The "CDN" blobs are redirected to: another host name, no credentials wanted (a registry
    // client must not send the registry's token there).
    if let Some(digest) = path.strip_prefix("/cdn/") {
        if !authorization.is_empty() {
            return ("400 Bad Request", vec![], b"registry credentials sent to the CDN".to_vec());
        }
        return match content.lock().expect("lock").blobs.get(digest) {
            Some(bytes) => {
                ("200 OK", vec![("content-type", "application/octet-stream".into())], bytes.clone())
            }
            None => ("404 Not Found", vec![], vec![]),
        };
    }
    if path.starts_with("/token") {
        return if authorization == basic {
            (
                "200 OK",
                vec![("content-type", "application/json".into())],
                format!("{{\"token\":\"{TOKEN}\"}}").into_bytes(),
            )
        } else {
            ("401 Unauthorized", vec![], b"bad credentials".to_vec())
        };
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return ("404 Not Found", vec![], vec![]);
    };
    // The API version check: where clients learn how to authenticate, as from any registry.
    if rest.is_empty() && authorization != format!("Bearer {TOKEN}") {
        let challenge = format!("Bearer realm=\"http://{addr}/token\",service=\"trellis-test\"");
        return ("401 Unauthorized", vec![("www-authenticate", challenge)], vec![]);
    } else if rest.is_empty() {
        return ("200 OK", vec![("content-type", "application/json".into())], b"{}".to_vec());
    }
    let (repository, kind, reference) = match rest.rsplitn(3, '/').collect::<Vec<_>>()[..] {
        [reference, kind, repository] => (repository, kind, reference),
        _ => return ("404 Not Found", vec![], vec![]),
    };
    if authorization != format!("Bearer {TOKEN}") {
        let challenge = format!(
            "Bearer realm=\"http://{addr}/token\",service=\"trellis-test\",scope=\"repository:{repository}:pull\""
        );
        return ("401 Unauthorized", vec![("www-authenticate", challenge)], vec![]);
    }
    if kind == "blobs" {
        let location = format!("http://localhost:{}/cdn/{reference}", addr.port());
        return ("307 Temporary Redirect", vec![("location", location)], vec![]);
    }
    let content = content.lock().expect("lock");
    let digest = match kind {
        "manifests" if reference.starts_with("sha256:") => Some(reference.to_owned()),
        "manifests" => content.tags.get(&format!("{repository}:{reference}")).cloned(),
        "blobs" => Some(reference.to_owned()),
        _ => None,
    };
    match digest.and_then(|d| content.blobs.get(&d).cloned()) {
        Some(bytes) => {
            let media = if kind == "manifests" {
                "application/vnd.oci.image.manifest.v1+json"
            } else {
                "application/octet-stream"
            };
            ("200 OK", vec![("content-type", media.into())], bytes)
        }
        None => ("404 Not Found", vec![], vec![]),
    }
}

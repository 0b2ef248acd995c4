//! wasmCloud's first-party capability provider images and the Trellis providers that serve the
//! same contracts, with the link directions each one takes.

/// One wasmCloud provider image and its Trellis counterpart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownProvider {
    /// The repository under `ghcr.io/wasmcloud/`, for example `http-server`.
    pub image: &'static str,
    /// The Trellis provider kind.
    pub kind: &'static str,
    /// Interfaces it serves as a link's target (components call it), `ns:pkg/iface`.
    pub serves: &'static [&'static str],
    /// Interfaces it calls components over as a link's source.
    pub calls: &'static [&'static str],
}

/// Every image that translates, by repository.
pub const KNOWN: &[KnownProvider] = &[
    KnownProvider {
        image: "http-server",
        kind: "http-server",
        serves: &[],
        calls: &["wasi:http/incoming-handler"],
    },
    KnownProvider {
        image: "http-client",
        kind: "http-client",
        serves: &["wasi:http/outgoing-handler"],
        calls: &[],
    },
    KnownProvider {
        image: "keyvalue-redis",
        kind: "keyvalue-redis",
        serves: &["wasi:keyvalue/store"],
        calls: &[],
    },
    KnownProvider {
        image: "keyvalue-nats",
        kind: "keyvalue-nats",
        serves: &["wasi:keyvalue/store"],
        calls: &[],
    },
    KnownProvider {
        image: "messaging-nats",
        kind: "messaging-nats",
        serves: &["wasmcloud:messaging/consumer"],
        calls: &["wasmcloud:messaging/handler"],
    },
    KnownProvider {
        image: "blobstore-fs",
        kind: "blobstore-fs",
        serves: &["wasi:blobstore/blobstore"],
        calls: &[],
    },
];

/// Registries wasmCloud has published its providers under.
const REGISTRIES: &[&str] = &["ghcr.io/wasmcloud/"];

/// The Trellis provider for a wasmCloud provider image such as
/// `ghcr.io/wasmcloud/keyvalue-redis:0.28.1` (any tag or digest, or none).
pub fn for_image(image: &str) -> Option<&'static KnownProvider> {
    let image = image.strip_prefix("oci://").unwrap_or(image);
    let repository = REGISTRIES.iter().find_map(|r| image.strip_prefix(r))?;
    let repository = repository.split(['@', ':']).next().unwrap_or(repository);
    KNOWN.iter().find(|p| p.image == repository)
}

/// The images that translate, for error messages: `ghcr.io/wasmcloud/http-server, ...`.
pub fn supported_images() -> String {
    KNOWN.iter().map(|p| format!("ghcr.io/wasmcloud/{}", p.image)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_map_whatever_their_tag() {
        assert_eq!(for_image("ghcr.io/wasmcloud/http-server:0.27.0").unwrap().kind, "http-server");
        assert_eq!(for_image("ghcr.io/wasmcloud/keyvalue-redis").unwrap().kind, "keyvalue-redis");
        let pinned = "ghcr.io/wasmcloud/messaging-nats@sha256:0123";
        assert_eq!(for_image(pinned).unwrap().kind, "messaging-nats");
        assert_eq!(
            for_image("oci://ghcr.io/wasmcloud/blobstore-fs:0.10").unwrap().image,
            "blobstore-fs"
        );
        assert!(for_image("ghcr.io/wasmcloud/sqldb-postgres:0.1").is_none());
        assert!(for_image("ghcr.io/acme/http-server:1").is_none());
        assert!(for_image("file://./provider.par.gz").is_none());
        assert!(supported_images().contains("ghcr.io/wasmcloud/keyvalue-nats"));
    }
}

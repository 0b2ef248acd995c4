//! wasmCloud applications as they are: wadm's OAM manifests (`apiVersion:
//! core.oam.dev/v1beta1`, `kind: Application`) translated to a Trellis [`Manifest`]
//! (`docs/migrating-from-wasmcloud.md`).
//!
//! Pure: text in, a manifest (and notes on what reads differently) out. `trellis app deploy`
//! takes either format through [`read`]; `trellis app convert` prints the translation.
//!
//! ```
//! use trellis_scheduler::manifest::wadm;
//!
//! let oam = "
//! apiVersion: core.oam.dev/v1beta1
//! kind: Application
//! metadata: {name: hello, annotations: {version: v1}}
//! spec:
//!   components:
//!     - name: hello
//!       type: component
//!       properties: {image: 'file://./hello.wasm', id: hello}
//!       traits:
//!         - type: spreadscaler
//!           properties: {instances: 2}
//!     - name: web
//!       type: capability
//!       properties: {image: 'ghcr.io/wasmcloud/http-server:0.27.0', id: web}
//!       traits:
//!         - type: link
//!           properties:
//!             target: hello
//!             namespace: wasi
//!             package: http
//!             interfaces: [incoming-handler]
//!             source:
//!               config: [{name: web-address, properties: {address: '0.0.0.0:8080'}}]
//! ";
//! let t = wadm::translate(oam).unwrap();
//! assert_eq!(t.manifest.components[0].replicas, 2);
//! assert_eq!(t.manifest.providers[0].kind.as_str(), "http-server");
//! assert_eq!(t.manifest.links[0].config["address"], "0.0.0.0:8080");
//! ```

mod oam;
mod providers;
mod translate;

pub use providers::{KNOWN as KNOWN_PROVIDERS, KnownProvider};
pub use translate::translate;

use super::{Manifest, ManifestError};

/// A manifest ready to deploy, and what the reader should know about how it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The Trellis manifest.
    pub manifest: Manifest,
    /// Where the translation reads differently from wadm (printed by `deploy` and `convert`).
    pub notes: Vec<String>,
    /// Whether the text was a wadm manifest (false: a Trellis one, taken as it is).
    pub from_wadm: bool,
}

/// A wadm manifest that does not translate; each names what is wrong and what is supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WadmError {
    /// The YAML does not parse, or a field is missing, unknown or of the wrong type.
    #[error("wadm manifest: {0}")]
    Yaml(ManifestError),
    /// Not `core.oam.dev/v1beta1`.
    #[error(
        "apiVersion `{0}` is not supported: wadm application manifests are `{expected}`",
        expected = oam::API_VERSION
    )]
    ApiVersion(String),
    /// Not an `Application`.
    #[error("kind `{0}` is not supported: only `{kind}` manifests translate", kind = oam::KIND)]
    Kind(String),
    /// A component type other than `component` and `capability`.
    #[error(
        "component `{component}`: unknown type `{found}`; supported: `component` (a Wasm \
         component) and `capability` (a provider)"
    )]
    UnknownType {
        /// The component's manifest name.
        component: String,
        /// Its type.
        found: String,
    },
    /// A trait other than `spreadscaler`, `daemonscaler` and `link`.
    #[error(
        "component `{component}`: unknown trait `{found}`; supported: spreadscaler, \
         daemonscaler, link"
    )]
    UnknownTrait {
        /// The component's manifest name.
        component: String,
        /// The trait's type.
        found: String,
    },
    /// A provider image Trellis has no provider for.
    #[error(
        "capability `{component}`: unknown provider image `{image}`; Trellis runs its own \
         providers in place of {} (any tag); see docs/migrating-from-wasmcloud.md",
        providers::supported_images()
    )]
    UnknownProviderImage {
        /// The capability's manifest name.
        component: String,
        /// Its image.
        image: String,
    },
    /// A secret given to a provider or a link: Trellis grants secrets to components only.
    #[error(
        "component `{component}`: secret `{secret}` (key `{key}` of policy `{policy}`) cannot be \
         given to a provider or a link: Trellis grants secrets to components only; put the value \
         in the link's config instead"
    )]
    Secrets {
        /// The component's manifest name.
        component: String,
        /// The secret's name.
        secret: String,
        /// Its key in the backend.
        key: String,
        /// The policy naming its backend.
        policy: String,
    },
    /// Something the translation does not take, with why and what to do.
    #[error("component `{component}`: {message}")]
    Unsupported {
        /// The component's manifest name.
        component: String,
        /// What, and what to write instead.
        message: String,
    },
    /// A trait whose properties do not fit it (a scaler without `instances`, a link without
    /// `target`, a zero weight, ...).
    #[error("component `{component}`: {kind} trait: {message}")]
    Trait {
        /// The component's manifest name.
        component: String,
        /// The trait's type.
        kind: String,
        /// What is wrong.
        message: String,
    },
    /// The translation is not a valid Trellis manifest (an id with characters Trellis does not
    /// take, a link defined twice, ...).
    #[error("the translated manifest is not valid: {0}")]
    Invalid(String),
}

/// What [`read`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A Trellis manifest that does not parse or check.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A wadm manifest that does not translate.
    #[error(transparent)]
    Wadm(#[from] WadmError),
}

/// Whether `text` is a wadm manifest: it has a top-level `apiVersion` (YAML or JSON).
pub fn is_wadm(text: &str) -> bool {
    serde_saphyr::from_str::<oam::Outline>(text).is_ok_and(|o| o.api_version.is_some())
}

/// Reads a Trellis manifest as it is, or translates a wadm one: what `trellis app deploy`
/// takes.
pub fn read(text: &str) -> Result<Translation, ReadError> {
    if is_wadm(text) {
        Ok(translate(text)?)
    } else {
        let manifest = Manifest::from_yaml(text)?;
        Ok(Translation { manifest, notes: Vec::new(), from_wadm: false })
    }
}

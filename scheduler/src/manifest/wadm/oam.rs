//! The parts of a wadm (OAM `core.oam.dev/v1beta1`) application manifest that are read, as
//! wadm's documentation describes them. Two readings: a loose [`Outline`] that only looks at
//! the names that decide what a manifest is (kinds, types, traits, images), so an unknown one is
//! reported as such and not as a field its properties lack; then the strict [`Application`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// The only OAM version wadm reads.
pub const API_VERSION: &str = "core.oam.dev/v1beta1";
/// The only kind wadm reads.
pub const KIND: &str = "Application";

/// What decides how the rest is read; everything else is ignored here.
#[derive(Debug, Default, Deserialize)]
pub struct Outline {
    #[serde(rename = "apiVersion")]
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub spec: Option<OutlineSpec>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OutlineSpec {
    #[serde(default)]
    pub components: Vec<OutlineComponent>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OutlineComponent {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub properties: Option<OutlineProperties>,
    #[serde(default)]
    pub traits: Vec<OutlineTrait>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OutlineProperties {
    pub image: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OutlineTrait {
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// A whole wadm application manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    /// `version` and `description` are read; others (`wasmcloud.dev/...`) are for people.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    #[allow(dead_code, reason = "read to accept the field; labels have no Trellis meaning")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub components: Vec<Component>,
    /// Secret backends; only secrets use them.
    #[serde(default)]
    pub policies: Vec<Policy>,
}

#[derive(Debug, Deserialize)]
pub struct Policy {
    pub name: String,
}

/// A `component` (Wasm) or `capability` (provider) entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub properties: Properties,
    #[serde(default)]
    pub traits: Vec<Trait>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    #[serde(default)]
    pub image: Option<String>,
    /// The lattice id; wadm makes one from the application and component names when absent.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub config: Vec<ConfigRef>,
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    /// A component shared by another application (`application: {name, component}`).
    #[serde(default)]
    pub application: Option<SharedRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedRef {
    pub name: String,
    pub component: Option<String>,
}

/// Named config: with `properties` it is written on deploy, without it must exist already.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigRef {
    pub name: String,
    #[serde(default)]
    pub properties: Option<BTreeMap<String, String>>,
}

/// A secret from a backend named by a policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    pub properties: SecretSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    pub policy: String,
    pub key: String,
    #[serde(default)]
    #[allow(dead_code, reason = "read to accept the field; secrets are refused")]
    pub field: Option<String>,
    #[serde(default)]
    #[allow(dead_code, reason = "read to accept the field; secrets are refused")]
    pub version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trait {
    #[serde(rename = "type")]
    pub kind: String,
    pub properties: TraitProperties,
}

/// The properties of every trait wadm has, in one record; which ones a trait may use is
/// checked when it is translated.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraitProperties {
    // spreadscaler and daemonscaler
    pub instances: Option<u32>,
    /// wadm's other name for `instances`.
    pub replicas: Option<u32>,
    #[serde(default)]
    pub spread: Vec<Spread>,
    // link
    pub target: Option<LinkTarget>,
    pub namespace: Option<String>,
    pub package: Option<String>,
    #[serde(default)]
    pub interfaces: Vec<String>,
    pub name: Option<String>,
    pub source: Option<LinkSource>,
    /// Older form of `source.config`.
    #[serde(default)]
    pub source_config: Vec<ConfigRef>,
    /// Older form of `target.config`.
    #[serde(default)]
    pub target_config: Vec<ConfigRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    pub name: String,
    #[serde(default)]
    pub requirements: BTreeMap<String, String>,
    /// Relative; wadm's default is 100.
    pub weight: Option<u32>,
}

/// `target: name` or `target: {name, config, secrets}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum LinkTarget {
    Name(String),
    Full(LinkTargetFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkTargetFull {
    pub name: String,
    #[serde(default)]
    pub config: Vec<ConfigRef>,
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSource {
    #[serde(default)]
    pub config: Vec<ConfigRef>,
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
}

impl LinkTarget {
    /// The manifest name of the target.
    pub fn name(&self) -> &str {
        match self {
            LinkTarget::Name(name) => name,
            LinkTarget::Full(full) => &full.name,
        }
    }
}

//! Application manifests: what an operator wants to run, in YAML (`docs/manifest.md`).
//!
//! Parsing checks everything a manifest can get wrong on its own (unknown fields, bad ids and
//! interface names, zero weights, duplicate names) and names the field and the line. What
//! depends on the lattice (does the artifact exist) is checked by `trellis app deploy`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::replicas::Replicas;
use trellis_lattice::link::{DEFAULT_LINK_NAME, InterfaceName, Link};
use trellis_lattice::subject::validate_id;

pub mod wadm;
mod yaml;

/// A manifest that cannot be used, with where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ManifestError {
    /// 1-based line of the offending value, when known.
    pub line: Option<u64>,
    /// What is wrong, naming the field.
    pub message: String,
}

/// An id: a component, provider, config or application name (`[A-Za-z0-9_-]`, as everywhere).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", description = "Letters, digits, `-` and `_`.")]
pub struct Id(String);

/// `as_str`, `Display` and the conversion back to `String` of a checked text type.
macro_rules! text_type {
    ($name:ident) => {
        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type!(Id);
text_type!(Version);

impl TryFrom<String> for Id {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        validate_id("name", &value).map_err(|e| e.to_string())?;
        Ok(Self(value))
    }
}

/// An application version: 1 to 64 of `[A-Za-z0-9._-]`, for example `1.4.2` or `2026-11-25`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", description = "1 to 64 letters, digits, `.`, `-` and `_`.")]
pub struct Version(String);

impl TryFrom<String> for Version {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let ok = (1..=64).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(Self(value))
        } else {
            Err(format!(
                "invalid version `{value}`: use 1 to 64 letters, digits, `.`, `-` or `_`, for \
                 example `1.4.2`"
            ))
        }
    }
}

/// Where a component's artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(
    with = "String",
    description = "`sha256:<hex>` of an artifact in the lattice store, `oci://registry/repo:tag` \
                   or `@sha256:...`, or a local file path (uploaded by `trellis app deploy`)."
)]
pub enum Source {
    /// An artifact already in the lattice object store.
    Digest(String),
    /// An OCI reference, without the `oci://` prefix.
    Oci(String),
    /// A local file, relative to the manifest.
    File(PathBuf),
}

impl TryFrom<String> for Source {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if let Some(hex) = value.strip_prefix("sha256:") {
            if hex.len() == 64
                && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Ok(Source::Digest(value));
            }
            return Err(format!(
                "invalid digest `{value}`: expected sha256: and 64 lowercase hex digits"
            ));
        }
        if let Some(reference) = value.strip_prefix("oci://") {
            if reference.is_empty() || !reference.contains('/') {
                return Err(format!(
                    "invalid OCI reference `{value}`: expected oci://registry/repository:tag"
                ));
            }
            return Ok(Source::Oci(reference.to_owned()));
        }
        if value.is_empty() {
            return Err("empty source: give a file path, sha256:<hex> or oci://...".into());
        }
        Ok(Source::File(PathBuf::from(value)))
    }
}

impl From<Source> for String {
    fn from(value: Source) -> Self {
        value.to_string()
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Digest(d) => f.write_str(d),
            Source::Oci(r) => write!(f, "oci://{r}"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An application: what runs, where, and how it is wired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The application's name; unique in the lattice.
    pub name: Id,
    /// This version's name; each deploy of changed content needs a new one.
    pub version: Version,
    /// What the application is, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Wasm components to run. Their names are their lattice ids.
    #[serde(default)]
    pub components: Vec<ComponentSpec>,
    /// Capability providers to run. Their names are their lattice ids.
    #[serde(default)]
    pub providers: Vec<ProviderSpec>,
    /// Links between the application's components and providers (or others in the lattice).
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    /// Named config the application's components read (`config:` of a component).
    #[serde(default)]
    pub config: BTreeMap<Id, BTreeMap<String, String>>,
    /// How a new version replaces the running one.
    #[serde(default)]
    pub rollout: Rollout,
}

/// One component and where its replicas go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Its lattice id.
    pub name: Id,
    /// Where its artifact comes from.
    pub source: Source,
    /// How many hosts run it (at most one replica per host): a count, or
    /// `{min: 0, max: N, idle: 5m}` to stop it when idle and start it on the next call.
    #[serde(default)]
    pub replicas: Replicas,
    /// How `replicas` is read: `exact` (default), `up-to` or `every-host`.
    #[serde(default, skip_serializing_if = "Scale::is_exact")]
    pub scale: Scale,
    /// Labels every host running it must carry.
    #[serde(default)]
    pub requirements: BTreeMap<String, String>,
    /// How the replicas are shared over groups of hosts; empty: over every eligible host.
    #[serde(default)]
    pub spread: Vec<SpreadSpec>,
    /// Named config it reads, merged in order (later wins).
    #[serde(default)]
    pub config: Vec<Id>,
    /// Secrets (`trellis secret put`) it may read through wasi:config, each under its name
    /// (over a config key of the same name). Only hosts holding the lattice's secrets key run
    /// it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Id>,
    /// Overrides of the hosts' default limits.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Keep instances warm between calls instead of a fresh one per call (off when absent:
    /// state the guest keeps in memory survives from one call to the next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<ReuseSpec>,
}

/// Warm instances of a component; zero or absent fields take the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReuseSpec {
    /// Calls one instance serves before it is dropped [default: 10000].
    #[serde(default)]
    pub max_calls: u32,
    /// How long an unused instance is kept, in milliseconds [default: 1000].
    #[serde(default)]
    pub idle_ms: u32,
}

/// One provider and where its replicas go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Its lattice id.
    pub name: Id,
    /// Which implementation, for example `http-server` or `keyvalue-redis`.
    pub kind: Id,
    /// Run inside the host process instead of as a child process.
    #[serde(default)]
    pub builtin: bool,
    /// How many hosts run it.
    #[serde(default = "one")]
    pub replicas: u32,
    /// How `replicas` is read: `exact` (default), `up-to` or `every-host`.
    #[serde(default, skip_serializing_if = "Scale::is_exact")]
    pub scale: Scale,
    /// Labels every host running it must carry.
    #[serde(default)]
    pub requirements: BTreeMap<String, String>,
    /// How the replicas are shared over groups of hosts.
    #[serde(default)]
    pub spread: Vec<SpreadSpec>,
}

/// A share of the replicas for hosts carrying some labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpreadSpec {
    /// Name of the share, shown in status and errors.
    pub name: String,
    /// Labels its hosts must carry.
    #[serde(default)]
    pub requirements: BTreeMap<String, String>,
    /// Relative weight (at least 1).
    #[serde(default = "nonzero_one")]
    #[schemars(with = "u32", range(min = 1))]
    pub weight: NonZeroU32,
}

/// How `replicas` is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scale {
    /// Exactly `replicas` hosts; fewer matching hosts make the application `unplaceable`.
    #[default]
    Exact,
    /// As many of `replicas` as there are matching hosts, and more as hosts join (wadm's
    /// spreadscaler).
    UpTo,
    /// Every matching host, whatever `replicas` says (wadm's daemonscaler).
    EveryHost,
}

impl Scale {
    /// The default, left out when a manifest is written.
    pub fn is_exact(&self) -> bool {
        *self == Scale::Exact
    }
}

/// Per-component limits; zero or absent keeps the host's default (never above the host's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Largest linear memory of one instance, in bytes.
    #[serde(default)]
    pub max_memory_bytes: u64,
    /// Longest a call may run, in milliseconds.
    #[serde(default)]
    pub timeout_ms: u32,
    /// Calls running at once.
    #[serde(default)]
    pub max_concurrent: u32,
    /// Largest request payload, in bytes.
    #[serde(default)]
    pub max_request_bytes: u64,
}

/// A link, as `trellis link put` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Who calls (or, for a server provider, who receives the calls).
    pub source: Id,
    /// Who serves.
    pub target: Id,
    /// The contract, `namespace:package/interface`.
    #[schemars(with = "String")]
    pub interface: InterfaceName,
    /// Distinguishes several links of one source over one interface.
    #[serde(default = "default_link_name")]
    pub name: Id,
    /// Settings for the source side (for http-server: `address`).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl LinkSpec {
    /// The link as stored in the lattice.
    pub fn to_link(&self) -> Link {
        Link {
            source: self.source.0.clone(),
            target: self.target.0.clone(),
            interface: self.interface.clone(),
            name: self.name.0.clone(),
            config: self.config.clone(),
        }
    }
}

/// How a new version replaces the running one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Hosts switched to the new version at a time.
    #[serde(default = "nonzero_one")]
    #[schemars(with = "u32", range(min = 1))]
    pub batch: NonZeroU32,
}

impl Default for Rollout {
    fn default() -> Self {
        Self { batch: nonzero_one() }
    }
}

fn one() -> u32 {
    1
}

fn nonzero_one() -> NonZeroU32 {
    NonZeroU32::MIN
}

fn default_link_name() -> Id {
    Id(DEFAULT_LINK_NAME.to_owned())
}

/// The largest manifest accepted, so a bad file cannot exhaust memory.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

impl Manifest {
    /// Parses and checks a YAML manifest.
    pub fn from_yaml(text: &str) -> Result<Self, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError {
                line: None,
                message: format!("manifest is over {MAX_MANIFEST_BYTES} bytes"),
            });
        }
        let manifest: Manifest = serde_saphyr::from_str(text).map_err(|e| yaml_error(&e))?;
        manifest.check().map_err(|(field, value, message)| ManifestError {
            line: line_of(text, &field, &value),
            message: format!("{field}: {message}"),
        })?;
        Ok(manifest)
    }

    /// Checks what spans fields: names are unique, spread names are unique per workload.
    /// On error: (field path, offending value, message).
    fn check(&self) -> Result<(), (String, String, String)> {
        for (i, c) in self.components.iter().enumerate() {
            if c.replicas.scales_to_zero().is_some() && c.scale == Scale::EveryHost {
                return Err((
                    format!("components[{i}].scale"),
                    "every-host".to_owned(),
                    "a component that scales to zero (`replicas: {min: 0}`) cannot run on every \
                     host; use `scale: exact` or `up-to`"
                        .to_owned(),
                ));
            }
            if c.replicas.autoscale().is_some() && c.scale == Scale::EveryHost {
                return Err((
                    format!("components[{i}].scale"),
                    "every-host".to_owned(),
                    format!(
                        "a component scaled by load (`replicas: {}`) cannot run on every host; \
                         use `scale: exact` or `up-to`, or a plain count",
                        c.replicas
                    ),
                ));
            }
        }
        let mut names = BTreeSet::new();
        let workloads = self
            .components
            .iter()
            .map(|c| (&c.name, &c.spread, "components"))
            .chain(self.providers.iter().map(|p| (&p.name, &p.spread, "providers")));
        for (i, (name, spread, section)) in workloads.enumerate() {
            let index = if section == "components" { i } else { i - self.components.len() };
            if !names.insert(name.as_str()) {
                return Err((
                    format!("{section}[{index}].name"),
                    name.to_string(),
                    format!("`{name}` is used twice; component and provider names must be unique"),
                ));
            }
            let mut shares = BTreeSet::new();
            for (j, share) in spread.iter().enumerate() {
                if !shares.insert(share.name.as_str()) {
                    return Err((
                        format!("{section}[{index}].spread[{j}].name"),
                        share.name.clone(),
                        format!("spread `{}` is named twice", share.name),
                    ));
                }
            }
        }
        let mut links = BTreeSet::new();
        for (i, link) in self.links.iter().enumerate() {
            let link = link.to_link();
            if !links.insert(link.key()) {
                return Err((
                    format!("links[{i}]"),
                    link.source.clone(),
                    format!(
                        "a second link from `{}` over {} named `{}`; give one a different `name`",
                        link.source, link.interface, link.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every component and provider name.
    pub fn workload_names(&self) -> impl Iterator<Item = &str> {
        self.components
            .iter()
            .map(|c| c.name.as_str())
            .chain(self.providers.iter().map(|p| p.name.as_str()))
    }

    /// The JSON Schema of manifests (`docs/manifest.schema.json`).
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(Manifest);
        serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
    }
}

fn yaml_error(e: &serde_saphyr::Error) -> ManifestError {
    let line = e.location().map(|l| l.line()).filter(|&l| l > 0);
    // The message without the crate's own location suffix and snippet: we say the line.
    let message = e.render_with_formatter(&serde_saphyr::UserMessageFormatter);
    let first = message.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // The crate's own "line L column C: " prefix: we say the line ourselves.
    let message = match first.split_once(": ") {
        Some((at, rest)) if at.starts_with("line ") && at.contains(" column ") => rest,
        _ => first,
    };
    ManifestError { line, message: message.to_owned() }
}

/// The line of the first `key: value` whose key is the last part of `field` and whose value is
/// `value`: good enough to point at a duplicate name.
fn line_of(text: &str, field: &str, value: &str) -> Option<u64> {
    let key = field.rsplit('.').next()?.split('[').next()?;
    let mut seen = 0;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ").trim();
        if let Some((k, v)) = trimmed.split_once(':')
            && k.trim() == key
            && v.trim().trim_matches(['"', '\'']) == value
        {
            seen += 1;
            // A duplicate is the second occurrence.
            if seen == 2 || !field.ends_with(".name") {
                return Some(n as u64 + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: shop
version: 1.0.0
components:
  - name: web
    source: ./web.wasm
    replicas: 3
    spread:
      - name: east
        requirements: {zone: east}
        weight: 2
      - name: west
        requirements: {zone: west}
    config: [web-settings]
providers:
  - name: http
    kind: http-server
    builtin: true
links:
  - source: http
    target: web
    interface: wasi:http/incoming-handler
    config: {address: 127.0.0.1:8080}
config:
  web-settings: {greeting: hello}
";

    #[test]
    fn a_good_manifest_parses_with_defaults() {
        let m = Manifest::from_yaml(GOOD).unwrap();
        assert_eq!(m.name.as_str(), "shop");
        assert_eq!(m.components[0].replicas, 3);
        assert_eq!(m.components[0].spread[1].weight.get(), 1);
        assert_eq!(m.components[0].source, Source::File("./web.wasm".into()));
        assert_eq!(m.providers[0].replicas, 1);
        assert_eq!(m.links[0].name.as_str(), "default");
        assert_eq!(m.rollout.batch.get(), 1);
        // The stored form (JSON) reads back the same.
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
    }

    fn error(yaml: &str) -> ManifestError {
        Manifest::from_yaml(yaml).unwrap_err()
    }

    #[test]
    fn bad_manifests_name_the_field_and_the_line() {
        let e = error(&GOOD.replace("replicas: 3", "replicas: three"));
        assert_eq!(e.line, Some(6), "{e}");
        let e = error(&GOOD.replace("builtin: true", "builtin: true\n    colour: red"));
        assert_eq!(e.line, Some(18), "{e}");
        assert!(e.message.contains("colour"), "{e}");
        let e = error(&GOOD.replace("wasi:http/incoming-handler", "http"));
        assert_eq!(e.line, Some(21), "{e}");
        assert!(e.message.contains("invalid interface `http`"), "{e}");
        let e = error(&GOOD.replace("weight: 2", "weight: 0"));
        assert_eq!(e.line, Some(10), "{e}");
        let e = error(&GOOD.replace("name: http\n", "name: web\n"));
        assert_eq!(e.line, Some(15), "{e}");
        assert!(e.to_string().contains("providers[0].name: `web` is used twice"), "{e}");
        let e = error(&GOOD.replace("version: 1.0.0", "version: 1 0"));
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("invalid version"), "{e}");
        let e = error(&GOOD.replace("source: ./web.wasm", "source: sha256:abc"));
        assert!(e.message.contains("invalid digest"), "{e}");
        let e = error("name: shop\n");
        assert!(e.message.contains("version"), "{e}");
        let e = error(&GOOD.replace("name: shop", "name: sh.op"));
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn a_component_that_scales_to_zero_does_not_run_on_every_host() {
        let lazy = GOOD.replace("replicas: 3", "replicas: {min: 0, max: 2, idle: 2s}");
        let m = Manifest::from_yaml(&lazy).unwrap();
        assert_eq!(
            m.components[0].replicas.scales_to_zero(),
            Some(std::time::Duration::from_secs(2))
        );
        let e = error(&lazy.replace("replicas: {", "scale: every-host\n    replicas: {"));
        assert!(e.message.contains("cannot run on every host"), "{e}");
        let busy = GOOD.replace("replicas: 3", "scale: every-host\n    replicas: {min: 1, max: 4}");
        let e = error(&busy);
        assert!(e.message.contains("scaled by load (`replicas: 1..4`)"), "{e}");
    }

    #[test]
    fn the_examples_are_valid() {
        for (name, text) in [
            ("hello", include_str!("../../examples/hello.yaml")),
            ("counter", include_str!("../../examples/counter.yaml")),
            ("storefront", include_str!("../../examples/zones.yaml")),
        ] {
            let m = Manifest::from_yaml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.name.as_str(), name);
        }
    }

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let committed = include_str!("../../docs/manifest.schema.json");
        assert!(
            committed == Manifest::json_schema(),
            "docs/manifest.schema.json is stale: run `trellis app schema > docs/manifest.schema.json`"
        );
    }
}

//! The translation proper: wadm components, traits and config to Trellis components,
//! providers, links and named config.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use sha2::{Digest, Sha256};
use trellis_lattice::link::{DEFAULT_LINK_NAME, InterfaceName};

use super::oam::{self, Application, Component, ConfigRef, SecretRef, Trait, TraitProperties};
use super::providers::{self, KnownProvider};
use super::{Translation, WadmError};
use crate::manifest::{
    ComponentSpec, Id, LimitsSpec, LinkSpec, MAX_MANIFEST_BYTES, Manifest, ManifestError,
    ProviderSpec, Rollout, Scale, Source, SpreadSpec, Version, yaml_error,
};

/// wadm's spread weight when none is given.
const DEFAULT_WEIGHT: u32 = 100;

/// Translates a wadm manifest; see the module docs.
pub fn translate(text: &str) -> Result<Translation, WadmError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(WadmError::Yaml(ManifestError {
            line: None,
            message: format!("manifest is over {MAX_MANIFEST_BYTES} bytes"),
        }));
    }
    // Unknown kinds, types, traits and images first: a strict reading would only say that
    // their properties have fields it does not know.
    let outline: oam::Outline = serde_saphyr::from_str(text).unwrap_or_default();
    check_outline(&outline)?;
    let app: Application =
        serde_saphyr::from_str(text).map_err(|e| WadmError::Yaml(yaml_error(&e)))?;
    check_outline(&oam::Outline {
        api_version: Some(app.api_version.clone()),
        kind: Some(app.kind.clone()),
        spec: None,
    })?;
    Translator::new(&app)?.run(&app, text)
}

fn check_outline(outline: &oam::Outline) -> Result<(), WadmError> {
    if let Some(v) = outline.api_version.as_deref().filter(|v| *v != oam::API_VERSION) {
        return Err(WadmError::ApiVersion(v.to_owned()));
    }
    if let Some(k) = outline.kind.as_deref().filter(|k| *k != oam::KIND) {
        return Err(WadmError::Kind(k.to_owned()));
    }
    for c in outline.spec.iter().flat_map(|s| &s.components) {
        let capability = match c.kind.as_str() {
            "component" | "actor" => false,
            "capability" => true,
            other => {
                return Err(WadmError::UnknownType {
                    component: c.name.clone(),
                    found: other.to_owned(),
                });
            }
        };
        if let Some(t) = c.traits.iter().find(|t| !is_known_trait(&t.kind)) {
            return Err(WadmError::UnknownTrait {
                component: c.name.clone(),
                found: t.kind.clone(),
            });
        }
        let image = c.properties.as_ref().and_then(|p| p.image.as_deref());
        if capability
            && let Some(image) = image
            && providers::for_image(image).is_none()
        {
            return Err(WadmError::UnknownProviderImage {
                component: c.name.clone(),
                image: image.to_owned(),
            });
        }
    }
    Ok(())
}

fn is_known_trait(kind: &str) -> bool {
    matches!(kind, "spreadscaler" | "daemonscaler" | "link")
}

/// What every component of the manifest becomes: its lattice id, and its provider if a
/// capability.
struct Entry {
    id: Id,
    provider: Option<&'static KnownProvider>,
    /// A capability's own config, applied under each of its links.
    defaults: BTreeMap<String, String>,
}

struct Translator {
    entries: BTreeMap<String, Entry>,
    notes: Vec<String>,
    config: BTreeMap<Id, BTreeMap<String, String>>,
}

impl Translator {
    fn new(app: &Application) -> Result<Self, WadmError> {
        let mut t = Self { entries: BTreeMap::new(), notes: Vec::new(), config: BTreeMap::new() };
        for c in &app.spec.components {
            let raw = c.properties.id.clone().unwrap_or_else(|| default_id(&app.metadata.name, c));
            let id = Id::try_from(raw.clone()).map_err(|e| {
                WadmError::Invalid(format!("component `{}`: id `{raw}`: {e}", c.name))
            })?;
            let provider = match c.kind.as_str() {
                "capability" => Some(provider_of(c)?),
                _ => None,
            };
            let mut defaults = BTreeMap::new();
            if provider.is_some() {
                for config in &c.properties.config {
                    defaults.extend(inline(&c.name, config, "provider config")?);
                }
            }
            if t.entries.insert(c.name.clone(), Entry { id, provider, defaults }).is_some() {
                return Err(WadmError::Invalid(format!(
                    "two components are named `{}`; give one another name",
                    c.name
                )));
            }
        }
        Ok(t)
    }

    fn run(mut self, app: &Application, text: &str) -> Result<Translation, WadmError> {
        let name = Id::try_from(app.metadata.name.clone())
            .map_err(|e| WadmError::Invalid(format!("metadata.name: {e}")))?;
        let annotations = &app.metadata.annotations;
        let version = match annotations.get("version") {
            Some(v) => v.clone(),
            None => {
                self.notes.push(
                    "no `version` annotation: the version is the manifest's digest, so an \
                     unchanged file deploys as the same version"
                        .into(),
                );
                content_version(text)
            }
        };
        let version = Version::try_from(version)
            .map_err(|e| WadmError::Invalid(format!("metadata.annotations.version: {e}")))?;
        let mut manifest = Manifest {
            name,
            version,
            description: annotations.get("description").cloned().unwrap_or_default(),
            components: Vec::new(),
            providers: Vec::new(),
            links: Vec::new(),
            config: BTreeMap::new(),
            rollout: Rollout::default(),
        };
        for c in &app.spec.components {
            self.component(c, &mut manifest)?;
            for t in c.traits.iter().filter(|t| t.kind == "link") {
                self.links(c, t, &mut manifest.links)?;
            }
        }
        if !app.spec.policies.is_empty() {
            let names: Vec<&str> = app.spec.policies.iter().map(|p| p.name.as_str()).collect();
            self.notes.push(format!(
                "policies {} are not used: they only name secret backends",
                names.join(", ")
            ));
        }
        manifest.config = std::mem::take(&mut self.config);
        manifest
            .check()
            .map_err(|(field, _, message)| WadmError::Invalid(format!("{field}: {message}")))?;
        Ok(Translation { manifest, notes: self.notes, from_wadm: true })
    }

    fn component(&mut self, c: &Component, manifest: &mut Manifest) -> Result<(), WadmError> {
        let (id, provider) = (self.entries[&c.name].id.clone(), self.entries[&c.name].provider);
        let unsupported =
            |message: String| WadmError::Unsupported { component: c.name.clone(), message };
        if provider.is_some() {
            refuse_secrets(&c.name, &c.properties.secrets)?;
        }
        if let Some(shared) = &c.properties.application {
            return Err(unsupported(format!(
                "shared components (`application: {}`, component `{}`) are not supported; give \
                 it its own `image`",
                shared.name,
                shared.component.as_deref().unwrap_or(&c.name)
            )));
        }
        let image = c.properties.image.as_deref().ok_or_else(|| {
            unsupported("no `image`: give it a `file://` path or an OCI reference".into())
        })?;
        let (replicas, scale, spread) = scaler(c)?;
        match provider {
            Some(p) => manifest.providers.push(ProviderSpec {
                name: id,
                kind: Id(p.kind.to_owned()),
                builtin: false,
                replicas,
                scale,
                requirements: BTreeMap::new(),
                spread,
            }),
            None => {
                let mut config = Vec::new();
                for r in &c.properties.config {
                    config.push(self.named_config(&c.name, r)?);
                }
                let mut secrets = Vec::new();
                for r in &c.properties.secrets {
                    secrets.push(self.secret(&c.name, r)?);
                }
                manifest.components.push(ComponentSpec {
                    name: id,
                    source: source(image).map_err(unsupported)?,
                    replicas: replicas.into(),
                    scale,
                    requirements: BTreeMap::new(),
                    spread,
                    config,
                    secrets,
                    limits: LimitsSpec::default(),
                    reuse: None,
                });
            }
        }
        Ok(())
    }

    /// A component's secret: granted by its name, which the operator puts in Trellis's store.
    fn secret(&mut self, component: &str, r: &SecretRef) -> Result<Id, WadmError> {
        let name = Id::try_from(r.name.clone()).map_err(|e| {
            WadmError::Invalid(format!("component `{component}`: secret `{}`: {e}", r.name))
        })?;
        self.notes.push(format!(
            "component `{component}` is granted secret `{name}` (key `{}` of policy `{}` in \
             wadm): put its value with `trellis secret put {name}`; the component reads it \
             through wasi:config under that name (wasmcloud:secrets is not served)",
            r.properties.key, r.properties.policy
        ));
        Ok(name)
    }

    /// A component's named config: defined here when it has properties, otherwise expected in
    /// the lattice.
    fn named_config(&mut self, component: &str, r: &ConfigRef) -> Result<Id, WadmError> {
        let name = Id::try_from(r.name.clone()).map_err(|e| {
            WadmError::Invalid(format!("component `{component}`: config `{}`: {e}", r.name))
        })?;
        match &r.properties {
            Some(props) => match self.config.get(&name) {
                Some(existing) if existing != props => {
                    return Err(WadmError::Invalid(format!(
                        "component `{component}`: config `{}` is defined twice with different \
                         properties; give one another name",
                        r.name
                    )));
                }
                _ => {
                    self.config.insert(name.clone(), props.clone());
                }
            },
            None => self.notes.push(format!(
                "component `{component}` reads config `{}`, which this manifest does not \
                 define: it must exist in the lattice (`trellis config put {} key=value`)",
                r.name, r.name
            )),
        }
        Ok(name)
    }

    fn links(&self, c: &Component, t: &Trait, out: &mut Vec<LinkSpec>) -> Result<(), WadmError> {
        let p = &t.properties;
        let error = |message: String| WadmError::Trait {
            component: c.name.clone(),
            kind: "link".into(),
            message,
        };
        if p.instances.is_some() || p.replicas.is_some() || !p.spread.is_empty() {
            return Err(error("`instances` and `spread` belong to a scaler, not a link".into()));
        }
        let target = p.target.as_ref().ok_or_else(|| error("no `target`".into()))?;
        let (namespace, package) = match (&p.namespace, &p.package) {
            (Some(n), Some(k)) => (n, k),
            _ => return Err(error("a link needs `namespace` and `package`".into())),
        };
        if p.interfaces.is_empty() {
            return Err(error("no `interfaces`".into()));
        }
        let source = &self.entries[&c.name];
        let target_entry = self.entries.get(target.name()).ok_or_else(|| {
            error(format!(
                "target `{}` is not a component of this manifest; link to a name under \
                 `spec.components`",
                target.name()
            ))
        })?;
        let mut config = BTreeMap::new();
        let source_refs = p.source.iter().flat_map(|s| &s.config).chain(&p.source_config);
        let target_full = match target {
            oam::LinkTarget::Full(full) => Some(full),
            oam::LinkTarget::Name(_) => None,
        };
        let target_refs = target_full.into_iter().flat_map(|f| &f.config).chain(&p.target_config);
        for secrets in p.source.iter().map(|s| &s.secrets).chain(target_full.map(|f| &f.secrets)) {
            refuse_secrets(&c.name, secrets)?;
        }
        // A provider's own config first, so the link's settings win over it.
        for provider in [source, target_entry] {
            config.extend(provider.defaults.clone());
        }
        for r in source_refs.chain(target_refs) {
            for (key, value) in inline(&c.name, r, "link config")? {
                match config.get(&key) {
                    Some(old) if *old != value && !provider_default(source, target_entry, &key) => {
                        return Err(error(format!(
                            "`{key}` is set to both `{old}` and `{value}` in its source and \
                             target config; keep one"
                        )));
                    }
                    _ => {
                        config.insert(key, value);
                    }
                }
            }
        }
        let name = match &p.name {
            Some(n) => Id::try_from(n.clone()).map_err(|e| error(format!("name: {e}")))?,
            None => Id(DEFAULT_LINK_NAME.to_owned()),
        };
        let mut seen = BTreeSet::new();
        for iface in &p.interfaces {
            let interface = trellis_interface(namespace, package, iface).map_err(error)?;
            if !seen.insert(interface.to_string()) {
                continue;
            }
            check_served(source, target_entry, &interface).map_err(error)?;
            let mut config = config.clone();
            let provider = source.provider.or(target_entry.provider);
            normalize(provider.map(|p| p.kind), &mut config);
            out.push(LinkSpec {
                source: source.id.clone(),
                target: target_entry.id.clone(),
                interface,
                name: name.clone(),
                config,
            });
        }
        Ok(())
    }
}

/// Replicas, scale and spread from a component's scaler: a spreadscaler places up to
/// `instances` replicas (one per host, more as hosts join), a daemonscaler one on every
/// matching host; no scaler, one replica.
fn scaler(c: &Component) -> Result<(u32, Scale, Vec<SpreadSpec>), WadmError> {
    let mut scalers = c.traits.iter().filter(|t| t.kind != "link");
    let Some(t) = scalers.next() else { return Ok((1, Scale::Exact, Vec::new())) };
    let error = |message: String| WadmError::Trait {
        component: c.name.clone(),
        kind: t.kind.clone(),
        message,
    };
    if let Some(second) = scalers.next() {
        return Err(error(format!("a second scaler (`{}`); keep one", second.kind)));
    }
    let p = &t.properties;
    if let Some(field) = link_field(p) {
        return Err(error(format!(
            "`{field}` is a link property; a scaler takes `instances` and `spread`"
        )));
    }
    let instances = p.instances.or(p.replicas).ok_or_else(|| error("no `instances`".into()))?;
    let mut spread = Vec::new();
    for s in &p.spread {
        let weight = NonZeroU32::new(s.weight.unwrap_or(DEFAULT_WEIGHT))
            .ok_or_else(|| error(format!("spread `{}` has weight 0; use 1 or more", s.name)))?;
        spread.push(SpreadSpec {
            name: s.name.clone(),
            requirements: s.requirements.clone(),
            weight,
        });
    }
    let scale = if t.kind == "daemonscaler" { Scale::EveryHost } else { Scale::UpTo };
    Ok((instances, scale, spread))
}

/// Whether `key` came from one of the two ends' own provider config (which a link overrides).
fn provider_default(a: &Entry, b: &Entry, key: &str) -> bool {
    a.defaults.contains_key(key) || b.defaults.contains_key(key)
}

/// The first property a link has and a scaler does not.
fn link_field(p: &TraitProperties) -> Option<&'static str> {
    [
        (p.target.is_some(), "target"),
        (p.namespace.is_some(), "namespace"),
        (p.package.is_some(), "package"),
        (!p.interfaces.is_empty(), "interfaces"),
        (p.name.is_some(), "name"),
        (p.source.is_some(), "source"),
        (!p.source_config.is_empty(), "source_config"),
        (!p.target_config.is_empty(), "target_config"),
    ]
    .into_iter()
    .find_map(|(set, field)| set.then_some(field))
}

/// One Trellis link covers a contract's companion interfaces: `wasi:keyvalue/store` serves
/// `atomics` and `batch`, `wasi:blobstore/blobstore` serves `container` and `types`.
fn trellis_interface(namespace: &str, package: &str, iface: &str) -> Result<InterfaceName, String> {
    let iface = match (namespace, package, iface) {
        ("wasi", "keyvalue", "atomics" | "batch") => "store",
        ("wasi", "blobstore", "container" | "types") => "blobstore",
        _ => iface,
    };
    InterfaceName::parse(&format!("{namespace}:{package}/{iface}")).map_err(|e| e.to_string())
}

/// A link with a provider at one end must be over a contract that provider serves, in the
/// direction it serves it.
fn check_served(source: &Entry, target: &Entry, interface: &InterfaceName) -> Result<(), String> {
    let name = interface.to_string();
    match (source.provider, target.provider) {
        (Some(_), Some(_)) => Err(format!(
            "links between two providers (`{}` and `{}`) are not supported",
            source.id, target.id
        )),
        (Some(p), None) if !p.calls.contains(&name.as_str()) => Err(format!(
            "provider `{}` ({}) does not call components over `{name}`; it calls over: {}",
            source.id,
            p.kind,
            or_none(p.calls)
        )),
        (None, Some(p)) if !p.serves.contains(&name.as_str()) => Err(format!(
            "provider `{}` ({}) does not serve `{name}`; it serves: {}",
            target.id,
            p.kind,
            or_none(p.serves)
        )),
        _ => Ok(()),
    }
}

fn or_none(list: &[&str]) -> String {
    if list.is_empty() { "nothing (it only calls components)".into() } else { list.join(", ") }
}

/// Settings wasmCloud's providers read under other names or forms than Trellis's.
fn normalize(kind: Option<&str>, config: &mut BTreeMap<String, String>) {
    if kind == Some("keyvalue-redis") {
        if let Some(url) = config.remove("URL") {
            config.entry("url".into()).or_insert(url);
        }
        // wasmCloud takes `host:port`; the Redis client wants a URL.
        if let Some(url) = config.get_mut("url")
            && !url.contains("://")
        {
            *url = format!("redis://{url}");
        }
    }
}

/// Config that must be spelled out here: links and providers carry their settings inline.
fn inline(
    component: &str,
    r: &ConfigRef,
    what: &str,
) -> Result<BTreeMap<String, String>, WadmError> {
    r.properties.clone().ok_or_else(|| WadmError::Unsupported {
        component: component.to_owned(),
        message: format!(
            "{what} `{}` has no `properties`: Trellis links and providers carry their settings \
             in the manifest; copy its values into `properties:`",
            r.name
        ),
    })
}

fn refuse_secrets(component: &str, secrets: &[SecretRef]) -> Result<(), WadmError> {
    match secrets.first() {
        Some(s) => Err(WadmError::Secrets {
            component: component.to_owned(),
            secret: s.name.clone(),
            key: s.properties.key.clone(),
            policy: s.properties.policy.clone(),
        }),
        None => Ok(()),
    }
}

fn provider_of(c: &Component) -> Result<&'static KnownProvider, WadmError> {
    let image = c.properties.image.as_deref().ok_or_else(|| WadmError::Unsupported {
        component: c.name.clone(),
        message: format!(
            "a capability without an `image`; name one of {}",
            providers::supported_images()
        ),
    })?;
    providers::for_image(image).ok_or_else(|| WadmError::UnknownProviderImage {
        component: c.name.clone(),
        image: image.to_owned(),
    })
}

/// A component image: `file://path` (relative to the manifest) or an OCI reference.
fn source(image: &str) -> Result<Source, String> {
    let text = match image.strip_prefix("file://") {
        Some(path) => path.to_owned(),
        None if image.starts_with("oci://") => image.to_owned(),
        None if image.contains("://") => {
            return Err(format!("image `{image}`: give a file:// path or an OCI reference"));
        }
        None => format!("oci://{image}"),
    };
    Source::try_from(text).map_err(|e| format!("image `{image}`: {e}"))
}

/// wadm's id for a component without one: application and component names, lower case, with
/// anything but letters and digits as `_`, joined by `-`.
fn default_id(app: &str, c: &Component) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch.to_ascii_lowercase() } else { '_' })
            .collect::<String>()
    };
    format!("{}-{}", clean(app), clean(&c.name))
}

/// A version for a manifest without one: the same text, the same version.
fn content_version(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha-{hex}")
}

#[cfg(test)]
mod tests;

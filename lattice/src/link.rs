//! Links: which target serves a source's import (or, for a provider, where it sends calls).
//!
//! A link is keyed by (source, `namespace:package`, interface, link name) and stored as JSON in
//! the lattice's `LINKS` KV bucket under `<source>.<namespace>.<package>.<interface>.<name>`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::subject::{InvalidId, validate_id};

/// A bad link or interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The interface is not `namespace:package/interface`.
    #[error(
        "invalid interface `{0}`: expected `namespace:package/interface` in lowercase letters, \
         digits and `-`, for example `wasi:http/incoming-handler`"
    )]
    BadInterface(String),
    /// An id in the link is not a valid token.
    #[error(transparent)]
    BadId(#[from] InvalidId),
    /// A KV key that is not a link key.
    #[error("`{0}` is not a link key")]
    BadKey(String),
}

/// A WIT interface name without version: `namespace:package/interface`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterfaceName {
    namespace: String,
    package: String,
    interface: String,
}

impl InterfaceName {
    /// Parses `ns:pkg/iface`, ignoring a trailing `@version`.
    pub fn parse(text: &str) -> Result<Self, LinkError> {
        let bad = || LinkError::BadInterface(text.to_owned());
        let unversioned = text.split_once('@').map_or(text, |(name, _)| name);
        let (namespace, rest) = unversioned.split_once(':').ok_or_else(bad)?;
        let (package, interface) = rest.split_once('/').ok_or_else(bad)?;
        let word = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !(word(namespace) && word(package) && word(interface)) {
            return Err(bad());
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            package: package.to_owned(),
            interface: interface.to_owned(),
        })
    }

    /// The namespace, `wasi` in `wasi:http/incoming-handler`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The package, `http` in `wasi:http/incoming-handler`.
    pub fn package(&self) -> &str {
        &self.package
    }

    /// The interface, `incoming-handler` in `wasi:http/incoming-handler`.
    pub fn interface(&self) -> &str {
        &self.interface
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.namespace, self.package, self.interface)
    }
}

impl TryFrom<String> for InterfaceName {
    type Error = LinkError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<InterfaceName> for String {
    fn from(value: InterfaceName) -> Self {
        value.to_string()
    }
}

/// The link name used when none is given.
pub const DEFAULT_LINK_NAME: &str = "default";

/// A link from `source` to `target` over `interface`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The component or provider that makes the calls (or, for a server provider, receives them).
    pub source: String,
    /// The component or provider that serves them.
    pub target: String,
    /// The contract.
    pub interface: InterfaceName,
    /// Distinguishes several links of one source over one interface.
    pub name: String,
    /// Settings for the source side (for http-server: `address`).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl Link {
    /// Checks ids and name.
    pub fn validate(&self) -> Result<(), LinkError> {
        validate_id("link source", &self.source)?;
        validate_id("link target", &self.target)?;
        validate_id("link name", &self.name)?;
        Ok(())
    }

    /// The KV key of this link.
    pub fn key(&self) -> String {
        link_key(&self.source, &self.interface, &self.name)
    }
}

/// The KV key of a link: `<source>.<namespace>.<package>.<interface>.<name>`.
pub fn link_key(source: &str, interface: &InterfaceName, name: &str) -> String {
    format!("{source}.{}.{}.{}.{name}", interface.namespace, interface.package, interface.interface)
}

/// The KV key filter for every link of `source`.
pub fn source_filter(source: &str) -> String {
    format!("{source}.>")
}

/// The source id of a link key.
pub fn key_source(key: &str) -> Result<&str, LinkError> {
    let mut parts = key.split('.');
    let source = parts.next().filter(|s| !s.is_empty());
    match (source, parts.count()) {
        (Some(source), 4) => Ok(source),
        _ => Err(LinkError::BadKey(key.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_parse_and_drop_versions() {
        let name = InterfaceName::parse("wasi:http/incoming-handler@0.2.3").unwrap();
        assert_eq!(name.to_string(), "wasi:http/incoming-handler");
        assert_eq!(name.package(), "http");
        for bad in ["wasi", "wasi:http", "Wasi:http/x", "wasi:/x", "a:b/c.d", ":b/c"] {
            assert!(InterfaceName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn link_keys_are_kv_safe_and_parse_back() {
        let link = Link {
            source: "web".into(),
            target: "hello".into(),
            interface: InterfaceName::parse("wasi:http/incoming-handler").unwrap(),
            name: DEFAULT_LINK_NAME.into(),
            config: BTreeMap::new(),
        };
        assert_eq!(link.key(), "web.wasi.http.incoming-handler.default");
        assert_eq!(key_source(&link.key()).unwrap(), "web");
        assert!(key_source("web.x").is_err());
    }

    #[test]
    fn links_serialize_as_plain_json() {
        let json = r#"{"source":"s","target":"t","interface":"wasi:keyvalue/store","name":"default","config":{"a":"b"}}"#;
        let link: Link = serde_json::from_str(json).unwrap();
        assert_eq!(link.interface.interface(), "store");
        assert_eq!(serde_json::to_string(&link).unwrap(), json);
        let bad = json.replace("wasi:keyvalue/store", "nope");
        assert!(serde_json::from_str::<Link>(&bad).is_err());
    }
}

//! The lattice's links as this host knows them: a live copy of the LINKS bucket, so resolving a
//! component's import to its target is a map lookup, not a round trip.

use std::sync::Arc;

use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::link::Link;

use crate::live::LiveMap;

/// Links by KV key (`<source>.<ns>.<pkg>.<iface>.<name>`).
pub(crate) type Links = LiveMap<Link>;

impl Links {
    /// The link `source` uses for `interface` (`ns:pkg/iface`) under `name`, or the typed
    /// `NoLink` error that names all three.
    pub fn resolve(
        &self,
        source: &str,
        interface: &str,
        name: &str,
    ) -> Result<Arc<Link>, InvokeError> {
        self.get(&key_of(source, interface, name)).ok_or_else(|| {
            InvokeError::new(
                InvokeErrorKind::NoLink,
                format!(
                    "component `{source}` has no link `{name}` for {interface}; create one with \
                     `trellis link put --source {source} --interface {interface} --target <id>`"
                ),
            )
        })
    }
}

/// Named config by name.
pub(crate) type Configs = LiveMap<trellis_lattice::state::Config>;

impl Configs {
    /// `names` merged in order (a later one wins on the same key); missing names are skipped.
    pub fn merged(&self, names: &[String]) -> Vec<(String, String)> {
        let mut merged = trellis_lattice::state::Config::new();
        for name in names {
            if let Some(config) = self.get(name) {
                merged.extend(config.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        merged.into_iter().collect()
    }
}

/// The KV key of a link, from an unversioned `ns:pkg/iface`.
fn key_of(source: &str, interface: &str, name: &str) -> String {
    let (namespace, rest) = interface.split_once(':').unwrap_or(("", interface));
    let (package, iface) = rest.split_once('/').unwrap_or((rest, ""));
    format!("{source}.{namespace}.{package}.{iface}.{name}")
}

#[cfg(test)]
mod tests {
    use trellis_lattice::link::InterfaceName;

    use super::*;

    #[test]
    fn resolves_live_and_names_what_is_missing() {
        let links = Links::new("links");
        let err = links.resolve("counter", "wasi:keyvalue/store", "default").unwrap_err();
        assert_eq!(err.kind(), InvokeErrorKind::NoLink);
        assert!(err.message().contains("counter") && err.message().contains("wasi:keyvalue/store"));

        let link = Link {
            source: "counter".into(),
            target: "redis".into(),
            interface: InterfaceName::parse("wasi:keyvalue/store").unwrap(),
            name: "default".into(),
            config: Default::default(),
        };
        links.apply(&link.key(), Some(link.clone()));
        assert_eq!(
            links.resolve("counter", "wasi:keyvalue/store", "default").unwrap().target,
            "redis"
        );
        assert!(links.resolve("counter", "wasi:keyvalue/store", "other").is_err());
        links.apply(&link.key(), None);
        assert!(links.resolve("counter", "wasi:keyvalue/store", "default").is_err());
    }
}

//! The lattice's links as this host knows them: a live copy of the LINKS bucket, so resolving a
//! component's import to its target is a map lookup, not a round trip.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv::{Operation, Watch};
use futures::StreamExt;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::link::Link;
use trellis_lattice::state::decode_link;

/// Links by KV key (`<source>.<ns>.<pkg>.<iface>.<name>`).
#[derive(Debug, Default)]
pub(crate) struct Links {
    by_key: RwLock<HashMap<String, Arc<Link>>>,
}

impl Links {
    /// The link `source` uses for `interface` (`ns:pkg/iface`) under `name`, or the typed
    /// `NoLink` error that names all three.
    pub fn resolve(
        &self,
        source: &str,
        interface: &str,
        name: &str,
    ) -> Result<Arc<Link>, InvokeError> {
        let key = key_of(source, interface, name);
        let found = self.read().get(&key).cloned();
        found.ok_or_else(|| {
            InvokeError::new(
                InvokeErrorKind::NoLink,
                format!(
                    "component `{source}` has no link `{name}` for {interface}; create one with \
                     `trellis link put --source {source} --interface {interface} --target <id>`"
                ),
            )
        })
    }

    /// Applies one change of the LINKS bucket.
    pub fn apply(&self, key: &str, link: Option<Link>) {
        let mut map = self.by_key.write().unwrap_or_else(|p| p.into_inner());
        match link {
            Some(link) => map.insert(key.to_owned(), Arc::new(link)),
            None => map.remove(key),
        };
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Link>>> {
        self.by_key.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the bucket until the watch ends.
    pub async fn follow(self: Arc<Self>, mut watch: Watch) {
        while let Some(entry) = watch.next().await {
            match entry {
                Ok(entry) => match entry.operation {
                    Operation::Put => match decode_link(&entry.key, &entry.value) {
                        Ok(link) => self.apply(&entry.key, Some(link)),
                        Err(e) => tracing::warn!(error = %e, "ignoring an undecodable link"),
                    },
                    Operation::Delete | Operation::Purge => self.apply(&entry.key, None),
                },
                Err(e) => tracing::warn!(error = %e, "link watch error"),
            }
        }
        tracing::warn!("the link watch ended; links no longer update on this host");
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
        let links = Links::default();
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

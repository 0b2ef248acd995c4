//! Live copies of JetStream KV buckets (links, named config): a watch keeps a map current, so
//! reading state on the call path is a map lookup, not a round trip.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv::{Operation, Watch};
use futures::StreamExt;
use trellis_lattice::record::{Opened, RecordGate, Stored};
use trellis_lattice::state::StateError;
use trellis_lattice::subject::EventKind;

use trellis_lattice::events::Events;

/// Values of one bucket by key.
#[derive(Debug)]
pub(crate) struct LiveMap<T> {
    what: &'static str,
    by_key: RwLock<HashMap<String, Arc<T>>>,
}

impl<T> LiveMap<T> {
    /// An empty map of `what` (for log lines).
    pub fn new(what: &'static str) -> Self {
        Self { what, by_key: RwLock::new(HashMap::new()) }
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.by_key.read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Applies one change.
    pub fn apply(&self, key: &str, value: Option<T>) {
        let mut map = self.by_key.write().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(value) => map.insert(key.to_owned(), Arc::new(value)),
            None => map.remove(key),
        };
    }

    /// Follows the bucket until the watch ends. Each change passes `gate` first (a refusal is
    /// a log line and a `record_denied` event); entries `decode` refuses are logged and skipped.
    pub async fn follow(
        self: Arc<Self>,
        mut watch: Watch,
        (gate, events): (Arc<RecordGate>, Events),
        decode: fn(&str, &[u8]) -> Result<T, StateError>,
    ) {
        while let Some(entry) = watch.next().await {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!(error = %e, "{} watch error", self.what);
                    continue;
                }
            };
            let opened = match entry.operation {
                Operation::Put => gate.open(&entry.bucket, &entry.key, &entry.value),
                Operation::Delete | Operation::Purge => {
                    gate.bare_delete().map(|()| Opened::Deleted)
                }
            };
            match opened {
                Ok(Opened::Put(json)) => match decode(&entry.key, json) {
                    Ok(value) => self.apply(&entry.key, Some(value)),
                    Err(e) => tracing::warn!(error = %e, "ignoring an undecodable {}", self.what),
                },
                Ok(Opened::Deleted) => self.apply(&entry.key, None),
                Err(denied) => {
                    let record = format!("{}/{}", entry.bucket, entry.key);
                    let by = match Stored::parse(&entry.value) {
                        Stored::Sealed { seal, .. } => seal.by,
                        Stored::Plain(_) => String::new(),
                    };
                    tracing::warn!(%record, reason = %denied, "{} not applied", self.what);
                    events.denied(EventKind::RecordDenied, &record, &by, &denied.to_string()).await;
                }
            }
        }
        tracing::warn!("the {} watch ended; they no longer update on this host", self.what);
    }
}

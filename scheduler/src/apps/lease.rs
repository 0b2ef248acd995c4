//! The scheduler's leader lease, in a bucket of its own (`TRELLIS_<lattice>_SCHEDULER`): its
//! entries expire on the server (`max_age`), so a dead leader's lease lapses by itself.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use trellis_lattice::state::{self, StateError};

/// The scheduler leader lease: whoever holds the key leads until it stops renewing it.
#[derive(Clone)]
pub struct Lease {
    kv: kv::Store,
    holder: String,
    /// Our entry's revision while we hold the lease.
    revision: Option<u64>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("holder", &self.holder).finish()
    }
}

const LEASE_KEY: &str = "leader";

impl Lease {
    /// Opens the lease bucket of `lattice`, whose entries live `ttl`. Every scheduler of a
    /// lattice must use the same `ttl` (the bucket keeps the first one).
    pub async fn open(
        js: &jetstream::Context,
        lattice: &str,
        holder: &str,
        (ttl, replicas): (Duration, usize),
    ) -> Result<Self, StateError> {
        let bucket = format!("TRELLIS_{lattice}_SCHEDULER");
        let config = kv::Config {
            bucket,
            history: 1,
            max_age: ttl,
            num_replicas: replicas,
            ..Default::default()
        };
        let kv = state::open_kv_with(js, config).await?;
        Ok(Self { kv, holder: holder.to_owned(), revision: None })
    }

    /// The revision of the lease entry while it is held (each renewal makes a new one).
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// Takes the lease if nobody holds it, or renews ours. True while we lead.
    pub async fn hold(&mut self) -> bool {
        let value = self.holder.clone().into_bytes();
        let result = match self.revision {
            Some(revision) => {
                self.kv.update(LEASE_KEY, value.into(), revision).await.map_err(|e| e.to_string())
            }
            None => self.kv.create(LEASE_KEY, value.into()).await.map_err(|e| e.to_string()),
        };
        match result {
            Ok(revision) => {
                self.revision = Some(revision);
                true
            }
            Err(_) => {
                // An update that timed out may still have been applied: the key is then ours
                // under a newer revision.
                self.revision = match self.kv.entry(LEASE_KEY).await {
                    Ok(Some(e))
                        if e.operation == kv::Operation::Put
                            && e.value.as_ref() == self.holder.as_bytes() =>
                    {
                        Some(e.revision)
                    }
                    _ => None,
                };
                self.revision.is_some()
            }
        }
    }

    /// Who holds the lease now, if anyone.
    pub async fn holder(&self) -> Option<String> {
        let entry = self.kv.entry(LEASE_KEY).await.ok()??;
        (entry.operation == kv::Operation::Put)
            .then(|| String::from_utf8_lossy(&entry.value).into_owned())
    }

    /// Gives the lease up (on shutdown), so another scheduler takes over at once.
    pub async fn release(&mut self) {
        if let Some(revision) = self.revision.take() {
            let _ = self.kv.delete_expect_revision(LEASE_KEY, Some(revision)).await;
        }
    }
}

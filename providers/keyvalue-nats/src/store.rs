//! The JetStream side: one KV bucket handle per bucket name, opened (or created) on first use.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use serde_bytes::ByteBuf;
use tokio::sync::Mutex;
use trellis_lattice::envelope::InvokeError;
use trellis_lattice::keyvalue::{self as contract, Reply, Request, Response, namespace};
use trellis_lattice::link::Link;
use trellis_provider::{Call, Context, Provider};

use crate::keys;

/// Keys per `list-keys` page.
const PAGE: usize = 1000;
/// Attempts of one `increment` against concurrent writers before giving up.
const MAX_CAS_ATTEMPTS: usize = 1000;

/// The provider.
#[derive(Debug, Default)]
pub struct NatsKv {
    buckets: Mutex<HashMap<String, kv::Store>>,
}

fn other(e: impl std::fmt::Display) -> contract::Error {
    contract::Error::Other(format!("NATS KV: {e}"))
}

impl NatsKv {
    async fn bucket(&self, ctx: &Context, link: &Link) -> Result<kv::Store, String> {
        let name = match link.config.get("bucket") {
            Some(name) => name.clone(),
            None => format!("trellis-kv-{}", ctx.lattice()),
        };
        let mut buckets = self.buckets.lock().await;
        if let Some(store) = buckets.get(&name) {
            return Ok(store.clone());
        }
        let js = ctx.jetstream().ok_or("not connected to NATS yet")?;
        let store = match js.get_key_value(&name).await {
            Ok(store) => store,
            Err(_) => {
                let config = kv::Config { bucket: name.clone(), history: 1, ..Default::default() };
                match js.create_key_value(config).await {
                    Ok(store) => store,
                    // Someone else may have created it meanwhile.
                    Err(create) => js.get_key_value(&name).await.map_err(|_| {
                        format!("cannot open or create JetStream KV bucket `{name}`: {create}")
                    })?,
                }
            }
        };
        buckets.insert(name, store.clone());
        Ok(store)
    }

    async fn run(&self, ctx: &Context, link: Arc<Link>, request: Request) -> Reply {
        let store = self.bucket(ctx, &link).await.map_err(contract::Error::Other)?;
        let ns = namespace(request.bucket()).to_owned();
        let ns = ns.as_str();
        Ok(match request {
            Request::Get { key, .. } => {
                let value = store.get(keys::stored(ns, &key)).await.map_err(other)?;
                Response::Value(value.map(|v| ByteBuf::from(Vec::from(v))))
            }
            Request::Set { key, value, .. } => {
                let value = Bytes::from(value.into_vec());
                store.put(keys::stored(ns, &key), value).await.map_err(other)?;
                Response::Done
            }
            Request::Delete { key, .. } => {
                store.delete(keys::stored(ns, &key)).await.map_err(other)?;
                Response::Done
            }
            Request::Exists { key, .. } => {
                Response::Exists(store.get(keys::stored(ns, &key)).await.map_err(other)?.is_some())
            }
            Request::ListKeys { cursor, .. } => list(&store, ns, cursor).await?,
            Request::Increment { key, delta, .. } => {
                Response::Number(increment(&store, &keys::stored(ns, &key), delta).await?)
            }
            Request::GetMany { keys: wanted, .. } => {
                let mut values = Vec::with_capacity(wanted.len());
                for key in wanted {
                    let value = store.get(keys::stored(ns, &key)).await.map_err(other)?;
                    values.push(value.map(|v| (key, ByteBuf::from(Vec::from(v)))));
                }
                Response::Values(values)
            }
            Request::SetMany { items, .. } => {
                for (key, value) in items {
                    let value = Bytes::from(value.into_vec());
                    store.put(keys::stored(ns, &key), value).await.map_err(other)?;
                }
                Response::Done
            }
            Request::DeleteMany { keys: doomed, .. } => {
                for key in doomed {
                    store.delete(keys::stored(ns, &key)).await.map_err(other)?;
                }
                Response::Done
            }
        })
    }
}

/// One page of the namespace's keys; the cursor is the offset of the next page.
async fn list(
    store: &kv::Store,
    ns: &str,
    cursor: Option<u64>,
) -> Result<Response, contract::Error> {
    let prefix = keys::prefix(ns);
    let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
    let mut all: Vec<String> = Vec::new();
    let mut stream = store.keys().await.map_err(other)?;
    while let Some(key) = stream.next().await {
        if let Some(key) = keys::component_key(&prefix, &key.map_err(other)?) {
            all.push(key);
        }
    }
    all.sort();
    let page: Vec<String> = all.iter().skip(skip).take(PAGE).cloned().collect();
    let next = skip.saturating_add(page.len());
    let cursor = (next < all.len()).then_some(next as u64);
    Ok(Response::Keys { keys: page, cursor })
}

/// Adds `delta` to the decimal counter at `key` with compare-and-set, so concurrent increments
/// from any number of hosts never lose an update.
async fn increment(store: &kv::Store, key: &str, delta: u64) -> Result<u64, contract::Error> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let current = store.entry(key).await.map_err(other)?;
        let live = current.filter(|e| e.operation == kv::Operation::Put);
        let (value, revision) = match &live {
            Some(entry) => (parse_counter(key, &entry.value)?, Some(entry.revision)),
            None => (0, None),
        };
        let new = value.checked_add(delta).ok_or_else(|| {
            contract::Error::Other(format!("incrementing `{key}` by {delta} overflows"))
        })?;
        let body = Bytes::from(new.to_string());
        let written =
            match revision {
                Some(revision) => store.update(key, body, revision).await.map(drop).map_err(|e| {
                    (e.kind() == kv::UpdateErrorKind::WrongLastRevision, e.to_string())
                }),
                None => {
                    store.create(key, body).await.map(drop).map_err(|e| {
                        (e.kind() == kv::CreateErrorKind::AlreadyExists, e.to_string())
                    })
                }
            };
        match written {
            Ok(()) => return Ok(new),
            // Another writer won this round; read again.
            Err((true, _)) => continue,
            Err((false, e)) => return Err(other(e)),
        }
    }
    Err(contract::Error::Other(format!(
        "`{key}` changed under {MAX_CAS_ATTEMPTS} attempts to increment it; try again"
    )))
}

fn parse_counter(key: &str, value: &[u8]) -> Result<u64, contract::Error> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| contract::Error::Other(format!("`{key}` does not hold a decimal counter")))
}

impl Provider for NatsKv {
    async fn link_put(&self, ctx: &Context, link: Link) -> Result<(), String> {
        if link.target != ctx.provider_id() {
            return Err("keyvalue-nats makes no calls; link components to it".into());
        }
        if link.interface.to_string() != contract::STORE {
            return Err(format!(
                "keyvalue-nats serves {}, not {}",
                contract::STORE,
                link.interface
            ));
        }
        // Open the bucket now, so a bad name is an error at `link put`.
        self.bucket(ctx, &link).await.map(drop)
    }

    async fn link_deleted(&self, _ctx: &Context, _link: Link) {}

    async fn invoke(&self, ctx: &Context, call: Call) -> Result<Vec<u8>, InvokeError> {
        trellis_provider::keyvalue::serve(call, |link, request| self.run(ctx, link, request)).await
    }

    async fn shutdown(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse_or_say_why_not() {
        assert_eq!(parse_counter("k", b"41").unwrap(), 41);
        assert!(parse_counter("k", b"forty").unwrap_err().to_string().contains("decimal counter"));
    }
}

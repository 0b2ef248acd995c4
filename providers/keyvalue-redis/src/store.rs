//! The Redis side: one connection manager per Redis URL, shared by the links that name it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde_bytes::ByteBuf;
use tokio::sync::Mutex;
use trellis_lattice::envelope::InvokeError;
use trellis_lattice::keyvalue::{self as kv, Reply, Request, Response, namespace};
use trellis_lattice::link::Link;
use trellis_provider::{Call, Context, Provider};

/// Where Redis is when a link names no `url`.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// How long connecting may take before the link (or call) fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per `list-keys` page.
const PAGE: usize = 1000;

/// The provider.
#[derive(Debug, Default)]
pub struct RedisKv {
    connections: Mutex<HashMap<String, ConnectionManager>>,
}

impl RedisKv {
    async fn connection(&self, link: &Link) -> Result<ConnectionManager, String> {
        let url = link.config.get("url").map_or(DEFAULT_URL, String::as_str);
        let mut connections = self.connections.lock().await;
        if let Some(connection) = connections.get(url) {
            return Ok(connection.clone());
        }
        let client = redis::Client::open(url).map_err(|e| format!("bad redis url `{url}`: {e}"))?;
        // The first connection is tried once, so a wrong url fails fast; after that the
        // manager reconnects on its own when Redis restarts.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| format!("cannot connect to redis at {url}: {e}"))?;
        connections.insert(url.to_owned(), connection.clone());
        Ok(connection)
    }

    async fn run(&self, link: Arc<Link>, request: Request) -> Reply {
        let mut con = self.connection(&link).await.map_err(kv::Error::Other)?;
        let ns = namespace(request.bucket()).to_owned();
        let ns = ns.as_str();
        if ns.contains(':') {
            return Err(kv::Error::NoSuchStore(format!(
                "bucket identifiers may not contain `:` (got `{ns}`)"
            )));
        }
        let key = |k: &str| format!("{ns}:{k}");
        let failed = |e: redis::RedisError| kv::Error::Other(format!("redis: {e}"));
        Ok(match &request {
            Request::Get { key: k, .. } => {
                let value: Option<Vec<u8>> =
                    redis::cmd("GET").arg(key(k)).query_async(&mut con).await.map_err(failed)?;
                Response::Value(value.map(ByteBuf::from))
            }
            Request::Set { key: k, value, .. } => {
                let () = redis::cmd("SET")
                    .arg(key(k))
                    .arg(value.as_slice())
                    .query_async(&mut con)
                    .await
                    .map_err(failed)?;
                Response::Done
            }
            Request::Delete { key: k, .. } => {
                let _: i64 =
                    redis::cmd("DEL").arg(key(k)).query_async(&mut con).await.map_err(failed)?;
                Response::Done
            }
            Request::Exists { key: k, .. } => {
                let n: i64 =
                    redis::cmd("EXISTS").arg(key(k)).query_async(&mut con).await.map_err(failed)?;
                Response::Exists(n > 0)
            }
            Request::ListKeys { cursor, .. } => {
                let pattern = format!("{}:*", escape_glob(ns));
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor.unwrap_or(0))
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut con)
                    .await
                    .map_err(failed)?;
                let prefix = format!("{ns}:");
                let keys = keys
                    .iter()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(str::to_owned)
                    .collect();
                Response::Keys { keys, cursor: (next != 0).then_some(next) }
            }
            Request::Increment { key: k, delta, .. } => {
                let delta = i64::try_from(*delta).map_err(|_| {
                    kv::Error::Other(format!("delta {delta} is too large for redis"))
                })?;
                let n: i64 = redis::cmd("INCRBY")
                    .arg(key(k))
                    .arg(delta)
                    .query_async(&mut con)
                    .await
                    .map_err(failed)?;
                Response::Number(u64::try_from(n).map_err(|_| {
                    kv::Error::Other(format!("`{k}` holds {n}, which is not an unsigned counter"))
                })?)
            }
            Request::GetMany { keys, .. } => {
                if keys.is_empty() {
                    return Ok(Response::Values(Vec::new()));
                }
                let full: Vec<String> = keys.iter().map(|k| key(k)).collect();
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(full).query_async(&mut con).await.map_err(failed)?;
                let pairs = keys
                    .iter()
                    .zip(values)
                    .map(|(k, v)| v.map(|v| (k.clone(), ByteBuf::from(v))))
                    .collect();
                Response::Values(pairs)
            }
            Request::SetMany { items, .. } => {
                if !items.is_empty() {
                    let mut cmd = redis::cmd("MSET");
                    for (k, v) in items {
                        cmd.arg(key(k)).arg(v.as_slice());
                    }
                    let () = cmd.query_async(&mut con).await.map_err(failed)?;
                }
                Response::Done
            }
            Request::DeleteMany { keys, .. } => {
                if !keys.is_empty() {
                    let full: Vec<String> = keys.iter().map(|k| key(k)).collect();
                    let _: i64 =
                        redis::cmd("DEL").arg(full).query_async(&mut con).await.map_err(failed)?;
                }
                Response::Done
            }
        })
    }
}

/// Escapes Redis glob characters so a namespace matches only itself.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Provider for RedisKv {
    async fn link_put(&self, ctx: &Context, link: Link) -> Result<(), String> {
        if link.target != ctx.provider_id() {
            return Err("keyvalue-redis makes no calls; link components to it".into());
        }
        if link.interface.to_string() != kv::STORE {
            return Err(format!("keyvalue-redis serves {}, not {}", kv::STORE, link.interface));
        }
        // Connect now, so a wrong url is an error at `link put`, not at the first call.
        self.connection(&link).await.map(drop)
    }

    async fn link_deleted(&self, _ctx: &Context, _link: Link) {}

    async fn health(&self) -> Result<(), String> {
        let connections: Vec<(String, ConnectionManager)> =
            self.connections.lock().await.iter().map(|(u, c)| (u.clone(), c.clone())).collect();
        for (url, mut con) in connections {
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut con);
            match tokio::time::timeout(CONNECT_TIMEOUT, ping).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("redis at {url}: {e}")),
                Err(_) => return Err(format!("redis at {url} does not answer")),
            }
        }
        Ok(())
    }

    async fn invoke(&self, _ctx: &Context, call: Call) -> Result<Vec<u8>, InvokeError> {
        trellis_provider::keyvalue::serve(call, |link, request| self.run(link, request)).await
    }

    async fn shutdown(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(escape_glob("plain"), "plain");
    }
}

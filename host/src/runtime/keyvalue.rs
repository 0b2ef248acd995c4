//! `wasi:keyvalue@0.2.0-draft` (store, atomics, batch) for components: each operation goes to
//! the provider the component's `wasi:keyvalue/store` link names (see
//! `trellis_lattice::keyvalue`). A bucket belongs to the link it was opened through, so atomics
//! and batch calls on it reach the same store.

use std::sync::Arc;

use bytes::Bytes;
use serde_bytes::ByteBuf;
use trellis_lattice::keyvalue::{self as kv, Request, Response};
use trellis_lattice::link::Link;
use wasmtime::component::{HasSelf, Linker, Resource};

use super::outbound::no_outbound;
use super::state::CallState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
        require_store_data_send: true,
    });
}

use bindings::wasi::keyvalue::store::{Error, KeyResponse};
use bindings::wasi::keyvalue::{atomics, batch, store};

/// An open bucket: its identifier and the link it was opened through.
#[derive(Debug)]
pub struct Bucket {
    identifier: String,
    link: Arc<Link>,
}

/// Adds the key-value interfaces to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    bindings::Imports::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
}

type KvResult<T> = wasmtime::Result<Result<T, Error>>;

impl CallState {
    /// Sends `request` for the bucket behind `bucket` and waits for the provider's answer.
    async fn kv(&mut self, bucket: &Resource<Bucket>, request: Request) -> Result<Response, Error> {
        let link = match self.table.get(bucket) {
            Ok(b) => b.link.clone(),
            Err(e) => return Err(Error::Other(format!("bad bucket handle: {e}"))),
        };
        let Some(outbound) = self.outbound.clone() else {
            return Err(Error::Other(no_outbound(&self.component_id, kv::STORE).to_string()));
        };
        let payload = kv::encode(&request).map_err(|e| Error::Other(e.to_string()))?;
        let function = request.function();
        let reply = outbound
            .call(
                &self.component_id,
                &link,
                function,
                (Bytes::from(payload), self.time_left(), self.trace, self.depth),
            )
            .await
            .map_err(|e| Error::Other(e.to_string()))?;
        match kv::decode::<kv::Reply>(&reply) {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(kv::Error::NoSuchStore(_))) => Err(Error::NoSuchStore),
            Ok(Err(kv::Error::AccessDenied(_))) => Err(Error::AccessDenied),
            Ok(Err(kv::Error::Other(why))) => Err(Error::Other(why)),
            Err(e) => Err(Error::Other(format!(
                "provider `{}` sent an undecodable {function} reply: {e}",
                link.target
            ))),
        }
    }

    fn bucket_name(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.identifier.clone())
    }
}

fn unexpected<T>(function: &str, got: &Response) -> Result<T, Error> {
    Err(Error::Other(format!("the provider answered {function} with {got:?}")))
}

impl store::Host for CallState {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        let Some(outbound) = &self.outbound else {
            return Ok(Err(Error::Other(no_outbound(&self.component_id, kv::STORE).to_string())));
        };
        let name = self.link_name(kv::STORE);
        let link = match outbound.resolve(&self.component_id, kv::STORE, name) {
            Ok(link) => link,
            Err(e) => return Ok(Err(Error::Other(e.to_string()))),
        };
        if !kv::bucket_allowed(&link.config, &identifier) {
            tracing::warn!(
                component = %self.component_id,
                bucket = %identifier,
                allowed = link.config.get("buckets").map(String::as_str),
                "bucket refused: not in the link's `buckets` config"
            );
            return Ok(Err(Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(Bucket { identifier, link })?))
    }
}

impl store::HostBucket for CallState {
    async fn get(&mut self, this: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let bucket = self.bucket_name(&this)?;
        Ok(match self.kv(&this, Request::Get { bucket, key }).await {
            Ok(Response::Value(v)) => Ok(v.map(ByteBuf::into_vec)),
            Ok(other) => unexpected("get", &other),
            Err(e) => Err(e),
        })
    }

    async fn set(&mut self, this: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let bucket = self.bucket_name(&this)?;
        let value = ByteBuf::from(value);
        Ok(done("set", self.kv(&this, Request::Set { bucket, key, value }).await))
    }

    async fn delete(&mut self, this: Resource<Bucket>, key: String) -> KvResult<()> {
        let bucket = self.bucket_name(&this)?;
        Ok(done("delete", self.kv(&this, Request::Delete { bucket, key }).await))
    }

    async fn exists(&mut self, this: Resource<Bucket>, key: String) -> KvResult<bool> {
        let bucket = self.bucket_name(&this)?;
        Ok(match self.kv(&this, Request::Exists { bucket, key }).await {
            Ok(Response::Exists(b)) => Ok(b),
            Ok(other) => unexpected("exists", &other),
            Err(e) => Err(e),
        })
    }

    async fn list_keys(
        &mut self,
        this: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> KvResult<KeyResponse> {
        let bucket = self.bucket_name(&this)?;
        Ok(match self.kv(&this, Request::ListKeys { bucket, cursor }).await {
            Ok(Response::Keys { keys, cursor }) => Ok(KeyResponse { keys, cursor }),
            Ok(other) => unexpected("list-keys", &other),
            Err(e) => Err(e),
        })
    }

    async fn drop(&mut self, this: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl atomics::Host for CallState {
    async fn increment(
        &mut self,
        this: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        let bucket = self.bucket_name(&this)?;
        Ok(match self.kv(&this, Request::Increment { bucket, key, delta }).await {
            Ok(Response::Number(n)) => Ok(n),
            Ok(other) => unexpected("increment", &other),
            Err(e) => Err(e),
        })
    }
}

impl batch::Host for CallState {
    async fn get_many(
        &mut self,
        this: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let bucket = self.bucket_name(&this)?;
        Ok(match self.kv(&this, Request::GetMany { bucket, keys }).await {
            Ok(Response::Values(values)) => {
                Ok(values.into_iter().map(|v| v.map(|(k, v)| (k, v.into_vec()))).collect())
            }
            Ok(other) => unexpected("get-many", &other),
            Err(e) => Err(e),
        })
    }

    async fn set_many(
        &mut self,
        this: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let bucket = self.bucket_name(&this)?;
        let items = key_values.into_iter().map(|(k, v)| (k, ByteBuf::from(v))).collect();
        Ok(done("set-many", self.kv(&this, Request::SetMany { bucket, items }).await))
    }

    async fn delete_many(&mut self, this: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let bucket = self.bucket_name(&this)?;
        Ok(done("delete-many", self.kv(&this, Request::DeleteMany { bucket, keys }).await))
    }
}

fn done(function: &str, reply: Result<Response, Error>) -> Result<(), Error> {
    match reply {
        Ok(Response::Done) => Ok(()),
        Ok(other) => unexpected(function, &other),
        Err(e) => Err(e),
    }
}

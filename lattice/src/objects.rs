//! The lattice's object stores (artifacts, compiled code), read without a consumer.
//!
//! async-nats reads an object through an ordered push consumer that nats-server keeps for 30 s
//! after the read, and a stream holds at most 1,000 consumers (the server's default limit):
//! a fleet that reads more than 1,000 objects of one bucket within 30 s (a rollout, or one
//! host starting 1,000 components from the compile cache) gets `maximum consumers limit
//! reached`. So the lattice reads an object as the server stores it: its info (the last
//! message on `$O.<bucket>.M.<name>`), then each chunk on `$O.<bucket>.C.<nuid>` by
//! "next message of this subject from sequence n" requests, one chunk per request. With
//! `allow_direct` (every bucket async-nats created has it) any replica answers
//! (`$JS.API.DIRECT.GET`); otherwise the stream leader does (`$JS.API.STREAM.MSG.GET`). Neither
//! leaves state on the server. docs/design/compile-cache.md weighs the other fixes.
//!
//! The bytes are not checked against the object's digest here: every caller checks them
//! against something stronger (an artifact against the digest it is named by, compiled code
//! against its seal), and hashing twice costs a second pass over tens of MiB.

use std::time::Duration;

use async_nats::jetstream::{self, object_store, stream};

use crate::state::{StateError, js_err};

/// One of the lattice's object stores.
#[derive(Clone)]
pub(crate) struct Objects {
    store: object_store::ObjectStore,
    /// The bucket's stream, `OBJ_<bucket>`, for chunk reads.
    stream: stream::Stream,
    bucket: String,
    /// Whether any replica answers reads (`allow_direct`), not only the leader.
    direct: bool,
}

/// How a bucket is created when missing, and what an existing one is brought to.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// Replicas of a new bucket (an existing one keeps its own).
    pub replicas: usize,
    /// Age after which the server deletes a message; zero: never. Set on an existing bucket
    /// that has another.
    pub max_age: Duration,
}

impl Objects {
    /// Opens object store `bucket`, creating it as `limits` say when missing.
    pub(crate) async fn open(
        js: &jetstream::Context,
        bucket: &str,
        limits: Limits,
    ) -> Result<Self, StateError> {
        let store = match js.get_object_store(bucket).await {
            Ok(store) => store,
            Err(_) => create(js, bucket, limits).await?,
        };
        let mut stream = js
            .get_stream(format!("OBJ_{bucket}"))
            .await
            .map_err(|e| StateError::Bucket { bucket: bucket.to_owned(), reason: e.to_string() })?;
        let config = &stream.cached_info().config;
        if config.max_age != limits.max_age {
            // A bucket an older host created: bring it to this host's limits. A host that may
            // not (permissions) keeps reading it as it is.
            let mut config = config.clone();
            config.max_age = limits.max_age;
            match js.update_stream(config).await {
                Ok(_) => stream.info().await.map(drop).map_err(|e| js_err("bucket info")(&e))?,
                Err(e) => tracing::warn!(bucket, error = %e, "cannot set the bucket's max age"),
            }
        }
        let direct = stream.cached_info().config.allow_direct;
        Ok(Self { store, stream, bucket: bucket.to_owned(), direct })
    }

    /// The object store itself (writes, info).
    pub(crate) fn store(&self) -> &object_store::ObjectStore {
        &self.store
    }

    /// The object `name`'s info and bytes, `None` when there is none.
    pub(crate) async fn read(
        &self,
        name: &str,
    ) -> Result<Option<(object_store::ObjectInfo, Vec<u8>)>, StateError> {
        let info = match self.store.info(name).await {
            Ok(info) if !info.deleted => info,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(js_err("object info")(&e)),
        };
        if info.options.as_ref().is_some_and(|o| o.link.is_some()) {
            return Err(StateError::JetStream {
                op: "object read",
                reason: format!("`{name}` is a link; the lattice stores none"),
            });
        }
        let subject = format!("$O.{}.C.{}", self.bucket, info.nuid);
        let mut bytes = Vec::with_capacity(info.size);
        let mut next = 1;
        for _ in 0..info.chunks {
            let chunk = self.next_chunk(&subject, next).await?;
            if bytes.len() + chunk.payload.len() > info.size {
                break;
            }
            bytes.extend_from_slice(&chunk.payload);
            next = chunk.sequence + 1;
        }
        if bytes.len() != info.size {
            return Err(StateError::JetStream {
                op: "object read",
                reason: format!(
                    "`{name}` read {} of its {} bytes: it changed while read",
                    bytes.len(),
                    info.size
                ),
            });
        }
        Ok(Some((info, bytes)))
    }

    /// The first message on `subject` at or after sequence `from`.
    async fn next_chunk(
        &self,
        subject: &str,
        from: u64,
    ) -> Result<async_nats::jetstream::message::StreamMessage, StateError> {
        let gone = || StateError::JetStream {
            op: "object read",
            reason: "a chunk is missing: the object was replaced or deleted while read".into(),
        };
        if self.direct {
            let get = self.stream.direct_get_builder().sequence(from).next_by_subject(subject);
            get.send().await.map_err(|e| match e.kind() {
                stream::DirectGetErrorKind::NotFound => gone(),
                _ => js_err("object chunk read")(&e),
            })
        } else {
            let get = self.stream.raw_message_builder().sequence(from).next_by_subject(subject);
            get.send().await.map_err(|e| match e.kind() {
                stream::RawMessageErrorKind::NoMessageFound => gone(),
                _ => js_err("object chunk read")(&e),
            })
        }
    }
}

async fn create(
    js: &jetstream::Context,
    bucket: &str,
    limits: Limits,
) -> Result<object_store::ObjectStore, StateError> {
    let config = object_store::Config {
        bucket: bucket.to_owned(),
        num_replicas: limits.replicas,
        max_age: limits.max_age,
        ..Default::default()
    };
    match js.create_object_store(config).await {
        Ok(store) => Ok(store),
        // Another process may have created it between our two calls.
        Err(create) => js.get_object_store(bucket).await.map_err(|_| StateError::Bucket {
            bucket: bucket.to_owned(),
            reason: create.to_string(),
        }),
    }
}

//! The `wasi:keyvalue` contract on the wire: what a host sends a key-value provider for each
//! operation a component makes, and what comes back.
//!
//! A component opens a bucket through its `wasi:keyvalue/store` link; every operation on that
//! bucket (store, atomics and batch alike) goes to the provider the link named, as an invocation
//! of interface [`STORE`] with the operation's name as function and a msgpack [`Request`] as
//! body. The reply body is a msgpack `Result<Response, Error>`.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The interface every key-value operation travels as (and the one links name).
pub const STORE: &str = "wasi:keyvalue/store";

/// One operation on bucket `bucket` (the identifier the component opened).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `store.bucket.get`
    Get { bucket: String, key: String },
    /// `store.bucket.set`
    Set { bucket: String, key: String, value: ByteBuf },
    /// `store.bucket.delete`
    Delete { bucket: String, key: String },
    /// `store.bucket.exists`
    Exists { bucket: String, key: String },
    /// `store.bucket.list-keys`
    ListKeys { bucket: String, cursor: Option<u64> },
    /// `atomics.increment`
    Increment { bucket: String, key: String, delta: u64 },
    /// `batch.get-many`
    GetMany { bucket: String, keys: Vec<String> },
    /// `batch.set-many`
    SetMany { bucket: String, items: Vec<(String, ByteBuf)> },
    /// `batch.delete-many`
    DeleteMany { bucket: String, keys: Vec<String> },
}

impl Request {
    /// The function name the operation travels as.
    pub fn function(&self) -> &'static str {
        match self {
            Request::Get { .. } => "get",
            Request::Set { .. } => "set",
            Request::Delete { .. } => "delete",
            Request::Exists { .. } => "exists",
            Request::ListKeys { .. } => "list-keys",
            Request::Increment { .. } => "increment",
            Request::GetMany { .. } => "get-many",
            Request::SetMany { .. } => "set-many",
            Request::DeleteMany { .. } => "delete-many",
        }
    }

    /// The bucket the operation is on.
    pub fn bucket(&self) -> &str {
        match self {
            Request::Get { bucket, .. }
            | Request::Set { bucket, .. }
            | Request::Delete { bucket, .. }
            | Request::Exists { bucket, .. }
            | Request::ListKeys { bucket, .. }
            | Request::Increment { bucket, .. }
            | Request::GetMany { bucket, .. }
            | Request::SetMany { bucket, .. }
            | Request::DeleteMany { bucket, .. } => bucket,
        }
    }
}

/// The successful answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// `set`, `delete`, `set-many`, `delete-many`.
    Done,
    /// `get`.
    Value(Option<ByteBuf>),
    /// `exists`.
    Exists(bool),
    /// `list-keys`: a page of keys and the cursor of the next page.
    Keys { keys: Vec<String>, cursor: Option<u64> },
    /// `increment`: the new value.
    Number(u64),
    /// `get-many`, in the order of the keys asked.
    Values(Vec<Option<(String, ByteBuf)>>),
}

/// Why an operation failed, as `wasi:keyvalue/store.error` says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// The bucket identifier is not one this link serves.
    #[error("no such store: {0}")]
    NoSuchStore(String),
    /// The link does not allow this bucket or operation.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Anything else (the store is down, a value is not a number, ...).
    #[error("{0}")]
    Other(String),
}

/// What a provider replies.
pub type Reply = Result<Response, Error>;

/// Encodes a request or reply.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec(value)
}

/// Decodes a request or reply; never panics on bad input.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// Which buckets a link allows: its `buckets` config, a comma-separated list (absent: any).
/// The empty identifier and `default` are the same bucket.
pub fn bucket_allowed(config: &std::collections::BTreeMap<String, String>, bucket: &str) -> bool {
    let Some(list) = config.get("buckets") else { return true };
    let bucket = namespace(bucket);
    list.split(',').map(str::trim).any(|allowed| namespace(allowed) == bucket)
}

/// The namespace a bucket identifier maps to in the linked store.
pub fn namespace(bucket: &str) -> &str {
    if bucket.is_empty() { "default" } else { bucket }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let request = Request::SetMany {
            bucket: "b".into(),
            items: vec![("k".into(), ByteBuf::from(b"v".to_vec()))],
        };
        assert_eq!(decode::<Request>(&encode(&request).unwrap()).unwrap(), request);
        assert_eq!(request.function(), "set-many");
        let reply: Reply = Err(Error::NoSuchStore("x".into()));
        assert_eq!(decode::<Reply>(&encode(&reply).unwrap()).unwrap(), reply);
        assert!(decode::<Request>(&[0xc1, 0x00]).is_err());
    }

    #[test]
    fn bucket_allow_lists() {
        let mut config = BTreeMap::new();
        assert!(bucket_allowed(&config, "anything"));
        config.insert("buckets".to_owned(), "default, sessions".to_owned());
        assert!(bucket_allowed(&config, ""));
        assert!(bucket_allowed(&config, "sessions"));
        assert!(!bucket_allowed(&config, "secrets"));
    }
}

//! The `wasi:blobstore` contract on the wire: what a host sends a blob store provider for each
//! operation a component makes, and what comes back.
//!
//! Every operation travels to the provider the component's `wasi:blobstore/blobstore` link names,
//! as an invocation of interface [`BLOBSTORE`] with the operation's name as function and a
//! msgpack [`Request`] as body; the reply is a msgpack `Result<Response, String>`. Object data
//! travels whole (the host buffers a component's writes until it finishes the value).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The interface every blob store operation travels as (and the one links name).
pub const BLOBSTORE: &str = "wasi:blobstore/blobstore";

/// An object in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectId {
    /// Container name.
    pub container: String,
    /// Object name.
    pub object: String,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `blobstore.create-container`
    CreateContainer { container: String },
    /// `blobstore.delete-container`
    DeleteContainer { container: String },
    /// `blobstore.container-exists`, and `get-container` (which fails when it does not)
    ContainerExists { container: String },
    /// `container.info`
    ContainerInfo { container: String },
    /// `blobstore.copy-object`
    CopyObject { src: ObjectId, dest: ObjectId },
    /// `blobstore.move-object`
    MoveObject { src: ObjectId, dest: ObjectId },
    /// `container.get-data`: bytes `start..=end` (clamped to the object).
    GetData { container: String, object: String, start: u64, end: u64 },
    /// `container.write-data` once the component finished the value.
    WriteData { container: String, object: String, data: ByteBuf },
    /// `container.list-objects`
    ListObjects { container: String },
    /// `container.delete-object(s)`
    DeleteObjects { container: String, objects: Vec<String> },
    /// `container.has-object`
    HasObject { container: String, object: String },
    /// `container.object-info`
    ObjectInfo { container: String, object: String },
    /// `container.clear`
    Clear { container: String },
}

impl Request {
    /// The function name the operation travels as.
    pub fn function(&self) -> &'static str {
        match self {
            Request::CreateContainer { .. } => "create-container",
            Request::DeleteContainer { .. } => "delete-container",
            Request::ContainerExists { .. } => "container-exists",
            Request::ContainerInfo { .. } => "container-info",
            Request::CopyObject { .. } => "copy-object",
            Request::MoveObject { .. } => "move-object",
            Request::GetData { .. } => "get-data",
            Request::WriteData { .. } => "write-data",
            Request::ListObjects { .. } => "list-objects",
            Request::DeleteObjects { .. } => "delete-objects",
            Request::HasObject { .. } => "has-object",
            Request::ObjectInfo { .. } => "object-info",
            Request::Clear { .. } => "clear",
        }
    }
}

/// The successful answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Operations that return nothing.
    Done,
    /// `container-exists`, `has-object`.
    Bool(bool),
    /// `get-data`.
    Data(ByteBuf),
    /// `list-objects`, sorted.
    Names(Vec<String>),
    /// `container.info`: created, unix seconds.
    Container { name: String, created_at: u64 },
    /// `object-info`.
    Object { name: String, container: String, created_at: u64, size: u64 },
}

/// What a provider replies; the error is the message the component sees.
pub type Reply = Result<Response, String>;

/// Encodes a request or reply.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec(value)
}

/// Decodes a request or reply; never panics on bad input.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let request = Request::WriteData {
            container: "c".into(),
            object: "a/b.txt".into(),
            data: ByteBuf::from(b"x".to_vec()),
        };
        assert_eq!(decode::<Request>(&encode(&request).unwrap()).unwrap(), request);
        assert_eq!(request.function(), "write-data");
        let reply: Reply = Ok(Response::Names(vec!["a".into()]));
        assert_eq!(decode::<Reply>(&encode(&reply).unwrap()).unwrap(), reply);
        assert!(decode::<Request>(&[0xc1]).is_err());
    }
}

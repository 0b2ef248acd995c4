//! `wasi:blobstore@0.2.0-draft` for components: every operation goes to the provider the
//! component's `wasi:blobstore/blobstore` link names (see `trellis_lattice::blobstore`). A
//! container remembers the link it was opened through. Values are whole: a component's writes to
//! an outgoing value are buffered in the host (at most 4 values of 16 MiB per call) and sent when
//! it finishes the value; reads fetch the
//! requested range at once and serve it from memory.

use std::sync::Arc;

use bytes::Bytes;
use serde_bytes::ByteBuf;
use trellis_lattice::blobstore::{self as blob, Request, Response};
use trellis_lattice::link::Link;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

use super::outbound::no_outbound;
use super::state::CallState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/blobstore",
        world: "wasi:blobstore/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:blobstore/types.outgoing-value": super::OutgoingValue,
            "wasi:blobstore/types.incoming-value": super::IncomingValue,
            "wasi:blobstore/container.container": super::Container,
            "wasi:blobstore/container.stream-object-names": super::StreamObjectNames,
        },
        require_store_data_send: true,
    });
}

use bindings::wasi::blobstore::types::{ContainerMetadata, ObjectId, ObjectMetadata};
use bindings::wasi::blobstore::{blobstore, container, types};
use wasmtime_wasi::p2::bindings::io::streams::{InputStream, OutputStream};

/// Largest value a component may write in one go.
const MAX_VALUE: usize = 16 << 20;
/// Outgoing values one call may have open at once (bounds what the host buffers for it).
const MAX_OPEN_VALUES: usize = 4;

/// An open container and the link it came from.
#[derive(Debug)]
pub struct Container {
    name: String,
    link: Arc<Link>,
}

/// A value being written; sent to the store by `finish` once `write-data` named its place.
#[derive(Debug)]
pub struct OutgoingValue {
    body: MemoryOutputPipe,
    destination: Option<(Arc<Link>, String, String)>,
}

/// A value read from the store.
#[derive(Debug)]
pub struct IncomingValue {
    data: Bytes,
}

/// The names `list-objects` returned, read in pages.
#[derive(Debug)]
pub struct StreamObjectNames {
    names: Vec<String>,
    position: usize,
}

/// Adds the blob store interfaces to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    // wasi:io is in the linker already (wasmtime-wasi).
    types::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    container::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    blobstore::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
}

type BlobResult<T> = wasmtime::Result<Result<T, String>>;

impl CallState {
    /// The component's blob store link.
    fn blob_link(&self) -> Result<Arc<Link>, String> {
        let outbound = self
            .outbound
            .as_ref()
            .ok_or_else(|| no_outbound(&self.component_id, blob::BLOBSTORE).to_string())?;
        outbound
            .resolve(&self.component_id, blob::BLOBSTORE, self.link_name(blob::BLOBSTORE))
            .map_err(|e| e.to_string())
    }

    /// Sends `request` over `link` and waits for the provider's answer.
    async fn blob(&mut self, link: &Link, request: Request) -> Result<Response, String> {
        let Some(outbound) = self.outbound.clone() else {
            return Err(no_outbound(&self.component_id, blob::BLOBSTORE).to_string());
        };
        let payload = blob::encode(&request).map_err(|e| e.to_string())?;
        let function = request.function();
        let reply = outbound
            .call(
                &self.component_id,
                link,
                function,
                (Bytes::from(payload), self.time_left(), self.trace, self.depth),
            )
            .await
            .map_err(|e| e.to_string())?;
        blob::decode::<blob::Reply>(&reply).map_err(|e| {
            format!("provider `{}` sent an undecodable {function} reply: {e}", link.target)
        })?
    }

    fn container(&self, this: &Resource<Container>) -> wasmtime::Result<(String, Arc<Link>)> {
        let c = self.table.get(this)?;
        Ok((c.name.clone(), c.link.clone()))
    }

    async fn done(&mut self, link: &Link, request: Request) -> Result<(), String> {
        match self.blob(link, request).await? {
            Response::Done => Ok(()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    async fn flag(&mut self, link: &Link, request: Request) -> Result<bool, String> {
        match self.blob(link, request).await? {
            Response::Bool(b) => Ok(b),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    async fn open(&mut self, name: String, create: bool) -> BlobResult<Resource<Container>> {
        let link = match self.blob_link() {
            Ok(link) => link,
            Err(e) => return Ok(Err(e)),
        };
        let checked = if create {
            self.done(&link, Request::CreateContainer { container: name.clone() }).await
        } else {
            match self.flag(&link, Request::ContainerExists { container: name.clone() }).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("container `{name}` does not exist")),
                Err(e) => Err(e),
            }
        };
        match checked {
            Ok(()) => Ok(Ok(self.table.push(Container { name, link })?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

fn object_id(id: ObjectId) -> blob::ObjectId {
    blob::ObjectId { container: id.container, object: id.object }
}

impl blobstore::Host for CallState {
    async fn create_container(&mut self, name: String) -> BlobResult<Resource<Container>> {
        self.open(name, true).await
    }

    async fn get_container(&mut self, name: String) -> BlobResult<Resource<Container>> {
        self.open(name, false).await
    }

    async fn delete_container(&mut self, name: String) -> BlobResult<()> {
        let link = match self.blob_link() {
            Ok(link) => link,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.done(&link, Request::DeleteContainer { container: name }).await)
    }

    async fn container_exists(&mut self, name: String) -> BlobResult<bool> {
        let link = match self.blob_link() {
            Ok(link) => link,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.flag(&link, Request::ContainerExists { container: name }).await)
    }

    async fn copy_object(&mut self, src: ObjectId, dest: ObjectId) -> BlobResult<()> {
        let link = match self.blob_link() {
            Ok(link) => link,
            Err(e) => return Ok(Err(e)),
        };
        let request = Request::CopyObject { src: object_id(src), dest: object_id(dest) };
        Ok(self.done(&link, request).await)
    }

    async fn move_object(&mut self, src: ObjectId, dest: ObjectId) -> BlobResult<()> {
        let link = match self.blob_link() {
            Ok(link) => link,
            Err(e) => return Ok(Err(e)),
        };
        let request = Request::MoveObject { src: object_id(src), dest: object_id(dest) };
        Ok(self.done(&link, request).await)
    }
}

impl container::Host for CallState {}

impl container::HostContainer for CallState {
    async fn name(&mut self, this: Resource<Container>) -> BlobResult<String> {
        Ok(Ok(self.table.get(&this)?.name.clone()))
    }

    async fn info(&mut self, this: Resource<Container>) -> BlobResult<ContainerMetadata> {
        let (name, link) = self.container(&this)?;
        Ok(match self.blob(&link, Request::ContainerInfo { container: name }).await {
            Ok(Response::Container { name, created_at }) => {
                Ok(ContainerMetadata { name, created_at })
            }
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e),
        })
    }

    async fn get_data(
        &mut self,
        this: Resource<Container>,
        object: String,
        start: u64,
        end: u64,
    ) -> BlobResult<Resource<IncomingValue>> {
        let (container, link) = self.container(&this)?;
        let request = Request::GetData { container, object, start, end };
        Ok(match self.blob(&link, request).await {
            Ok(Response::Data(data)) => {
                Ok(self.table.push(IncomingValue { data: Bytes::from(data.into_vec()) })?)
            }
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e),
        })
    }

    async fn write_data(
        &mut self,
        this: Resource<Container>,
        object: String,
        data: Resource<OutgoingValue>,
    ) -> BlobResult<()> {
        let (container, link) = self.container(&this)?;
        self.table.get_mut(&data)?.destination = Some((link, container, object));
        Ok(Ok(()))
    }

    async fn list_objects(
        &mut self,
        this: Resource<Container>,
    ) -> BlobResult<Resource<StreamObjectNames>> {
        let (container, link) = self.container(&this)?;
        Ok(match self.blob(&link, Request::ListObjects { container }).await {
            Ok(Response::Names(names)) => {
                Ok(self.table.push(StreamObjectNames { names, position: 0 })?)
            }
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e),
        })
    }

    async fn delete_object(&mut self, this: Resource<Container>, name: String) -> BlobResult<()> {
        let (container, link) = self.container(&this)?;
        Ok(self.done(&link, Request::DeleteObjects { container, objects: vec![name] }).await)
    }

    async fn delete_objects(
        &mut self,
        this: Resource<Container>,
        names: Vec<String>,
    ) -> BlobResult<()> {
        let (container, link) = self.container(&this)?;
        Ok(self.done(&link, Request::DeleteObjects { container, objects: names }).await)
    }

    async fn has_object(&mut self, this: Resource<Container>, name: String) -> BlobResult<bool> {
        let (container, link) = self.container(&this)?;
        Ok(self.flag(&link, Request::HasObject { container, object: name }).await)
    }

    async fn object_info(
        &mut self,
        this: Resource<Container>,
        name: String,
    ) -> BlobResult<ObjectMetadata> {
        let (container, link) = self.container(&this)?;
        Ok(match self.blob(&link, Request::ObjectInfo { container, object: name }).await {
            Ok(Response::Object { name, container, created_at, size }) => {
                Ok(ObjectMetadata { name, container, created_at, size })
            }
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e),
        })
    }

    async fn clear(&mut self, this: Resource<Container>) -> BlobResult<()> {
        let (container, link) = self.container(&this)?;
        Ok(self.done(&link, Request::Clear { container }).await)
    }

    async fn drop(&mut self, this: Resource<Container>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl container::HostStreamObjectNames for CallState {
    async fn read_stream_object_names(
        &mut self,
        this: Resource<StreamObjectNames>,
        len: u64,
    ) -> BlobResult<(Vec<String>, bool)> {
        let stream = self.table.get_mut(&this)?;
        let take = usize::try_from(len).unwrap_or(usize::MAX);
        let page: Vec<String> =
            stream.names.iter().skip(stream.position).take(take).cloned().collect();
        stream.position += page.len();
        Ok(Ok((page, stream.position >= stream.names.len())))
    }

    async fn skip_stream_object_names(
        &mut self,
        this: Resource<StreamObjectNames>,
        num: u64,
    ) -> BlobResult<(u64, bool)> {
        let stream = self.table.get_mut(&this)?;
        let left = stream.names.len() - stream.position;
        let skipped = left.min(usize::try_from(num).unwrap_or(usize::MAX));
        stream.position += skipped;
        Ok(Ok((skipped as u64, stream.position >= stream.names.len())))
    }

    async fn drop(&mut self, this: Resource<StreamObjectNames>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl types::Host for CallState {}

impl types::HostOutgoingValue for CallState {
    async fn new_outgoing_value(&mut self) -> wasmtime::Result<Resource<OutgoingValue>> {
        // The constructor cannot fail in WIT, so too many open values trap the call.
        if self.open_values >= MAX_OPEN_VALUES {
            return Err(wasmtime::Error::msg(format!(
                "a call may hold at most {MAX_OPEN_VALUES} open blob values ({} MiB each)",
                MAX_VALUE >> 20
            )));
        }
        self.open_values += 1;
        let value = OutgoingValue { body: MemoryOutputPipe::new(MAX_VALUE), destination: None };
        Ok(self.table.push(value)?)
    }

    async fn outgoing_value_write_body(
        &mut self,
        this: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<Resource<OutputStream>, ()>> {
        let body = self.table.get(&this)?.body.clone();
        let stream: OutputStream = Box::new(body);
        Ok(Ok(self.table.push(stream)?))
    }

    async fn finish(&mut self, this: Resource<OutgoingValue>) -> BlobResult<()> {
        let value = self.table.delete(this)?;
        self.open_values = self.open_values.saturating_sub(1);
        let Some((link, container, object)) = value.destination else {
            return Ok(Err("finish before write-data: the value has no destination".into()));
        };
        let data = ByteBuf::from(value.body.contents().to_vec());
        Ok(self.done(&link, Request::WriteData { container, object, data }).await)
    }

    async fn drop(&mut self, this: Resource<OutgoingValue>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        self.open_values = self.open_values.saturating_sub(1);
        Ok(())
    }
}

impl types::HostIncomingValue for CallState {
    async fn incoming_value_consume_sync(
        &mut self,
        this: Resource<IncomingValue>,
    ) -> BlobResult<Vec<u8>> {
        Ok(Ok(self.table.delete(this)?.data.to_vec()))
    }

    async fn incoming_value_consume_async(
        &mut self,
        this: Resource<IncomingValue>,
    ) -> BlobResult<Resource<InputStream>> {
        let data = self.table.delete(this)?.data;
        let stream: InputStream = Box::new(MemoryInputPipe::new(data));
        Ok(Ok(self.table.push(stream)?))
    }

    async fn size(&mut self, this: Resource<IncomingValue>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&this)?.data.len() as u64)
    }

    async fn drop(&mut self, this: Resource<IncomingValue>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

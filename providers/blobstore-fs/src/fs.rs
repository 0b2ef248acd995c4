//! The directory side of the contract.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use trellis_lattice::blobstore::{self as blob, Reply, Request, Response};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::link::Link;
use trellis_provider::{Call, Context, Provider};

use crate::paths;

/// The provider; all state is in the links' directories.
#[derive(Debug)]
pub struct BlobFs;

fn root(link: &Link) -> Result<PathBuf, String> {
    link.config
        .get("root")
        .map(PathBuf::from)
        .ok_or_else(|| "link config needs `root` (the directory that holds the containers)".into())
}

fn io(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

fn created(meta: &std::fs::Metadata) -> u64 {
    meta.created()
        .or_else(|_| meta.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

async fn existing_container(root: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = paths::container(root, name)?;
    match tokio::fs::metadata(&dir).await {
        Ok(m) if m.is_dir() => Ok(dir),
        _ => Err(format!("container `{name}` does not exist")),
    }
}

async fn run(link: &Link, request: Request) -> Reply {
    let root = root(link)?;
    Ok(match request {
        Request::CreateContainer { container } => {
            let dir = paths::container(&root, &container)?;
            tokio::fs::create_dir_all(&dir).await.map_err(|e| io(&container, e))?;
            Response::Done
        }
        Request::DeleteContainer { container } => {
            let dir = existing_container(&root, &container).await?;
            tokio::fs::remove_dir_all(&dir).await.map_err(|e| io(&container, e))?;
            Response::Done
        }
        Request::ContainerExists { container } => {
            Response::Bool(existing_container(&root, &container).await.is_ok())
        }
        Request::ContainerInfo { container } => {
            let dir = existing_container(&root, &container).await?;
            let meta = tokio::fs::metadata(&dir).await.map_err(|e| io(&container, e))?;
            Response::Container { name: container, created_at: created(&meta) }
        }
        Request::CopyObject { src, dest } => {
            let from = existing_object(&root, &src.container, &src.object).await?;
            // Copying an object onto itself would truncate it.
            if src != dest {
                let to = new_object(&root, &dest.container, &dest.object).await?;
                tokio::fs::copy(&from, &to).await.map_err(|e| io(&dest.object, e))?;
            }
            Response::Done
        }
        Request::MoveObject { src, dest } => {
            let from = existing_object(&root, &src.container, &src.object).await?;
            let to = new_object(&root, &dest.container, &dest.object).await?;
            tokio::fs::rename(&from, &to).await.map_err(|e| io(&dest.object, e))?;
            Response::Done
        }
        Request::GetData { container, object, start, end } => {
            let path = existing_object(&root, &container, &object).await?;
            Response::Data(ByteBuf::from(
                read_range(&path, start, end).await.map_err(|e| io(&object, e))?,
            ))
        }
        Request::WriteData { container, object, data } => {
            let path = new_object(&root, &container, &object).await?;
            // Write aside and rename: readers never see half an object, and concurrent writers
            // each have a file of their own.
            let tmp = partial_path(&path);
            let written = async {
                let mut file =
                    tokio::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).await?;
                tokio::io::AsyncWriteExt::write_all(&mut file, data.as_slice()).await?;
                file.sync_data().await?;
                tokio::fs::rename(&tmp, &path).await
            };
            if let Err(e) = written.await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(io(&object, e));
            }
            Response::Done
        }
        Request::ListObjects { container } => {
            let dir = existing_container(&root, &container).await?;
            let mut names = Vec::new();
            list(&dir, "", &mut names).await.map_err(|e| io(&container, e))?;
            names.sort();
            Response::Names(names)
        }
        Request::DeleteObjects { container, objects } => {
            let dir = existing_container(&root, &container).await?;
            for object in objects {
                let path = paths::object(&dir, &object)?;
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&object, e)),
                }
            }
            Response::Done
        }
        Request::HasObject { container, object } => {
            let dir = existing_container(&root, &container).await?;
            let path = paths::object(&dir, &object)?;
            Response::Bool(tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()))
        }
        Request::ObjectInfo { container, object } => {
            let path = existing_object(&root, &container, &object).await?;
            let meta = tokio::fs::metadata(&path).await.map_err(|e| io(&object, e))?;
            Response::Object {
                name: object,
                container,
                created_at: created(&meta),
                size: meta.len(),
            }
        }
        Request::Clear { container } => {
            let dir = existing_container(&root, &container).await?;
            tokio::fs::remove_dir_all(&dir).await.map_err(|e| io(&container, e))?;
            tokio::fs::create_dir_all(&dir).await.map_err(|e| io(&container, e))?;
            Response::Done
        }
    })
}

async fn existing_object(root: &Path, container: &str, object: &str) -> Result<PathBuf, String> {
    let dir = existing_container(root, container).await?;
    let path = paths::object(&dir, object)?;
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => Ok(path),
        _ => Err(format!("object `{object}` does not exist in container `{container}`")),
    }
}

async fn new_object(root: &Path, container: &str, object: &str) -> Result<PathBuf, String> {
    let dir = existing_container(root, container).await?;
    let path = paths::object(&dir, object)?;
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| io(object, e))?;
    }
    Ok(path)
}

/// A name beside `path` no other write uses: `.<name>.<n>.trellis-partial`.
fn partial_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.{n}{PARTIAL}", std::process::id()))
}

/// The suffix of objects being written.
const PARTIAL: &str = ".trellis-partial";

/// Bytes `start..=end` of the file (clamped to its length).
async fn read_range(path: &Path, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    if start >= len || end < start {
        return Ok(Vec::new());
    }
    let end = end.min(len - 1);
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut buf = vec![0; usize::try_from(end - start + 1).unwrap_or(0)];
    file.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Every file under `dir`, as `/`-separated names relative to the container.
async fn list(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut stack = vec![(dir.to_path_buf(), prefix.to_owned())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(PARTIAL) {
                continue;
            }
            let full = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if entry.file_type().await?.is_dir() {
                stack.push((entry.path(), full));
            } else {
                out.push(full);
            }
        }
    }
    Ok(())
}

impl Provider for BlobFs {
    async fn link_put(&self, ctx: &Context, link: Link) -> Result<(), String> {
        if link.target != ctx.provider_id() {
            return Err("blobstore-fs makes no calls; link components to it".into());
        }
        if link.interface.to_string() != blob::BLOBSTORE {
            return Err(format!("blobstore-fs serves {}, not {}", blob::BLOBSTORE, link.interface));
        }
        let root = root(&link)?;
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|e| format!("cannot use root directory {}: {e}", root.display()))
    }

    async fn link_deleted(&self, _ctx: &Context, _link: Link) {}

    async fn invoke(&self, _ctx: &Context, call: Call) -> Result<Vec<u8>, InvokeError> {
        let bad = |e: String| InvokeError::new(InvokeErrorKind::BadRequest, e);
        if call.link.interface.to_string() != blob::BLOBSTORE {
            return Err(bad(format!("blobstore-fs serves {}", blob::BLOBSTORE)));
        }
        let request: Request = blob::decode(&call.payload)
            .map_err(|e| bad(format!("undecodable blob store request: {e}")))?;
        let reply = run(&call.link, request).await;
        blob::encode(&reply).map_err(|e| InvokeError::new(InvokeErrorKind::TooLarge, e.to_string()))
    }

    async fn shutdown(&self) {}
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use trellis_lattice::blobstore::ObjectId;
    use trellis_lattice::link::InterfaceName;

    use super::*;

    #[tokio::test]
    async fn objects_round_trip_and_traversal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = Link {
            source: "c".into(),
            target: "p".into(),
            interface: InterfaceName::parse(blob::BLOBSTORE).unwrap(),
            name: "default".into(),
            config: BTreeMap::from([("root".to_owned(), dir.path().display().to_string())]),
        };
        let c = || "box".to_owned();
        assert_eq!(
            run(&link, Request::CreateContainer { container: c() }).await,
            Ok(Response::Done)
        );
        let data = ByteBuf::from(b"0123456789".to_vec());
        let write = Request::WriteData { container: c(), object: "a/b.txt".into(), data };
        assert_eq!(run(&link, write).await, Ok(Response::Done));
        let get = Request::GetData { container: c(), object: "a/b.txt".into(), start: 2, end: 4 };
        assert_eq!(run(&link, get).await, Ok(Response::Data(ByteBuf::from(b"234".to_vec()))));
        let copy = Request::CopyObject {
            src: ObjectId { container: c(), object: "a/b.txt".into() },
            dest: ObjectId { container: c(), object: "c.txt".into() },
        };
        assert_eq!(run(&link, copy).await, Ok(Response::Done));
        let names = run(&link, Request::ListObjects { container: c() }).await;
        assert_eq!(names, Ok(Response::Names(vec!["a/b.txt".into(), "c.txt".into()])));
        let escape = Request::WriteData {
            container: c(),
            object: "../../escape".into(),
            data: ByteBuf::new(),
        };
        assert!(run(&link, escape).await.unwrap_err().contains("not an allowed name"));
        let escape = Request::CreateContainer { container: "..".into() };
        assert!(run(&link, escape).await.is_err());
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }
}

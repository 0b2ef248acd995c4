//! `trellis-provider-blobstore-fs`: serves `wasi:blobstore` from a directory.
//!
//! Link a component to it with `trellis link put --source <component> --interface
//! wasi:blobstore/blobstore --target <provider-id> --config root=/srv/blobs`. Each container is a
//! directory under `root`, each object a file in it (`/` in an object name makes
//! subdirectories). Names that would leave the root (`..`, absolute paths, empty segments) are
//! refused.

mod fs;
mod paths;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    trellis_provider::run(|_ctx| fs::BlobFs).await
}

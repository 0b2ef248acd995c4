//! `trellis-provider-blobstore-fs`: serves `wasi:blobstore` from a directory.
//!
//! Link a component to it with `trellis link put --source <component> --interface
//! wasi:blobstore/blobstore --target <provider-id> --config root=/srv/blobs`. Each container is a
//! directory under `root`, each object a file in it (`/` in an object name makes
//! subdirectories). Names that would leave the root (`..`, absolute paths, empty segments) are
//! refused.

mod fs;
mod paths;

use trellis_provider::Context;

pub use fs::BlobFs;

/// The provider kind (`trellis start provider blobstore-fs`).
pub const KIND: &str = "blobstore-fs";

/// A new instance of the provider, for [`trellis_provider::run`] or [`trellis_provider::serve_on`].
pub fn new(_ctx: &Context) -> BlobFs {
    fs::BlobFs
}

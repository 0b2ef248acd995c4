//! Serving the `wasi:keyvalue` contract (see `trellis_lattice::keyvalue`): decode the call,
//! check the bucket against the link, run it, encode the reply.

use std::future::Future;
use std::sync::Arc;

use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::keyvalue::{self as kv, Reply, Request};
use trellis_lattice::link::Link;

use crate::Call;

/// Decodes `call` as a key-value request, runs it with `run` (given the link, for its config)
/// and encodes the reply. Buckets the link's `buckets` config does not list are refused.
pub async fn serve<F, Fut>(call: Call, run: F) -> Result<Vec<u8>, InvokeError>
where
    F: FnOnce(Arc<Link>, Request) -> Fut,
    Fut: Future<Output = Reply>,
{
    if call.link.interface.to_string() != kv::STORE {
        return Err(InvokeError::new(
            InvokeErrorKind::BadRequest,
            format!("this provider serves {}, not {}", kv::STORE, call.link.interface),
        ));
    }
    let request: Request = kv::decode(&call.payload).map_err(|e| {
        InvokeError::new(InvokeErrorKind::BadRequest, format!("undecodable key-value request: {e}"))
    })?;
    let reply = if kv::bucket_allowed(&call.link.config, request.bucket()) {
        run(call.link.clone(), request).await
    } else {
        Err(kv::Error::AccessDenied(format!(
            "bucket `{}` is not in the link's `buckets` config",
            request.bucket()
        )))
    };
    kv::encode(&reply).map_err(|e| {
        InvokeError::new(InvokeErrorKind::TooLarge, format!("unencodable key-value reply: {e}"))
    })
}

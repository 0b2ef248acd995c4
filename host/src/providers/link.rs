//! The host end of one provider process's pipe: read calls, route them, write replies.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use trellis_lattice::hostlink::{
    Bootstrap, ToHost, ToProvider, WireError, read_frame, write_frame,
};

use crate::router::Router;

/// Writes `bootstrap`, then serves the provider's calls until its stdout closes.
pub(crate) async fn serve<R, W>(
    provider_id: String,
    bootstrap: Bootstrap,
    from_provider: R,
    mut to_provider: W,
    router: Arc<Router>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut from_provider = tokio::io::BufReader::new(from_provider);
    if let Err(e) = write_frame(&mut to_provider, &bootstrap).await {
        tracing::warn!(provider = %provider_id, error = %e, "provider bootstrap not written");
        return;
    }
    // Each call task writes its own reply, in turn: no hop through a writer task. The pipe
    // closes (telling the provider to stop) when the last holder is gone.
    let to_provider = Arc::new(tokio::sync::Mutex::new(to_provider));
    loop {
        match read_frame::<_, ToHost>(&mut from_provider).await {
            Ok(Some(ToHost::Invoke { id, target, interface, function, timeout_ms, payload })) => {
                let (router, to_provider, source) =
                    (router.clone(), to_provider.clone(), provider_id.clone());
                tokio::spawn(async move {
                    let timeout = Duration::from_millis(timeout_ms);
                    let result = router
                        .invoke(
                            &source,
                            &target,
                            &interface,
                            &function,
                            Bytes::from(payload),
                            timeout,
                        )
                        .await
                        .map(|b| serde_bytes::ByteBuf::from(Vec::from(b)))
                        .map_err(|e| WireError::from(&e));
                    let reply = ToProvider::Reply { id, result };
                    if let Err(e) = write_frame(&mut *to_provider.lock().await, &reply).await {
                        tracing::debug!(error = %e, "reply to provider not written");
                    }
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(provider = %provider_id, error = %e, "bad frame from provider; closing its pipe");
                break;
            }
        }
    }
}

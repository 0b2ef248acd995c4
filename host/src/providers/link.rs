//! The host end of one provider process's pipe: read calls, route them, write replies.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
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
    let (replies, mut outbox) = mpsc::channel::<ToProvider>(256);
    // Every reply goes through one writer task that owns stdin; when this function returns and
    // the last sender drops, stdin closes and the provider shuts down.
    let writer = tokio::spawn(async move {
        if let Err(e) = write_frame(&mut to_provider, &bootstrap).await {
            tracing::warn!(error = %e, "provider bootstrap not written");
            return;
        }
        while let Some(reply) = outbox.recv().await {
            if let Err(e) = write_frame(&mut to_provider, &reply).await {
                tracing::warn!(error = %e, "provider pipe closed");
                return;
            }
        }
    });
    loop {
        match read_frame::<_, ToHost>(&mut from_provider).await {
            Ok(Some(ToHost::Invoke {
                id,
                target,
                interface,
                function,
                timeout_ms,
                payload,
            })) => {
                let (router, replies, source) =
                    (router.clone(), replies.clone(), provider_id.clone());
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
                    let _ = replies.send(ToProvider::Reply { id, result }).await;
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(provider = %provider_id, error = %e, "bad frame from provider; closing its pipe");
                break;
            }
        }
    }
    // The provider closed its end: nobody reads replies any more, so do not wait for them.
    writer.abort();
}

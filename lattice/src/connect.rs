//! Connecting to NATS: fail fast for one-shot commands, retry forever for long-lived processes.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::mpsc;

/// NATS could not be reached or the address is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answered at the address.
    #[error(
        "cannot reach NATS at {url}: {source}. Start one with `trellis up`, or point \
         --nats-url / TRELLIS_NATS_URL at a running nats-server"
    )]
    Unreachable {
        /// The address tried.
        url: String,
        /// Why the connection failed.
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Connects once, giving up after a short timeout. For CLI commands.
pub async fn connect_once(url: &str, name: &str) -> Result<Client, ConnectError> {
    ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(3)
        .connect(url)
        .await
        .map_err(|source| ConnectError::Unreachable {
            url: url.to_owned(),
            source,
        })
}

/// Connects in the background and reconnects forever; the returned receiver yields connection
/// events (`Connected` after every (re)connect). For hosts and providers.
///
/// The client is usable at once: requests made before the server is up fail fast, and
/// subscriptions are (re)established as soon as it is.
pub async fn connect_persistent(
    url: &str,
    name: &str,
) -> Result<(Client, mpsc::Receiver<Event>), ConnectError> {
    let (tx, rx) = mpsc::channel(64);
    let client = ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(3))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                // Losing an event when the consumer lags is fine; blocking NATS is not.
                let _ = tx.try_send(event);
            }
        })
        .connect(url)
        .await
        .map_err(|source| ConnectError::Unreachable {
            url: url.to_owned(),
            source,
        })?;
    Ok((client, rx))
}

/// Backoff between reconnect attempts: 100 ms doubling to 5 s.
fn reconnect_delay(attempts: usize) -> Duration {
    let exp = attempts.min(6) as u32;
    Duration::from_millis(100 * 2u64.pow(exp)).min(Duration::from_secs(5))
}

/// Waits until the server has processed everything sent on `client` so far (subscriptions
/// included). `flush` only writes to the socket; this is a round trip: a request nobody
/// answers, which the server refuses at once with "no responders".
pub async fn sync_with_server(client: &Client) -> Result<(), async_nats::RequestError> {
    let subject = format!("_TRELLIS_SYNC.{}", client.new_inbox());
    match client.request(subject, bytes::Bytes::new()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(e),
    }
}

/// Waits until `client` is connected, however long NATS takes to come up.
pub async fn wait_connected(client: &Client) {
    let mut delay = Duration::from_millis(20);
    while client.connection_state() != async_nats::connection::State::Connected {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_is_bounded() {
        assert_eq!(reconnect_delay(0), Duration::from_millis(100));
        assert_eq!(reconnect_delay(3), Duration::from_millis(800));
        assert_eq!(reconnect_delay(1000), Duration::from_secs(5));
    }
}

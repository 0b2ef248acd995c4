//! Connecting to NATS: fail fast for one-shot commands, retry forever for long-lived processes.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::mpsc;

/// How a process reaches NATS beyond its address: credentials and TLS (passed through as is, so
/// NATS accounts can isolate lattices) and the JetStream domain of the lattice's state.
/// Everything optional; an empty value connects anonymously without TLS to the local JetStream.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NatsAuth {
    /// A `.creds` file (user JWT and seed).
    pub creds_file: Option<PathBuf>,
    /// An nkey user seed (the seed itself, not a path).
    pub nkey_seed: Option<String>,
    /// CA certificate to verify the server with (turns TLS on).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// JetStream domain holding the lattice's state, for processes on a leaf node whose hub
    /// runs JetStream under a domain (see deploy/nats/). `None`: the server's own JetStream.
    #[serde(default)]
    pub js_domain: Option<String>,
}

/// The JetStream context of the lattice's state over `client`: in `domain`, if any.
pub fn jetstream(client: &Client, domain: Option<&str>) -> async_nats::jetstream::Context {
    match domain {
        Some(domain) => async_nats::jetstream::with_domain(client.clone(), domain),
        None => async_nats::jetstream::new(client.clone()),
    }
}

impl NatsAuth {
    async fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, std::io::Error> {
        if let Some(creds) = &self.creds_file {
            options = options.credentials_file(creds).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot read NATS credentials {}: {e}", creds.display()),
                )
            })?;
        }
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
        }
        Ok(options)
    }
}

/// NATS could not be reached or the address is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answered at the address.
    #[error(
        "cannot reach NATS at {url}: {cause}. Start one with `trellis up`, or point \
         --nats-url / TRELLIS_NATS_URL (or a context: `trellis context`) at a running nats-server"
    )]
    Unreachable {
        /// The address tried.
        url: String,
        /// Why the connection failed: in the message, not a source, so a chain of causes
        /// does not say it twice.
        cause: async_nats::ConnectError,
    },
    /// Credentials or certificates could not be loaded.
    #[error("{0}")]
    Auth(std::io::Error),
}

/// Connects once, giving up after a short timeout. For CLI commands.
pub async fn connect_once(url: &str, name: &str, auth: &NatsAuth) -> Result<Client, ConnectError> {
    connect_once_with(url, name, auth, None).await
}

/// [`connect_once`] with replies to requests under `inbox` (see
/// [`crate::signing::inbox_prefix`]) instead of `_INBOX`.
pub async fn connect_once_with(
    url: &str,
    name: &str,
    auth: &NatsAuth,
    inbox: Option<&str>,
) -> Result<Client, ConnectError> {
    with_inbox(auth.apply(ConnectOptions::new()).await.map_err(ConnectError::Auth)?, inbox)
        .name(name)
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(3)
        .connect(servers(url).as_slice())
        .await
        .map_err(|cause| ConnectError::Unreachable { url: url.to_owned(), cause })
}

/// How often a long-lived connection pings its server. The client takes the connection for
/// dead after two pings go unanswered and dials again (another server of the list, if any), so
/// a host or provider cut off without a word notices within 10 to 15 s; async-nats' default
/// (every minute) left a host cut off for 2 minutes out of the lattice for minutes after the
/// network came back (tests/lattice/partitions.rs).
pub const PING_EVERY: Duration = Duration::from_secs(5);

/// Connects in the background and reconnects forever; the returned receiver yields connection
/// events (`Connected` after every (re)connect). For hosts and providers.
///
/// The client is usable at once: requests made before the server is up fail fast, and
/// subscriptions are (re)established as soon as it is.
///
/// With `inbox`, replies to this client's requests come under that prefix instead of `_INBOX`:
/// a host's are under [`crate::signing::inbox_prefix`], which the calls it signs name.
pub async fn connect_persistent(
    url: &str,
    name: &str,
    auth: &NatsAuth,
    inbox: Option<&str>,
) -> Result<(Client, mpsc::Receiver<Event>), ConnectError> {
    let (tx, rx) = mpsc::channel(64);
    let client =
        with_inbox(auth.apply(ConnectOptions::new()).await.map_err(ConnectError::Auth)?, inbox)
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(3))
            .ping_interval(PING_EVERY)
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    // Losing an event when the consumer lags is fine; blocking NATS is not.
                    let _ = tx.try_send(event);
                }
            })
            .connect(servers(url).as_slice())
            .await
            .map_err(|cause| ConnectError::Unreachable { url: url.to_owned(), cause })?;
    Ok((client, rx))
}

fn with_inbox(options: ConnectOptions, inbox: Option<&str>) -> ConnectOptions {
    match inbox {
        Some(prefix) => options.custom_inbox_prefix(prefix),
        None => options,
    }
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

/// The servers of `url`: one address, or several separated by commas (a cluster's nodes).
fn servers(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
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

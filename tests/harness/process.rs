//! `trellis` processes: CLI invocations and hosts.

use std::path::PathBuf;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use trellis_lattice::client::LatticeClient;
use trellis_lattice::signing::OperatorKey;

/// The cargo target profile directory holding this test's binaries (`target/debug`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test-binary>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

/// The cargo target directory (`target`).
pub fn target_dir() -> PathBuf {
    profile_dir().parent().expect("target dir").to_path_buf()
}

/// Path of a workspace binary, which must have been built (`cargo build --workspace`).
pub fn bin(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests (the README's test command does)",
        path.display()
    );
    path
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Runs `trellis` against one lattice.
#[derive(Debug, Clone)]
pub struct Trellis {
    pub nats_url: String,
    pub lattice: String,
    /// Credentials for the test's own client (CLI runs and hosts get theirs through `env`).
    pub auth: trellis_lattice::connect::NatsAuth,
    /// Extra environment for every `trellis` process (for example `TRELLIS_NATS_NKEY`).
    pub env: Vec<(String, String)>,
    /// The test's operator: its CLI runs and its client sign with it, every host it starts
    /// trusts it (`TRELLIS_OPERATOR_KEY`, `TRELLIS_TRUSTED_OPERATORS`), and a scheduler signs
    /// with it too.
    pub operator: Arc<OperatorKey>,
    /// Holds the operator's seed file.
    _keys: Arc<tempfile::TempDir>,
}

impl Trellis {
    pub fn new(nats_url: &str, lattice: &str) -> Self {
        let operator = Arc::new(OperatorKey::generate());
        let keys = tempfile::tempdir().expect("temp dir for the operator key");
        let seed_file = keys.path().join("operator.nk");
        std::fs::write(&seed_file, operator.seed()).expect("write operator seed");
        let env = vec![
            ("TRELLIS_OPERATOR_KEY".to_owned(), seed_file.display().to_string()),
            ("TRELLIS_TRUSTED_OPERATORS".to_owned(), operator.public_key().to_owned()),
        ];
        Self {
            nats_url: nats_url.to_owned(),
            lattice: lattice.to_owned(),
            auth: Default::default(),
            env,
            operator,
            _keys: Arc::new(keys),
        }
    }

    /// The same lattice and operator through other NATS servers.
    pub fn via(&self, nats_url: &str) -> Self {
        Self { nats_url: nats_url.to_owned(), ..self.clone() }
    }

    /// A lattice client over a fresh connection that signs nothing, as any NATS user could.
    pub async fn anonymous_client(&self) -> LatticeClient {
        let nats =
            trellis_lattice::connect::connect_once(&self.nats_url, "trellis-tests", &self.auth)
                .await
                .expect("connect");
        LatticeClient::new(nats, &self.lattice).expect("lattice")
    }

    /// Runs a CLI command to completion.
    pub async fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("trellis"))
            .args(args)
            .env("TRELLIS_NATS_URL", &self.nats_url)
            .env("TRELLIS_LATTICE", &self.lattice)
            // Whatever context the machine's user selected stays out of the tests.
            .env("XDG_CONFIG_HOME", self._keys.path())
            .env_remove("TRELLIS_CONTEXT")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run trellis")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        assert!(
            out.status.success(),
            "`trellis {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a CLI command that must fail with exit code 1; returns its stderr.
    pub async fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "`trellis {}` should fail; stdout: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A lattice client over a fresh connection, signing as the test's operator.
    pub async fn client(&self) -> LatticeClient {
        self.anonymous_client().await.with_operator(self.operator.clone())
    }

    /// Spawns a development `trellis host` (`--allow-unsigned`) named `name` with `labels`;
    /// returns once it is in the lattice.
    pub async fn host(&self, name: &str, labels: &[&str]) -> Host {
        let mut args: Vec<String> = labels.iter().map(|l| format!("--label={l}")).collect();
        args.push("--allow-unsigned".into());
        self.host_with(name, &args).await
    }

    /// Spawns `trellis host` named `name` with extra `args`; returns once it is in the lattice.
    pub async fn host_with(&self, name: &str, args: &[String]) -> Host {
        let host = self.spawn_host_with(name, args);
        self.joined(host).await
    }

    /// Spawns `trellis host` inside `netns`, reaching NATS at `nats_url` (a [`crate::Relay`]
    /// into it); returns once it is in the lattice.
    pub async fn host_in(
        &self,
        netns: &crate::Netns,
        nats_url: &str,
        name: &str,
        args: &[String],
    ) -> Host {
        let host = self.spawn(netns.command(bin("trellis")), nats_url, name, args);
        self.joined(host).await
    }

    /// `host` once it is in the lattice.
    async fn joined(&self, host: Host) -> Host {
        let name = &*host.name;
        let client = self.client().await;
        let id =
            crate::eventually(&format!("host {name} to join"), Duration::from_secs(20), || {
                let client = client.clone();
                async move {
                    let hosts = client.hosts(Duration::from_millis(300)).await.ok()?;
                    hosts.into_iter().find(|h| h.name == name).map(|h| h.id)
                }
            })
            .await;
        Host { id, ..host }
    }

    /// Spawns a development `trellis host` without waiting for it to join.
    pub fn spawn_host(&self, name: &str, labels: &[&str]) -> Host {
        let mut args: Vec<String> = labels.iter().map(|l| format!("--label={l}")).collect();
        args.push("--allow-unsigned".into());
        self.spawn_host_with(name, &args)
    }

    fn spawn_host_with(&self, name: &str, args: &[String]) -> Host {
        self.spawn(Command::new(bin("trellis")), &self.nats_url, name, args)
    }

    /// Spawns `trellis host` through `command` (the binary, or a wrapper that runs it).
    fn spawn(&self, mut command: Command, nats_url: &str, name: &str, args: &[String]) -> Host {
        let log = std::env::var("TRELLIS_TEST_HOST_LOG").unwrap_or_else(|_| "warn".into());
        // A small pool unless the test sizes it itself.
        let pool: &[&str] = if args.iter().any(|a| a.starts_with("--max-instances")) {
            &[]
        } else {
            &["--max-instances", "32"]
        };
        // Quick heartbeats unless the test runs the production default (or another).
        let heartbeat: &[&str] = if args.iter().any(|a| a.starts_with("--heartbeat-interval")) {
            &[]
        } else {
            &["--heartbeat-interval", "1"]
        };
        let child = command
            .arg("host")
            .args(["--name", name])
            .args(heartbeat)
            .args(pool)
            .args(args)
            .env("TRELLIS_NATS_URL", nats_url)
            .env("TRELLIS_LATTICE", &self.lattice)
            .env("TRELLIS_PROVIDER_DIR", profile_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn trellis host");
        Host { child, id: String::new(), name: name.to_owned() }
    }
}

/// A `trellis host` process; killed when dropped.
#[derive(Debug)]
pub struct Host {
    child: Child,
    pub id: String,
    pub name: String,
}

impl Host {
    /// SIGKILL: the host gets no chance to say goodbye.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGSTOP: the process freezes; the kernel still holds its connections open.
    pub fn freeze(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT after [`Host::freeze`].
    pub fn thaw(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            .expect("running host");
        rustix::process::kill_process(pid, signal).expect("signal the host");
    }

    /// Waits for the host to exit by itself (a drained host does), at most `within`.
    pub async fn exited(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("host {} did not exit within {within:?}", self.name))
            .expect("wait")
    }

    /// SIGTERM, then waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("host exits within 20 s of SIGTERM")
            .expect("wait")
    }
}

//! Network cuts for fault tests: a Linux network namespace of the test's own, joined to the
//! test's namespace by a veth pair, and a TCP relay into it.
//!
//! A process started [`Netns::command`] lives behind the pair and reaches NATS only through
//! [`Relay`], which listens on the pair's outer address and forwards to the server on
//! loopback. [`Netns::cut`] takes the outer end of the pair down: packets are dropped in the
//! kernel, nobody gets a reset or an error, and both ends find out only by their own timers,
//! as across a real partition; [`Netns::heal`] brings it back and TCP carries on where it
//! stopped. Needs root (as CI and these machines have) and `ip` from iproute2.
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmarks), one /30 per
//! namespace, so nothing a machine routes for real is shadowed; traffic stays in the pair.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinHandle;

/// A network namespace behind a veth pair; deleted (with the pair) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    outer_link: String,
    outer: Ipv4Addr,
    inner: Ipv4Addr,
}

impl Netns {
    /// Creates the namespace and the pair, both ends up.
    ///
    /// # Panics
    /// When the machine will not make them (not root, no `ip`): the test cannot run there.
    pub async fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // One /30 per namespace of this process; processes apart by their pid.
        let block = (std::process::id() % 2048) * 16 + NEXT.fetch_add(1, Ordering::Relaxed) % 16;
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + block * 4;
        let tag = format!("{:x}", block);
        let netns = Self {
            name: format!("trellis-{tag}"),
            outer_link: format!("tro{tag}"),
            outer: Ipv4Addr::from(base + 1),
            inner: Ipv4Addr::from(base + 2),
        };
        let inner_link = format!("tri{tag}");
        // A namespace left by a killed run of the same pid would be in the way.
        let _ = ip(&["netns", "del", &netns.name]).await;
        let _ = ip(&["link", "del", &netns.outer_link]).await;
        let outer = format!("{}/30", netns.outer);
        let inner = format!("{}/30", netns.inner);
        let steps: [&[&str]; 7] = [
            &["netns", "add", &netns.name],
            &["link", "add", &netns.outer_link, "type", "veth", "peer", "name", &inner_link],
            &["link", "set", &inner_link, "netns", &netns.name],
            &["addr", "add", &outer, "dev", &netns.outer_link],
            &["link", "set", &netns.outer_link, "up"],
            &["-n", &netns.name, "addr", "add", &inner, "dev", &inner_link],
            &["-n", &netns.name, "link", "set", &inner_link, "up"],
        ];
        for step in steps {
            if let Err(e) = ip(step).await {
                panic!("network namespace for a partition test: `ip {}`: {e}", step.join(" "));
            }
        }
        // Its own loopback, for the hosts' health and metrics endpoints in there.
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]).await.expect("loopback up");
        netns
    }

    /// The address of the test's end of the pair (where [`Relay`]s listen).
    pub fn outer(&self) -> Ipv4Addr {
        self.outer
    }

    /// The address of the namespace's end of the pair (where its processes listen to be
    /// reached from the test).
    pub fn inner(&self) -> Ipv4Addr {
        self.inner
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Cuts the namespace off: its end of the pair stops carrying packets.
    pub async fn cut(&self) {
        ip(&["link", "set", &self.outer_link, "down"]).await.expect("cut the link");
    }

    /// Joins it again.
    pub async fn heal(&self) {
        ip(&["link", "set", &self.outer_link, "up"]).await.expect("heal the link");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the inner end, and with it the pair.
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::process::Command::new("ip").args(["link", "del", &self.outer_link]).status();
    }
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().await.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A relay process inside a namespace: forwards TCP from ports on the namespace's address to
/// addresses outside it, so a connection between two processes of the test's own namespace
/// crosses the pair twice (and a cut stops it). Written in Python (already a test
/// prerequisite), as nothing of the test process can run in there. Killed when dropped.
#[derive(Debug)]
pub struct InnerRelay {
    _child: tokio::process::Child,
}

const INNER_RELAY: &str = r#"
import asyncio, sys
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def main():
    host = sys.argv[1]
    for route in sys.argv[2:]:
        port, target = route.split("=")
        to_host, to_port = target.rsplit(":", 1)
        async def handle(r, w, to_host=to_host, to_port=int(to_port)):
            try:
                ur, uw = await asyncio.open_connection(to_host, to_port)
            except Exception:
                w.close()
                return
            await asyncio.gather(pipe(r, uw), pipe(ur, w))
        await asyncio.start_server(handle, host, int(port))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"#;

impl Netns {
    /// Starts an [`InnerRelay`] listening on the namespace's address: each `(port, to)` forwards
    /// `port` to `to`. Returns once it listens.
    pub async fn relay_inside(&self, routes: &[(u16, SocketAddr)]) -> InnerRelay {
        use tokio::io::AsyncBufReadExt;
        let mut command = self.command("python3");
        command.args(["-c", INNER_RELAY]).arg(self.inner.to_string());
        command.args(routes.iter().map(|(port, to)| format!("{port}={to}")));
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the relay inside the namespace");
        let stdout = child.stdout.take().expect("relay stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line());
        match ready.await {
            Ok(Ok(Some(line))) if line == "ready" => InnerRelay { _child: child },
            other => panic!("the relay inside the namespace did not start: {other:?}"),
        }
    }
}

/// Forwards TCP connections from an address on a namespace's pair to one on loopback; stops
/// when dropped.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free port of `on` and forwards each connection to `to`.
    pub async fn start(on: Ipv4Addr, to: SocketAddr) -> Self {
        let listener = TcpListener::bind((on, 0)).await.expect("relay listens");
        let addr = listener.local_addr().expect("relay address");
        let task = tokio::spawn(async move {
            while let Ok((mut from, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(to).await else { return };
                    let _ = from.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut from, &mut upstream).await;
                });
            }
        });
        Self { addr, task }
    }

    /// `nats://<addr>` for a client inside the namespace.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

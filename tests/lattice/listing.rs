//! Listing hosts (`trellis get hosts`, `LatticeClient::hosts`) is complete in a large lattice
//! and returns once the replies stop, not after a fixed wait.

use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::Message;
use trellis_proto as pb;

use crate::Lattice;

/// Answers pings as a host does, on a connection of its own, after `delay`: a host that is
/// slower than others to answer.
async fn ping_answerer(url: &str, lattice: &str, index: usize, delay: Duration) -> AbortOnDrop {
    let nats = async_nats::connect(url).await.expect("connect");
    let subjects = trellis_lattice::subject::Subjects::new(lattice).expect("lattice");
    let mut pings = nats.subscribe(subjects.hosts_ping()).await.expect("subscribe");
    nats.flush().await.expect("flush");
    let task = tokio::spawn(async move {
        while let Some(ping) = pings.next().await {
            let Some(reply) = ping.reply else { continue };
            tokio::time::sleep(delay).await;
            let info = pb::HostInfo {
                id: format!("NFAKE{index:04}"),
                name: format!("fake-{index:04}"),
                heartbeat_ms: 3000,
                ..Default::default()
            };
            let _ = nats.publish(reply, info.encode_to_vec().into()).await;
        }
    });
    AbortOnDrop(task)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn get_hosts_lists_every_host_of_a_large_lattice_and_stops_when_replies_do() {
    let lattice = Lattice::new("many").await;
    let t = &lattice.trellis;
    let real = [t.host("real-a", &[]).await, t.host("real-b", &[]).await];
    // 300 more hosts, answering over 60 ms rather than all at once.
    let url = lattice.nats.url();
    let answerers = futures::future::join_all((0..300).map(|i| {
        let delay = Duration::from_millis((i % 60) as u64);
        ping_answerer(&url, "many", i, delay)
    }))
    .await;

    let client = t.client().await;
    let started = Instant::now();
    let hosts = client.hosts(Duration::from_secs(20)).await.expect("hosts");
    let took = started.elapsed();
    assert_eq!(hosts.len(), 302, "every host listed");
    assert!(real.iter().all(|r| hosts.iter().any(|h| h.id == r.id)), "the real hosts too");
    assert!(took < Duration::from_secs(10), "stopped when the replies did, not at 20 s: {took:?}");

    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&t.ok(&["get", "hosts", "--output", "json"]).await).expect("json");
    assert_eq!(listed.len(), 302, "the CLI lists them all");
    drop(answerers);

    // A lattice where nobody listens answers at once (NATS says there are no responders).
    let empty = Lattice::new("empty").await;
    let client = empty.trellis.client().await;
    let started = Instant::now();
    assert!(client.hosts(Duration::from_secs(20)).await.expect("hosts").is_empty());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

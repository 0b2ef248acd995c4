//! Network partitions: a host behind a network namespace of the test's own, cut off from NATS
//! by taking its link down (packets dropped, no resets), then joined again. See
//! docs/reliability.md, scenario 8.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::Message as _;
use trellis_lattice::client::LatticeClient;
use trellis_lattice::subject::EventKind;
use trellis_proto as pb;
use trellis_tests::load::{self, Outcome, Tally};
use trellis_tests::{NatsServer, Netns, Relay, Trellis, eventually, free_port, http_request};

use crate::Lattice;

/// How long the host stays cut off: `TRELLIS_PARTITION_SECS` (scripts/chaos.sh runs 120), or
/// 16 s, past every timer below.
fn partition() -> Duration {
    let secs = std::env::var("TRELLIS_PARTITION_SECS").ok().and_then(|s| s.parse().ok());
    Duration::from_secs(secs.unwrap_or(16))
}

/// The server notices a client that stopped answering its pings after `ping_max` missed ones:
/// 2 s apart here, as the tests' 1 s heartbeats compress the hosts' 3 s.
const SERVER_PINGS: &str = "ping_interval: \"2s\"\nping_max: 2\n";

/// Long enough after the cut for the scheduler to re-place (3 missed heartbeats and a start)
/// and the server to drop the silent client (3 ping intervals): calls no longer go there.
const SETTLED: Duration = Duration::from_secs(10);

/// HTTP requests to http-hello through the http-server provider at `addr` (on a host that
/// stays: its calls are signed, so a caller hears within a second when the replica it reached
/// went silent), 8 at a time, until `running` turns false.
fn calls(addr: SocketAddr, running: &Arc<AtomicBool>) -> tokio::task::JoinHandle<Tally> {
    let running = running.clone();
    tokio::spawn(load::http_while(addr, "/", 8, Duration::from_secs(10), running))
}

/// Runs calls for `span` and returns what they got.
async fn calls_for(addr: SocketAddr, span: Duration) -> Tally {
    let running = Arc::new(AtomicBool::new(true));
    let load = calls(addr, &running);
    tokio::time::sleep(span).await;
    running.store(false, Ordering::Relaxed);
    load.await.expect("load")
}

/// Hosts that run component `id` now, by name, from their own inventories.
async fn running(client: &LatticeClient, id: &str) -> Vec<String> {
    let hosts = client.hosts(Duration::from_millis(500)).await.unwrap_or_default();
    let mut names = Vec::new();
    for host in hosts {
        let Ok(inventory) = client.inventory(&host.id).await else { continue };
        if inventory.components.iter().any(|c| c.id == id) {
            names.push(host.name);
        }
    }
    names.sort();
    names
}

/// Hosts that run `hello` now.
async fn running_hello(client: &LatticeClient) -> Vec<String> {
    running(client, "hello").await
}

fn every_call_answered_or_unavailable(tally: &Tally, phase: &str) {
    let unavailable = tally.typed("Unavailable");
    assert_eq!(
        tally.count(&Outcome::Answered) + unavailable,
        tally.records.len(),
        "{phase}: every call answered or refused `Unavailable`, none timed out:\n{tally}"
    );
    if let Some(slowest) = tally.slowest(&Outcome::Typed("Unavailable".into())) {
        assert!(slowest < Duration::from_secs(4), "{phase}: refused only after {slowest:?}");
    }
}

/// A lattice whose server lets go of silent clients quickly ([`SERVER_PINGS`]), a network
/// namespace to cut, and a relay from it to the server.
async fn behind_a_cut(name: &str) -> (Lattice, Netns, Relay) {
    let nats = NatsServer::start_with_config(None, Some(SERVER_PINGS)).await.expect("nats");
    let lattice = Lattice { trellis: Trellis::new(&nats.url(), name), nats };
    let net = Netns::create().await;
    let relay = Relay::start(net.outer(), ([127, 0, 0, 1], lattice.nats.port()).into()).await;
    (lattice, net, relay)
}

#[tokio::test]
async fn a_host_cut_off_from_nats_is_replaced_and_its_surplus_scaled_back_when_it_returns() {
    let (lattice, net, relay) = behind_a_cut("partition").await;
    let t = &lattice.trellis;
    let scheduler: Vec<String> =
        ["--allow-unsigned", "--scheduler", "--scheduler-lease=2", "--label=role=scheduler"]
            .map(String::from)
            .to_vec();
    let s = t.host_with("s", &scheduler).await;
    let worker = ["--allow-unsigned", "--label=role=worker"].map(String::from);
    // The replica lands on the host behind the namespace, the only worker at first.
    let cut_off = t.host_in(&net, &relay.nats_url(), "w-cut", &worker).await;
    crate::faults::deploy_one_hello_on_workers(t, "partition").await;
    let client = t.client().await;
    let placed = eventually("hello on w-cut", Duration::from_secs(30), || {
        let client = client.clone();
        async move { Some(running_hello(&client).await).filter(|r| r == &["w-cut"]) }
    })
    .await;
    assert_eq!(placed, ["w-cut"]);
    let stays = t.host_with("w-stays", &worker).await;
    let addr = lattice.serve_http(&s.id, "hello", &[]).await;
    let before = calls_for(addr, Duration::from_secs(1)).await;
    println!("before the cut:\n{before}");
    assert_eq!(before.count(&Outcome::Answered), before.records.len(), "{before}");

    // Cut. The scheduler takes w-cut for lost and starts a replica on w-stays; calls the
    // server still hands w-cut's silent subscription fail `Unavailable` within a second or so,
    // until the server drops it; then every call is answered.
    net.cut().await;
    let cut = Instant::now();
    let running = Arc::new(AtomicBool::new(true));
    let during = calls(addr, &running);
    eventually("a replica on w-stays", Duration::from_secs(30), || {
        let client = client.clone();
        async move { running_hello(&client).await.contains(&"w-stays".to_owned()).then_some(()) }
    })
    .await;
    let replaced_after = cut.elapsed();
    tokio::time::sleep(SETTLED.saturating_sub(cut.elapsed())).await;
    running.store(false, Ordering::Relaxed);
    let settling = during.await.expect("load");
    println!("cut, re-placed after {replaced_after:?}; the first {SETTLED:?}:\n{settling}");
    every_call_answered_or_unavailable(&settling, "while the cut settles");
    let settled = calls_for(addr, partition().saturating_sub(cut.elapsed())).await;
    println!("cut, settled, until {:?}:\n{settled}", partition());
    assert!(settled.count(&Outcome::Answered) > 0, "{settled}");
    assert_eq!(
        settled.count(&Outcome::Answered),
        settled.records.len(),
        "once settled, the replica elsewhere answers every call:\n{settled}"
    );
    // docs/reliability.md: 3 missed 1 s heartbeats and a start; generously.
    assert!(replaced_after < Duration::from_secs(15), "re-placed after {replaced_after:?}");

    // Heal. w-cut comes back with its replica still running: two where one is wanted, until
    // the scheduler stops one (either: it keeps the replica on the lower host id, and host ids
    // are random). Calls meanwhile are answered or refused typed, never hung.
    let stopped = client.subjects().event(EventKind::ComponentStopped);
    let mut stopped = client.nats().subscribe(stopped).await.expect("subscribe to events");
    net.heal().await;
    let healed = Instant::now();
    let running = Arc::new(AtomicBool::new(true));
    let after = calls(addr, &running);
    let surplus = async {
        while let Some(msg) = stopped.next().await {
            let event = pb::Event::decode(msg.payload).expect("event");
            if let Some(pb::event::Body::Component(c)) = &event.body
                && [&cut_off.id, &stays.id].contains(&&event.host_id)
                && c.component_id == "hello"
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), surplus)
        .await
        .expect("the scheduler stops one of the two replicas");
    let scaled_back_after = healed.elapsed();
    let one = eventually("one replica left", Duration::from_secs(30), || {
        let client = client.clone();
        async move { Some(running_hello(&client).await).filter(|r| r.len() == 1) }
    })
    .await;
    assert!(client.inventory(&cut_off.id).await.is_ok(), "w-cut is back and answers");
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.store(false, Ordering::Relaxed);
    let after = after.await.expect("load");
    println!(
        "healed: the surplus replica stopped {scaled_back_after:?} after, {one:?} left:\n{after}"
    );
    every_call_answered_or_unavailable(&after, "after the heal");
    assert_eq!(running_hello(&client).await, one, "and it stays one");
    let last = calls_for(addr, Duration::from_secs(1)).await;
    assert_eq!(last.count(&Outcome::Answered), last.records.len(), "{last}");
}

/// A gauge or counter of a host's `/metrics`, when the host answers.
async fn metric(metrics: SocketAddr, name: &str) -> Option<u64> {
    let reply = http_request(metrics, "GET", "/metrics", b"").await.ok()?;
    crate::faults::metric_in(&reply.text(), name)
}

/// What a scheduler says of its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    leading: bool,
    term: u64,
    term_start_ms: u64,
    until_ms: u64,
    commands: u64,
}

async fn lease(metrics: SocketAddr) -> Option<Lease> {
    Some(Lease {
        leading: metric(metrics, "trellis_scheduler_leading").await? == 1,
        term: metric(metrics, "trellis_scheduler_term").await?,
        term_start_ms: metric(metrics, "trellis_scheduler_term_start_unix_ms").await?,
        until_ms: metric(metrics, "trellis_scheduler_lease_until_unix_ms").await?,
        commands: metric(metrics, "trellis_scheduler_commands_total").await?,
    })
}

/// Waits until the scheduler at `metrics` leads; returns what it says then.
async fn leads(metrics: SocketAddr, who: &str, within: Duration) -> Lease {
    eventually(&format!("{who} to lead"), within, || async move {
        lease(metrics).await.filter(|l| l.leading)
    })
    .await
}

#[tokio::test]
async fn a_leading_scheduler_cut_off_stops_before_another_takes_over_and_never_acts_again() {
    let (lattice, net, relay) = behind_a_cut("leaders").await;
    let t = &lattice.trellis;
    let scheduler = |metrics: SocketAddr| -> Vec<String> {
        let listen = format!("--metrics-listen={metrics}");
        [
            "--allow-unsigned",
            "--scheduler",
            "--scheduler-lease=2",
            "--label=role=scheduler",
            &listen,
        ]
        .map(String::from)
        .to_vec()
    };
    // The first scheduler, behind the namespace, takes the lease; its metrics are reachable
    // over the pair while it is up.
    let cut_metrics = SocketAddr::from((net.inner(), 9464));
    let _cut = t.host_in(&net, &relay.nats_url(), "s-cut", &scheduler(cut_metrics)).await;
    let first = leads(cut_metrics, "s-cut", Duration::from_secs(20)).await;
    let stays_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _stays = t.host_with("s-stays", &scheduler(stays_metrics)).await;
    let _workers = [t.host("w1", &["role=worker"]).await, t.host("w2", &["role=worker"]).await];
    crate::faults::deploy_one_hello_on_workers(t, "first").await;
    let client = t.client().await;
    eventually("hello placed by s-cut", Duration::from_secs(30), || {
        let client = client.clone();
        async move { (running_hello(&client).await.len() == 1).then_some(()) }
    })
    .await;
    let before = lease(cut_metrics).await.expect("s-cut answers");
    assert!(before.leading && before.term == first.term, "{before:?}");
    assert!(before.commands >= 1, "s-cut placed hello: {before:?}");
    assert!(!lease(stays_metrics).await.expect("s-stays answers").leading);

    // Cut: s-stays takes over once the lease lapses, in a term of its own, and acts.
    net.cut().await;
    let cut = Instant::now();
    let second = leads(stays_metrics, "s-stays", Duration::from_secs(30)).await;
    let took_over = cut.elapsed();
    assert!(second.term > first.term, "a new term: {first:?} then {second:?}");
    deploy_greeter(t).await;
    eventually("the new leader places greeter", Duration::from_secs(30), || {
        let client = client.clone();
        async move { (!running(&client, "greeter").await.is_empty()).then_some(()) }
    })
    .await;
    tokio::time::sleep(partition().saturating_sub(cut.elapsed())).await;

    // Heal: s-cut hears that it lost the lease and never acts again; s-stays keeps its term.
    net.heal().await;
    let back =
        eventually(
            "s-cut back",
            Duration::from_secs(60),
            || async move { lease(cut_metrics).await },
        )
        .await;
    for _ in 0..10 {
        let old = lease(cut_metrics).await.unwrap_or(back);
        let new = lease(stays_metrics).await.expect("s-stays answers");
        assert!(!old.leading && old.term == 0, "s-cut does not lead again: {old:?}");
        assert_eq!(old.commands, before.commands, "s-cut sent nothing since the cut: {old:?}");
        assert!(new.leading && new.term == second.term, "s-stays keeps its term: {new:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let old = lease(cut_metrics).await.expect("s-cut answers");
    // Never two at once: the cut-off leader's last lease ended before the new term began (both
    // clocks are this machine's).
    assert!(
        old.until_ms <= second.term_start_ms,
        "s-cut could act until {} but s-stays led from {}",
        old.until_ms,
        second.term_start_ms
    );
    println!(
        "s-stays took over {took_over:?} after the cut; s-cut's lease ended {} ms before",
        second.term_start_ms - old.until_ms
    );
    // Nothing was evicted or doubled.
    assert_eq!(running_hello(&client).await.len(), 1);
    assert!(!running(&client, "greeter").await.is_empty());
}

/// Deploys application `second`: one replica of the greeter component on a worker.
async fn deploy_greeter(t: &Trellis) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("second.yaml");
    let greeter = trellis_tests::component("greeter");
    let yaml = format!(
        "name: second\nversion: '1'\ncomponents:\n  - name: greeter\n    source: {}\n    \
         replicas: 1\n    spread:\n      - name: workers\n        requirements: {{role: worker}}\n",
        greeter.display()
    );
    std::fs::write(&manifest, yaml).unwrap();
    t.ok(&["app", "deploy", manifest.to_str().unwrap()]).await;
}

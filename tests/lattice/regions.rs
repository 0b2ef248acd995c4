//! A two-region lattice from the files in `deploy/nats/`: a 3-node JetStream cluster (region-a)
//! and a leaf node (region-b) dialling out to it, on free loopback ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use trellis_tests::load::{self, Outcome};
use trellis_tests::{
    InnerRelay, NatsServer, Netns, Trellis, component, eventually, free_port, http_request,
};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nats");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DEPLOY}/{name}")).expect("deploy/nats file")
}

/// Rewrites `text`, failing when a line to rewrite is not there (the files changed).
fn rewrite(mut text: String, pairs: &[(String, String)]) -> String {
    for (from, to) in pairs {
        assert!(text.contains(from.as_str()), "`{from}` not in the config");
        text = text.replace(from.as_str(), to);
    }
    text
}

/// The hub cluster and the leaf node, started from deploy/nats/ with ports rewritten.
struct Regions {
    hub: Vec<NatsServer>,
    leaf: NatsServer,
    /// Carries the leaf's link through a network namespace, when it can be cut.
    _link: Option<InnerRelay>,
}

impl Regions {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// [`Self::start`] with `extra` appended to each hub node's configuration.
    async fn start_with(extra: &str) -> Self {
        Self::start_via(extra, None).await
    }

    /// [`Self::start`], the leaf's link to the hub running through `net` (out to a relay
    /// inside it and back), so that cutting `net` cuts the link and nothing else.
    async fn start_across(net: &Netns) -> Self {
        Self::start_via("", Some(net)).await
    }

    async fn start_via(extra: &str, net: Option<&Netns>) -> Self {
        // Hub nodes listen for leaf nodes where the relay inside the namespace reaches them.
        let leaf_listen = net.map_or(Ipv4Addr::LOCALHOST, Netns::outer);
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let leafnodes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut hub = Vec::new();
        for i in 0..3 {
            let mut pairs = vec![
                ("listen: 0.0.0.0:4222".to_owned(), "listen: 127.0.0.1:4222".to_owned()),
                ("http: 0.0.0.0:8222".to_owned(), format!("http: 127.0.0.1:{}", free_port())),
                // The harness gives each server a fresh store directory on its command line.
                ("store_dir: /var/lib/nats".to_owned(), "# store_dir: (the harness's)".to_owned()),
                ("listen: 0.0.0.0:6222".to_owned(), format!("listen: 127.0.0.1:{}", routes[i])),
                (
                    "listen: 0.0.0.0:7422".to_owned(),
                    format!("listen: {leaf_listen}:{}", leafnodes[i]),
                ),
            ];
            for (j, port) in routes.iter().enumerate() {
                pairs.push((
                    format!("nats-route://nats-{}.region-a.example:6222", j + 1),
                    format!("nats-route://127.0.0.1:{port}"),
                ));
            }
            let config = rewrite(read(&format!("cluster/nats-{}.conf", i + 1)), &pairs) + extra;
            // Address, port and store directory come from the harness's command line.
            hub.push(start(&config).await);
        }
        let mut pairs = vec![
            ("listen: 0.0.0.0:4222".to_owned(), "listen: 127.0.0.1:4222".to_owned()),
            ("http: 0.0.0.0:8222".to_owned(), format!("http: 127.0.0.1:{}", free_port())),
        ];
        // Through the namespace: inner port 7001 + j forwards to hub node j's leafnode port.
        let link = match net {
            Some(net) => {
                let routes: Vec<(u16, SocketAddr)> = (0..3u16)
                    .map(|j| (7001 + j, (leaf_listen, leafnodes[usize::from(j)]).into()))
                    .collect();
                Some(net.relay_inside(&routes).await)
            }
            None => None,
        };
        for (j, port) in leafnodes.iter().enumerate() {
            let to = match net {
                Some(net) => format!("nats-leaf://{}:{}", net.inner(), 7001 + j),
                None => format!("nats-leaf://127.0.0.1:{port}"),
            };
            pairs.push((format!("nats-leaf://nats-{}.region-a.example:7422", j + 1), to));
        }
        let leaf = start(&rewrite(read("leaf.conf"), &pairs)).await;
        let regions = Self { hub, leaf, _link: link };
        // A new cluster elects its JetStream leader in a few seconds (longer on a busy
        // machine); hosts joining before that spend their retries creating the lattice's state.
        let nodes: Vec<String> = regions.hub.iter().map(|s| s.url()).collect();
        let nats = async_nats::connect(nodes.as_slice()).await.expect("connect to the hub");
        let js = async_nats::jetstream::new(nats);
        eventually("the hub's JetStream to be ready", Duration::from_secs(60), || {
            let js = js.clone();
            async move { js.query_account().await.ok().map(drop) }
        })
        .await;
        regions
    }

    fn hub_url(&self) -> String {
        self.hub.iter().map(|s| s.url()).collect::<Vec<_>>().join(",")
    }
}

async fn start(config: &str) -> NatsServer {
    let port = free_port();
    NatsServer::start_with_config(Some(port), Some(config)).await.expect("nats-server starts")
}

async fn invocations(t: &Trellis, host: &str, component: &str) -> u64 {
    let inv = t.client().await.inventory(host).await.expect("inventory");
    inv.components.iter().find(|c| c.id == component).map_or(0, |c| c.invocations)
}

#[tokio::test]
async fn a_request_entering_region_b_reaches_region_a_until_region_b_has_a_replica() {
    let mut regions = Regions::start().await;
    // The CLI and region-a hosts use the hub (any of its nodes); region-b hosts the leaf, and
    // reach the lattice's state in the hub's JetStream domain.
    let a = Trellis::new(&regions.hub_url(), "regions");
    let host_a = |labels: &str| {
        vec![
            format!("--label={labels}"),
            "--allow-unsigned".into(),
            "--js-replicas".into(),
            "3".into(),
        ]
    };
    let host_b = |labels: &str| {
        vec![
            format!("--label={labels}"),
            "--allow-unsigned".into(),
            "--nats-url".into(),
            regions.leaf.url(),
            "--js-domain".into(),
            "hub".into(),
        ]
    };
    let a1 = a.host_with("a1", &host_a("region=a")).await;
    let b1 = a.host_with("b1", &host_b("region=b")).await;
    let b2 = a.host_with("b2", &host_b("region=b")).await;

    let hello = component("http-hello");
    let start_hello = |host: String| {
        let (a, hello) = (a.clone(), hello.clone());
        async move {
            let wasm = hello.to_str().expect("utf-8");
            a.ok(&["start", "component", wasm, "--id", "hello", "--host", &host]).await
        }
    };
    start_hello(a1.id.clone()).await;
    a.ok(&["start", "provider", "http-server", "--id", "edge", "--host", &b1.id, "--builtin"])
        .await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let address = format!("address={addr}");
    a.ok(&[
        "link",
        "put",
        "--source",
        "edge",
        "--target",
        "hello",
        "--interface",
        "wasi:http/incoming-handler",
        "--config",
        &address,
    ])
    .await;
    let get = |path: &'static str| async move { http_request(addr, "GET", path, b"").await };
    eventually("region-b's http-server to answer", Duration::from_secs(30), || async move {
        get("/ready").await.ok().filter(|r| r.status == 200)
    })
    .await;
    let reply = get("/from-b").await.expect("request");
    assert_eq!(reply.text(), "hello from trellis, path=/from-b\n");
    assert!(invocations(&a, &a1.id, "hello").await >= 1, "served in region-a");

    // A replica in region-b (not on the edge host): the leaf node keeps calls in region-b.
    start_hello(b2.id.clone()).await;
    let before_a = invocations(&a, &a1.id, "hello").await;
    for _ in 0..20 {
        assert_eq!(get("/local").await.expect("request").status, 200);
    }
    assert_eq!(invocations(&a, &a1.id, "hello").await, before_a, "region-a served none");
    assert!(invocations(&a, &b2.id, "hello").await >= 20, "region-b served them");

    // One hub node dies: calls keep working and the JetStream state (links, config) is still
    // there and writable, on three replicas.
    a.ok(&["config", "put", "settings", "colour=blue"]).await;
    regions.hub[0].kill().await;
    let a = a.via(&regions.hub[1..].iter().map(|s| s.url()).collect::<Vec<_>>().join(","));
    for _ in 0..5 {
        assert_eq!(get("/after-loss").await.expect("request").status, 200);
    }
    eventually("the links and config to be readable", Duration::from_secs(30), || {
        let a = a.clone();
        async move {
            let links = a.cli(&["link", "get", "--output", "json"]).await;
            let config = a.cli(&["config", "get", "settings"]).await;
            let ok = links.status.success()
                && String::from_utf8_lossy(&links.stdout).contains("\"edge\"")
                && String::from_utf8_lossy(&config.stdout).contains("blue");
            ok.then_some(())
        }
    })
    .await;
    eventually("the state to take writes again", Duration::from_secs(30), || {
        let a = a.clone();
        async move {
            a.cli(&["config", "put", "settings", "colour=green"])
                .await
                .status
                .success()
                .then_some(())
        }
    })
    .await;
    // Region-a's host reconnected to a surviving node and still answers.
    eventually("region-a's host to be back", Duration::from_secs(30), || {
        let (a, id) = (a.clone(), a1.id.clone());
        async move { a.client().await.inventory(&id).await.ok().map(drop) }
    })
    .await;
}

#[tokio::test]
async fn cut_off_from_region_a_region_b_serves_its_own_and_the_rest_fail_typed_until_it_returns() {
    let mut regions = Regions::start().await;
    cut_off_from_region_a(&mut regions, Cut::HubDown).await;
}

#[tokio::test]
async fn with_the_leaf_link_cut_region_b_serves_its_own_and_the_rest_fail_typed_until_it_heals() {
    let net = Netns::create().await;
    let mut regions = Regions::start_across(&net).await;
    cut_off_from_region_a(&mut regions, Cut::Link(&net)).await;
}

/// How region-b loses region-a.
#[derive(Clone, Copy)]
enum Cut<'n> {
    /// Every hub node killed, then restarted: the leaf's link closes at once.
    HubDown,
    /// The leaf's link cut in the network (packets dropped, nobody told), then healed.
    Link(&'n Netns),
}

async fn cut_off_from_region_a(regions: &mut Regions, cut: Cut<'_>) {
    let a = Trellis::new(&regions.hub_url(), "cut");
    let a1 = a.host_with("a1", &["--allow-unsigned".into(), "--js-replicas=3".into()]).await;
    let b1 = a
        .host_with(
            "b1",
            &[
                "--allow-unsigned".into(),
                format!("--nats-url={}", regions.leaf.url()),
                "--js-domain=hub".into(),
            ],
        )
        .await;
    let hello = component("http-hello");
    let wasm = hello.to_str().expect("utf-8");
    a.ok(&["start", "component", wasm, "--id", "far", "--host", &a1.id]).await;
    a.ok(&["start", "component", wasm, "--id", "near", "--host", &b1.id]).await;
    // Region-b's own http-server provider, one port per target.
    let mut addrs = Vec::new();
    for (id, target) in [("edge-near", "near"), ("edge-far", "far")] {
        a.ok(&["start", "provider", "http-server", "--id", id, "--host", &b1.id, "--builtin"])
            .await;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let address = format!("address={addr}");
        let interface = "wasi:http/incoming-handler";
        let link = ["link", "put", "--source", id, "--target", target, "--interface", interface];
        a.ok(&[&link[..], &["--config", &address]].concat()).await;
        eventually("region-b's http-server to answer", Duration::from_secs(30), || async move {
            http_request(addr, "GET", "/", b"").await.ok().filter(|r| r.status == 200)
        })
        .await;
        addrs.push(addr);
    }
    let (near, far) = (addrs[0], addrs[1]);

    // Region-a goes away (every hub node, and with it the leaf's link), or the link is cut.
    match cut {
        Cut::HubDown => {
            for node in &mut regions.hub {
                node.kill().await;
            }
        }
        Cut::Link(net) => net.cut().await,
    }
    for _ in 0..10 {
        let reply = http_request(near, "GET", "/", b"").await.expect("near answers");
        assert_eq!(reply.status, 200, "region-b serves its own: {}", reply.text());
    }
    let started = std::time::Instant::now();
    let reply = http_request(far, "GET", "/", b"").await.expect("far refuses");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        matches!(reply.header("trellis-error"), Some("NoResponders" | "Unavailable")),
        "typed: {:?} {}",
        reply.header("trellis-error"),
        reply.text()
    );
    // At once (NoResponders) when the link closed; within a second of silence (Unavailable)
    // while the leaf still believes in a link that was cut; not at the 30 s deadline.
    let took = started.elapsed();
    println!("a call needing region-a failed {:?} after {took:?}", reply.header("trellis-error"));
    assert!(took < Duration::from_secs(10), "at once, not at the deadline: {took:?}");

    // Region-a comes back: calls that need it resume.
    match cut {
        Cut::HubDown => {
            for node in &mut regions.hub {
                node.restart().await.expect("hub node restarts");
            }
        }
        Cut::Link(net) => net.heal().await,
    }
    eventually("calls to region-a to resume", Duration::from_secs(90), || async move {
        http_request(far, "GET", "/", b"").await.ok().filter(|r| r.status == 200)
    })
    .await;
    assert_eq!(http_request(near, "GET", "/", b"").await.unwrap().status, 200);
}

#[tokio::test]
async fn a_rolling_restart_of_the_hub_in_lame_duck_mode_loses_no_write_and_calls_fail_only_typed() {
    let mut regions =
        Regions::start_with("\nlame_duck_duration: \"30s\"\nlame_duck_grace_period: \"1s\"\n")
            .await;
    let a = Trellis::new(&regions.hub_url(), "rolling");
    let args = ["--allow-unsigned".to_owned(), "--js-replicas=3".to_owned()];
    let (front, worker) = (a.host_with("front", &args).await, a.host_with("worker", &args).await);
    let wasm = component("http-hello");
    a.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "hello", "--host", &worker.id])
        .await;
    a.ok(&["start", "provider", "http-server", "--id", "web", "--host", &front.id, "--builtin"])
        .await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let address = format!("address={addr}");
    let interface = "wasi:http/incoming-handler";
    let link = ["link", "put", "--source", "web", "--target", "hello", "--interface", interface];
    a.ok(&[&link[..], &["--config", &address]].concat()).await;
    eventually("the http-server to answer", Duration::from_secs(30), || async move {
        http_request(addr, "GET", "/", b"").await.ok().filter(|r| r.status == 200)
    })
    .await;

    // Calls through both hosts, and acknowledged writes to the lattice's state, throughout.
    let running = Arc::new(AtomicBool::new(true));
    let calls =
        tokio::spawn(load::http_while(addr, "/", 8, Duration::from_secs(60), running.clone()));
    let nodes: Vec<String> = regions.hub.iter().map(|s| s.url()).collect();
    let nats = async_nats::connect(nodes.as_slice()).await.expect("connect to the hub");
    let bucket = async_nats::jetstream::new(nats)
        .get_key_value("TRELLIS_rolling_CONFIG")
        .await
        .expect("the config bucket");
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writes =
        tokio::spawn(write_until_stopped(bucket.clone(), (running.clone(), count.clone())));

    // One node at a time: lame duck (clients move to the others), restart, wait for it.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        regions.hub[i].lame_duck(Duration::from_secs(45)).await;
        regions.hub[i].restart().await.expect("hub node restarts");
        let node = regions.hub[i].url();
        eventually("the node's JetStream to be back", Duration::from_secs(60), || {
            let node = node.clone();
            async move {
                let nats = async_nats::connect(node).await.ok()?;
                async_nats::jetstream::new(nats).query_account().await.ok().map(drop)
            }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.store(false, Ordering::Relaxed);
    let (tally, acked) = (calls.await.unwrap(), writes.await.unwrap());
    println!("{tally}\nwrites acknowledged: {}", acked.len());

    assert_all_read_back(&bucket, &acked).await;
    // Calls were answered, or failed typed while a host moved to another node; none hung.
    assert_eq!(tally.count(&Outcome::TimedOut), 0, "{tally}");
    let typed = tally.typed("Unavailable") + tally.typed("NoResponders");
    assert_eq!(tally.count(&Outcome::Answered) + typed, tally.records.len(), "{tally}");
    assert!(tally.count(&Outcome::Answered) > typed, "{tally}");
}

/// Writes `seq-<n>` keys to `bucket` until `running` turns false; the ones acknowledged, also
/// counted in `count` as they are.
async fn write_until_stopped(
    bucket: async_nats::jetstream::kv::Store,
    (running, count): (Arc<AtomicBool>, Arc<std::sync::atomic::AtomicUsize>),
) -> Vec<u64> {
    let mut acked = Vec::new();
    let mut n = 0u64;
    while running.load(Ordering::Relaxed) {
        n += 1;
        let value = format!("{{\"n\":\"{n}\"}}");
        let put = bucket.put(format!("seq-{n}"), value.into());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), put).await {
            acked.push(n);
            count.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acked
}

/// Every acknowledged write is there, with its value.
async fn assert_all_read_back(bucket: &async_nats::jetstream::kv::Store, acked: &[u64]) {
    assert!(!acked.is_empty(), "some writes were acknowledged");
    for n in acked {
        let entry = eventually("an acknowledged write", Duration::from_secs(30), || {
            let bucket = bucket.clone();
            async move { bucket.get(format!("seq-{n}")).await.ok() }
        })
        .await;
        assert_eq!(entry.as_deref(), Some(format!("{{\"n\":\"{n}\"}}").as_bytes()), "seq-{n}");
    }
}

#[tokio::test]
async fn killing_the_jetstream_leader_of_the_lattices_state_loses_no_acknowledged_write() {
    let mut regions = Regions::start().await;
    let a = Trellis::new(&regions.hub_url(), "leader");
    // A host creates the lattice's buckets, on three replicas.
    let _host = a.host_with("h", &["--allow-unsigned".into(), "--js-replicas=3".into()]).await;
    let nodes: Vec<String> = regions.hub.iter().map(|s| s.url()).collect();
    let nats = async_nats::connect(nodes.as_slice()).await.expect("connect to the hub");
    let js = async_nats::jetstream::new(nats);
    let bucket = js.get_key_value("TRELLIS_leader_CONFIG").await.expect("the config bucket");
    let running = Arc::new(AtomicBool::new(true));
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writes =
        tokio::spawn(write_until_stopped(bucket.clone(), (running.clone(), count.clone())));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The node leading the bucket's stream dies in the middle of the writes.
    let mut stream = js.get_stream("KV_TRELLIS_leader_CONFIG").await.expect("the stream");
    let info = stream.info().await.expect("stream info");
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone()).expect("a leader");
    let index: usize = leader.strip_prefix("nats-").and_then(|n| n.parse().ok()).expect("nats-N");
    let before = count.load(Ordering::Relaxed);
    regions.hub[index - 1].kill().await;
    eventually("writes to be acknowledged again", Duration::from_secs(60), || {
        let count = count.clone();
        async move { (count.load(Ordering::Relaxed) > before + 20).then_some(()) }
    })
    .await;
    running.store(false, Ordering::Relaxed);
    let acked = writes.await.unwrap();
    println!("leader {leader} killed after {before} writes; acknowledged: {}", acked.len());
    assert_all_read_back(&bucket, &acked).await;
    // A new leader took over among the other two.
    let info = stream.info().await.expect("stream info");
    let now = info.cluster.as_ref().and_then(|c| c.leader.clone()).expect("a new leader");
    assert_ne!(now, leader);
}

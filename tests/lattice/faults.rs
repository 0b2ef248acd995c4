//! Faults from outside the processes, under load: each scenario runs a load generator
//! ([`trellis_tests::load`]), prints what every call got, and asserts the promise: a call is
//! answered or refused with a typed error before its deadline. See docs/reliability.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures::StreamExt;
use trellis_lattice::envelope::unix_ms;
use trellis_proto as pb;
use trellis_tests::load::{self, Outcome};
use trellis_tests::{free_port, http_request};

use crate::Lattice;

/// A counter of a host's `/metrics` (its one series).
async fn metric(metrics: SocketAddr, name: &str) -> u64 {
    let text = http_request(metrics, "GET", "/metrics", b"").await.expect("metrics").text();
    metric_in(&text, name).unwrap_or_else(|| panic!("/metrics has no {name}:\n{text}"))
}

/// The value of series `name` in a `/metrics` text (its first, when it has labels).
pub(crate) fn metric_in(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(['{', ' '])))
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}

#[tokio::test]
async fn a_flood_beyond_a_hosts_intake_is_shed_at_once_with_503_and_nothing_times_out() {
    let lattice = Lattice::new("flood").await;
    let t = &lattice.trellis;
    let front = t.host("front", &[]).await;
    // One call at a time, so an intake of four (one running, three waiting) overflows at once.
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let back_args = [
        "--allow-unsigned".to_owned(),
        "--max-instances=1".to_owned(),
        format!("--metrics-listen={metrics}"),
    ];
    let back = t.host_with("back", &back_args).await;
    lattice.start_hello("hello", &["--host", &back.id]).await;
    let addr = lattice.serve_http(&front.id, "hello", &[]).await;
    assert_eq!(http_request(addr, "GET", "/", b"").await.unwrap().status, 200);

    // 64 callers at once, each call taking 500 ms, against one slot.
    let tally = load::http(addr, "/sleep/500", (64, 64), Duration::from_secs(60)).await;
    println!("{tally}");
    assert_eq!(tally.count(&Outcome::TimedOut), 0, "no caller waits out its deadline");
    assert_eq!(tally.typed("Denied"), 0, "overload is not a denial");
    let shed = Outcome::Typed("Unavailable".to_owned());
    assert!(tally.count(&Outcome::Answered) >= 1, "the calls the host took were answered");
    assert!(tally.count(&shed) >= 32, "most of the flood was shed");
    assert_eq!(tally.count(&Outcome::Answered) + tally.count(&shed), 64, "{tally}");
    for refused in tally.with(&shed) {
        assert!(
            refused.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("retry-after") && v == "1"),
            "a 503 says when to try again: {refused:?}"
        );
    }
    // At once: a shed call is not held until the admitted ones are done (4 x 500 ms).
    let slowest = tally.slowest(&shed).unwrap();
    assert!(slowest < Duration::from_secs(15), "shed calls waited {slowest:?}");
    assert!(metric(metrics, "trellis_calls_shed_total").await > 0);
    assert_eq!(metric(metrics, "trellis_nats_slow_consumer_total").await, 0);
}

#[tokio::test]
async fn a_control_plane_flood_costs_bounded_work_and_calls_keep_being_answered() {
    let lattice = Lattice::new("ctlflood").await;
    let t = &lattice.trellis;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let args = ["--allow-unsigned".to_owned(), format!("--metrics-listen={metrics}")];
    let host = t.host_with("h", &args).await;
    lattice.start_hello("hello", &["--host", &host.id]).await;
    let addr = lattice.serve_http(&host.id, "hello", &[]).await;

    // Another client floods the host: one stop request its operator signed, sent 3,000 times
    // (each costs a signature check before it is found replayed), and 1,000 pings.
    let nats = async_nats::connect(&lattice.nats.url()).await.unwrap();
    let mut replies = nats.subscribe("_INBOX.flood.>").await.unwrap();
    trellis_lattice::connect::sync_with_server(&nats).await.unwrap();
    let subject = format!("trellis.ctlflood.ctl.host.{}.stop_component", host.id);
    let body: bytes::Bytes =
        prost::Message::encode_to_vec(&pb::StopComponentRequest { component_id: "ghost".into() })
            .into();
    let headers = t.operator.sign(&subject, &body, unix_ms() + 60_000);
    let started = Instant::now();
    let flood = {
        let nats = nats.clone();
        tokio::spawn(async move {
            for i in 0..4000 {
                let reply = format!("_INBOX.flood.{i}");
                if i % 4 == 3 {
                    let ping = "trellis.ctlflood.ctl.hosts.ping";
                    nats.publish_with_reply(ping, reply, bytes::Bytes::new()).await.unwrap();
                } else {
                    let (s, h, b) = (subject.clone(), headers.clone(), body.clone());
                    nats.publish_with_reply_and_headers(s, reply, h, b).await.unwrap();
                }
            }
            nats.flush().await.unwrap();
        })
    };
    // Calls keep being answered meanwhile.
    let tally = load::http(addr, "/", (300, 8), Duration::from_secs(30)).await;
    println!("{tally}");
    flood.await.unwrap();
    assert_eq!(tally.count(&Outcome::Answered), 300, "{tally}");

    // Every stop request was answered: checked (found missing once, replayed after) or refused
    // as busy before any check.
    let mut codes = std::collections::BTreeMap::<i32, usize>::new();
    while codes.values().sum::<usize>() < 3000 {
        let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(10), replies.next()).await
        else {
            break;
        };
        if let Ok(reply) = <pb::StopComponentReply as prost::Message>::decode(msg.payload.clone())
            && let Some(status) = reply.status
        {
            *codes.entry(status.code).or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    let code = |c: pb::ErrorCode| codes.get(&(c as i32)).copied().unwrap_or(0);
    let (busy, checked) =
        (code(pb::ErrorCode::Busy), code(pb::ErrorCode::NotFound) + code(pb::ErrorCode::Denied));
    println!("stop requests: {checked} checked, {busy} busy, in {elapsed:?}: {codes:?}");
    assert_eq!(code(pb::ErrorCode::NotFound), 1, "the request ran once, then was a replay");
    assert!(busy > 0, "the flood was refused before any check");
    // At most 200 signature checks a second (generously counted).
    let bound = 200 * (elapsed.as_secs() as usize + 2);
    assert!(checked <= bound, "{checked} checks in {elapsed:?}");
    assert!(metric(metrics, "trellis_requests_busy_total").await >= busy as u64);
}

#[tokio::test]
async fn a_host_waits_for_nats_not_ready_meanwhile_and_gives_up_when_told_to() {
    let (nats_port, health) = (free_port(), free_port());
    let health: SocketAddr = format!("127.0.0.1:{health}").parse().unwrap();
    let started = Instant::now();
    let mut host = tokio::process::Command::new(trellis_tests::bin("trellis"))
        .args(["host", "--name", "lonely", "--allow-unsigned", "--nats-connect-timeout", "3"])
        .arg(format!("--health-listen={health}"))
        .env("TRELLIS_NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn trellis host");
    // Alive, not ready, while NATS is awaited.
    let readyz = trellis_tests::eventually("/readyz", Duration::from_secs(10), || async move {
        http_request(health, "GET", "/readyz", b"").await.ok()
    })
    .await;
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    assert!(readyz.text().contains("connecting to NATS"), "{}", readyz.text());
    assert_eq!(http_request(health, "GET", "/livez", b"").await.unwrap().status, 200);
    // Then it gives up, naming what it could not reach and the flag.
    let status = tokio::time::timeout(Duration::from_secs(30), host.wait())
        .await
        .expect("the host gives up")
        .unwrap();
    let waited = started.elapsed();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut host.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{nats_port}")), "{stderr}");
    assert!(stderr.contains("--nats-connect-timeout"), "{stderr}");
    assert!(waited >= Duration::from_secs(3), "gave up after {waited:?}, before its timeout");
}

/// http-hello on hosts `a` and `b`, served over HTTP by a third host.
struct Replicas {
    lattice: Lattice,
    addr: SocketAddr,
    b: trellis_tests::Host,
    /// The front host and `a`, kept running.
    _hosts: [trellis_tests::Host; 2],
}

async fn two_replicas_behind_http(name: &str) -> Replicas {
    let lattice = Lattice::new(name).await;
    let t = &lattice.trellis;
    let front = t.host("front", &[]).await;
    let (a, b) = (t.host("a", &[]).await, t.host("b", &[]).await);
    lattice.start_hello("hello", &["--host", &a.id]).await;
    lattice.start_hello("hello", &["--host", &b.id]).await;
    let addr = lattice.serve_http(&front.id, "hello", &[]).await;
    assert_eq!(http_request(addr, "GET", "/", b"").await.unwrap().status, 200);
    Replicas { lattice, addr, b, _hosts: [front, a] }
}

#[tokio::test]
async fn stopping_and_starting_a_replica_under_load_loses_no_call() {
    let Replicas { lattice, addr, b, _hosts } = two_replicas_behind_http("churn").await;
    let t = &lattice.trellis;

    // Calls keep coming while b's replica is stopped and started again, five times.
    let running = Arc::new(AtomicBool::new(true));
    let load =
        tokio::spawn(load::http_while(addr, "/", 32, Duration::from_secs(60), running.clone()));
    let wasm = trellis_tests::component("http-hello");
    let wasm = wasm.to_str().unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        t.ok(&["stop", "component", "hello", "--host", &b.id]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        t.ok(&["start", "component", wasm, "--id", "hello", "--host", &b.id]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let tally = load.await.unwrap();
    println!("{tally}");
    let answered = tally.count(&Outcome::Answered);
    assert_eq!(answered, tally.records.len(), "every call answered:\n{tally}");
    assert!(answered > 1000, "calls ran throughout: {answered}");
    // b took calls between its stops (so stops hit a replica that was serving).
    let served_by_b = t.client().await.inventory(&b.id).await.unwrap();
    let hello = served_by_b.components.iter().find(|c| c.id == "hello").unwrap();
    assert!(hello.invocations > 0, "b's last replica served calls");
}

#[tokio::test]
async fn sigterm_under_load_finishes_calls_in_flight_and_loses_none() {
    let Replicas { lattice, addr, mut b, _hosts } = two_replicas_behind_http("sigterm-load").await;
    let t = &lattice.trellis;

    // Calls of 50 ms each keep coming while b is told to stop.
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn(load::http_while(
        addr,
        "/sleep/50",
        32,
        Duration::from_secs(60),
        running.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served_by_b = |t: trellis_tests::Trellis, id: String| async move {
        let inventory = t.client().await.inventory(&id).await.unwrap();
        inventory.components.iter().find(|c| c.id == "hello").map_or(0, |c| c.invocations)
    };
    let before = served_by_b(t.clone(), b.id.clone()).await;
    assert!(before > 0, "b serves calls when it is told to stop");
    let status = b.terminate().await;
    assert!(status.success(), "b exits 0: {status}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let tally = load.await.unwrap();
    println!("{tally}");
    let answered = tally.count(&Outcome::Answered);
    assert_eq!(answered, tally.records.len(), "every call answered:\n{tally}");
}

#[tokio::test]
async fn a_frozen_host_fails_the_calls_it_holds_typed_and_serves_again_once_thawed() {
    let Replicas { lattice, addr, b, _hosts } = two_replicas_behind_http("sigstop").await;
    let t = &lattice.trellis;
    // A custom-WIT function too, called as a host calls (signed), on both replicas' hosts.
    let greeter = trellis_tests::component("greeter");
    let greeter = greeter.to_str().unwrap();
    let hosts = t.client().await.hosts(Duration::from_secs(1)).await.unwrap();
    for host in hosts.iter().filter(|h| h.name == "a" || h.name == "b") {
        t.ok(&["start", "component", greeter, "--id", "greeter", "--host", &host.id]).await;
    }
    let signer = trellis_lattice::signing::Signer::new(nkeys::KeyPair::new_server(), None);
    let caller = t.client().await.with_signer(signer);
    let mut args = Vec::new();
    rmpv::encode::write_value(&mut args, &rmpv::Value::Array(vec!["x".into()])).unwrap();
    let served_by_b = |t: trellis_tests::Trellis, id: String| async move {
        let inventory = t.client().await.inventory(&id).await.ok()?;
        inventory.components.iter().find(|c| c.id == "hello").map(|c| c.invocations)
    };
    // Calls of 50 ms keep coming; b is frozen (SIGSTOP) for 4 s with some of them running,
    // while the server, which sees a live connection, keeps handing it its share.
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn(load::http_while(
        addr,
        "/sleep/50",
        16,
        Duration::from_secs(60),
        running.clone(),
    ));
    let greets = {
        let (caller, running) = (caller.clone(), running.clone());
        let greet = ("greeter", "trellis:test/types", "greet");
        let timeout = Duration::from_secs(30);
        tokio::spawn(async move {
            load::invoke_while(&caller, greet, args.into(), (8, timeout), running).await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = served_by_b(t.clone(), b.id.clone()).await.expect("b answers");
    assert!(before > 0, "b serves calls when it is frozen");
    b.freeze();
    tokio::time::sleep(Duration::from_secs(4)).await;
    b.thaw();
    // Once thawed, b runs what it was handed and serves its share again.
    let thawed = trellis_tests::eventually("b to serve again", Duration::from_secs(20), || {
        let t = t.clone();
        let id = b.id.clone();
        async move { served_by_b(t, id).await.filter(|n| *n > before) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = served_by_b(t.clone(), b.id.clone()).await.expect("b answers");
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let tally = load.await.unwrap();
    let greeted = greets.await.unwrap();
    println!("{tally}\nb served {before} calls before the freeze, {thawed} then {after} after");
    println!("greeter, invoked:\n{greeted}");
    let unavailable = Outcome::Typed("Unavailable".to_owned());
    assert!(greeted.count(&unavailable) >= 1, "b held greets too:\n{greeted}");
    assert_eq!(
        greeted.count(&Outcome::Answered) + greeted.count(&unavailable),
        greeted.records.len(),
        "greets answered or failed typed, none timed out:\n{greeted}"
    );
    let frozen = Outcome::Typed("Unavailable".to_owned());
    assert_eq!(tally.count(&Outcome::TimedOut), 0, "no call waits out its deadline:\n{tally}");
    assert!(tally.count(&frozen) >= 1, "the calls b held fail:\n{tally}");
    assert_eq!(
        tally.count(&Outcome::Answered) + tally.count(&frozen),
        tally.records.len(),
        "the rest are answered:\n{tally}"
    );
    let slowest = tally.slowest(&frozen).unwrap();
    assert!(slowest < Duration::from_secs(4), "refused only after {slowest:?}");
    assert!(after > thawed, "b keeps serving after the thaw ({thawed} then {after})");
}

#[tokio::test]
async fn a_cycle_of_component_calls_ends_at_the_depth_limit_with_a_typed_error() {
    const TYPES: &str = "trellis:test/types";
    let lattice = Lattice::new("cycle").await;
    let t = &lattice.trellis;
    let (h1, h2) = (t.host("h1", &[]).await, t.host("h2", &[]).await);
    let start = |name: &'static str, id: &'static str, host: String| async move {
        let wasm = trellis_tests::component(name);
        t.ok(&["start", "component", wasm.to_str().unwrap(), "--id", id, "--host", &host]).await;
    };
    start("caller", "caller", h1.id.clone()).await;
    start("greeter", "greeter", h1.id.clone()).await;
    start("relay", "ra", h1.id.clone()).await;
    start("relay", "rb", h2.id.clone()).await;
    let link = |source: &'static str, target: &'static str| async move {
        t.ok(&["link", "put", "--source", source, "--interface", TYPES, "--target", target]).await;
    };
    // caller → ra (h1) → rb (h2) → ra → ...: in process and across hosts in turn.
    link("caller", "ra").await;
    link("ra", "rb").await;
    link("rb", "ra").await;
    let addr = lattice.serve_http(&h1.id, "caller", &[]).await;

    let started = Instant::now();
    let reply = http_request(addr, "GET", "/greet/x", b"").await.unwrap();
    let took = started.elapsed();
    let text = reply.text();
    assert_eq!(reply.status, 500, "{text}");
    assert!(text.contains("BadRequest") && text.contains("calls deep"), "{text}");
    assert!(text.contains("cycle"), "says what is probably wrong: {text}");
    assert!(took < Duration::from_secs(15), "ended by the limit, not a deadline: {took:?}");

    // The hosts keep serving: the same chain, broken at rb, answers.
    link("rb", "greeter").await;
    trellis_tests::eventually("the chain to answer", Duration::from_secs(10), || async move {
        let reply = http_request(addr, "GET", "/greet/x", b"").await.ok()?;
        (reply.status == 200).then(|| assert!(reply.text().contains("hello, x"), "{reply:?}"))
    })
    .await;
}

#[tokio::test]
async fn calls_in_flight_on_a_killed_host_fail_typed_at_once_and_the_rest_are_answered() {
    let Replicas { lattice, addr, mut b, _hosts } = two_replicas_behind_http("sigkill").await;
    let t = &lattice.trellis;
    // Calls of 300 ms each keep coming; b is killed with some of them running.
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn(load::http_while(
        addr,
        "/sleep/300",
        32,
        Duration::from_secs(60),
        running.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let inventory = t.client().await.inventory(&b.id).await.unwrap();
    let hello = inventory.components.iter().find(|c| c.id == "hello").unwrap();
    assert!(hello.invocations > 0, "b serves calls when it is killed");
    b.kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let tally = load.await.unwrap();
    println!("{tally}");
    let lost = Outcome::Typed("Unavailable".to_owned());
    assert_eq!(tally.count(&Outcome::TimedOut), 0, "no call waits out its deadline:\n{tally}");
    assert!(tally.count(&lost) >= 1, "the calls b was running fail:\n{tally}");
    assert_eq!(
        tally.count(&Outcome::Answered) + tally.count(&lost),
        tally.records.len(),
        "the rest are answered:\n{tally}"
    );
    // Typed well before the 30 s deadline (the caller hears nothing for a second).
    let slowest = tally.slowest(&lost).unwrap();
    assert!(slowest < Duration::from_secs(10), "failed after {slowest:?}");
}

#[tokio::test]
async fn with_production_heartbeats_and_lease_a_killed_hosts_replica_is_re_placed_in_time() {
    // The defaults of `trellis host`: a heartbeat every 3 s, gone after 3 missed, a 6 s lease.
    let lattice = Lattice::new("heal-defaults").await;
    let t = &lattice.trellis;
    let args = |extra: &[&str]| -> Vec<String> {
        ["--allow-unsigned", "--heartbeat-interval=3"]
            .iter()
            .chain(extra)
            .map(|a| a.to_string())
            .collect()
    };
    let _scheduler = t.host_with("s", &args(&["--scheduler", "--label=role=scheduler"])).await;
    let mut workers = [
        t.host_with("w1", &args(&["--label=role=worker"])).await,
        t.host_with("w2", &args(&["--label=role=worker"])).await,
    ];
    deploy_one_hello_on_workers(t, "heal").await;
    let runs_on = |t: trellis_tests::Trellis| async move {
        let out = t.ok(&["app", "status", "heal", "--output", "json"]).await;
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        status["status"]["workloads"][0]["hosts"]
            .as_array()
            .map(|h| h.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let placed = runs_on(t.clone()).await;
    assert_eq!(placed.len(), 1, "{placed:?}");
    let victim = usize::from(placed[0] == "w2");
    let killed = Instant::now();
    workers[victim].kill().await;
    let survivor = ["w1", "w2"][1 - victim];
    trellis_tests::eventually("the replica to be re-placed", Duration::from_secs(60), || {
        let t = t.clone();
        async move { (runs_on(t).await == [survivor]).then_some(()) }
    })
    .await;
    let took = killed.elapsed();
    println!("re-placed {took:?} after SIGKILL, with production heartbeats and lease");
    // docs/reliability.md: 3 missed heartbeats of 3 s, then a start: about 10 s; generously 30.
    assert!(took < Duration::from_secs(30), "re-placed after {took:?}");
}

#[tokio::test]
async fn a_scheduler_cut_off_from_nats_evicts_nothing_when_the_bus_returns() {
    let mut lattice = Lattice::new("cutoff").await;
    let t = lattice.trellis.clone();
    let scheduler_args: Vec<String> =
        ["--allow-unsigned", "--scheduler", "--scheduler-lease=2", "--label=role=scheduler"]
            .map(String::from)
            .to_vec();
    let _s = t.host_with("s", &scheduler_args).await;
    let workers = [t.host("w1", &["role=worker"]).await, t.host("w2", &["role=worker"]).await];
    deploy_one_hello_on_workers(&t, "steady").await;
    let client = t.client().await;
    let request =
        trellis_lattice::http::encode(&trellis_lattice::http::HttpRequest::get("/")).unwrap();
    let invoke = || {
        let (client, request) = (client.clone(), request.clone());
        async move {
            let (iface, handle) =
                (trellis_lattice::http::INCOMING_HANDLER, trellis_lattice::http::HANDLE);
            client.invoke("hello", iface, handle, request.into(), Duration::from_secs(5)).await
        }
    };
    for _ in 0..3 {
        invoke().await.expect("hello answers");
    }
    let served = |client: trellis_lattice::client::LatticeClient, id: String| async move {
        let inventory = client.inventory(&id).await.ok()?;
        inventory.components.iter().find(|c| c.id == "hello").map(|c| c.invocations)
    };
    let runs: Vec<Option<u64>> =
        futures::future::join_all(workers.iter().map(|w| served(client.clone(), w.id.clone())))
            .await;
    let home = runs.iter().position(Option::is_some).expect("placed on a worker");
    assert_eq!(runs[home], Some(3), "{runs:?}");

    // NATS goes away for longer than three missed heartbeats, then returns. Everyone lost the
    // bus; nobody died.
    lattice.nats.kill().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    lattice.nats.restart().await.expect("nats-server restarts");
    let client = t.client().await;
    // Long enough for the scheduler to act on anything it concluded.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after: Vec<Option<u64>> =
        futures::future::join_all(workers.iter().map(|w| served(client.clone(), w.id.clone())))
            .await;
    assert_eq!(after[home], Some(3), "the replica was never stopped or restarted: {after:?}");
    assert_eq!(after[1 - home], None, "nor started elsewhere: {after:?}");
}

/// Deploys application `name`: one replica of http-hello on a host labelled `role=worker`.
pub(crate) async fn deploy_one_hello_on_workers(t: &trellis_tests::Trellis, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join(format!("{name}.yaml"));
    let hello = trellis_tests::component("http-hello");
    let yaml = format!(
        "name: {name}\nversion: '1'\ncomponents:\n  - name: hello\n    source: {}\n    replicas: 1\n    spread:\n      - name: workers\n        requirements: {{role: worker}}\n",
        hello.display()
    );
    std::fs::write(&manifest, yaml).unwrap();
    t.ok(&["app", "deploy", manifest.to_str().unwrap()]).await;
}

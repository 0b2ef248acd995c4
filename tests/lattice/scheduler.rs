//! The scheduler: applications deployed from manifests, spread by labels, healed when hosts die,
//! led by one of several schedulers, kept across NATS restarts, rolled out and back under load.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_tests::{OciRegistry, Trellis, component, eventually, free_port, http_request};

use crate::Lattice;

mod autoscale;
mod store;
mod zero;

/// Hosts that run a scheduler, with a short lease so takeovers are quick.
pub(crate) fn scheduler_args(labels: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = labels.iter().map(|l| format!("--label={l}")).collect();
    args.extend(["--allow-unsigned", "--scheduler", "--scheduler-lease", "2"].map(String::from));
    args
}

/// Writes `yaml` to a manifest file in `dir`.
pub(crate) fn manifest(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write manifest");
    path
}

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

async fn status(t: &Trellis, app: &str) -> Value {
    let out = t.ok(&["app", "status", app, "--output", "json"]).await;
    serde_json::from_str(&out).expect("status JSON")
}

/// Host names running `id` as the app's status says.
fn hosts_of(status: &Value, id: &str) -> Vec<String> {
    let workloads = status["status"]["workloads"].as_array().cloned().unwrap_or_default();
    let w = workloads.iter().find(|w| w["name"] == id).cloned().unwrap_or_default();
    let mut hosts: Vec<String> = w["hosts"]
        .as_array()
        .map(|a| a.iter().filter_map(|h| h.as_str().map(String::from)).collect())
        .unwrap_or_default();
    hosts.sort();
    hosts
}

#[tokio::test]
async fn replicas_spread_by_weight_and_move_off_a_killed_host() {
    let lattice = Lattice::new("sched-spread").await;
    let t = &lattice.trellis;
    let _a1 = t.host_with("a1", &scheduler_args(&["zone=a"])).await;
    let _a2 = t.host("a2", &["zone=a"]).await;
    let _a3 = t.host("a3", &["zone=a"]).await;
    let mut b1 = t.host_with("b1", &scheduler_args(&["zone=b"])).await;
    let mut b2 = t.host("b2", &["zone=b"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = component("http-hello");
    let m = manifest(
        dir.path(),
        "spread.yaml",
        &format!(
            "name: spread\nversion: '1'\ncomponents:\n  - name: hello\n    source: {}\n    replicas: 3\n    spread:\n      - name: zone-a\n        requirements: {{zone: a}}\n        weight: 2\n      - name: zone-b\n        requirements: {{zone: b}}\n        weight: 1\n",
            hello.display()
        ),
    );
    let out = t.ok(&["app", "deploy", path(&m)]).await;
    assert!(out.contains("spread 1: deployed"), "{out}");
    let s = status(t, "spread").await;
    let placed = hosts_of(&s, "hello");
    assert_eq!(placed.iter().filter(|h| h.starts_with('a')).count(), 2, "{placed:?}");
    assert_eq!(placed.iter().filter(|h| h.starts_with('b')).count(), 1, "{placed:?}");

    // Kill the zone-b host that runs it (b1 or b2); the other zone-b host takes over.
    let victim = placed.iter().find(|h| h.starts_with('b')).cloned().expect("a b host");
    let killed_at = Instant::now();
    if victim == "b1" {
        b1.kill().await
    } else {
        b2.kill().await
    }
    let survivor = if victim == "b1" { "b2" } else { "b1" };
    let client = t.client().await;
    eventually("the replica to move to the other zone-b host", Duration::from_secs(30), || {
        let (t, victim) = (t.clone(), victim.clone());
        async move {
            let s = status(&t, "spread").await;
            let hosts = hosts_of(&s, "hello");
            (hosts.contains(&survivor.to_owned()) && !hosts.contains(&victim)).then_some(())
        }
    })
    .await;
    println!("re-placed after SIGKILL in {:.1} s", killed_at.elapsed().as_secs_f64());
    // The status agrees with what the surviving host runs.
    let hosts = client.hosts(Duration::from_millis(500)).await.expect("hosts");
    let id = &hosts.iter().find(|h| h.name == survivor).expect("survivor").id;
    let inv = client.inventory(id).await.expect("inventory");
    assert!(inv.components.iter().any(|c| c.id == "hello"), "{inv:?}");
}

#[tokio::test]
async fn another_scheduler_takes_over_when_the_leader_dies() {
    let lattice = Lattice::new("sched-leader").await;
    let t = &lattice.trellis;
    let mut s1 = t.host_with("s1", &scheduler_args(&["role=worker"])).await;
    let mut s2 = t.host_with("s2", &scheduler_args(&["role=worker"])).await;
    let _w = t.host("w", &["role=worker"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = |version: &str, replicas: u32| {
        format!(
            "name: lead\nversion: '{version}'\ncomponents:\n  - name: hello\n    source: {}\n    replicas: {replicas}\n",
            component("http-hello").display()
        )
    };
    t.ok(&["app", "deploy", path(&manifest(dir.path(), "v1.yaml", &yaml("1", 1)))]).await;
    let leader =
        status(t, "lead").await["status"]["scheduler"].as_str().expect("leader").to_owned();
    let (dead, alive) = if leader == s1.id { (&mut s1, "s2") } else { (&mut s2, "s1") };
    dead.kill().await;
    let killed_at = Instant::now();
    // The next version is placed by the other scheduler.
    t.ok(&["app", "deploy", path(&manifest(dir.path(), "v2.yaml", &yaml("2", 2))), "--wait", "60"])
        .await;
    let s = status(t, "lead").await;
    let new_leader = s["status"]["scheduler"].as_str().expect("leader");
    assert_ne!(new_leader, leader, "{s}");
    let hosts = hosts_of(&s, "hello");
    assert_eq!(hosts.len(), 2, "{s}");
    assert!(hosts.iter().all(|h| h == alive || h == "w"), "{s}");
    println!(
        "new leader placed v2 {:.1} s after the old one died",
        killed_at.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn applications_survive_a_nats_restart() {
    let mut lattice = Lattice::new("sched-restart").await;
    let t = lattice.trellis.clone();
    let _h = t.host_with("h", &scheduler_args(&[])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let m = manifest(
        dir.path(),
        "app.yaml",
        &format!(
            "name: durable\nversion: '1'\ncomponents:\n  - name: hello\n    source: {}\nconfig:\n  greeting: {{text: hi}}\n",
            component("http-hello").display()
        ),
    );
    t.ok(&["app", "deploy", path(&m)]).await;
    lattice.nats.restart().await.expect("nats-server restarts");
    // JetStream on file storage: the record, its status and its config are still there.
    let s = eventually("the app to be readable again", Duration::from_secs(30), || {
        let t = t.clone();
        async move {
            let out = t.cli(&["app", "status", "durable", "--output", "json"]).await;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        }
    })
    .await;
    let s: Value = serde_json::from_str(&s).expect("json");
    assert_eq!(s["current"], "1", "{s}");
    assert!(t.ok(&["config", "get", "greeting"]).await.contains("hi"));
    // And the scheduler still keeps it placed.
    eventually("the app to stay deployed", Duration::from_secs(30), || {
        let t = t.clone();
        async move {
            let s = status(&t, "durable").await;
            (s["status"]["state"] == "deployed" && hosts_of(&s, "hello") == ["h"]).then_some(())
        }
    })
    .await;
}

/// Counts requests that did not answer 200 while the load runs.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match http_request(addr, "GET", "/load", b"").await {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                            Ok(r) => {
                                eprintln!("failed request: {} {}", r.status, r.text());
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => {
                                eprintln!("failed request: {e}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Self { stop, ok, failed, tasks }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

#[tokio::test]
async fn rollout_and_rollbacks_under_load_fail_no_request() {
    let lattice = Lattice::new("sched-rollout").await;
    let t = &lattice.trellis;
    let _edge = t.host_with("edge", &scheduler_args(&["role=edge"])).await;
    let _w1 = t.host("w1", &["role=worker"]).await;
    let _w2 = t.host("w2", &["role=worker"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let yaml = |version: &str, source: &Path| {
        format!(
            "name: shop\nversion: '{version}'\ncomponents:\n  - name: web\n    source: {}\n    replicas: 2\n    requirements: {{role: worker}}\nproviders:\n  - name: front\n    kind: http-server\n    builtin: true\n    requirements: {{role: edge}}\nlinks:\n  - source: front\n    target: web\n    interface: wasi:http/incoming-handler\n    config: {{address: '{addr}'}}\n",
            source.display()
        )
    };
    let v1 = manifest(dir.path(), "v1.yaml", &yaml("1", &component("http-hello")));
    t.ok(&["app", "deploy", path(&v1)]).await;
    // `deployed` waits for the http-server to apply its link: it answers at once.
    let reply = http_request(addr, "GET", "/ready", b"").await.expect("the front listens");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let load = Load::start(addr, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new version rolls out host by host.
    let v2 = manifest(dir.path(), "v2.yaml", &yaml("2", &component("http-hello-v020")));
    t.ok(&["app", "deploy", path(&v2)]).await;
    let reply = http_request(addr, "GET", "/which", b"").await.expect("request");
    assert!(reply.text().starts_with("hello from wasi 0.2.0"), "{}", reply.text());

    // A broken version fails on its first host and goes back to 2 by itself.
    let v3 = manifest(dir.path(), "v3.yaml", &yaml("3", &component("cli-only")));
    let err = t.fails(&["app", "deploy", path(&v3)]).await;
    assert!(err.contains("shop 3 failed and was rolled back to 2"), "{err}");
    let s = status(t, "shop").await;
    assert_eq!(s["current"], "2", "{s}");

    // And an operator goes back to 1.
    t.ok(&["app", "rollback", "shop", "1"]).await;
    let reply = http_request(addr, "GET", "/which", b"").await.expect("request");
    assert!(reply.text().starts_with("hello from trellis"), "{}", reply.text());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed) = load.finish().await;
    println!("{ok} requests answered during the rollout and rollbacks, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0, "no request fails during a rollout or a rollback");

    let history = t.ok(&["app", "history", "shop", "--output", "json"]).await;
    let history: Value = serde_json::from_str(&history).expect("json");
    let actions: Vec<String> = history
        .as_array()
        .expect("list")
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["action"].as_str().unwrap_or(""),
                c["version"].as_str().unwrap_or("")
            )
        })
        .collect();
    for expected in [
        "deploy 1",
        "deployed 1",
        "deploy 2",
        "deployed 2",
        "deploy 3",
        "automatic-rollback 3",
        "rollback 1",
    ] {
        assert!(actions.contains(&expected.to_owned()), "{expected} in {actions:?}");
    }

    // Undeploy stops everything and removes the link.
    t.ok(&["app", "undeploy", "shop"]).await;
    let links = t.ok(&["get", "links", "--output", "json"]).await;
    assert_eq!(links.trim(), "[]", "{links}");
    let inventories = t.client().await.inventories(Duration::from_millis(500)).await.expect("inv");
    for (_, inv) in inventories {
        let inv = inv.expect("inventory");
        assert!(inv.components.is_empty() && inv.providers.is_empty(), "{inv:?}");
    }
}

#[tokio::test]
async fn bad_manifests_are_refused_whole_and_unplaceable_apps_exit_2() {
    let lattice = Lattice::new("sched-bad").await;
    let t = &lattice.trellis;
    let _h = t.host_with("h", &scheduler_args(&["zone=a"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = component("http-hello");
    let good = format!(
        "name: bad\nversion: '1'\ncomponents:\n  - name: hello\n    source: {}\n    replicas: 2\n",
        hello.display()
    );
    for (broken, expected) in [
        (good.replace("replicas: 2", "replicas: two"), "line 6"),
        (good.replace("replicas: 2", "replicas: 2\n    colour: red"), "unknown field `colour`"),
        (
            good.replace(&hello.display().to_string(), "/nope/missing.wasm"),
            "cannot read its source",
        ),
        (
            good.replace(&hello.display().to_string(), "oci://registry.local"),
            "invalid OCI reference",
        ),
        (format!("{good}links:\n  - source: a\n    target: b\n    interface: nope\n"), "line 10"),
    ] {
        let m = manifest(dir.path(), "broken.yaml", &broken);
        let out = t.cli(&["app", "deploy", path(&m)]).await;
        assert_eq!(out.status.code(), Some(1), "{broken}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{expected} in {err}");
    }
    assert_eq!(t.ok(&["app", "list", "--output", "json"]).await.trim(), "[]", "nothing applied");

    // Valid, but wants two hosts in zone a and there is one.
    let m = manifest(
        dir.path(),
        "good.yaml",
        &good.replace("replicas: 2", "replicas: 2\n    requirements: {zone: a}"),
    );
    let out = t.cli(&["app", "deploy", path(&m)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wants 2 but only 1 matching hosts are up"), "{err}");
    // A second host in zone a lets it place.
    let _h2 = t.host("h2", &["zone=a"]).await;
    eventually("the app to be placed", Duration::from_secs(30), || {
        let t = t.clone();
        async move { (status(&t, "bad").await["status"]["state"] == "deployed").then_some(()) }
    })
    .await;

    // Names are lattice ids: version 2 gives up `hello`, another application takes it, and a
    // rollback to version 1 would claim it again: refused, nothing changed.
    let v2 =
        manifest(dir.path(), "v2.yaml", &good.replace("'1'", "'2'").replace("hello\n", "hi\n"));
    t.ok(&["app", "deploy", path(&v2)]).await;
    let nowhere = "name: other\nversion: '1'\ncomponents:\n  - name: hello\n    source: {}\n    requirements: {zone: z}\n";
    let other =
        manifest(dir.path(), "other.yaml", &nowhere.replace("{}", &hello.display().to_string()));
    let out = t.cli(&["app", "deploy", path(&other)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let err = t.fails(&["app", "rollback", "bad", "1"]).await;
    assert!(
        err.contains("`hello` is already a component or provider of application `other`"),
        "{err}"
    );
    assert_eq!(status(t, "bad").await["current"], "2", "the rollback changed nothing");
}

#[tokio::test]
async fn oci_sources_are_pulled_with_credentials_pinned_and_a_dead_registry_changes_nothing() {
    let lattice = Lattice::new("sched-oci").await;
    let t = &lattice.trellis;
    let _h = t.host_with("h", &scheduler_args(&[])).await;
    let registry = OciRegistry::start("robot", "s3cret").await;
    let wasm = std::fs::read(component("http-hello")).expect("component");
    let manifest_digest = registry.push("apps/hello", "1.0", &wasm);
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = |version: &str, source: &str| {
        format!(
            "name: pulled\nversion: '{version}'\ncomponents:\n  - name: hello\n    source: {source}\n"
        )
    };
    let tagged = format!("oci://{}/apps/hello:1.0", registry.host());
    let m = manifest(dir.path(), "v1.yaml", &yaml("1", &tagged));

    // No credentials: the registry's token service refuses, and the error says what to set.
    let err = t.fails(&["app", "deploy", path(&m)]).await;
    assert!(
        err.contains("refused access to apps/hello") && err.contains("TRELLIS_OCI_PASSWORD"),
        "{err}"
    );
    let err = t.fails(&["app", "deploy", path(&m), "--oci-username", "robot"]).await;
    assert!(err.contains("TRELLIS_OCI_PASSWORD"), "{err}");

    let mut t_pw = t.clone();
    t_pw.env.push(("TRELLIS_OCI_USERNAME".into(), "robot".into()));
    t_pw.env.push(("TRELLIS_OCI_PASSWORD".into(), "s3cret".into()));
    let out = t_pw.ok(&["app", "deploy", path(&m)]).await;
    assert!(out.contains("pulled 1: deployed"), "{out}");
    // The host runs exactly the pushed bytes.
    let inv = t.client().await.inventories(Duration::from_millis(500)).await.expect("inv");
    let digest = &inv[0].1.as_ref().expect("inventory").components[0].digest;
    assert_eq!(*digest, trellis_lattice::state::digest_of(&wasm));

    // Pinned to the manifest digest: pulls; pinned to one the registry lacks: 404; and when
    // the registry serves other bytes under a digest: refused.
    let pinned = format!("oci://{}/apps/hello@{manifest_digest}", registry.host());
    let m2 = manifest(dir.path(), "v2.yaml", &yaml("2", &pinned));
    t_pw.ok(&["app", "deploy", path(&m2)]).await;
    let wrong = format!("oci://{}/apps/hello@sha256:{}", registry.host(), "0".repeat(64));
    let m3 = manifest(dir.path(), "v3.yaml", &yaml("3", &wrong));
    let err = t_pw.fails(&["app", "deploy", path(&m3)]).await;
    assert!(err.contains("registry answered 404 Not Found"), "{err}");
    // A layer that does not hash to its digest is refused, by tag or pinned.
    let layer = trellis_lattice::state::digest_of(&wasm);
    registry.tamper(&layer);
    let err = t_pw.fails(&["app", "deploy", path(&m)]).await;
    assert!(
        err.contains("the wasm layer of") && err.contains(&format!("expected {layer}")),
        "{err}"
    );
    registry.tamper(&manifest_digest);
    let m3 = manifest(dir.path(), "v3.yaml", &yaml("3", &pinned));
    let err = t_pw.fails(&["app", "deploy", path(&m3)]).await;
    assert!(err.contains(&format!("expected {manifest_digest}")), "{err}");

    // The registry goes away: the deploy fails clearly and version 2 keeps running.
    registry.stop();
    let m4 = manifest(dir.path(), "v4.yaml", &yaml("4", &tagged));
    let err = t_pw.fails(&["app", "deploy", path(&m4)]).await;
    assert!(err.contains(&format!("cannot reach registry {}", registry.host())), "{err}");
    let s = status(t, "pulled").await;
    assert_eq!(
        (s["current"].as_str(), s["status"]["state"].as_str()),
        (Some("2"), Some("deployed")),
        "{s}"
    );
    assert_eq!(hosts_of(&s, "hello"), ["h"]);
}

#[tokio::test]
async fn draining_a_host_under_load_moves_its_replica_first_and_fails_no_request() {
    let lattice = Lattice::new("sched-drain").await;
    let t = &lattice.trellis;
    let _edge = t.host_with("edge", &scheduler_args(&["role=edge"])).await;
    let mut workers = Vec::new();
    for name in ["w1", "w2", "w3"] {
        workers.push((name, t.host(name, &["role=worker"]).await));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let yaml = format!(
        "name: shop\nversion: '1'\ncomponents:\n  - name: web\n    source: {}\n    replicas: 2\n    requirements: {{role: worker}}\nproviders:\n  - name: front\n    kind: http-server\n    builtin: true\n    requirements: {{role: edge}}\nlinks:\n  - source: front\n    target: web\n    interface: wasi:http/incoming-handler\n    config: {{address: '{addr}'}}\n",
        component("http-hello").display()
    );
    t.ok(&["app", "deploy", path(&manifest(dir.path(), "shop.yaml", &yaml))]).await;
    let before = hosts_of(&status(t, "shop").await, "web");
    assert_eq!(before.len(), 2, "{before:?}");
    let load = Load::start(addr, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered_before = load.ok.load(Ordering::Relaxed);

    // The drained host keeps serving until its replica runs on the third worker.
    let drained = before[0].clone();
    let out = t.ok(&["host", "drain", &drained]).await;
    assert!(out.contains("is draining"), "{out}");
    assert!(out.contains("has left the lattice"), "{out}");
    let (_, process) = workers.iter_mut().find(|(n, _)| *n == drained).expect("drained worker");
    let exit = process.exited(Duration::from_secs(20)).await;
    assert!(exit.success(), "a drained host exits cleanly: {exit}");
    let after = hosts_of(&status(t, "shop").await, "web");
    assert_eq!(after.len(), 2, "as many replicas as before: {after:?}");
    assert!(!after.contains(&drained), "{after:?}");
    assert!(load.ok.load(Ordering::Relaxed) > answered_before, "calls were served meanwhile");

    // A host drained with --stay, with nowhere left to move its replica: after the wait it
    // stops it anyway, and stays up, empty, taking nothing.
    let stays = after[0].clone();
    let out = t.ok(&["host", "drain", &stays, "--stay", "--wait", "2"]).await;
    assert!(out.contains("stays up"), "{out}");
    let hosts = t.ok(&["get", "hosts", "--output", "json"]).await;
    let hosts: Value = serde_json::from_str(&hosts).expect("json");
    let listed = hosts.as_array().expect("list").iter().find(|h| h["name"] == stays.as_str());
    let listed = listed.expect("the host stays in the lattice");
    assert_eq!(listed["draining"], true, "{listed}");
    assert_eq!(listed["components"], 0, "{listed}");
    eventually("the app is short of one replica", Duration::from_secs(20), || async {
        let s = status(t, "shop").await;
        (hosts_of(&s, "web").len() == 1).then_some(())
    })
    .await;
    let id = listed["id"].as_str().expect("id");
    let hello = component("http-hello");
    let err = t.fails(&["start", "component", path(&hello), "--id", "late", "--host", id]).await;
    assert!(err.contains("draining"), "{err}");

    let (ok, failed) = load.finish().await;
    println!("{ok} requests answered across both drains, {failed} failed");
    assert_eq!(failed, 0, "no request fails while hosts drain");
}

//! The compile cache (issue 21): a host loads what another host of the lattice compiled, after
//! checking its seal against the trusted cluster; a tampered or foreign entry is refused, and
//! the host compiles instead.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use trellis_lattice::compiled::{CompiledStore, bucket};
use trellis_lattice::signing::{Signer, issue_identity};
use trellis_tests::{Host, eventually, free_port, http_request};

use crate::{Lattice, get};

/// What `/metrics` on `metrics` says of the compile cache for `result` (0 when absent).
async fn cache_count(metrics: SocketAddr, result: &str) -> u64 {
    let text = http_request(metrics, "GET", "/metrics", b"").await.expect("metrics").text();
    let label = format!("result=\"{result}\"");
    text.lines()
        .filter(|l| l.starts_with("trellis_compile_cache_total{") && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A host vouched for by `cluster_seed`'s cluster and trusting only it; its metrics address.
async fn host(lattice: &Lattice, name: &str, cluster: &str, seed: &str) -> (Host, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let args = [
        "--allow-unsigned".to_owned(),
        format!("--trusted-cluster={cluster}"),
        format!("--cluster-seed={seed}"),
        format!("--metrics-listen={metrics}"),
    ];
    (lattice.trellis.host_with(name, &args).await, metrics)
}

/// Starts http-hello as `id` on `host` and checks that it answers there.
async fn start_and_call(lattice: &Lattice, host: &Host, id: &str) {
    lattice.start_hello(id, &["--host", &host.id]).await;
    let addr = lattice.serve_http_as(&format!("web-{id}"), &host.id, id, &[]).await;
    let reply = get(addr, "/cached").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Waits until `metrics`' host has stored its code in the cache.
async fn stored(metrics: SocketAddr) {
    eventually("the code stored in the compile cache", Duration::from_secs(30), || async move {
        (cache_count(metrics, "stored").await == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_second_host_loads_the_first_hosts_code_and_refuses_tampered_or_foreign_entries() {
    let lattice = Lattice::new("cache").await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = nkeys::KeyPair::new_cluster();
    let seed = dir.path().join("cluster.nk");
    std::fs::write(&seed, cluster.seed().unwrap()).unwrap();
    let (cluster, seed) = (cluster.public_key(), seed.to_str().unwrap().to_owned());

    // The first host compiles and stores; the second loads it and compiles nothing.
    let (first, first_metrics) = host(&lattice, "first", &cluster, &seed).await;
    start_and_call(&lattice, &first, "hello").await;
    assert_eq!(cache_count(first_metrics, "compiled").await, 1);
    stored(first_metrics).await;
    let (second, second_metrics) = host(&lattice, "second", &cluster, &seed).await;
    start_and_call(&lattice, &second, "hello2").await;
    assert_eq!(cache_count(second_metrics, "loaded").await, 1, "loaded from the cache");
    assert_eq!(cache_count(second_metrics, "compiled").await, 0, "compiled nothing");

    // One byte of the code flipped, the seal kept: refused, compiled, and it still works.
    let client = lattice.trellis.client().await;
    let js = async_nats::jetstream::new(client.nats().clone());
    let objects = js.get_object_store(bucket("cache")).await.unwrap();
    let keys: Vec<String> =
        objects.list().await.unwrap().map(|info| info.unwrap().name).collect().await;
    let [key] = &keys[..] else { panic!("one artifact compiled for one engine: {keys:?}") };
    let store = CompiledStore::open(&js, "cache", 1).await.unwrap();
    let entry = store.get(key).await.unwrap().expect("the entry");
    let mut tampered = entry.code.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    store.put(key, &tampered, &entry.seal).await.unwrap();
    let (third, third_metrics) = host(&lattice, "third", &cluster, &seed).await;
    start_and_call(&lattice, &third, "hello3").await;
    assert_eq!(cache_count(third_metrics, "refused").await, 1, "the altered code is refused");
    assert_eq!(cache_count(third_metrics, "compiled").await, 1);
    assert_eq!(cache_count(third_metrics, "loaded").await, 0);
    // It stored its own code in place of the altered one.
    stored(third_metrics).await;
    assert_eq!(store.get(key).await.unwrap().expect("the entry").code, entry.code);

    // Sealed by a host another cluster vouches for: refused too.
    let foreign = nkeys::KeyPair::new_cluster();
    let intruder = nkeys::KeyPair::new_server();
    let now = trellis_lattice::envelope::unix_ms() / 1000;
    let identity = issue_identity(&foreign, &intruder.public_key(), now).unwrap();
    let seal = Signer::new(intruder, Some(identity)).seal_code(key, &tampered);
    store.put(key, &tampered, &seal).await.unwrap();
    let (fourth, fourth_metrics) = host(&lattice, "fourth", &cluster, &seed).await;
    start_and_call(&lattice, &fourth, "hello4").await;
    assert_eq!(cache_count(fourth_metrics, "refused").await, 1, "the foreign seal is refused");
    assert_eq!(cache_count(fourth_metrics, "loaded").await, 0);
}

#[tokio::test]
async fn a_host_without_the_cache_compiles_and_shares_nothing() {
    let lattice = Lattice::new("nocache").await;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let args = [
        "--allow-unsigned".to_owned(),
        "--no-compile-cache".to_owned(),
        format!("--metrics-listen={metrics}"),
    ];
    let host = lattice.trellis.host_with("h", &args).await;
    start_and_call(&lattice, &host, "hello").await;
    let text = http_request(metrics, "GET", "/metrics", b"").await.unwrap().text();
    assert!(!text.contains("trellis_compile_cache_total{"), "no cache figures:\n{text}");
    let client = lattice.trellis.client().await;
    let js = async_nats::jetstream::new(client.nats().clone());
    assert!(js.get_object_store(bucket("nocache")).await.is_err(), "no bucket made");
}

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

/// A seal nobody checks here (these tests read the store, no host loads the code).
fn unchecked_seal() -> trellis_lattice::signing::CodeSeal {
    let (host, signature) = ("Nhost".into(), "sig".into());
    trellis_lattice::signing::CodeSeal { host, signature, identity: None }
}

/// The consumers the stream of object store `bucket` holds now.
async fn consumers(js: &async_nats::jetstream::Context, bucket: &str) -> usize {
    let mut stream = js.get_stream(format!("OBJ_{bucket}")).await.unwrap();
    stream.info().await.unwrap().state.consumer_count
}

#[tokio::test]
async fn reads_leave_no_consumer_so_a_thousand_and_more_in_a_row_succeed() {
    // nats-server keeps an ordered consumer 30 s after each object read and allows 1,000 per
    // stream: read through consumers, the 1,001st read of a bucket within 30 s failed. Here
    // each bucket is read 1,100 times.
    let lattice = Lattice::new("reads").await;
    let client = lattice.trellis.client().await;
    let js = async_nats::jetstream::new(client.nats().clone());
    let state = client.state().await.unwrap();
    // Several chunks (the store's default is 128 KiB), so the read walks them.
    let artifact: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = state.put_artifact(&artifact).await.unwrap();
    let store = CompiledStore::open(&js, "reads", 1).await.unwrap();
    let seal = unchecked_seal();
    let code: Vec<u8> = (0..1_200_000u32).map(|i| (i % 253) as u8).collect();
    store.put("key", &code, &seal).await.unwrap();
    futures::stream::iter(0..2_200)
        .for_each_concurrent(16, |i| {
            let (state, store, digest) = (&state, &store, &digest);
            let (artifact, code, seal) = (&artifact, &code, &seal);
            async move {
                if i % 2 == 0 {
                    let read = state.get_artifact(digest).await;
                    assert_eq!(&read.unwrap_or_else(|e| panic!("read {i}: {e}")), artifact);
                } else {
                    let entry = store.get("key").await.unwrap_or_else(|e| panic!("read {i}: {e}"));
                    let entry = entry.expect("the entry");
                    assert_eq!((&entry.code, &entry.seal), (code, seal));
                }
            }
        })
        .await;
    assert_eq!(consumers(&js, "TRELLIS_reads_ARTIFACTS").await, 0);
    assert_eq!(consumers(&js, &bucket("reads")).await, 0);
    assert!(store.get("missing").await.unwrap().is_none());
}

#[tokio::test]
async fn a_bucket_an_older_host_made_gets_the_max_age_and_one_without_direct_get_still_reads() {
    let lattice = Lattice::new("older").await;
    let client = lattice.trellis.client().await;
    let js = async_nats::jetstream::new(client.nats().clone());
    // As hosts before the expiry created it: no max age.
    let config = async_nats::jetstream::object_store::Config {
        bucket: bucket("older"),
        ..Default::default()
    };
    js.create_object_store(config).await.unwrap();
    let store = CompiledStore::open(&js, "older", 1).await.unwrap();
    let mut stream = js.get_stream(format!("OBJ_{}", bucket("older"))).await.unwrap();
    let max_age = stream.info().await.unwrap().config.max_age;
    assert_eq!(max_age, trellis_lattice::compiled::MAX_AGE, "entries expire");
    assert_eq!(max_age, Duration::from_secs(trellis_lattice::signing::IDENTITY_TTL_S));

    // A bucket whose stream does not allow direct get (made by another tool): read through
    // the stream leader instead.
    let seal = unchecked_seal();
    let code: Vec<u8> = (0..700_000u32).map(|i| (i % 249) as u8).collect();
    store.put("key", &code, &seal).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.allow_direct = false;
    js.update_stream(config).await.unwrap();
    let store = CompiledStore::open(&js, "older", 1).await.unwrap();
    let entry = store.get("key").await.unwrap().expect("the entry");
    assert_eq!(entry.code, code);
    assert_eq!(consumers(&js, &bucket("older")).await, 0);
}

#[tokio::test]
async fn push_with_compile_ahead_lets_the_first_start_load_from_the_cache() {
    let lattice = Lattice::new("ahead").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let cluster = nkeys::KeyPair::new_cluster();
    let seed = dir.path().join("cluster.nk");
    std::fs::write(&seed, cluster.seed().unwrap()).unwrap();
    let account = nkeys::KeyPair::new_account();
    let file = trellis_tests::signed_hello(dir.path(), &account, false);
    // Strict hosts: only operators change them, only signed components run.
    let strict = |name: &'static str| {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let args = [
            format!("--trusted-cluster={}", cluster.public_key()),
            format!("--cluster-seed={}", seed.display()),
            format!("--trusted-operator={}", t.operator.public_key()),
            format!("--trusted-issuer={}", account.public_key()),
            format!("--metrics-listen={metrics}"),
        ];
        async move { (t.host_with(name, &args).await, metrics) }
    };
    let (first, first_metrics) = strict("first").await;
    let (second, second_metrics) = strict("second").await;

    // A compile request is a control request like a start: unsigned, it is refused.
    let nats = async_nats::connect(&lattice.nats.url()).await.unwrap();
    let digest = trellis_lattice::state::digest_of(&std::fs::read(&file).unwrap());
    let body = prost::Message::encode_to_vec(&trellis_proto::CompileRequest { digest });
    let subject = format!("trellis.ahead.ctl.host.{}.compile", first.id);
    let reply = nats.request(subject, body.into()).await.unwrap();
    let reply: trellis_proto::CompileReply = prost::Message::decode(reply.payload).unwrap();
    let status = reply.status.unwrap_or_default();
    assert_eq!(status.code, i32::from(trellis_proto::ErrorCode::Denied), "{status:?}");
    assert_eq!(cache_count(first_metrics, "compiled").await, 0);

    // The operator's push compiles on the first host, which keeps nothing running.
    let out = t.ok(&["push", &file, "--compile", "--host", &first.id]).await;
    assert!(out.contains("compiled on"), "{out}");
    assert_eq!(cache_count(first_metrics, "compiled").await, 1);
    assert_eq!(cache_count(first_metrics, "stored").await, 1, "stored before the answer");
    let inventory = t.client().await.inventory(&first.id).await.unwrap();
    assert!(inventory.components.is_empty(), "compiling ahead starts nothing");

    // The first start anywhere loads the code; a second push finds it there.
    start_signed(&lattice, &file, &second, "hello").await;
    assert_eq!(cache_count(second_metrics, "loaded").await, 1, "the first start loaded it");
    assert_eq!(cache_count(second_metrics, "compiled").await, 0);
    let out = t.ok(&["push", &file, "--compile"]).await;
    assert!(out.contains("already in the compile cache"), "{out}");
    assert_eq!(cache_count(first_metrics, "compiled").await, 1, "compiled once");
}

/// Starts the signed component `file` as `id` on `host` and checks that it answers there.
async fn start_signed(lattice: &Lattice, file: &str, host: &Host, id: &str) {
    lattice.trellis.ok(&["start", "component", file, "--id", id, "--host", &host.id]).await;
    let addr = lattice.serve_http_as(&format!("web-{id}"), &host.id, id, &[]).await;
    let reply = get(addr, "/ahead").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

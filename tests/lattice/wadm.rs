//! wasmCloud applications as they are: a wadm (OAM) manifest deployed unchanged with `trellis
//! app deploy`, translated to Trellis's own manifest, on real NATS and Redis over two hosts.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use trellis_tests::{RedisServer, component, eventually, free_port};

use crate::scheduler::{manifest, path, scheduler_args};
use crate::{Lattice, get};

/// The application in wadm's documented format: a counter spread over the two zones (up to ten
/// instances: one per host here) and counting in Redis through a provider on every host
/// (daemonscaler) (newer `target: {name, config}` link form), an HTTP server per zone
/// (`source: {config}`), a messaging echo (older `source_config`), a component reading named
/// config, provider images as wasmCloud publishes them.
fn wadm_yaml(
    redis: &str,
    addr_a: SocketAddr,
    addr_b: SocketAddr,
    addr_config: SocketAddr,
) -> String {
    let counter = component("kv-counter");
    let messenger = component("messenger");
    let configured = component("configured");
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: wadm-shop
  annotations:
    version: v0.0.1
    description: 'A counter on Redis, a NATS echo and a configured component'
spec:
  components:
    - name: counter
      type: component
      properties:
        image: file://{counter}
        id: counter
      traits:
        - type: spreadscaler
          properties:
            instances: 10
            spread:
              - name: zone-a
                requirements:
                  zone: a
              - name: zone-b
                requirements:
                  zone: b
        - type: link
          properties:
            target:
              name: kvredis
              config:
                - name: redis-url
                  properties:
                    url: {redis}
            namespace: wasi
            package: keyvalue
            interfaces: [atomics, store]

    - name: messenger
      type: component
      properties:
        image: file://{messenger}
        id: messenger
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            target: nats
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]

    - name: configured
      type: component
      properties:
        image: file://{configured}
        id: configured
        config:
          - name: shop-settings
            properties:
              greeting: hello from wadm
      traits:
        - type: spreadscaler
          properties:
            instances: 1

    - name: kvredis
      type: capability
      properties:
        image: ghcr.io/wasmcloud/keyvalue-redis:0.28.2
      traits:
        - type: daemonscaler
          properties:
            instances: 1

    - name: nats
      type: capability
      properties:
        image: ghcr.io/wasmcloud/messaging-nats:0.23.1
      traits:
        - type: link
          properties:
            target: messenger
            namespace: wasmcloud
            package: messaging
            interfaces: [handler]
            source_config:
              - name: simple-subscription
                properties:
                  subscriptions: app.ping

{web_a}
{web_b}"#,
        counter = counter.display(),
        messenger = messenger.display(),
        configured = configured.display(),
        web_a = http_server(
            "a",
            &[("counter", "default", addr_a), ("configured", "config-page", addr_config)]
        ),
        web_b = http_server("b", &[("counter", "default", addr_b)]),
    )
}

/// An http-server capability placed in `zone`, linked to (component, link name, address)s.
fn http_server(zone: &str, links: &[(&str, &str, SocketAddr)]) -> String {
    let mut yaml = format!(
        "    - name: httpserver-{zone}
      type: capability
      properties:
        image: ghcr.io/wasmcloud/http-server:0.27.0
      traits:
        - type: spreadscaler
          properties:
            instances: 1
            spread:
              - name: zone-{zone}
                requirements:
                  zone: {zone}
"
    );
    for (target, name, address) in links {
        yaml += &format!(
            "        - type: link
          properties:
            target:
              name: {target}
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            name: {name}
            source:
              config:
                - name: http-{zone}-{name}
                  properties:
                    address: {address}
"
        );
    }
    yaml
}

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().expect("addr")
}

#[tokio::test]
async fn a_wadm_manifest_deploys_unchanged_across_two_hosts_on_redis_and_nats() {
    let redis = RedisServer::start().await;
    let lattice = Lattice::new("wadm").await;
    let t = &lattice.trellis;
    let a = t.host_with("a", &scheduler_args(&["zone=a"])).await;
    let b = t.host("b", &["zone=b"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr_a, addr_b, addr_config) = (addr(), addr(), addr());
    let m =
        manifest(dir.path(), "wadm.yaml", &wadm_yaml(&redis.url(), addr_a, addr_b, addr_config));

    // `convert` shows the translation; `deploy` takes the wadm file itself.
    let converted = t.ok(&["app", "convert", path(&m)]).await;
    assert!(converted.contains("name: wadm-shop") && converted.contains("kind: keyvalue-redis"));
    assert!(converted.contains("interface: wasi:keyvalue/store"), "{converted}");
    let out = t.cli(&["app", "deploy", path(&m)]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("a wadm manifest, translated"), "{stderr}");

    // The counter answers on both hosts' HTTP servers and counts in Redis.
    for addr in [addr_a, addr_b] {
        eventually("the http-servers to answer", Duration::from_secs(20), || async move {
            let reply = trellis_tests::http_request(addr, "GET", "/get/none", b"").await.ok()?;
            (reply.status == 404).then_some(())
        })
        .await;
    }
    let requests = [addr_a, addr_b].into_iter().cycle().take(40).map(|addr| async move {
        let reply = get(addr, "/count/hits").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.text().trim().parse::<u64>().expect("a number")
    });
    let mut values: Vec<u64> = futures::stream::iter(requests).buffer_unordered(16).collect().await;
    values.sort_unstable();
    assert_eq!(values, (1..=40).collect::<Vec<_>>(), "every increment counted once");
    assert!(redis.command(&["GET", "default:hits"]).await.unwrap().contains("40"));
    for host in [&a.id, &b.id] {
        assert!(lattice.invocations(host, "counter").await > 0, "host {host} served requests");
    }

    // Up to ten counters: one on each of the two hosts, deployed; the daemonscaler's Redis
    // provider runs on both.
    let status = t.ok(&["app", "status", "wadm-shop", "--output", "json"]).await;
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["status"]["state"], "deployed", "{status}");
    let workloads = status["status"]["workloads"].as_array().expect("workloads").clone();
    for id in ["counter", "wadm_shop-kvredis"] {
        let w = workloads.iter().find(|w| w["name"] == id).expect("the workload");
        assert_eq!(
            (w["desired"].as_u64(), w["hosts"].as_array().map(Vec::len)),
            (Some(2), Some(2)),
            "{w}"
        );
    }

    // A message is echoed over NATS through the messaging provider and the component.
    let nats = t.client().await.nats().clone();
    let reply = eventually("the echo over NATS", Duration::from_secs(20), || {
        let nats = nats.clone();
        async move {
            let ask = nats.request("app.ping", "hi".into());
            tokio::time::timeout(Duration::from_secs(2), ask).await.ok()?.ok()
        }
    })
    .await;
    assert_eq!(&reply.payload[..], b"pong: hi");

    // The named config in the manifest reaches the component through wasi:config.
    assert_eq!(get(addr_config, "/config/greeting").await.text(), "hello from wadm");

    // The application is a Trellis application like any other.
    let list = t.ok(&["app", "list", "--output", "json"]).await;
    assert!(list.contains("\"wadm-shop\"") && list.contains("v0.0.1"), "{list}");
}

#[tokio::test]
async fn a_wadm_manifest_with_an_unknown_image_or_trait_is_refused_naming_it() {
    let lattice = Lattice::new("wadm-bad").await;
    let t = &lattice.trellis;
    let _a = t.host_with("a", &scheduler_args(&["zone=a"])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = wadm_yaml("redis://127.0.0.1:1", addr(), addr(), addr());
    for (broken, expected) in [
        (
            good.replace("ghcr.io/wasmcloud/keyvalue-redis:0.28.2", "ghcr.io/acme/kv-etcd:1.0"),
            "unknown provider image `ghcr.io/acme/kv-etcd:1.0`",
        ),
        (good.replacen("type: spreadscaler", "type: autoscaler", 1), "unknown trait `autoscaler`"),
    ] {
        let m = manifest(dir.path(), "broken.yaml", &broken);
        for command in ["deploy", "convert"] {
            let out = t.cli(&["app", command, path(&m)]).await;
            assert_eq!(out.status.code(), Some(1), "{command}: {broken}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(expected), "{command}: {expected} in {err}");
        }
    }
    assert_eq!(t.ok(&["app", "list", "--output", "json"]).await.trim(), "[]", "nothing applied");
}

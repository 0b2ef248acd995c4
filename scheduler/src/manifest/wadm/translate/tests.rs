use super::*;
use crate::manifest::wadm::{ReadError, read};

/// A counter over HTTP spread over two zones, counting in Redis, a messaging echo and named
/// config: the shapes wadm documents, old and new link forms both.
const APP: &str = r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: shop
  annotations:
    version: v0.1.0
    description: A counter and an echo
    wasmcloud.dev/authors: nobody
spec:
  components:
    - name: counter
      type: component
      properties:
        image: file://./kv_counter.wasm
        id: counter
        config:
          - name: counter-settings
            properties:
              greeting: hi
          - name: shared-settings
      traits:
        - type: spreadscaler
          properties:
            instances: 2
            spread:
              - name: east
                requirements:
                  zone: east
              - name: west
                requirements:
                  zone: west
                weight: 50
        - type: link
          properties:
            target:
              name: kv
              config:
                - name: redis
                  properties:
                    url: 127.0.0.1:6379
            namespace: wasi
            package: keyvalue
            interfaces: [atomics, store]
    - name: echo
      type: component
      properties:
        image: ghcr.io/acme/echo:1.0
      traits:
        - type: link
          properties:
            target: nats
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]
    - name: kv
      type: capability
      properties:
        image: ghcr.io/wasmcloud/keyvalue-redis:0.28.1
    - name: nats
      type: capability
      properties:
        image: ghcr.io/wasmcloud/messaging-nats:0.24.0
      traits:
        - type: link
          properties:
            target: echo
            namespace: wasmcloud
            package: messaging
            interfaces: [handler]
            source_config:
              - name: subscriptions
                properties:
                  subscriptions: shop.echo
    - name: web
      type: capability
      properties:
        image: ghcr.io/wasmcloud/http-server:0.27.0
        id: web
      traits:
        - type: daemonscaler
          properties:
            instances: 1
        - type: link
          properties:
            target:
              name: counter
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            source:
              config:
                - name: address
                  properties:
                    address: 0.0.0.0:8080
"#;

fn error(text: &str) -> WadmError {
    translate(text).unwrap_err()
}

#[test]
fn components_providers_links_and_config_translate() {
    let t = translate(APP).unwrap();
    let m = &t.manifest;
    assert!(t.from_wadm);
    assert_eq!((m.name.as_str(), m.version.as_str()), ("shop", "v0.1.0"));
    assert_eq!(m.description, "A counter and an echo");

    let counter = &m.components[0];
    assert_eq!(counter.name.as_str(), "counter");
    assert_eq!(counter.source, Source::File("./kv_counter.wasm".into()));
    assert_eq!(counter.replicas, 2);
    let spread: Vec<_> = counter
        .spread
        .iter()
        .map(|s| (s.name.as_str(), s.requirements["zone"].as_str(), s.weight.get()))
        .collect();
    assert_eq!(spread, [("east", "east", 100), ("west", "west", 50)]);
    let config: Vec<&str> = counter.config.iter().map(Id::as_str).collect();
    assert_eq!(config, ["counter-settings", "shared-settings"]);
    assert_eq!(m.config.len(), 1, "only config with properties is written");
    assert_eq!(m.config[&Id("counter-settings".into())]["greeting"], "hi");

    // No id: wadm's own default id; no scaler: one replica.
    let echo = &m.components[1];
    assert_eq!(echo.name.as_str(), "shop-echo");
    assert_eq!(echo.source, Source::Oci("ghcr.io/acme/echo:1.0".into()));
    assert_eq!(echo.replicas, 1);

    // A spreadscaler places up to `instances`, a daemonscaler on every matching host.
    assert_eq!((counter.scale, echo.scale), (Scale::UpTo, Scale::Exact));
    assert_eq!(m.providers[2].scale, Scale::EveryHost);
    let providers: Vec<_> =
        m.providers.iter().map(|p| (p.name.as_str(), p.kind.as_str(), p.replicas)).collect();
    assert_eq!(
        providers,
        [
            ("shop-kv", "keyvalue-redis", 1),
            ("shop-nats", "messaging-nats", 1),
            ("web", "http-server", 1)
        ]
    );

    let links: Vec<_> = m
        .links
        .iter()
        .map(|l| (l.source.as_str(), l.target.as_str(), l.interface.to_string(), l.config.clone()))
        .collect();
    let map = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
    assert_eq!(
        links,
        [
            // atomics and store: one link, with a scheme added to wasmCloud's host:port.
            (
                "counter",
                "shop-kv",
                "wasi:keyvalue/store".into(),
                map("url", "redis://127.0.0.1:6379")
            ),
            ("shop-echo", "shop-nats", "wasmcloud:messaging/consumer".into(), BTreeMap::new()),
            (
                "shop-nats",
                "shop-echo",
                "wasmcloud:messaging/handler".into(),
                map("subscriptions", "shop.echo")
            ),
            ("web", "counter", "wasi:http/incoming-handler".into(), map("address", "0.0.0.0:8080")),
        ]
    );
    assert!(m.links.iter().all(|l| l.name.as_str() == "default"));

    // What reads differently is said.
    let notes = t.notes.join("\n");
    assert!(notes.contains("`shared-settings`") && notes.contains("trellis config put"), "{notes}");
}

#[test]
fn the_translation_prints_as_a_trellis_manifest_that_reads_back() {
    let t = translate(APP).unwrap();
    let yaml = t.manifest.to_yaml();
    assert_eq!(Manifest::from_yaml(&yaml).unwrap(), t.manifest, "{yaml}");
    // `read` takes both formats.
    assert_eq!(read(APP).unwrap().manifest, t.manifest);
    let trellis = read(&yaml).unwrap();
    assert!(!trellis.from_wadm);
    assert_eq!(trellis.manifest, t.manifest);
    assert!(matches!(read("name: x\n"), Err(ReadError::Manifest(_))));
}

#[test]
fn unknown_images_traits_types_and_versions_are_named() {
    let e =
        error(&APP.replace("ghcr.io/wasmcloud/keyvalue-redis:0.28.1", "ghcr.io/acme/kv-etcd:1"));
    assert!(
        matches!(&e, WadmError::UnknownProviderImage { image, .. } if image == "ghcr.io/acme/kv-etcd:1")
    );
    let text = e.to_string();
    assert!(text.contains("`ghcr.io/acme/kv-etcd:1`") && text.contains("`kv`"), "{text}");
    assert!(text.contains("ghcr.io/wasmcloud/keyvalue-nats"), "lists what is supported: {text}");

    let e = error(&APP.replace("type: daemonscaler", "type: autoscaler"));
    assert_eq!(e, WadmError::UnknownTrait { component: "web".into(), found: "autoscaler".into() });
    assert!(e.to_string().contains("supported: spreadscaler, daemonscaler, link"), "{e}");

    let e2 = error(&APP.replacen("type: component", "type: function", 1));
    assert!(matches!(e2, WadmError::UnknownType { ref found, .. } if found == "function"), "{e2}");

    let e = error(&APP.replace("core.oam.dev/v1beta1", "core.oam.dev/v1"));
    assert_eq!(e, WadmError::ApiVersion("core.oam.dev/v1".into()));
    let e = error(&APP.replace("kind: Application", "kind: Component"));
    assert_eq!(e, WadmError::Kind("Component".into()));
}

#[test]
fn secrets_are_granted_to_components_and_shared_components_and_external_link_config_refused() {
    // A component's secret is a Trellis grant of that name; a provider's is refused.
    let secret = "        secrets:\n          - name: api-key\n            properties:\n              policy: vault\n              key: api\n";
    let t =
        translate(&APP.replace("        id: counter\n", &format!("        id: counter\n{secret}")))
            .unwrap();
    let granted: Vec<&str> = t.manifest.components[0].secrets.iter().map(Id::as_str).collect();
    assert_eq!(granted, ["api-key"]);
    assert!(t.notes.iter().any(|n| n.contains("trellis secret put api-key")), "{:?}", t.notes);
    let e = error(&APP.replace("        id: web\n", &format!("        id: web\n{secret}")));
    assert_eq!(
        e,
        WadmError::Secrets {
            component: "web".into(),
            secret: "api-key".into(),
            key: "api".into(),
            policy: "vault".into()
        }
    );
    assert!(e.to_string().contains("components only"), "{e}");

    let shared = APP.replace(
        "        image: ghcr.io/acme/echo:1.0\n",
        "        application:\n          name: other-app\n          component: echo\n",
    );
    let e = error(&shared);
    assert!(
        matches!(e, WadmError::Unsupported { .. }) && e.to_string().contains("other-app"),
        "{e}"
    );

    let external = APP.replace(
        "                - name: redis\n                  properties:\n                    url: 127.0.0.1:6379\n",
        "                - name: redis\n",
    );
    let e = error(&external);
    assert!(e.to_string().contains("link config `redis` has no `properties`"), "{e}");
}

#[test]
fn traits_that_do_not_fit_are_refused() {
    let e = error(&APP.replace("instances: 2", "weight: 2"));
    assert!(e.to_string().contains("unknown field `weight`"), "{e}");
    let e = error(&APP.replace("            instances: 2\n", ""));
    assert!(e.to_string().contains("spreadscaler trait: no `instances`"), "{e}");
    let e = error(&APP.replace("weight: 50", "weight: 0"));
    assert!(e.to_string().contains("spread `west` has weight 0"), "{e}");
    let e = error(&APP.replace("target: echo", "target: nobody"));
    assert!(e.to_string().contains("target `nobody` is not a component of this manifest"), "{e}");
    // A provider linked over a contract it does not serve.
    let e = error(&APP.replace(
        "package: keyvalue\n            interfaces: [atomics, store]",
        "package: blobstore\n            interfaces: [blobstore]",
    ));
    assert!(
        e.to_string()
            .contains("does not serve `wasi:blobstore/blobstore`; it serves: wasi:keyvalue/store"),
        "{e}"
    );
    // Conflicting settings between a link's two ends.
    let e = error(&APP.replace(
        "                  subscriptions: shop.echo\n",
        "                  subscriptions: shop.echo\n            target_config:\n              - name: other\n                properties:\n                  subscriptions: shop.other\n",
    ));
    assert!(e.to_string().contains("`subscriptions` is set to both"), "{e}");
    // A capability without an image says which ones there are.
    let e =
        error(&APP.replace(
            "        image: ghcr.io/wasmcloud/keyvalue-redis:0.28.1\n",
            "        id: kv\n",
        ));
    assert!(
        e.to_string()
            .contains("`kv`: a capability without an `image`; name one of ghcr.io/wasmcloud/"),
        "{e}"
    );
    // Ids Trellis does not take.
    let e = error(&APP.replace("id: web", "id: web.front"));
    assert!(matches!(e, WadmError::Invalid(_)) && e.to_string().contains("web.front"), "{e}");
}

#[test]
fn a_manifest_without_a_version_gets_one_from_its_content() {
    let unversioned = APP.replace("    version: v0.1.0\n", "");
    let a = translate(&unversioned).unwrap();
    let b = translate(&unversioned).unwrap();
    assert_eq!(a.manifest.version, b.manifest.version);
    assert!(a.manifest.version.as_str().starts_with("sha-"));
    let changed = translate(&unversioned.replace("instances: 2", "instances: 3")).unwrap();
    assert_ne!(changed.manifest.version, a.manifest.version);
}

#[test]
fn provider_config_is_the_default_of_its_links() {
    let with_default = APP.replace(
        "        image: ghcr.io/wasmcloud/keyvalue-redis:0.28.1\n",
        "        image: ghcr.io/wasmcloud/keyvalue-redis:0.28.1\n        config:\n          - name: redis-default\n            properties:\n              URL: redis://10.0.0.1:6379\n              pool: '4'\n",
    );
    let t = translate(&with_default).unwrap();
    let kv = &t.manifest.links[0];
    assert_eq!(kv.config["url"], "redis://127.0.0.1:6379", "the link's own url wins");
    assert_eq!(kv.config["pool"], "4");
}

#[test]
fn unquoted_numbers_and_booleans_in_config_are_text() {
    let text = APP.replace("greeting: hi", "port: 8080\n              debug: true");
    let t = translate(&text).unwrap();
    let settings = &t.manifest.config[&Id("counter-settings".into())];
    assert_eq!((settings["port"].as_str(), settings["debug"].as_str()), ("8080", "true"));
}

#[test]
fn the_wadm_example_translates() {
    let t = translate(include_str!("../../../../../examples/wadm-counter.yaml")).unwrap();
    let m = &t.manifest;
    assert_eq!((m.name.as_str(), m.components[0].name.as_str()), ("wadm-counter", "wadm-count"));
    let kinds: Vec<&str> = m.providers.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["keyvalue-nats", "http-server"]);
    assert_eq!(m.links.len(), 2);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    // JSON is YAML: a wadm manifest in JSON is recognised too.
    assert!(crate::manifest::wadm::is_wadm(r#"{"apiVersion": "core.oam.dev/v1beta1"}"#));
    assert!(!crate::manifest::wadm::is_wadm("name: x\nversion: '1'\n"));
}

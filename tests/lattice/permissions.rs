//! NATS permissions per role (`deploy/nats/roles.conf`, `trellis nats permissions`): the
//! server itself refuses a viewer's control request and state write, an operator's attempt to
//! serve a component's calls, and a provider's to reach a host's inbox, while each role does
//! its own work.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use trellis_lattice::permissions::{NatsRole, permissions};
use trellis_tests::{NatsServer, Trellis, component, eventually, free_port, http_request};

const ROLES: &str = include_str!("../../deploy/nats/roles.conf");

#[test]
fn roles_conf_holds_the_permissions_trellis_prints() {
    for role in [NatsRole::Host, NatsRole::Provider, NatsRole::Operator, NatsRole::Viewer] {
        for line in permissions(role, "default", &[]).to_conf().lines() {
            let line = format!("        {line}");
            assert!(ROLES.lines().any(|l| l == line), "{role:?}: roles.conf lacks\n{line}");
        }
    }
}

/// roles.conf with this test's user keys (host, provider, operator, viewer in that order).
fn roles_config(users: &[&nkeys::KeyPair; 4]) -> String {
    let mut config = ROLES.to_owned();
    let keys: Vec<String> = ROLES
        .lines()
        .filter_map(|l| l.split("nkey: \"").nth(1))
        .map(|k| k[..56].to_owned())
        .collect();
    assert_eq!(keys.len(), 4, "roles.conf has four users");
    for (old, user) in keys.iter().zip(users) {
        config = config.replace(old, &user.public_key());
    }
    config
        .lines()
        .filter(|l| !l.starts_with("listen:") && !l.starts_with("jetstream: {"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn as_user(nats: &NatsServer, dir: &std::path::Path, user: &nkeys::KeyPair) -> Trellis {
    let seed = dir.join(format!("{}.nk", user.public_key()));
    std::fs::write(&seed, user.seed().unwrap()).unwrap();
    let mut t = Trellis::new(&nats.url(), "default");
    t.auth.nkey_seed = Some(user.seed().unwrap());
    t.env.push(("TRELLIS_NATS_NKEY".into(), seed.to_str().unwrap().to_owned()));
    t
}

/// A raw connection as `user` that records the server's errors.
async fn raw(
    nats: &NatsServer,
    user: &nkeys::KeyPair,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let client = async_nats::ConnectOptions::with_nkey(user.seed().unwrap())
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .unwrap();
    (client, errors)
}

async fn violation(errors: &Arc<Mutex<Vec<String>>>, subject: &str) {
    trellis_tests::eventually("a permissions violation", Duration::from_secs(5), || async {
        let errors = errors.lock().unwrap();
        errors
            .iter()
            .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(subject))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_server_holds_each_role_to_its_subjects() {
    let users = [(); 4].map(|()| nkeys::KeyPair::new_user());
    let monitor: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "{}\nhttp: \"{monitor}\"",
        roles_config(&[&users[0], &users[1], &users[2], &users[3]])
    );
    let nats =
        NatsServer::start_with_config(None, Some(&config)).await.expect("nats-server with roles");
    let dir = tempfile::tempdir().unwrap();
    let [host_user, provider_user, operator_user, viewer_user] = &users;
    let mut hosts = as_user(&nats, dir.path(), host_user);
    let provider_seed = dir.path().join("provider.nk");
    std::fs::write(&provider_seed, provider_user.seed().unwrap()).unwrap();
    let provider_seed = provider_seed.to_str().unwrap().to_owned();
    hosts.env.push(("TRELLIS_PROVIDER_NATS_NKEY".into(), provider_seed));
    let operator = as_user(&nats, dir.path(), operator_user);
    let viewer = as_user(&nats, dir.path(), viewer_user);

    // Each role does its work: a host joins, the operator starts components and providers and
    // links them, and the providers (on their own user) serve: HTTP in, key-value out.
    let host = hosts.host("h", &[]).await;
    let wasm = component("http-hello");
    operator
        .ok(&["start", "component", wasm.to_str().unwrap(), "--id", "hello", "--host", &host.id])
        .await;
    operator.ok(&["config", "put", "settings", "colour=blue"]).await;
    let counter = component("kv-counter");
    operator.ok(&["start", "component", counter.to_str().unwrap(), "--id", "counter"]).await;
    operator.ok(&["start", "provider", "keyvalue-nats", "--id", "natskv"]).await;
    operator.ok(&["start", "provider", "http-server", "--id", "web"]).await;
    let link = ["link", "put", "--source", "counter", "--interface", "wasi:keyvalue/store"];
    operator.ok(&[&link[..], &["--target", "natskv"]].concat()).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let address = format!("address={addr}");
    let link = ["link", "put", "--source", "web", "--interface", "wasi:http/incoming-handler"];
    operator.ok(&[&link[..], &["--target", "counter", "--config", &address]].concat()).await;
    for expected in ["1", "2"] {
        let counted =
            eventually("a count through both providers", Duration::from_secs(20), || async move {
                let reply = http_request(addr, "GET", "/count/hits", b"").await.ok()?;
                (reply.status == 200).then(|| reply.text().trim().to_owned())
            })
            .await;
        assert_eq!(counted, expected);
    }
    // The providers did that as their own user: the server says who each connection is.
    let connz = http_request(monitor, "GET", "/connz?auth=true", b"").await.unwrap().text();
    let json = &connz[connz.find('{').expect("connz JSON")..];
    let connz: serde_json::Value =
        serde_json::Deserializer::from_str(json).into_iter().next().unwrap().unwrap();
    let users: Vec<(&str, &str)> = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or(""), c["authorized_user"].as_str().unwrap_or("")))
        .collect();
    for provider in ["trellis-provider web", "trellis-provider natskv"] {
        let user = users.iter().find(|(name, _)| *name == provider).map(|(_, user)| *user);
        assert_eq!(user, Some(&*provider_user.public_key()), "{provider} in {users:?}");
    }
    // The viewer reads.
    assert!(viewer.ok(&["get", "hosts"]).await.contains('h'));
    assert!(viewer.ok(&["get", "inventory", &host.id]).await.contains("hello"));
    assert!(viewer.ok(&["config", "get", "settings"]).await.contains("blue"));

    // The viewer cannot ask a host to stop anything: the server drops the request.
    let (nats_viewer, errors) = raw(&nats, viewer_user).await;
    let stop = format!("trellis.default.ctl.host.{}.stop_component", host.id);
    let body = prost::Message::encode_to_vec(&trellis_proto::StopComponentRequest {
        component_id: "hello".into(),
    });
    let request =
        async_nats::Request::new().payload(body.into()).timeout(Some(Duration::from_secs(1)));
    assert!(nats_viewer.send_request(stop.clone(), request).await.is_err());
    violation(&errors, &stop).await;
    assert!(operator.ok(&["get", "inventory", &host.id]).await.contains("hello"), "still runs");
    // Nor write the lattice's state.
    nats_viewer.publish("$KV.TRELLIS_default_CONFIG.settings", "{}".into()).await.unwrap();
    violation(&errors, "$KV.TRELLIS_default_CONFIG.settings").await;

    // The operator cannot serve a component's calls (and so answer in its place).
    let (nats_operator, errors) = raw(&nats, operator_user).await;
    let serve = "trellis.default.rpc.hello.>";
    let _sub = nats_operator.queue_subscribe(serve, "hello".into()).await.unwrap();
    violation(&errors, serve).await;
    // Nor write compiled code, which hosts load as their own: only hosts write that store
    // (the host wrote what it compiled there).
    let js = async_nats::jetstream::new(nats_operator.clone());
    let compiled = trellis_lattice::compiled::bucket("default");
    eventually("the host's code in the compile cache", Duration::from_secs(20), || async {
        let objects = js.get_object_store(&compiled).await.ok()?;
        let mut list = objects.list().await.ok()?;
        futures::StreamExt::next(&mut list).await.and_then(Result::ok)
    })
    .await;
    let chunk = format!("$O.{compiled}.C.forged");
    nats_operator.publish(chunk.clone(), "machine code".into()).await.unwrap();
    violation(&errors, &chunk).await;

    // A provider's user cannot forge a host's answers, read them, or serve calls.
    let (nats_provider, errors) = raw(&nats, provider_user).await;
    let inbox = format!("_INBOX.{}.forged", host.id);
    nats_provider.publish(inbox.clone(), "forged".into()).await.unwrap();
    violation(&errors, &inbox).await;
    let answers = format!("_INBOX.{}.>", host.id);
    let _sub = nats_provider.subscribe(answers.clone()).await.unwrap();
    violation(&errors, &answers).await;
    let _sub = nats_provider.queue_subscribe(serve, "hello".into()).await.unwrap();
    violation(&errors, serve).await;
}

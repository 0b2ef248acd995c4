//! NATS accounts isolate lattices: hosts authenticate with nkeys passed through by Trellis, and a
//! host of one account can neither see nor call nor read the state of the other.

use std::time::Duration;

use trellis_lattice::envelope::InvokeErrorKind;
use trellis_lattice::http::{HANDLE, INCOMING_HANDLER};
use trellis_tests::{NatsServer, Trellis, component};

fn account_config(a: &str, b: &str) -> String {
    // The example in deploy/nats/accounts.conf, with this test's keys.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/nats/accounts.conf"
    ))
    .expect("deploy/nats/accounts.conf");
    let mut keys =
        example.lines().filter_map(|l| l.split("nkey: \"").nth(1)).map(|k| k[..56].to_owned());
    let (old_a, old_b) = (keys.next().expect("TEAM_A key"), keys.next().expect("TEAM_B key"));
    example
        .replace(&old_a, a)
        .replace(&old_b, b)
        .lines()
        .filter(|l| !l.starts_with("listen:") && !l.starts_with("jetstream: {"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn team(nats: &NatsServer, dir: &std::path::Path, name: &str, user: &nkeys::KeyPair) -> Trellis {
    let seed = dir.join(format!("{name}.nk"));
    std::fs::write(&seed, user.seed().unwrap()).unwrap();
    let mut t = Trellis::new(&nats.url(), "default");
    t.auth.nkey_seed = Some(user.seed().unwrap());
    t.env.push(("TRELLIS_NATS_NKEY".into(), seed.to_str().unwrap().to_owned()));
    t
}

#[tokio::test]
async fn accounts_isolate_lattices_of_the_same_name() {
    let (user_a, user_b) = (nkeys::KeyPair::new_user(), nkeys::KeyPair::new_user());
    let config = account_config(&user_a.public_key(), &user_b.public_key());
    let nats = NatsServer::start_with_config(None, Some(&config))
        .await
        .expect("nats-server with accounts");
    let dir = tempfile::tempdir().unwrap();
    let a = team(&nats, dir.path(), "a", &user_a);
    let b = team(&nats, dir.path(), "b", &user_b);

    let host_a = a.host("host-a", &[]).await;
    let _host_b = b.host("host-b", &[]).await;
    let wasm = component("http-hello");
    a.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "hello", "--host", &host_a.id])
        .await;

    let seen_by_a = a.ok(&["get", "hosts", "--output", "json"]).await;
    let seen_by_b = b.ok(&["get", "hosts", "--output", "json"]).await;
    assert!(seen_by_a.contains("host-a") && !seen_by_a.contains("host-b"), "{seen_by_a}");
    assert!(seen_by_b.contains("host-b") && !seen_by_b.contains("host-a"), "{seen_by_b}");

    let err = b.fails(&["get", "inventory", &host_a.id]).await;
    assert!(err.contains("no host"), "{err}");
    let err = b
        .fails(&[
            "link",
            "put",
            "--source",
            "web",
            "--target",
            "hello",
            "--interface",
            "wasi:http/incoming-handler",
        ])
        .await;
    assert!(err.contains("no component or provider `hello`"), "{err}");

    let payload =
        trellis_lattice::http::encode(&trellis_lattice::http::HttpRequest::get("/")).unwrap();
    let from_b = b
        .client()
        .await
        .invoke("hello", INCOMING_HANDLER, HANDLE, payload.clone().into(), Duration::from_secs(5))
        .await;
    assert_eq!(from_b.unwrap_err().kind(), InvokeErrorKind::NoResponders);
    let from_a = a
        .client()
        .await
        .invoke("hello", INCOMING_HANDLER, HANDLE, payload.into(), Duration::from_secs(5))
        .await;
    assert!(from_a.is_ok(), "{from_a:?}");

    // Without credentials, nothing at all.
    let anonymous = Trellis::new(&nats.url(), "default");
    let err = anonymous.fails(&["get", "hosts"]).await;
    assert!(err.contains("cannot reach NATS"), "{err}");
}

//! NATS accounts isolate lattices: hosts authenticate with nkeys passed through by Trellis, and a
//! host of one account can neither see nor call nor read the state of the other. Decentralized
//! auth (operator, account and user JWTs, `.creds` files) works for hosts, their providers and
//! the CLI, and revoking a host's user takes it out of the lattice.

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

/// A server in operator mode: a system account and `account`'s JWT preloaded (the MEMORY
/// resolver), as nsc sets up. The operator's JWT is written once: a reload may not change it.
fn operator_config(
    dir: &std::path::Path,
    (operator, system): (&nkeys::KeyPair, &nkeys::KeyPair),
    account_jwt: &str,
) -> String {
    let operator_file = dir.join("operator.jwt");
    if !operator_file.exists() {
        std::fs::write(&operator_file, trellis_tests::jwt::operator(operator)).unwrap();
    }
    let system_jwt = trellis_tests::jwt::system_account(operator, system);
    let account = account_jwt.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, account)
            .unwrap(),
    )
    .unwrap();
    format!(
        "operator: \"{}\"\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{account_jwt}\"\n  {sys}: \"{system_jwt}\"\n}}\n",
        operator_file.display(),
        claims["sub"].as_str().unwrap(),
        sys = system.public_key(),
    )
}

/// A Trellis whose processes authenticate with `user`'s creds file.
fn with_creds(
    nats: &NatsServer,
    dir: &std::path::Path,
    account: &nkeys::KeyPair,
    user: &nkeys::KeyPair,
) -> Trellis {
    let jwt = trellis_tests::jwt::user(account, user);
    let file = dir.join(format!("{}.creds", user.public_key()));
    std::fs::write(&file, trellis_tests::jwt::creds(&jwt, user)).unwrap();
    let mut t = Trellis::new(&nats.url(), "default");
    t.auth.creds_file = Some(file.clone());
    t.env.push(("TRELLIS_NATS_CREDS".into(), file.to_str().unwrap().to_owned()));
    t
}

#[tokio::test]
async fn jwt_users_run_hosts_and_the_cli_and_a_revoked_users_host_drops_out() {
    let dir = tempfile::tempdir().unwrap();
    let (operator, account) = (nkeys::KeyPair::new_operator(), nkeys::KeyPair::new_account());
    let (host_user, cli_user) = (nkeys::KeyPair::new_user(), nkeys::KeyPair::new_user());
    let account_jwt = trellis_tests::jwt::account(&operator, &account, &[]);
    let system = nkeys::KeyPair::new_account();
    let config = operator_config(dir.path(), (&operator, &system), &account_jwt);
    let nats = NatsServer::start_with_config(None, Some(&config))
        .await
        .expect("nats-server in operator mode");
    let cli = with_creds(&nats, dir.path(), &account, &cli_user);
    let mut hosts = cli.clone();
    hosts.env.extend(with_creds(&nats, dir.path(), &account, &host_user).env);
    // The host's creds come last and win.
    let host = hosts.host("jwt-host", &[]).await;
    let wasm = component("http-hello");
    cli.ok(&["start", "component", wasm.to_str().unwrap(), "--id", "hello", "--host", &host.id])
        .await;
    let payload =
        trellis_lattice::http::encode(&trellis_lattice::http::HttpRequest::get("/")).unwrap();
    let answer = cli
        .client()
        .await
        .invoke("hello", INCOMING_HANDLER, HANDLE, payload.into(), Duration::from_secs(5))
        .await;
    assert!(answer.is_ok(), "{answer:?}");
    // A provider process connects with its host's creds (it answers the start once it has read
    // the lattice's links over its own connection).
    cli.ok(&["start", "provider", "http-server", "--id", "web", "--host", &host.id]).await;

    // The operator revokes the host's user: the server drops it, and it cannot come back.
    let now = trellis_lattice::envelope::unix_ms() / 1000;
    let revoked =
        trellis_tests::jwt::account(&operator, &account, &[(host_user.public_key(), now + 1)]);
    nats.reconfigure(&operator_config(dir.path(), (&operator, &system), &revoked)).unwrap();

    trellis_tests::eventually("the revoked host to drop out", Duration::from_secs(20), || async {
        let listed = cli.ok(&["get", "hosts", "--output", "json"]).await;
        (!listed.contains("jwt-host")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!cli.ok(&["get", "hosts"]).await.contains("jwt-host"), "it did not come back");

    // Its provider, restarted while NATS refuses it, goes when the host goes.
    let creds = hosts.env.last().map(|(_, v)| v.clone()).unwrap();
    let mut host = host;
    host.kill().await;
    trellis_tests::eventually(
        "no process left with the revoked creds",
        Duration::from_secs(10),
        || {
            let creds = creds.clone();
            async move { (processes_with_env(&creds) == 0).then_some(()) }
        },
    )
    .await;
}

/// Processes whose environment mentions `needle`.
fn processes_with_env(needle: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("environ")).ok())
        .filter(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .count()
}

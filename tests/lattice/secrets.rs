//! Secrets (`trellis secret`): sealed to the lattice's secrets key, opened only by hosts that
//! hold it and only for the components granted them, read back only by admin operators.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use trellis_lattice::signing::OperatorKey;
use trellis_tests::{Host, Trellis, component};

use crate::{Lattice, get};

const VALUE: &str = "pg-password-7Qx9-not-for-logs";

/// A new secrets key: its seed in a file under `dir`, and its public key.
fn secrets_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = nkeys::XKey::new();
    let path = dir.join(format!("{name}.nk"));
    std::fs::write(&path, key.seed().expect("seed")).expect("write the secrets seed");
    (path, key.public_key())
}

/// A development host holding the secrets key whose seed is in `seed`.
async fn host_with_key(t: &Trellis, name: &str, seed: &Path) -> Host {
    let args = ["--allow-unsigned".to_owned(), format!("--secrets-seed={}", seed.display())];
    t.host_with(name, &args).await
}

/// Starts the `configured` component as `id` on `host` with `extra` arguments.
async fn start_configured(
    t: &Trellis,
    id: &str,
    host: &str,
    extra: &[&str],
) -> std::process::Output {
    let wasm = component("configured");
    let mut args = vec!["start", "component", wasm.to_str().unwrap(), "--id", id, "--host", host];
    args.extend_from_slice(extra);
    t.cli(&args).await
}

/// Every message published on the lattice's events, from now on.
async fn record_events(nats_url: &str, lattice: &str) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let nats = async_nats::connect(nats_url).await.expect("connect");
    let mut sub = nats.subscribe(format!("trellis.{lattice}.evt.>")).await.expect("subscribe");
    nats.flush().await.expect("flush");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    tokio::spawn(async move {
        let _nats = nats;
        while let Some(msg) = sub.next().await {
            into.lock().unwrap().push(msg.payload.to_vec());
        }
    });
    seen
}

/// `t`'s CLI signing with the operator seed in `key` (`None`: unsigned).
fn signing_with(t: &Trellis, key: Option<&Path>) -> Trellis {
    let mut cli = t.clone();
    cli.env.retain(|(k, _)| k != "TRELLIS_OPERATOR_KEY");
    if let Some(key) = key {
        cli.env.push(("TRELLIS_OPERATOR_KEY".into(), key.display().to_string()));
    }
    cli
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn only_granted_components_read_a_secret_and_it_is_stored_sealed() {
    let lattice = Lattice::new("secrets").await;
    let t = &lattice.trellis;
    let events = record_events(&lattice.nats.url(), "secrets").await;
    let dir = tempfile::tempdir().unwrap();
    let (seed, xkey) = secrets_key(dir.path(), "secrets");
    let host = host_with_key(t, "h", &seed).await;
    let value_file = dir.path().join("value");
    std::fs::write(&value_file, format!("{VALUE}\n")).unwrap();
    let put = ["secret", "put", "db", "--xkey", &xkey, "--from-file", value_file.to_str().unwrap()];
    t.ok(&put).await;
    assert_eq!(t.ok(&["secret", "ls"]).await, "db\n");

    let started = start_configured(t, "granted", &host.id, &["--secret", "db"]).await;
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let started = start_configured(t, "other", &host.id, &[]).await;
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let granted = lattice.serve_http_as("web1", &host.id, "granted", &[]).await;
    let other = lattice.serve_http_as("web2", &host.id, "other", &[]).await;

    assert_eq!(get(granted, "/config/db").await.text(), VALUE, "the granted component reads it");
    assert_eq!(get(other, "/config/db").await.status, 404, "another component on the host cannot");
    // The same through `wasmcloud:secrets`, as wasmCloud 1.x components read secrets.
    assert_eq!(get(granted, "/secret/db").await.text(), VALUE, "revealed to the granted one");
    assert_eq!(get(other, "/secret/db").await.status, 404, "not-found for another");
    assert!(!get(other, "/config").await.text().contains(VALUE));

    // The bucket holds only the sealed form.
    let nats = async_nats::connect(lattice.nats.url()).await.unwrap();
    let kv =
        async_nats::jetstream::new(nats).get_key_value("TRELLIS_secrets_SECRETS").await.unwrap();
    let raw = kv.get("db").await.unwrap().expect("the secret is stored");
    assert!(!contains(&raw, VALUE), "plaintext in the bucket: {}", String::from_utf8_lossy(&raw));
    assert!(contains(&raw, "\"box\""), "{}", String::from_utf8_lossy(&raw));

    // Nor in the inventory or any event.
    let inventory = t.ok(&["get", "inventory", &host.id, "--output", "json"]).await;
    assert!(!inventory.contains(VALUE), "{inventory}");
    assert!(inventory.contains("granted"), "{inventory}");
    let seen = events.lock().unwrap().clone();
    assert!(!seen.is_empty(), "events were published");
    assert!(seen.iter().all(|e| !contains(e, VALUE)), "the value in an event");

    // A grant of a missing secret, or on a host without the key, refuses the start.
    let missing = start_configured(t, "missing", &host.id, &["--secret", "nope"]).await;
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no secret `nope`"), "{missing:?}");
    let keyless = t.host("keyless", &[]).await;
    let refused = start_configured(t, "there", &keyless.id, &["--secret", "db"]).await;
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && why.contains("holds no secrets key"), "{why}");

    t.ok(&["secret", "rm", "db"]).await;
    assert_eq!(t.ok(&["secret", "ls"]).await, "");
    let err = t.fails(&["secret", "rm", "db"]).await;
    assert!(err.contains("no secret `db`"), "{err}");
}

#[tokio::test]
async fn only_admins_get_a_secret_and_another_lattice_cannot_open_it() {
    let lattice = Lattice::new("vault").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let (seed, xkey) = secrets_key(dir.path(), "vault");
    // The test's operator is an admin; a second one only a deployer.
    let deployer = OperatorKey::generate();
    let deployer_seed = dir.path().join("deployer.nk");
    std::fs::write(&deployer_seed, deployer.seed()).unwrap();
    let trusted = format!(
        "--trusted-operator={},{}:deployer",
        t.operator.public_key(),
        deployer.public_key()
    );
    let args =
        ["--allow-unsigned".to_owned(), format!("--secrets-seed={}", seed.display()), trusted];
    let host = t.host_with("h", &args).await;
    let value_file = dir.path().join("value");
    std::fs::write(&value_file, VALUE).unwrap();
    let put =
        ["secret", "put", "api", "--xkey", &xkey, "--from-file", value_file.to_str().unwrap()];
    t.ok(&put).await;

    assert_eq!(t.ok(&["secret", "get", "api"]).await, format!("{VALUE}\n"), "an admin reads it");
    assert_eq!(t.ok(&["secret", "get", "api", "--xkey", &xkey]).await, format!("{VALUE}\n"));

    let with_key = |key: Option<&Path>| signing_with(t, key);
    let err = with_key(Some(&deployer_seed)).fails(&["secret", "get", "api"]).await;
    assert!(err.contains("has role deployer; this request needs admin"), "{err}");
    assert!(!err.contains(VALUE));
    let err = with_key(None).fails(&["secret", "get", "api"]).await;
    assert!(err.contains("must be signed by an operator"), "even a development host: {err}");
    // A deployer may still grant it.
    let started = with_key(Some(&deployer_seed))
        .cli(&[
            "start",
            "component",
            component("configured").to_str().unwrap(),
            "--id",
            "app",
            "--secret",
            "api",
        ])
        .await;
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    drop(host);

    // Another lattice on the same NATS, with its own secrets key: the sealed secret copied into
    // its bucket does not open there.
    let other = Trellis::new(&lattice.nats.url(), "elsewhere");
    let (other_seed, _) = secrets_key(dir.path(), "elsewhere");
    let other_host = host_with_key(&other, "o", &other_seed).await;
    let js = async_nats::jetstream::new(async_nats::connect(lattice.nats.url()).await.unwrap());
    let raw = js.get_key_value("TRELLIS_vault_SECRETS").await.unwrap().get("api").await.unwrap();
    let theirs = js.get_key_value("TRELLIS_elsewhere_SECRETS").await.expect("the host made it");
    theirs.put("api", raw.expect("stored")).await.unwrap();
    let refused = start_configured(&other, "thief", &other_host.id, &["--secret", "api"]).await;
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started with a secret it cannot open");
    assert!(why.contains("cannot be opened with the secrets key"), "{why}");
    let err = other.fails(&["secret", "get", "api"]).await;
    assert!(err.contains("cannot be opened"), "{err}");
}

#[tokio::test]
async fn a_manifest_grants_a_secret_and_strict_hosts_take_only_sealed_ones() {
    let lattice = Lattice::new("vaultapp").await;
    let t = &lattice.trellis;
    let dir = tempfile::tempdir().unwrap();
    let (seed, xkey) = secrets_key(dir.path(), "vaultapp");
    let args = [
        "--allow-unsigned".to_owned(),
        "--scheduler".to_owned(),
        "--label=secrets=yes".to_owned(),
        format!("--secrets-seed={}", seed.display()),
    ];
    let host = t.host_with("s1", &args).await;
    // A host without the key, which the manifest's requirement keeps the component off.
    let _plain = t.host("p1", &[]).await;
    let value_file = dir.path().join("value");
    std::fs::write(&value_file, VALUE).unwrap();
    let from = value_file.to_str().unwrap();
    t.ok(&["secret", "put", "db", "--xkey", &xkey, "--from-file", from]).await;

    let manifest = dir.path().join("app.yaml");
    let yaml = format!(
        "name: vaultapp\nversion: '1'\ncomponents:\n  - name: app\n    source: {}\n    \
         requirements: {{secrets: 'yes'}}\n    secrets: [db]\n",
        component("configured").display()
    );
    std::fs::write(&manifest, yaml).unwrap();
    let out = t.ok(&["app", "deploy", manifest.to_str().unwrap()]).await;
    assert!(out.contains("deployed"), "{out}");
    let addr = lattice.serve_http(&host.id, "app", &[]).await;
    assert_eq!(get(addr, "/config/db").await.text(), VALUE, "granted by the manifest");

    // A strict host (no --allow-unsigned) opens what a trusted operator sealed, and refuses a
    // secret written without an operator key, as it refuses such config.
    let strict = [format!("--secrets-seed={}", seed.display())];
    let strict = t.host_with("strict", &strict).await;
    let sealed = t.ok(&["secret", "get", "db", "--host", &strict.id]).await;
    assert_eq!(sealed, format!("{VALUE}\n"));
    let unsigned = signing_with(t, None);
    unsigned.ok(&["secret", "put", "planted", "--xkey", &xkey, "--from-file", from]).await;
    let err = t.fails(&["secret", "get", "planted", "--host", &strict.id]).await;
    assert!(err.contains("was not taken: unsigned"), "{err}");
    assert!(!err.contains(VALUE));
}

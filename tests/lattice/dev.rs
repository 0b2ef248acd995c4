//! `trellis dev`: a developer's loop on a copy of a test component's crate.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::process::Command;
use trellis_tests::load::{self, Outcome};
use trellis_tests::{bin, eventually, free_port, http_request};

/// GET `/` at `addr`: its body when it answers 200.
async fn hello(addr: SocketAddr) -> Option<String> {
    let reply = http_request(addr, "GET", "/", b"").await.ok()?;
    (reply.status == 200).then(|| reply.text())
}

#[tokio::test]
async fn editing_the_source_replaces_the_component_in_place_and_no_request_fails() {
    // A crate of its own, outside any workspace, as a developer's would be.
    let project = tempfile::tempdir().unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/components/http-hello");
    std::fs::create_dir(project.path().join("src")).unwrap();
    let manifest = std::fs::read_to_string(format!("{source}/Cargo.toml")).unwrap();
    std::fs::write(project.path().join("Cargo.toml"), manifest + "\n[workspace]\n").unwrap();
    let lib = std::fs::read_to_string(format!("{source}/src/lib.rs")).unwrap();
    let lib_rs = project.path().join("src/lib.rs");
    std::fs::write(&lib_rs, &lib).unwrap();

    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let errors = project.path().join("dev.log");
    let mut dev = Command::new(bin("trellis"))
        .args(["dev", project.path().to_str().unwrap(), "--listen", &addr.to_string()])
        .env_remove("TRELLIS_NATS_URL")
        .env_remove("TRELLIS_CONTEXT")
        .env("XDG_CONFIG_HOME", project.path())
        // Builds share one target directory across runs: the first one compiles the deps.
        .env("CARGO_TARGET_DIR", trellis_tests::target_dir().join("wasm-dev"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errors).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("trellis dev starts");
    let first = eventually("trellis dev to serve", Duration::from_secs(300), || hello(addr)).await;
    assert!(first.starts_with("hello from trellis"), "{first}");

    // Requests keep coming while the source changes and the new version replaces the old.
    let running = Arc::new(AtomicBool::new(true));
    let load =
        tokio::spawn(load::http_while(addr, "/", 4, Duration::from_secs(30), running.clone()));
    std::fs::write(&lib_rs, lib.replace("hello from trellis", "edited hello")).unwrap();
    eventually("the edited version to answer", Duration::from_secs(180), || async move {
        hello(addr).await.filter(|body| body.starts_with("edited hello"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.store(false, Ordering::Relaxed);
    let tally = load.await.unwrap();
    println!("{tally}");
    assert!(tally.records.len() > 10, "requests ran through the swap:\n{tally}");
    assert_eq!(tally.count(&Outcome::Answered), tally.records.len(), "none failed:\n{tally}");

    // A build that fails is shown, and the running version keeps serving.
    std::fs::write(&lib_rs, lib.replace("struct Hello;", "struct Hello")).unwrap();
    let log = errors.clone();
    eventually("the build error to be shown", Duration::from_secs(120), || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("still serving the previous version").then_some(())
        }
    })
    .await;
    let text = std::fs::read_to_string(&errors).unwrap();
    assert!(text.contains("build failed") && text.contains("error"), "{text}");
    assert!(hello(addr).await.is_some_and(|b| b.starts_with("edited hello")));

    // Ctrl-C stops it, and the lattice it started, cleanly.
    let pid = rustix::process::Pid::from_raw(dev.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), dev.wait()).await;
    assert!(status.is_ok_and(|s| s.is_ok_and(|s| s.success())), "exits 0 on Ctrl-C");
    assert!(hello(addr).await.is_none(), "nothing serves after it stopped");
}

#[tokio::test]
async fn on_a_running_lattice_a_wasm_file_is_served_and_nothing_is_left_behind() {
    let lattice = crate::Lattice::new("dev-here").await;
    let host = lattice.trellis.host("h", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("http_hello.wasm");
    std::fs::copy(trellis_tests::component("http-hello"), &wasm).unwrap();

    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut dev = Command::new(bin("trellis"))
        .args(["dev", wasm.to_str().unwrap(), "--listen", &addr.to_string()])
        .args(["--nats-url", &lattice.nats.url(), "--lattice", "dev-here"])
        .env("XDG_CONFIG_HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("trellis dev starts");
    eventually("trellis dev to serve", Duration::from_secs(60), || hello(addr)).await;
    let client = lattice.trellis.client().await;
    let inventory = client.inventory(&host.id).await.unwrap();
    assert!(inventory.components.iter().any(|c| c.id == "http-hello"), "on the lattice's host");

    let pid = rustix::process::Pid::from_raw(dev.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), dev.wait()).await;
    assert!(status.is_ok_and(|s| s.is_ok_and(|s| s.success())), "exits 0 on Ctrl-C");
    let inventory = client.inventory(&host.id).await.unwrap();
    assert!(inventory.components.is_empty() && inventory.providers.is_empty(), "{inventory:?}");
    let links = client.state().await.unwrap().links().await.unwrap();
    assert!(links.is_empty(), "its link is gone too: {links:?}");
}

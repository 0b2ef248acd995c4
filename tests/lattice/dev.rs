//! `trellis dev`: a developer's loop on a copy of a test component's crate.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};
use trellis_tests::load::{self, Outcome};
use trellis_tests::{bin, eventually, free_port, http_request};

/// GET `/` at `addr`: its body when it answers 200.
async fn hello(addr: SocketAddr) -> Option<String> {
    let reply = http_request(addr, "GET", "/", b"").await.ok()?;
    (reply.status == 200).then(|| reply.text())
}

/// `trellis dev` on `project` with its own lattice, serving on `addr`, its stderr in `log`.
fn dev_on_its_own(project: &Path, addr: SocketAddr, log: &Path, extra: &[&str]) -> Child {
    Command::new(bin("trellis"))
        .args(["dev", project.to_str().unwrap(), "--listen", &addr.to_string()])
        .args(extra)
        .env_remove("TRELLIS_NATS_URL")
        .env_remove("TRELLIS_CONTEXT")
        .env("XDG_CONFIG_HOME", project)
        // Builds share one target directory across runs: the first one compiles the deps.
        .env("CARGO_TARGET_DIR", trellis_tests::target_dir().join("wasm-dev"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("trellis dev starts")
}

/// Requests keep coming while `edit` changes the source, until the new version answers with
/// `edited`; none of them fails.
async fn edit_under_load(addr: SocketAddr, edit: impl FnOnce(), edited: &'static str) {
    let running = Arc::new(AtomicBool::new(true));
    let load =
        tokio::spawn(load::http_while(addr, "/", 4, Duration::from_secs(30), running.clone()));
    edit();
    eventually("the edited version to answer", Duration::from_secs(180), || async move {
        hello(addr).await.filter(|body| body.starts_with(edited))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.store(false, Ordering::Relaxed);
    let tally = load.await.unwrap();
    println!("{tally}");
    assert!(tally.records.len() > 10, "requests ran through the swap:\n{tally}");
    assert_eq!(tally.count(&Outcome::Answered), tally.records.len(), "none failed:\n{tally}");
}

/// Waits until `log` shows that a failed build left the previous version serving.
async fn build_failure_shown(log: &Path) -> String {
    let log = log.to_owned();
    eventually("the build error to be shown", Duration::from_secs(120), || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("still serving the previous version").then_some(text)
        }
    })
    .await
}

/// Ctrl-C stops it, and the lattice it started, cleanly.
async fn interrupt(mut dev: Child, addr: SocketAddr) {
    let pid = rustix::process::Pid::from_raw(dev.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), dev.wait()).await;
    assert!(status.is_ok_and(|s| s.is_ok_and(|s| s.success())), "exits 0 on Ctrl-C");
    assert!(hello(addr).await.is_none(), "nothing serves after it stopped");
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
    let log = project.path().join("dev.log");
    let dev = dev_on_its_own(project.path(), addr, &log, &[]);
    let first = eventually("trellis dev to serve", Duration::from_secs(300), || hello(addr)).await;
    assert!(first.starts_with("hello from trellis"), "{first}");

    let edit = || std::fs::write(&lib_rs, lib.replace("hello from trellis", "edited hello"));
    edit_under_load(addr, || edit().unwrap(), "edited hello").await;

    // A build that fails is shown, and the running version keeps serving.
    std::fs::write(&lib_rs, lib.replace("struct Hello;", "struct Hello")).unwrap();
    let text = build_failure_shown(&log).await;
    assert!(text.contains("build failed") && text.contains("error"), "{text}");
    assert!(hello(addr).await.is_some_and(|b| b.starts_with("edited hello")));

    interrupt(dev, addr).await;
}

#[tokio::test]
async fn a_componentize_py_app_is_rebuilt_and_replaced_while_it_serves() {
    // An app.py and the WIT of the world it targets, as componentize-py's examples lay it out.
    let project = tempfile::tempdir().unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/components/py-hello/app.py");
    let app = std::fs::read_to_string(source).unwrap();
    let app_py = project.path().join("app.py");
    std::fs::write(&app_py, &app).unwrap();
    copy_dir(&trellis_tests::wasi_http_wit(), &project.path().join("wit"));

    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = project.path().join("dev.log");
    let world = ["--world", "wasi:http/proxy@0.2.12"];
    let dev = dev_on_its_own(project.path(), addr, &log, &world);
    let first = eventually("trellis dev to serve", Duration::from_secs(300), || hello(addr)).await;
    assert!(first.starts_with("hello from python"), "{first}");

    let edit = || std::fs::write(&app_py, app.replace("hello from python", "edited python"));
    edit_under_load(addr, || edit().unwrap(), "edited python").await;

    // A syntax error is componentize-py's to report; the running version keeps serving.
    std::fs::write(&app_py, app.replace("def handle(", "def handle((")).unwrap();
    let text = build_failure_shown(&log).await;
    assert!(text.contains("build failed (componentize-py"), "{text}");
    assert!(text.contains("SyntaxError"), "the Python error is shown: {text}");
    assert!(hello(addr).await.is_some_and(|b| b.starts_with("edited python")));

    interrupt(dev, addr).await;
}

/// Copies directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
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

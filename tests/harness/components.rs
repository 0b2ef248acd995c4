//! Building the test components in `tests/components` for `wasm32-wasip2`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::process::target_dir;

/// The path of test component `name` (a package in `tests/components`), built on first use.
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let out = BUILT.get_or_init(build_all);
    // Libraries (cdylib) turn dashes into underscores; binaries keep their name.
    let lib = out.join(format!("{}.wasm", name.replace('-', "_")));
    let path = if lib.is_file() { lib } else { out.join(format!("{name}.wasm")) };
    assert!(path.is_file(), "test component {} was not built", path.display());
    path
}

fn build_all() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("components/Cargo.toml");
    let target = target_dir().join("wasm-components");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cannot run cargo to build the test components");
    assert!(
        status.success(),
        "building test components failed; is the target installed? `rustup target add wasm32-wasip2`"
    );
    target.join("wasm32-wasip2/release")
}

/// The Python test component `tests/components/<name>/app.py`, built with componentize-py
/// against the `wasi:http/proxy` WIT that wasmtime-wasi-http ships; rebuilt when the source is
/// newer than the output.
pub fn python_component(name: &str) -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("components").join(name);
    let out = target_dir().join("wasm-components").join(format!("{name}.wasm"));
    let stale = |out: &PathBuf| {
        let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        match (modified(out), modified(&source.join("app.py"))) {
            (Some(built), Some(edited)) => built < edited,
            _ => true,
        }
    };
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_build = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if stale(&out) {
        std::fs::create_dir_all(out.parent().expect("parent")).expect("output dir");
        let status = Command::new("componentize-py")
            .arg("-d")
            .arg(wasi_http_wit())
            .args(["-w", "wasi:http/proxy@0.2.12", "componentize", "app", "-o"])
            .arg(&out)
            .current_dir(&source)
            .status()
            .expect("componentize-py must be on PATH: `scripts/prereqs.sh` installs it");
        assert!(status.success(), "componentize-py failed to build {name}");
    }
    out
}

/// The `wit/` directory of the wasmtime-wasi-http crate this workspace builds with.
pub fn wasi_http_wit() -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
        .output()
        .expect("cargo metadata");
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let manifest = metadata["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "wasmtime-wasi-http"))
        .and_then(|p| p["manifest_path"].as_str())
        .expect("wasmtime-wasi-http in the dependency graph");
    PathBuf::from(manifest).parent().expect("crate dir").join("wit")
}

/// http-hello with claims signed by `account` (allowed to call out over HTTP; `no_reuse`
/// forbids warm instances), written into `dir`; returns its path.
pub fn signed_hello(dir: &std::path::Path, account: &nkeys::KeyPair, no_reuse: bool) -> String {
    signed_component(dir, "http-hello", account, (&["wasi:http/outgoing-handler"], &[]), no_reuse)
}

/// Test component `name` with claims signed by `account` allowing the imports `allow` and the
/// calling components `callers` (empty: any), written into `dir`; returns its path.
pub fn signed_component(
    dir: &std::path::Path,
    name: &str,
    account: &nkeys::KeyPair,
    (allow, callers): (&[&str], &[&str]),
    no_reuse: bool,
) -> String {
    use trellis_claims::{self as claims, ClaimsInput};
    let wasm = std::fs::read(component(name)).expect("read the test component");
    let input = ClaimsInput {
        name: name.into(),
        rev: 1,
        allow: allow.iter().map(|a| (*a).to_owned()).collect(),
        valid_for: None,
        no_reuse,
        callers: callers.iter().map(|c| (*c).to_owned()).collect(),
    };
    let now = trellis_lattice::envelope::unix_ms() / 1000;
    let signed = claims::sign(&wasm, account, &input, now).expect("sign the test component");
    let file = dir.join(format!("{name}.wasm"));
    std::fs::write(&file, signed).expect("write the signed component");
    file.to_str().expect("utf-8 path").to_owned()
}

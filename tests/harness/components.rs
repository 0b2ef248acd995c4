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

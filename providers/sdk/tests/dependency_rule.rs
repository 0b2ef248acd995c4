//! The rule of `docs/design/crates.md`: providers depend on the wire contract (`trellis-lattice`)
//! and nothing that only operators, hosts or exporting binaries need. Checked on the manifests, so
//! a dependency added back fails here instead of quietly growing every provider's build.

use std::path::{Path, PathBuf};

/// What neither the SDK nor the wire contract may depend on: our crates outside the contract,
/// and the heavy ones that left it (an HTTPS client, gRPC, OCI, YAML, JSON Schema, wasm).
const OUTSIDE_THE_CONTRACT: &[&str] = &[
    "trellis-claims",
    "trellis-host",
    "trellis-ops",
    "trellis-otlp",
    "trellis-scheduler",
    "hyper",
    "hyper-rustls",
    "oci-client",
    "opentelemetry-otlp",
    "schemars",
    "serde-saphyr",
    "tonic",
    "wasm-encoder",
    "wasmparser",
    "wasmtime",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The names in `[dependencies]` of a Cargo.toml (not dev- or build-dependencies).
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest.display()));
    let mut section = "";
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]"
            && !line.starts_with('#')
            && let Some((key, _)) = line.split_once('=')
        {
            names.push(key.trim().trim_end_matches(".workspace").to_owned());
        }
    }
    assert!(!names.is_empty(), "no [dependencies] read from {}", manifest.display());
    names
}

fn ours(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).filter(|n| n.starts_with("trellis-")).collect()
}

/// Checks that `crate_dir`'s only crate of ours is `only_ours` and that it names none outside.
fn assert_inside_the_contract(crate_dir: &str, only_ours: &str) {
    let names = dependencies(&repo().join(crate_dir).join("Cargo.toml"));
    assert_eq!(ours(&names), [only_ours], "{crate_dir}'s crates of ours");
    for name in &names {
        assert!(!OUTSIDE_THE_CONTRACT.contains(&name.as_str()), "{crate_dir} depends on {name}");
    }
}

#[test]
fn the_sdk_depends_on_the_contract_only() {
    assert_inside_the_contract("providers/sdk", "trellis-lattice");
}

#[test]
fn the_contract_depends_on_the_protobufs_only() {
    assert_inside_the_contract("lattice", "trellis-proto");
}

#[test]
fn providers_add_only_the_exporter_for_their_executables() {
    let allowed = ["trellis-lattice", "trellis-proto", "trellis-provider", "trellis-otlp"];
    let mut providers = 0;
    for entry in std::fs::read_dir(repo().join("providers")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        if manifest.parent().is_some_and(|dir| dir.ends_with("sdk")) || !manifest.exists() {
            continue;
        }
        providers += 1;
        for name in ours(&dependencies(&manifest)) {
            assert!(allowed.contains(&name), "{} depends on {name}", manifest.display());
        }
    }
    assert!(providers >= 6, "found {providers} providers");
}

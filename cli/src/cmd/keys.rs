//! `trellis keys gen`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::process::ExitCode;

use anyhow::Context as _;
use nkeys::KeyPair;

use crate::args::{Global, KeyKind, KeysCommand, Output};
use crate::output::print_json;

pub fn run(g: &Global, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let KeysCommand::Gen { kind, out } = cmd;
    let (pair, name) = match kind {
        KeyKind::Secrets => {
            let key = nkeys::XKey::new();
            let seed = key.seed().context("cannot encode the seed")?;
            return write_key(g, "secrets", (&seed, &key.public_key()), out);
        }
        KeyKind::Operator => (KeyPair::new_operator(), "operator"),
        KeyKind::Account => (KeyPair::new_account(), "account"),
        KeyKind::Cluster => (KeyPair::new_cluster(), "cluster"),
        KeyKind::Host => (KeyPair::new_server(), "host"),
        KeyKind::Component => (KeyPair::new_module(), "component"),
        KeyKind::Provider => (KeyPair::new_service(), "provider"),
        KeyKind::NatsUser => (KeyPair::new_user(), "nats-user"),
    };
    let seed = pair.seed().context("cannot encode the seed")?;
    write_key(g, name, (&seed, &pair.public_key()), out)
}

/// Writes `seed` to `out` (default `<name>.nk`) and prints the public key.
fn write_key(
    g: &Global,
    name: &str,
    (seed, public_key): (&str, &str),
    out: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let path = out.unwrap_or_else(|| format!("{name}.nk").into());
    // create_new: never overwrite a key; mode 0600: only the owner reads the seed.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| {
            format!("cannot create seed file {} (it must not exist yet)", path.display())
        })?;
    writeln!(file, "{seed}").with_context(|| format!("cannot write {}", path.display()))?;
    if g.output == Output::Json {
        print_json(&serde_json::json!({
            "kind": name,
            "public_key": public_key,
            "seed_file": path.display().to_string(),
        }));
    } else {
        println!("{public_key}");
        eprintln!("{name} seed written to {} (mode 0600); keep it secret", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

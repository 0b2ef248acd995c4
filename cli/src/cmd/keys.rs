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
        KeyKind::Operator => (KeyPair::new_operator(), "operator"),
        KeyKind::Account => (KeyPair::new_account(), "account"),
        KeyKind::Cluster => (KeyPair::new_cluster(), "cluster"),
        KeyKind::Host => (KeyPair::new_server(), "host"),
        KeyKind::Component => (KeyPair::new_module(), "component"),
        KeyKind::Provider => (KeyPair::new_service(), "provider"),
        KeyKind::NatsUser => (KeyPair::new_user(), "nats-user"),
    };
    let path = out.unwrap_or_else(|| format!("{name}.nk").into());
    let seed = pair.seed().context("cannot encode the seed")?;
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
            "public_key": pair.public_key(),
            "seed_file": path.display().to_string(),
        }));
    } else {
        println!("{}", pair.public_key());
        eprintln!("{name} seed written to {} (mode 0600); keep it secret", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

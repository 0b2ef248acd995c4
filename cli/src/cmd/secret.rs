//! `trellis secret put|get|ls|rm`: secrets sealed to the lattice's secrets key, in the
//! lattice's SECRETS bucket (see `trellis_lattice::secrets`).

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::json;
use trellis_lattice::client::LatticeClient;
use trellis_lattice::secrets::{SealedSecret, SecretStore, SecretValue, public_xkey};
use trellis_lattice::subject::validate_id;

use super::get::PING_WAIT;
use crate::args::{Global, Output, SecretCommand};
use crate::output::print_json;

pub async fn run(g: &Global, cmd: SecretCommand) -> anyhow::Result<ExitCode> {
    let lattice = super::connect(g).await?;
    let store = || async {
        let store =
            SecretStore::open(&lattice.jetstream(), &g.lattice, lattice.js_replicas()).await?;
        anyhow::Ok(store.with_sealer(lattice.operator()))
    };
    match cmd {
        SecretCommand::Put { name, xkey, from_file } => {
            validate_id("secret name", &name)?;
            let recipient = public_xkey(&xkey)?;
            let value = SecretValue::new(read_value(from_file.as_deref())?);
            let sealed = SealedSecret::seal(&recipient, &g.lattice, &name, &value)?;
            store().await?.put(&name, &sealed).await?;
            match g.output {
                Output::Json => print_json(&json!({ "name": name, "xkey": xkey.trim() })),
                Output::Text => println!("secret `{name}` saved, sealed to {}", xkey.trim()),
            }
        }
        SecretCommand::Get { name, host, xkey } => {
            validate_id("secret name", &name)?;
            let value = get(g, &lattice, &name, host, xkey.as_deref()).await?;
            match g.output {
                Output::Json => print_json(&json!({ "name": name, "value": value.expose() })),
                Output::Text => println!("{}", value.expose()),
            }
        }
        SecretCommand::Ls => {
            let names = store().await?.names().await?;
            match g.output {
                Output::Json => print_json(&json!(names)),
                Output::Text => names.iter().for_each(|n| println!("{n}")),
            }
        }
        SecretCommand::Rm { name } => {
            validate_id("secret name", &name)?;
            if !store().await?.delete(&name).await? {
                bail!("no secret `{name}` in lattice `{}`", g.lattice);
            }
            match g.output {
                Output::Json => print_json(&json!({ "name": name, "deleted": true })),
                Output::Text => println!("secret `{name}` deleted"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The value from `file`, or stdin, without one trailing newline.
fn read_value(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let mut value = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the secret's value from {}", path.display()))?,
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("type the secret's value, then Ctrl-D (or pass --from-file)");
            }
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .context("cannot read the secret's value from stdin (UTF-8 text)")?;
            value
        }
    };
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// Secret `name` from a host holding the secrets key (`host`, or one answering a ping whose
/// key is `xkey` when given), opened with a one-time key made for the request.
async fn get(
    g: &Global,
    lattice: &LatticeClient,
    name: &str,
    host: Option<String>,
    xkey: Option<&str>,
) -> anyhow::Result<SecretValue> {
    let xkey = xkey.map(str::trim);
    let host = match host {
        Some(host) => host,
        None => {
            let hosts = lattice.hosts(PING_WAIT).await?;
            let holds = |h: &&trellis_proto::HostInfo| match xkey {
                Some(key) => h.secrets_xkey == key,
                None => !h.secrets_xkey.is_empty(),
            };
            let Some(host) = hosts.iter().find(holds) else {
                bail!(
                    "no host in lattice `{}` holds the secrets key{}: start one with \
                     --secrets-seed <file>, or name one with --host",
                    g.lattice,
                    xkey.map(|k| format!(" {k}")).unwrap_or_default()
                );
            };
            host.id.clone()
        }
    };
    let mine = nkeys::XKey::new();
    let sealed = lattice.secret_get(&host, name, &mine.public_key()).await?;
    let sealed = SealedSecret::from_json(name, &sealed)?;
    if let Some(key) = xkey
        && sealed.sender != key
    {
        bail!(
            "host {host} answered with a secret sealed by {}, not by the lattice's secrets key \
             {key}: it does not hold that key",
            sealed.sender
        );
    }
    Ok(sealed.open(&mine, &g.lattice, name)?)
}

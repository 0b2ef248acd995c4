//! `trellis push`: an artifact into the lattice's store, and optionally its code into the
//! compile cache ahead of any start (docs/design/compile-cache.md, "Compile ahead").

use std::process::ExitCode;

use anyhow::Context as _;

use super::get::PING_WAIT;
use super::start::read_component;
use crate::args::{Global, Output, PushArgs};
use crate::output::print_json;
use crate::progress::Progress;

pub async fn run(g: &Global, args: PushArgs) -> anyhow::Result<ExitCode> {
    let bytes = read_component(&args.file)?;
    let lattice = super::connect(g).await?;
    let mib = bytes.len() as f64 / (1024.0 * 1024.0);
    let progress = Progress::start(g, format!("uploading {} ({mib:.1} MiB)", args.file.display()));
    let digest = lattice.state().await?.put_artifact(&bytes).await?;
    let mut compiled = None;
    if args.compile {
        let host = match args.host {
            Some(host) => host,
            None => {
                let hosts = lattice.hosts(PING_WAIT).await?;
                let least = hosts.into_iter().filter(|h| !h.draining).min_by_key(|h| h.components);
                least.map(|h| h.id).with_context(|| {
                    format!("no host in lattice `{}` answered to compile {digest}", g.lattice)
                })?
            }
        };
        progress.say(format!("compiling {digest} on {host} into the compile cache"));
        let already = lattice.compile_ahead(&host, &digest).await?;
        compiled = Some((host, already));
    }
    drop(progress);
    if g.output == Output::Json {
        let (host, already) = compiled.clone().unzip();
        print_json(&serde_json::json!({
            "digest": digest,
            "compiled_on": host,
            "already_cached": already,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    match compiled {
        None => println!("pushed {digest}"),
        Some((_, true)) => println!("pushed {digest}; its code was already in the compile cache"),
        Some((host, false)) => {
            println!("pushed {digest}; compiled on {host} into the compile cache")
        }
    }
    Ok(ExitCode::SUCCESS)
}

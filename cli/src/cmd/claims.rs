//! `trellis claims sign|inspect`.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use trellis_claims::{self as claims, ClaimsInput};

use crate::args::{ClaimsCommand, ClaimsSignArgs, Global, Output};
use crate::output::print_json;

pub fn run(g: &Global, cmd: ClaimsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClaimsCommand::Sign(args) => sign(g, args),
        ClaimsCommand::Inspect { file, trusted_issuers } => inspect(g, &file, &trusted_issuers),
    }
}

fn sign(g: &Global, args: ClaimsSignArgs) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let seed = std::fs::read_to_string(&args.issuer)
        .with_context(|| format!("cannot read issuer seed file {}", args.issuer.display()))?;
    let issuer = nkeys::KeyPair::from_seed(seed.trim())
        .ok()
        .filter(|k| matches!(k.key_pair_type(), nkeys::KeyPairType::Account))
        .with_context(|| {
            format!(
                "{} does not hold an account seed; make one with `trellis keys gen account`",
                args.issuer.display()
            )
        })?;
    for allow in &args.allow {
        let interface = allow.strip_suffix("/*").unwrap_or(allow);
        if allow.ends_with("/*") {
            if !interface.contains(':') {
                bail!("--allow `{allow}`: expected `namespace:package/*`");
            }
        } else {
            trellis_lattice::link::InterfaceName::parse(interface)?;
        }
    }
    let input = ClaimsInput {
        name: args.name,
        rev: args.rev,
        allow: args.allow,
        valid_for: args.expires,
        no_reuse: args.no_reuse,
        callers: args.callers,
    };
    let signed = claims::sign(&wasm, &issuer, &input, now_s())?;
    std::fs::write(&args.output_file, &signed)
        .with_context(|| format!("cannot write {}", args.output_file.display()))?;
    let token = claims::inspect(&signed)?;
    if g.output == Output::Json {
        print_json(&serde_json::to_value(&token)?);
    } else {
        println!(
            "signed {} as {} rev {} by {}",
            args.output_file.display(),
            token.trellis.name,
            token.trellis.rev,
            token.iss
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(g: &Global, file: &std::path::Path, trusted: &[String]) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let imports = trellis_host::runtime::list_imports(&wasm).unwrap_or_default();
    let token = claims::inspect(&wasm);
    let verdict = match (&token, trusted.is_empty()) {
        (Err(e), _) => Err(e.clone()),
        (Ok(_), true) => {
            Ok("signature and hash verify (no --trusted-issuer given: trust not checked)"
                .to_owned())
        }
        (Ok(_), false) => claims::verify(&wasm, trusted, now_s())
            .and_then(|v| {
                claims::check_imports(&v.claims, imports.iter().map(String::as_str)).map(|()| v)
            })
            .map(|_| "verifies: trusted issuer, hash, validity and imports".to_owned()),
    };
    if g.output == Output::Json {
        print_json(&serde_json::json!({
            "claims": token.as_ref().ok(),
            "imports": imports,
            "verifies": verdict.is_ok(),
            "verdict": verdict.as_ref().map_or_else(|e| e.to_string(), Clone::clone),
        }));
    } else {
        if let Ok(t) = &token {
            println!("name:    {} (rev {})", t.trellis.name, t.trellis.rev);
            println!("issuer:  {}", t.iss);
            println!("hash:    {}", t.trellis.hash);
            println!("issued:  {} (unix)", t.iat);
            println!("expires: {}", t.exp.map_or("never".to_owned(), |e| format!("{e} (unix)")));
            println!("allow:   {}", t.trellis.allow.join(", "));
            if !t.trellis.callers.is_empty() {
                println!("callers: {}", t.trellis.callers.join(", "));
            }
        }
        println!("imports: {}", imports.join(", "));
        match &verdict {
            Ok(v) => println!("result:  {v}"),
            Err(e) => println!("result:  does not verify: {e}"),
        }
    }
    Ok(if verdict.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn now_s() -> u64 {
    trellis_lattice::envelope::unix_ms() / 1000
}

//! `trellis context`: named connection settings (see [`crate::context`]).

use std::process::ExitCode;

use clap::ArgMatches;

use crate::args::{ContextCommand, Global, Output};
use crate::context::{self, Store};
use crate::output::print_json;

pub fn run(g: &Global, matches: &ArgMatches, cmd: ContextCommand) -> anyhow::Result<ExitCode> {
    let store = Store::user()?;
    match cmd {
        ContextCommand::Add { name, description, console_url, select } => {
            let settings = context::from_command_line(g, matches, (description, console_url))?;
            store.save(&name, &settings)?;
            if select {
                store.select(&name)?;
            }
            println!("saved context `{name}`{}", if select { " and selected it" } else { "" });
        }
        ContextCommand::Use { name } => {
            store.select(&name)?;
            println!("using context `{name}`");
        }
        ContextCommand::Ls => {
            let (names, selected) = (store.names()?, store.selected()?);
            match g.output {
                Output::Json => print_json(&serde_json::json!({
                    "contexts": names,
                    "selected": selected,
                })),
                Output::Text if names.is_empty() => {
                    println!("no contexts yet: `trellis context add NAME --nats-url ...`");
                }
                Output::Text => {
                    for name in names {
                        let mark = if selected.as_ref() == Some(&name) { "*" } else { " " };
                        let about = store.load(&name).ok().and_then(|s| s.description);
                        println!(
                            "{mark} {name}{}",
                            about.map(|d| format!("  {d}")).unwrap_or_default()
                        );
                    }
                }
            }
        }
        ContextCommand::Show { name } => {
            let name = match name {
                Some(name) => name,
                None => store.selected()?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "no context is selected: `trellis context use NAME` selects one"
                    )
                })?,
            };
            let settings = store.load(&name)?;
            match g.output {
                Output::Json => print_json(&serde_json::to_value(&settings)?),
                Output::Text => {
                    println!("context {name}");
                    let value = serde_json::to_value(&settings)?;
                    for (key, value) in value.as_object().into_iter().flatten() {
                        let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                        println!("  {key}: {value}");
                    }
                }
            }
        }
        ContextCommand::Rm { name } => {
            store.remove(&name)?;
            println!("deleted context `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

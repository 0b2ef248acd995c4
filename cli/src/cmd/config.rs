//! `trellis config put|get|del`: named config in the lattice's CONFIG bucket.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;
use trellis_lattice::state::Config;
use trellis_lattice::subject::validate_id;

use crate::args::{ConfigCommand, Global, Output};
use crate::output::{print_json, print_table};

pub async fn run(g: &Global, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let lattice = super::connect(g).await?;
    let state = lattice.state().await?;
    match cmd {
        ConfigCommand::Put { name, values } => {
            validate_id("config name", &name)?;
            let config: Config = values.into_iter().collect();
            state.put_config(&name, &config).await?;
            match g.output {
                Output::Json => print_json(&json!({ "name": name, "values": config })),
                Output::Text => println!("config `{name}` saved ({} keys)", config.len()),
            }
        }
        ConfigCommand::Get { name: Some(name) } => {
            let Some(config) = state.get_config(&name).await? else {
                bail!(
                    "no config `{name}` in lattice `{}`; list them with `trellis config get`",
                    g.lattice
                );
            };
            match g.output {
                Output::Json => print_json(&json!({ "name": name, "values": config })),
                Output::Text => {
                    let rows: Vec<Vec<String>> =
                        config.into_iter().map(|(k, v)| vec![k, v]).collect();
                    print_table(&["KEY", "VALUE"], &rows);
                }
            }
        }
        ConfigCommand::Get { name: None } => {
            let names = state.config_names().await?;
            match g.output {
                Output::Json => print_json(&json!(names)),
                Output::Text => names.iter().for_each(|n| println!("{n}")),
            }
        }
        ConfigCommand::Del { name } => {
            if !state.delete_config(&name).await? {
                bail!("no config `{name}` in lattice `{}`", g.lattice);
            }
            println!("config `{name}` deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `trellis get hosts|inventory|links`.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::args::{GetCommand, Global, Output};
use crate::output::{host_json, inventory_json, labels_text, link_json, print_json, print_table};

/// How long `get hosts` listens for ping replies.
pub const PING_WAIT: Duration = Duration::from_millis(500);

pub async fn run(g: &Global, cmd: GetCommand) -> anyhow::Result<ExitCode> {
    let lattice = super::connect(g).await?;
    match cmd {
        GetCommand::Hosts => {
            let hosts = lattice.hosts(PING_WAIT).await?;
            if g.output == Output::Json {
                print_json(&Value::Array(hosts.iter().map(host_json).collect()));
            } else {
                let rows: Vec<Vec<String>> = hosts
                    .iter()
                    .map(|h| {
                        vec![
                            h.id.clone(),
                            h.name.clone(),
                            labels_text(&h.labels),
                            format!("{}s", h.uptime_s),
                            h.components.to_string(),
                            h.providers.to_string(),
                        ]
                    })
                    .collect();
                print_table(&["ID", "NAME", "LABELS", "UPTIME", "COMPONENTS", "PROVIDERS"], &rows);
            }
        }
        GetCommand::Inventory { host_id } => {
            let inv = lattice.inventory(&host_id).await?;
            if g.output == Output::Json {
                print_json(&inventory_json(&inv));
            } else {
                let rows: Vec<Vec<String>> = inv
                    .components
                    .iter()
                    .map(|c| {
                        vec![
                            "component".into(),
                            c.id.clone(),
                            c.digest.clone(),
                            c.exports.join(","),
                        ]
                    })
                    .chain(inv.providers.iter().map(|p| {
                        let state = match (p.running, p.problem.as_str()) {
                            (false, _) => "restarting".to_owned(),
                            (true, "") => "running".to_owned(),
                            (true, problem) => format!("unhealthy: {problem}"),
                        };
                        let place = if p.builtin { ", builtin" } else { "" };
                        vec![
                            "provider".into(),
                            p.id.clone(),
                            p.kind.clone(),
                            format!("{state}, {} restarts{place}", p.restarts),
                        ]
                    }))
                    .collect();
                print_table(&["KIND", "ID", "ARTIFACT", "DETAIL"], &rows);
            }
        }
        GetCommand::Links { source } => super::link::list(g, &lattice, source.as_deref()).await?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn links_out(g: &Global, links: &[trellis_lattice::link::Link]) {
    if g.output == Output::Json {
        print_json(&Value::Array(links.iter().map(link_json).collect()));
        return;
    }
    let rows: Vec<Vec<String>> = links
        .iter()
        .map(|l| {
            let config: Vec<String> = l.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                l.source.clone(),
                l.interface.to_string(),
                l.name.clone(),
                l.target.clone(),
                config.join(","),
            ]
        })
        .collect();
    print_table(&["SOURCE", "INTERFACE", "NAME", "TARGET", "CONFIG"], &rows);
}

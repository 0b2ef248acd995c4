//! `trellis get hosts|inventory|links|events`.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use serde_json::{Value, json};
use trellis_lattice::client::LatticeClient;
use trellis_lattice::proto as pb;

use crate::args::{GetCommand, Global, Output};
use crate::output::{host_json, inventory_json, labels_text, link_json, print_json, print_table};

/// How long `get hosts` listens for ping replies at most: it stops as soon as they stop coming
/// (`LatticeClient::hosts`), so this bounds only a lattice whose replies keep trickling in.
pub const PING_WAIT: Duration = Duration::from_secs(5);

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
                            if h.draining { "draining" } else { "ready" }.to_owned(),
                        ]
                    })
                    .collect();
                let header = ["ID", "NAME", "LABELS", "UPTIME", "COMPONENTS", "PROVIDERS", "STATE"];
                print_table(&header, &rows);
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
        GetCommand::Events { follow, wait_ms, kinds } => {
            events(g, &lattice, follow, Duration::from_millis(wait_ms), &kinds).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints events as they arrive: a line of text each, or one JSON object per line.
async fn events(
    g: &Global,
    lattice: &LatticeClient,
    follow: bool,
    wait: Duration,
    kinds: &[String],
) -> anyhow::Result<()> {
    let mut sub = lattice.nats().subscribe(lattice.subjects().events_all()).await?;
    trellis_lattice::connect::sync_with_server(lattice.nats()).await?;
    eprintln!("listening for events of lattice `{}`", g.lattice);
    let until = (!follow).then(|| tokio::time::Instant::now() + wait);
    loop {
        let next = match until {
            Some(until) => match tokio::time::timeout_at(until, sub.next()).await {
                Ok(next) => next,
                Err(_) => return Ok(()),
            },
            None => sub.next().await,
        };
        let Some(msg) = next else { return Ok(()) };
        let Some(kind) = lattice.subjects().event_kind(msg.subject.as_str()) else { continue };
        if !kinds.is_empty() && !kinds.iter().any(|k| k == kind) {
            continue;
        }
        let Ok(event) = pb::Event::decode(msg.payload) else { continue };
        if g.output == Output::Json {
            println!("{}", event_json(kind, &event));
        } else {
            println!("{} {kind:<18} host={} {}", event.time_ms, event.host_id, event_text(&event));
        }
    }
}

pub(crate) fn event_json(kind: &str, event: &pb::Event) -> Value {
    let body = match &event.body {
        Some(pb::event::Body::Host(h)) => host_json(h),
        Some(pb::event::Body::Component(c)) => {
            json!({ "component_id": c.component_id, "digest": c.digest, "reason": c.reason })
        }
        Some(pb::event::Body::Provider(p)) => {
            json!({ "provider_id": p.provider_id, "kind": p.kind, "reason": p.reason })
        }
        Some(pb::event::Body::Link(l)) => json!({
            "provider_id": l.provider_id, "link_key": l.link_key, "revision": l.revision,
            "reason": l.reason,
        }),
        Some(pb::event::Body::Request(r)) => {
            json!({ "subject": r.subject, "operator": r.operator, "reason": r.reason })
        }
        Some(pb::event::Body::Scale(s)) => json!({
            "component_id": s.component_id, "app": s.app, "from": s.from, "to": s.to,
            "reason": s.reason,
        }),
        None => Value::Null,
    };
    json!({ "kind": kind, "time_ms": event.time_ms, "host_id": event.host_id, "body": body })
}

fn event_text(event: &pb::Event) -> String {
    match &event.body {
        Some(pb::event::Body::Host(h)) => format!("name={} components={}", h.name, h.components),
        Some(pb::event::Body::Component(c)) => format!("component={} {}", c.component_id, c.reason),
        Some(pb::event::Body::Provider(p)) => {
            format!("provider={} kind={} {}", p.provider_id, p.kind, p.reason)
        }
        Some(pb::event::Body::Link(l)) => format!("link={} {}", l.link_key, l.reason),
        Some(pb::event::Body::Request(r)) => {
            let by = if r.operator.is_empty() { "unsigned" } else { &r.operator };
            format!("subject={} by={by} {}", r.subject, r.reason)
        }
        Some(pb::event::Body::Scale(s)) => {
            format!(
                "component={} app={} {} -> {}: {}",
                s.component_id, s.app, s.from, s.to, s.reason
            )
        }
        None => String::new(),
    }
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

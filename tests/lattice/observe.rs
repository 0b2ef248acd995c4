//! What operators watch: the live event stream and structured logs.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use trellis_lattice::http::{HANDLE, HttpRequest, INCOMING_HANDLER, encode};
use trellis_tests::bin;

use crate::Lattice;

#[tokio::test]
async fn get_events_follows_the_lattice_live() {
    let lattice = Lattice::new("events").await;
    let t = &lattice.trellis;
    let host = t.host("h", &[]).await;
    let mut follower = tokio::process::Command::new(bin("trellis"))
        .args(["get", "events", "--follow", "--output", "json", "--kind", "component_started"])
        .env("TRELLIS_NATS_URL", &t.nats_url)
        .env("TRELLIS_LATTICE", &t.lattice)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(follower.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), stderr.next_line()).await;
    assert!(matches!(ready, Ok(Ok(Some(ref l))) if l.contains("listening")), "{ready:?}");

    lattice.start_hello("watched", &["--host", &host.id]).await;
    let mut stdout = BufReader::new(follower.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
        .await
        .expect("an event line")
        .unwrap()
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["kind"], "component_started", "{event}");
    assert_eq!(event["host_id"], host.id.as_str());
    assert_eq!(event["body"]["component_id"], "watched");
}

#[tokio::test]
async fn hosts_write_json_logs_when_asked() {
    let lattice = Lattice::new("jsonlogs").await;
    let t = &lattice.trellis;
    let mut host = tokio::process::Command::new(bin("trellis"))
        .args(["host", "--allow-unsigned", "--log-format", "json"])
        .env("TRELLIS_NATS_URL", &t.nats_url)
        .env("TRELLIS_LATTICE", &t.lattice)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(host.stderr.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let record: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log record ({e}): {line}"));
            if record["fields"]["message"] == "host started" {
                return record;
            }
        }
        panic!("the host exited before starting");
    })
    .await
    .expect("a `host started` record");
    assert_eq!(started["level"], "INFO", "{started}");
    let host_id = started["fields"]["host"].as_str().unwrap_or_default().to_owned();
    assert!(host_id.starts_with('N'), "{started}");

    // A guest's stderr and its trap become records of that host, both with the call's trace id.
    lattice.start_hello("hello", &["--host", &host_id]).await;
    let request = encode(&HttpRequest::get("/trap")).unwrap();
    let client = t.client().await;
    let err = client
        .invoke("hello", INCOMING_HANDLER, HANDLE, request.into(), Duration::from_secs(5))
        .await
        .expect_err("it traps");
    assert_eq!(err.kind(), trellis_lattice::envelope::InvokeErrorKind::Trap);
    let (mut printed, mut trapped) = (None, None);
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let record: serde_json::Value = serde_json::from_str(&line).unwrap();
            let fields = &record["fields"];
            let message = fields["message"].as_str().unwrap_or_default();
            if fields["stream"] == "stderr" && message.contains("asked to trap") {
                assert_eq!(fields["component"], "hello", "{record}");
                printed = fields["trace_id"].as_str().map(String::from);
            }
            if message.contains("component failed while handling the request") {
                trapped = fields["trace_id"].as_str().map(String::from);
            }
            if printed.is_some() && trapped.is_some() {
                return;
            }
        }
    })
    .await
    .expect("the guest's panic message and the trap, as records");
    let printed = printed.unwrap();
    assert_eq!(printed.len(), 32, "{printed}");
    assert_eq!(Some(printed), trapped, "one call, one trace id");
}

#[tokio::test]
async fn the_metrics_endpoint_counts_calls() {
    let lattice = Lattice::new("metrics").await;
    let t = &lattice.trellis;
    let metrics: std::net::SocketAddr =
        format!("127.0.0.1:{}", trellis_tests::free_port()).parse().unwrap();
    let host =
        t.host_with("h", &["--allow-unsigned".into(), format!("--metrics-listen={metrics}")]).await;
    lattice.start_hello("hello", &["--host", &host.id]).await;
    let addr = lattice.serve_http(&host.id, "hello", &[]).await;
    let scrape = || async move {
        trellis_tests::http_request(metrics, "GET", "/metrics", b"").await.unwrap().text()
    };
    let value = |text: &str, name: &str, component: &str| -> u64 {
        let prefix = format!("{name}{{host=\"{}\",component=\"{component}\"}} ", host.id);
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    };
    let before = value(&scrape().await, "trellis_invocations_total", "hello");
    for _ in 0..3 {
        crate::get(addr, "/x").await;
    }
    crate::get(addr, "/trap").await;
    let text = scrape().await;
    assert_eq!(value(&text, "trellis_invocations_total", "hello"), before + 4);
    assert!(value(&text, "trellis_invocation_errors_total", "hello") >= 1);
    let trapped = format!(
        "trellis_invocation_errors_by_kind_total{{host=\"{}\",component=\"hello\",kind=\"Trap\"}} 1",
        host.id
    );
    assert!(text.contains(&trapped), "{trapped} in:\n{text}");
    assert!(text.contains("# TYPE trellis_provider_healthy gauge"), "{text}");
    let count = format!(
        "trellis_invocation_duration_seconds_count{{host=\"{}\",component=\"hello\"}} {}",
        host.id,
        before + 4
    );
    assert!(text.contains(&count), "{count} in:\n{text}");
    assert!(text.contains("le=\"+Inf\""), "{text}");
    assert!(
        text.contains(&format!(
            "trellis_provider_healthy{{host=\"{}\",provider=\"web\",kind=\"http-server\"}} 1",
            host.id
        )),
        "{text}"
    );

    // Every metric the Grafana dashboard queries is one the host emits.
    let text =
        trellis_tests::eventually("a heartbeat's age", Duration::from_secs(10), || async move {
            let text = scrape().await;
            text.contains("\ntrellis_heartbeat_age_seconds{").then_some(text)
        })
        .await;
    let queried = dashboard_metrics();
    assert!(queried.len() >= 12, "{queried:?}");
    for name in &queried {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which /metrics lacks:\n{text}"
        );
    }
}

/// The Trellis metric families the Grafana dashboard's queries use.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(
        "../../deploy/observability/grafana/dashboards/trellis.json"
    ))
    .unwrap();
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    let mut names = std::collections::BTreeSet::new();
    for expr in all {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("trellis_") {
            let tail = &rest[at..];
            let end =
                tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
            let name = &tail[..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_owned());
            rest = &tail[end..];
        }
    }
    names
}

//! Printing results: aligned text for people, stable JSON for programs (stdout only).

use serde_json::{Value, json};
use trellis_lattice::link::Link;
use trellis_proto as pb;

pub fn host_json(h: &pb::HostInfo) -> Value {
    let labels: std::collections::BTreeMap<_, _> = h.labels.iter().collect();
    json!({
        "id": h.id,
        "name": h.name,
        "labels": labels,
        "version": h.version,
        "uptime_s": h.uptime_s,
        "components": h.components,
        "providers": h.providers,
        "inventory_hash": h.inventory_hash,
        "lattice": h.lattice,
        "invocations_denied": h.invocations_denied,
        "requests_denied": h.requests_denied,
        "rss_bytes": h.rss_bytes,
        "cpu_ms": h.cpu_ms,
        "draining": h.draining,
    })
}

pub fn inventory_json(inv: &pb::Inventory) -> Value {
    json!({
        "host": inv.host.as_ref().map(host_json),
        "components": inv.components.iter().map(|c| json!({
            "id": c.id,
            "digest": c.digest,
            "exports": c.exports,
            "invocations": c.invocations,
            "errors": c.errors,
            "errors_by_kind": c.errors_by_kind.iter().collect::<std::collections::BTreeMap<_, _>>(),
            "duration_bounds_us": c.duration_bounds_us,
            "duration_counts": c.duration_counts,
            "claims": c.claims.as_ref().map(|t| json!({
                "name": t.name,
                "rev": t.rev,
                "issuer": t.issuer,
                "expires_s": (t.expires_s != 0).then_some(t.expires_s),
                "allow": t.allow,
                "callers": t.callers,
                "no_reuse": t.no_reuse,
            })),
            "limits": c.limits.as_ref().map(|l| json!({
                "max_memory_bytes": l.max_memory_bytes,
                "timeout_ms": l.timeout_ms,
                "max_concurrent": l.max_concurrent,
                "max_request_bytes": l.max_request_bytes,
                "reuse": l.reuse.as_ref().map(|r| json!({
                    "max_calls": r.max_calls,
                    "idle_ms": r.idle_ms,
                })),
            })),
        })).collect::<Vec<_>>(),
        "posture": inv.posture.as_ref().map(|p| json!({
            "development": p.development,
            "trusted_issuers": p.trusted_issuers,
            "trusted_operators": p.trusted_operators,
        })),
        "providers": inv.providers.iter().map(|p| json!({
            "id": p.id,
            "kind": p.kind,
            "pid": p.pid,
            "restarts": p.restarts,
            "running": p.running,
            "builtin": p.builtin,
            "healthy": p.healthy,
            "problem": p.problem,
        })).collect::<Vec<_>>(),
    })
}

pub fn link_json(l: &Link) -> Value {
    json!({
        "source": l.source,
        "target": l.target,
        "interface": l.interface.to_string(),
        "name": l.name,
        "config": l.config,
    })
}

pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Prints rows as left-aligned columns under `headers`.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    println!("{}", table(headers, rows));
}

/// The plain look scripts read: no borders, columns two spaces apart, no trailing blanks, never
/// wrapped to the terminal's width.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING).set_header(headers.to_vec());
    table.add_rows(rows.iter().cloned());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

pub fn labels_text(labels: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn time_text(unix_ms: u64) -> String {
    let ms = i64::try_from(unix_ms).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        // Beyond the year 9999: say what it is rather than a wrong date.
        Err(_) => format!("{unix_ms} ms after 1970"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_are_plain_columns() {
        let rows = [
            vec!["a".to_owned(), "long value".to_owned(), String::new()],
            vec!["bbbbbb".to_owned(), "x".to_owned(), String::new()],
        ];
        assert_eq!(
            super::table(&["ID", "VALUE", "NOTE"], &rows),
            "ID      VALUE       NOTE\na       long value\nbbbbbb  x"
        );
        // Width is measured on the screen, not in bytes.
        let wide = [vec!["zone=zürich".to_owned(), "1".to_owned()]];
        assert_eq!(super::table(&["LABELS", "N"], &wide), "LABELS       N\nzone=zürich  1");
    }

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(super::time_text(0), "1970-01-01 00:00:00");
        assert_eq!(super::time_text(1_795_564_800_000), "2026-11-25 00:00:00");
        assert_eq!(super::time_text(951_782_400_000 + 3_723_000), "2000-02-29 01:02:03");
        assert_eq!(super::time_text(u64::MAX), format!("{} ms after 1970", u64::MAX));
    }
}

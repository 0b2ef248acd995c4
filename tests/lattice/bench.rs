//! The benchmark harness runs every scenario in quick mode and produces numbers (how fast is
//! for `docs/benchmarks.md`, never for a test).

use std::process::Stdio;

use serde_json::Value;
use trellis_tests::{bin, component};

#[tokio::test]
async fn every_bench_scenario_runs_and_reports_numbers() {
    let out = tokio::process::Command::new(bin("trellis"))
        .args(["bench", "all", "--quick", "--output", "json", "--component"])
        .arg(component("http-hello"))
        .env_remove("TRELLIS_NATS_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = reports.iter().filter_map(|r| r["scenario"].as_str()).collect();
    assert_eq!(
        names,
        [
            "invoke",
            "local",
            "http",
            "start",
            "memory",
            "call",
            "compile",
            "wake",
            "schedule",
            "telemetry",
            "state",
            "scale",
            "wasi03"
        ]
    );
    for report in &reports {
        let rows = report["rows"].as_array().unwrap();
        assert!(!rows.is_empty(), "{report}");
        for row in rows {
            let t = &row["trellis"];
            let measured = t["value"].as_f64().unwrap_or(0.0) > 0.0
                || (t["p50_us"].as_f64().unwrap() > 0.0 && t["ops_per_s"].as_f64().unwrap() > 0.0);
            assert!(measured, "no numbers in {row}");
            if !row["baseline"].is_null() {
                assert!(row["p50_ratio"].as_f64().unwrap() > 0.0, "{row}");
            }
        }
    }
}

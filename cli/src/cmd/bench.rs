//! `trellis bench`: runs the harness in `trellis-bench` and prints its reports.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use trellis_bench::{Options, Scenario};

use crate::args::{BenchArgs, BenchScenario, Global, Output};

pub async fn run(g: &Global, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let trellis = std::env::current_exe().context("cannot find the trellis executable")?;
    let component = args.component.unwrap_or_else(|| default_component(&trellis));
    let python = args.python_component.or_else(|| {
        let built = target_dir(&trellis).join("wasm-components/py-hello.wasm");
        built.is_file().then_some(built)
    });
    let options = Options { quick: args.quick, component, python, trellis, hosts: args.hosts };
    let scenarios: Vec<Scenario> = match args.scenario {
        BenchScenario::All => Scenario::ALL.to_vec(),
        BenchScenario::Invoke => vec![Scenario::Invoke],
        BenchScenario::Local => vec![Scenario::Local],
        BenchScenario::Http => vec![Scenario::Http],
        BenchScenario::Start => vec![Scenario::Start],
        BenchScenario::Memory => vec![Scenario::Memory],
        BenchScenario::Call => vec![Scenario::Call],
        BenchScenario::Compile => vec![Scenario::Compile],
        BenchScenario::Wake => vec![Scenario::Wake],
        BenchScenario::Schedule => vec![Scenario::Schedule],
        BenchScenario::Telemetry => vec![Scenario::Telemetry],
        BenchScenario::State => vec![Scenario::State],
        BenchScenario::Scale => vec![Scenario::Scale],
        BenchScenario::Wasi03 => vec![Scenario::Wasi03],
    };
    let mut reports = Vec::new();
    for scenario in scenarios {
        let progress = crate::progress::Progress::start(g, format!("running {}", scenario.name()));
        let report = trellis_bench::run(scenario, &options).await?;
        drop(progress);
        if g.output == Output::Text {
            println!("{}", report.to_table());
        }
        reports.push(report);
    }
    if g.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `<target>/wasm-components/wasm32-wasip2/release/http_hello.wasm`, next to `target/<profile>/`.
fn default_component(trellis: &std::path::Path) -> PathBuf {
    target_dir(trellis).join("wasm-components/wasm32-wasip2/release/http_hello.wasm")
}

/// The target directory `trellis` was built in (`target/<profile>/trellis`).
fn target_dir(trellis: &std::path::Path) -> &std::path::Path {
    trellis.parent().and_then(|p| p.parent()).unwrap_or(std::path::Path::new("target"))
}

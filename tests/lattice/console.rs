//! The web console in a real browser (headless Chromium over WebDriver) against a real lattice:
//! the map, live updates, deploys and rollbacks from the page, a killed host, read-only mode.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use trellis_tests::{Browser, Trellis, bin, component, eventually, free_port, http_request};

use crate::Lattice;

/// A `trellis console` process.
struct Console {
    url: String,
    /// The sign-in token it printed, when it holds an operator key.
    token: Option<String>,
    _process: Child,
}

impl Console {
    /// Starts `trellis console` on a free port; with the test operator's key when `operator`.
    async fn start(t: &Trellis, operator: bool) -> Self {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut command = Command::new(bin("trellis"));
        command
            .args(["console", "--listen", &addr.to_string()])
            .args(["--trace-url", "http://traces.example/search?component={component}"])
            .env("TRELLIS_NATS_URL", &t.nats_url)
            .env("TRELLIS_LATTICE", &t.lattice)
            .env_remove("TRELLIS_CONTEXT")
            .env("XDG_CONFIG_HOME", std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if operator {
            command.envs(t.env.iter().map(|(k, v)| (k, v)));
        }
        let mut process = command.spawn().expect("trellis console starts");
        let mut lines = BufReader::new(process.stdout.take().expect("stdout")).lines();
        let mut token = None;
        // It prints its address, then the token or that it is read-only.
        for _ in 0..2 {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
            let line = line.expect("the console prints its address").unwrap().unwrap_or_default();
            if let Some(t) = line.strip_prefix("sign in to act with the token ") {
                token = Some(t.trim().to_owned());
            }
        }
        Self { url: format!("http://{addr}/"), token, _process: process }
    }
}

/// Waits until the first element matching `css` has text satisfying `want`; returns it.
async fn text_until(
    browser: &Browser,
    what: &str,
    within: Duration,
    css: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    let want = &want;
    eventually(what, within, || async move { browser.text(css).await.filter(|t| want(t)) }).await
}

#[tokio::test]
async fn the_map_shows_hosts_by_label_and_what_the_cli_starts_appears_live_read_only() {
    let lattice = Lattice::new("console-map").await;
    let t = &lattice.trellis;
    let alpha = t.host("alpha", &["zone=a"]).await;
    let _beta = t.host("beta", &["zone=b"]).await;
    let console = Console::start(t, false).await;
    assert!(console.token.is_none(), "a console without an operator key prints no token");
    let browser = Browser::start("console-map").await;
    browser.client.goto(&console.url).await.expect("the page loads");

    eventually("both hosts on the map, each in its zone", Duration::from_secs(10), || async {
        let a = browser.count(".zone[data-zone='zone a'] .host[data-name='alpha']").await;
        let b = browser.count(".zone[data-zone='zone b'] .host[data-name='beta']").await;
        (a == 1 && b == 1).then_some(())
    })
    .await;
    let state = browser.text(".host[data-name='alpha'] .state").await;
    assert_eq!(state.as_deref(), Some("UP"), "shown upper-case by the style");
    let resources = ".host[data-name='alpha'] .resources";
    let shown = text_until(&browser, "RSS and CPU", Duration::from_secs(10), resources, |t| {
        t.contains("MiB") && t.contains('%')
    })
    .await;
    assert!(!shown.contains('?'), "{shown}");
    browser.screenshot("1-map").await;

    // A component started from the CLI appears without a reload, within 2 s.
    let wasm = component("http-hello");
    let args = ["start", "component", wasm.to_str().unwrap(), "--id", "hello"];
    t.ok(&[&args[..], &["--host", &alpha.id]].concat()).await;
    let started = Instant::now();
    let selector = ".host[data-name='alpha'] .component[data-id='hello']";
    eventually("the component on the map", Duration::from_secs(10), || async {
        (browser.count(selector).await == 1).then_some(())
    })
    .await;
    let appeared = started.elapsed();
    assert!(appeared < Duration::from_secs(2), "appeared after {appeared:?}");
    let href = browser.attr(&format!("{selector} a"), "href").await;
    assert_eq!(href.as_deref(), Some("http://traces.example/search?component=hello"));
    browser.screenshot("2-component-appeared").await;

    // Its row in the components view: where it runs, and that it is unsigned here.
    let row = "#component-table tr[data-component='hello']";
    let text = eventually("the component's row", Duration::from_secs(5), || async {
        browser.text(row).await
    })
    .await;
    assert!(text.contains("1: alpha") && text.contains("unsigned"), "{text}");

    let errors = browser.errors().await;
    assert!(errors.is_empty(), "JavaScript console errors: {errors:#?}");

    // Read-only: the page offers no action, and the server refuses one sent anyway.
    assert_eq!(browser.text("#mode").await.as_deref(), Some("read-only"));
    let deploy = browser.client.find(Locator::Css("#deploy-button")).await.unwrap();
    assert!(!deploy.is_enabled().await.unwrap(), "deploy is disabled");
    let refused = browser
        .run(
            "const done = arguments[0];
             fetch('/api/apps', { method: 'POST', headers: { 'content-type': 'application/json' },
                                  body: JSON.stringify({ manifest: 'name: x' }) })
               .then(async (r) => done({ status: r.status, body: await r.json() }));",
        )
        .await;
    assert_eq!(refused["status"], 403, "{refused}");
    assert!(refused["body"]["error"].as_str().unwrap().contains("read-only"), "{refused}");
    let errors = browser.errors().await;
    assert!(errors.iter().all(|e| e.contains("/api/apps") && e.contains("403")), "{errors:#?}");
    println!("screenshots in {}", browser.output().display());
}

#[tokio::test]
async fn an_operator_deploys_and_rolls_back_from_the_page_and_a_killed_host_goes_lost() {
    let lattice = Lattice::new("console-ops").await;
    let t = &lattice.trellis;
    let scheduler = ["--scheduler", "--scheduler-lease", "2", "--allow-unsigned"];
    let mut edge: Vec<String> = scheduler.map(String::from).to_vec();
    edge.extend(["--label=zone=a", "--label=role=edge"].map(String::from));
    let _edge = t.host_with("edge", &edge).await;
    // Workers at the production heartbeat (3 s): `unknown` lasts long enough to be seen.
    let worker = |zone: &str| {
        [format!("--label=zone={zone}"), "--label=role=worker".into()]
            .into_iter()
            .chain(["--allow-unsigned", "--heartbeat-interval", "3"].map(String::from))
            .collect::<Vec<_>>()
    };
    let mut workers =
        [t.host_with("w1", &worker("b")).await, t.host_with("w2", &worker("c")).await];
    let console = Console::start(t, true).await;
    let token = console.token.clone().expect("a console with an operator key prints a token");
    let browser = Browser::start("console-ops").await;
    browser.client.goto(&console.url).await.expect("the page loads");

    // Sign in with the printed token.
    text_until(&browser, "the page to load", Duration::from_secs(10), "#mode", |m| {
        m == "signed out"
    })
    .await;
    browser
        .client
        .find(Locator::Css("#signin-token"))
        .await
        .unwrap()
        .send_keys(&token)
        .await
        .unwrap();
    browser.click("#signin-button").await;
    text_until(&browser, "signed in", Duration::from_secs(10), "#mode", |m| m == "signed in").await;

    // Deploy two versions from the page.
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let manifest = |version: &str, replicas: u32| {
        format!(
            "name: shop\nversion: '{version}'\ncomponents:\n  - name: web\n    source: {}\n    \
             replicas: {replicas}\n    requirements: {{role: worker}}\n\
             providers:\n  - name: front\n    kind: http-server\n    builtin: true\n    \
             requirements: {{role: edge}}\nlinks:\n  - source: front\n    target: web\n    \
             interface: wasi:http/incoming-handler\n    config: {{address: '{addr}'}}\n",
            component("http-hello").display()
        )
    };
    let app_state = "#apps tr[data-app='shop'] .app-state";
    let files = tempfile::tempdir().unwrap();
    for (version, replicas) in [("1", 1), ("2", 2)] {
        if version == "1" {
            // Pasted.
            browser
                .client
                .execute(
                    "document.querySelector('#deploy-manifest').value = arguments[0];",
                    vec![json!(manifest(version, replicas))],
                )
                .await
                .unwrap();
        } else {
            // Uploaded: the file's text lands in the editor.
            let file = files.path().join("shop-2.yaml");
            std::fs::write(&file, manifest(version, replicas)).unwrap();
            let input = browser.client.find(Locator::Css("#deploy-file")).await.unwrap();
            input.send_keys(file.to_str().unwrap()).await.unwrap();
            eventually("the file in the editor", Duration::from_secs(5), || async {
                let script = "return document.querySelector('#deploy-manifest').value;";
                let text = browser.client.execute(script, vec![]).await.ok()?;
                text.as_str().is_some_and(|t| t.contains("version: '2'")).then_some(())
            })
            .await;
        }
        browser.click("#deploy-button").await;
        let current = "#apps tr[data-app='shop'] td:nth-child(2)";
        text_until(&browser, "the new version", Duration::from_secs(10), current, |v| v == version)
            .await;
        text_until(&browser, "deployed", Duration::from_secs(60), app_state, |s| s == "DEPLOYED")
            .await;
        let reply = http_request(addr, "GET", "/", b"").await.expect("its endpoint answers");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    browser.screenshot_of("#apps", "1-deployed-v2").await;

    // The detail shows both versions and a diff; roll back to 1 from the page.
    browser.click("#apps tr[data-app='shop']").await;
    browser.click("#versions tr[data-version='1'] button.diff").await;
    let shown =
        text_until(&browser, "the diff", Duration::from_secs(5), "pre.diff", |_| true).await;
    assert!(shown.contains("-") && shown.contains("+"), "{shown}");
    browser.screenshot("2-diff").await;
    browser.click("#versions tr[data-version='1'] button.rollback").await;
    text_until(
        &browser,
        "v1 current again",
        Duration::from_secs(10),
        "#versions tr[data-version='1'] td",
        |v| v.contains("(current)"),
    )
    .await;
    text_until(&browser, "v1 deployed", Duration::from_secs(60), app_state, |s| s == "DEPLOYED")
        .await;
    let history = browser.text("#history").await.unwrap_or_default();
    assert!(history.contains("rollback"), "{history}");
    browser.screenshot("3-rolled-back").await;

    // The worker running `web` is killed: unknown, then lost, and `web` moves to the other.
    let runs_web = "#workloads tr[data-workload='web'] td:nth-child(6)";
    let on = text_until(&browser, "web's host", Duration::from_secs(10), runs_web, |h| {
        h == "w1" || h == "w2"
    })
    .await;
    let (victim, survivor) = if on == "w1" { (0, "w2") } else { (1, "w1") };
    workers[victim].kill().await;
    let card = format!(".host[data-name='{on}'] .state");
    text_until(&browser, "unknown", Duration::from_secs(15), &card, |s| s == "UNKNOWN").await;
    browser.screenshot_of(&card, "4-unknown").await;
    text_until(&browser, "lost", Duration::from_secs(15), &card, |s| s == "LOST").await;
    text_until(&browser, "web moved", Duration::from_secs(60), runs_web, |h| h == survivor).await;
    text_until(&browser, "deployed again", Duration::from_secs(60), app_state, |s| s == "DEPLOYED")
        .await;
    // The security view names each host's mode and the operator it trusts.
    let edge_mode = "#posture tbody tr td:nth-child(2)";
    let mode = browser.text(edge_mode).await.unwrap_or_default();
    assert_eq!(mode, "development", "test hosts run with --allow-unsigned");
    let operators = browser.text("#posture tbody tr td:nth-child(4)").await.unwrap_or_default();
    let key = &t.operator.public_key()[..10];
    assert!(operators.contains(key), "the test operator is trusted: {operators}");
    browser.screenshot_of("#security", "6-security").await;
    browser.screenshot_of(&card, "5-lost-and-moved").await;
    // The components view counts the calls and knows their durations.
    let reply = http_request(addr, "GET", "/", b"").await.expect("the moved replica answers");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let web = "#component-table tr[data-component='web']";
    let row =
        text_until(&browser, "web's latency", Duration::from_secs(20), web, |t| t.contains("≤ "))
            .await;
    assert!(row.contains(survivor), "{row}");
    browser.screenshot_of("#components", "5b-components").await;

    let errors = browser.errors().await;
    assert!(errors.is_empty(), "JavaScript console errors: {errors:#?}");
    println!("screenshots in {}", browser.output().display());
}

#[tokio::test]
async fn a_host_started_with_console_listen_serves_the_console() {
    let lattice = Lattice::new("console-host").await;
    let t = &lattice.trellis;
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let args = ["--allow-unsigned".to_owned(), format!("--console-listen={addr}")];
    let host = t.host_with("serving", &args).await;
    let snapshot = eventually("the host's console to list it", Duration::from_secs(20), || async {
        let reply = http_request(addr, "GET", "/api/snapshot", b"").await.ok()?;
        let snapshot: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
        let hosts = snapshot["hosts"].as_array()?.clone();
        hosts.iter().any(|h| h["id"] == host.id.as_str()).then_some(snapshot)
    })
    .await;
    assert_eq!(snapshot["lattice"], "console-host");
    let page = http_request(addr, "GET", "/", b"").await.expect("the page");
    assert!(page.text().contains("Trellis console"), "{}", page.text());
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{:?}", page.headers);
}

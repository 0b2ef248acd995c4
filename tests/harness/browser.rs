//! A real browser for tests of the web console: headless Chromium driven over WebDriver by
//! chromedriver (Debian's `chromium` and `chromium-driver`), one of each per test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// A headless Chromium session; chromedriver and the browsers it started are killed when it
/// is dropped (they run in a process group of their own), whether the test passed or not.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where screenshots go.
    shots: PathBuf,
}

/// The browser's log, read through chromedriver's `se/log` endpoint.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium outlives chromedriver unless its session is closed, which a failed test
        // never gets to: the whole group goes.
        if let Some(pid) = self.driver.id().and_then(|id| rustix::process::Pid::from_raw(id as i32))
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; screenshots of the test `name` go under
    /// the test output directory (`target/test-output/<name>/`).
    pub async fn start(name: &str) -> Self {
        let port = crate::free_port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver must be on PATH: `scripts/prereqs.sh` installs chromium-driver");
        let url = format!("http://127.0.0.1:{port}");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let client = crate::eventually("chromedriver to start", Duration::from_secs(30), || {
            let builder = builder.clone();
            let url = url.clone();
            async move { builder.connect(&url).await.ok() }
        })
        .await;
        if let Ok(Some(status)) = driver.try_wait() {
            panic!("chromedriver exited: {status}");
        }
        let shots = crate::target_dir().join("test-output").join(name);
        std::fs::create_dir_all(&shots).expect("test output directory");
        Self { client, driver, shots }
    }

    /// Saves a PNG of the page as `<step>.png`; returns its path.
    pub async fn screenshot(&self, step: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{step}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Scrolls the first element matching `css` into view, then saves a screenshot.
    pub async fn screenshot_of(&self, css: &str, step: &str) -> PathBuf {
        let script = "document.querySelector(arguments[0])?.scrollIntoView({ block: 'center' });";
        self.client.execute(script, vec![Value::from(css)]).await.expect("scroll");
        self.screenshot(step).await
    }

    /// The directory screenshots go to.
    pub fn output(&self) -> &Path {
        &self.shots
    }

    /// The text of the first element matching `css` as shown (CSS text-transform applied), if
    /// there is one. Read in one script, so a page re-rendering meanwhile cannot leave a stale
    /// element between finding and reading.
    pub async fn text(&self, css: &str) -> Option<String> {
        let script = "return document.querySelector(arguments[0])?.innerText ?? null;";
        let text = self.client.execute(script, vec![Value::from(css)]).await.ok()?;
        text.as_str().map(|t| t.trim().to_owned())
    }

    /// The attribute `name` of the first element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let script =
            "return document.querySelector(arguments[0])?.getAttribute(arguments[1]) ?? null;";
        let value = self.client.execute(script, vec![Value::from(css), Value::from(name)]).await;
        value.ok()?.as_str().map(str::to_owned)
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        let script = "return document.querySelectorAll(arguments[0]).length;";
        let count = self.client.execute(script, vec![Value::from(css)]).await;
        count.ok().and_then(|c| c.as_u64()).unwrap_or(0) as usize
    }

    /// Clicks the first element matching `css` as a person would (WebDriver's click), finding
    /// it again when the page re-rendered it in between; waits up to 10 s for it.
    pub async fn click(&self, css: &str) {
        crate::eventually(&format!("to click {css}"), Duration::from_secs(10), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.click().await.ok()
        })
        .await;
    }

    /// Runs `script` in the page (an async function body: `arguments[0]` is the callback) and
    /// returns what it passes to the callback.
    pub async fn run(&self, script: &str) -> Value {
        self.client.execute_async(script, vec![]).await.expect("script runs")
    }

    /// Messages the browser logged at level SEVERE (JavaScript errors, failed loads, CSP
    /// violations) since the last call.
    pub async fn errors(&self) -> Vec<String> {
        let log = self.client.issue_cmd(BrowserLog).await.expect("browser log");
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

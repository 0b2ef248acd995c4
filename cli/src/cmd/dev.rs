//! `trellis dev`: build a component project, serve it over HTTP on a local lattice, and
//! rebuild and replace it in place whenever its sources change.
//!
//! The running version keeps serving while a new one builds; a build that fails is shown and
//! changes nothing. A new version replaces the old one in place on its host (the replica keeps
//! its subscription: calls in flight finish on the old version, the next ones go to the new),
//! so requests during a swap are served by one version or the other, never failed.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use notify::Watcher as _;
use tokio::sync::mpsc;
use trellis_lattice::client::LatticeClient;
use trellis_lattice::link::{DEFAULT_LINK_NAME, InterfaceName, Link};
use trellis_lattice::proto::StartComponentRequest;
use trellis_ops::nats_server::LocalNatsServer;

use super::get::PING_WAIT;
use crate::args::{DevArgs, Global};

/// The contract the component serves HTTP on.
const HTTP_HANDLER: &str = "wasi:http/incoming-handler";

/// What `trellis dev` builds and watches.
#[derive(Debug, Clone)]
enum Project {
    /// A Rust crate built for wasm32-wasip2 (`cargo build --release --target wasm32-wasip2`).
    Rust { dir: PathBuf, name: String },
    /// A Python app (`app.py`) built with componentize-py against the WIT in its `wit/`.
    Python { dir: PathBuf, world: Option<String>, out: PathBuf },
    /// A component file, re-read when it changes (built by another tool).
    Wasm { file: PathBuf },
}

/// Directories of a project that hold no sources of its own.
const NOT_SOURCES: [&str; 5] = [".git", ".venv", "venv", "__pycache__", "node_modules"];

impl Project {
    fn detect(path: &Path, world: Option<&str>) -> anyhow::Result<Self> {
        if path.extension().is_some_and(|e| e == "wasm") {
            if !path.is_file() {
                bail!("{} does not exist", path.display());
            }
            return Ok(Self::Wasm { file: path.to_owned() });
        }
        let manifest = path.join("Cargo.toml");
        if manifest.is_file() {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?;
            let name = package_name(&text).with_context(|| {
                format!("{} names no [package]: point `trellis dev` at a crate", manifest.display())
            })?;
            return Ok(Self::Rust { dir: path.to_owned(), name });
        }
        if path.join("app.py").is_file() {
            if !path.join("wit").is_dir() {
                bail!(
                    "{} holds app.py but no wit/: componentize-py builds against the WIT of the \
                     world the app targets; put it in wit/ (for an HTTP app, wasi:http's \
                     `proxy` world and its dependencies) and name the world with --world",
                    path.display()
                );
            }
            // Built outside the project, so the build's output is no change to watch.
            let out = std::env::temp_dir()
                .join(format!("trellis-dev-{}", std::process::id()))
                .join("app.wasm");
            let world = world.map(str::to_owned);
            return Ok(Self::Python { dir: path.to_owned(), world, out });
        }
        bail!(
            "{} is neither a Rust crate (Cargo.toml), a componentize-py app (app.py and wit/) nor \
             a .wasm file: `trellis dev` builds a Rust crate for wasm32-wasip2 or a Python app \
             with componentize-py, or serves a component another tool builds (pass its .wasm \
             path; JavaScript projects are not detected: build them with jco and pass the .wasm)",
            path.display()
        )
    }

    /// The component id it runs as: the crate's or file's name, in the characters ids allow.
    fn default_id(&self) -> String {
        let name = match self {
            Self::Rust { name, .. } => name.clone(),
            Self::Python { dir, .. } => std::path::absolute(dir)
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default(),
            Self::Wasm { file } => {
                file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
            }
        };
        let id: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
            .collect();
        if id.is_empty() { "dev".to_owned() } else { id }
    }

    /// What to watch: a crate's sources and manifest, or the file's directory.
    fn watched(&self) -> Vec<(PathBuf, notify::RecursiveMode)> {
        use notify::RecursiveMode::{NonRecursive, Recursive};
        match self {
            Self::Rust { dir, .. } => {
                let mut paths = vec![(dir.join("Cargo.toml"), NonRecursive)];
                for sub in ["src", "wit"] {
                    if dir.join(sub).is_dir() {
                        paths.push((dir.join(sub), Recursive));
                    }
                }
                paths
            }
            Self::Python { dir, .. } => vec![(dir.clone(), Recursive)],
            Self::Wasm { file } => {
                let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
                vec![(dir.map_or_else(|| PathBuf::from("."), Path::to_owned), NonRecursive)]
            }
        }
    }

    /// Whether a change to `path` concerns it.
    fn concerns(&self, path: &Path) -> bool {
        match self {
            Self::Rust { .. } => {
                path.extension().is_some_and(|e| e == "rs" || e == "wit" || e == "toml")
            }
            Self::Python { .. } => {
                let in_sources = path.components().all(|c| {
                    !NOT_SOURCES.iter().any(|skip| c.as_os_str() == std::ffi::OsStr::new(skip))
                });
                in_sources && path.extension().is_some_and(|e| e == "py" || e == "wit")
            }
            Self::Wasm { file } => path.file_name() == file.file_name(),
        }
    }

    /// Builds it; returns the component's bytes, or the build's complaint.
    async fn build(&self) -> anyhow::Result<Vec<u8>> {
        let file = match self {
            Self::Wasm { file } => file.clone(),
            Self::Rust { dir, name } => {
                let out = tokio::process::Command::new("cargo")
                    .args(["build", "--release", "--target", "wasm32-wasip2", "--color"])
                    .arg(if std::io::stderr().is_terminal() { "always" } else { "never" })
                    .current_dir(dir)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .context("cannot run cargo (is Rust installed?)")?;
                fail_unless_built(out, "cargo")?;
                let target = target_dir(dir).await?;
                let release = target.join("wasm32-wasip2/release");
                // A library (cdylib) turns dashes into underscores; a binary keeps its name.
                let lib = release.join(format!("{}.wasm", name.replace('-', "_")));
                if lib.is_file() { lib } else { release.join(format!("{name}.wasm")) }
            }
            Self::Python { dir, world, out } => {
                let parent = out.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
                let mut build = tokio::process::Command::new("componentize-py");
                build.args(["-d", "wit"]);
                if let Some(world) = world {
                    build.args(["-w", world]);
                }
                let built = build
                    .args(["componentize", "app", "-o"])
                    .arg(out)
                    .current_dir(dir)
                    // Its Rust backtraces say nothing to a Python developer.
                    .env("RUST_BACKTRACE", "0")
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .context(
                        "cannot run componentize-py (install it: `pip install componentize-py`)",
                    )?;
                fail_unless_built(built, "componentize-py")?;
                out.clone()
            }
        };
        let bytes = std::fs::read(&file)
            .with_context(|| format!("the build left no component at {}", file.display()))?;
        match trellis_lattice::artifact::sniff(&bytes) {
            trellis_lattice::artifact::WasmKind::Component => Ok(bytes),
            _ => bail!(
                "{} is not a WebAssembly component: build for wasm32-wasip2 (a core module needs \
                 `wasm-tools component new`)",
                file.display()
            ),
        }
    }
}

/// The build's complaint, when it failed.
fn fail_unless_built(out: std::process::Output, tool: &str) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    }
    bail!("build failed ({tool}, {}):\n{text}", out.status)
}

/// The `name` of a Cargo.toml's `[package]`.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_owned());
        }
    }
    None
}

/// Where cargo puts the crate's build output.
async fn target_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = tokio::process::Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .await
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr).trim_end());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata names no target directory")
}

/// A lattice to run on: one already reachable, or one of its own.
struct Local {
    client: LatticeClient,
    host: String,
    /// NATS and a host started for this run, stopped at the end.
    own: Option<(LocalNatsServer, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

async fn lattice(g: &Global) -> anyhow::Result<Local> {
    // One that is up already (`trellis up`, or --nats-url): use its host. The default address
    // is only tried when something listens there, so a first run prints no connection errors.
    let listening = g.nats_url.is_some()
        || std::net::TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], 4222)),
            Duration::from_millis(300),
        )
        .is_ok();
    if listening {
        match super::connect(g).await {
            Ok(client) => {
                let hosts = client.hosts(PING_WAIT).await.unwrap_or_default();
                let providers = |h: &trellis_proto::HostInfo| h.providers as usize;
                let least = trellis_scheduler::plan::choose_hosts(
                    &hosts,
                    &Default::default(),
                    1,
                    providers,
                );
                if let Some(host) = least.first().and_then(|id| hosts.iter().find(|h| h.id == *id))
                {
                    let (name, url) = (&host.name, g.nats_url());
                    eprintln!("using lattice `{}` at {url} (host {name})", g.lattice);
                    let host = host.id.clone();
                    return Ok(Local { client, host, own: None });
                }
                if g.nats_url.is_some() {
                    bail!(
                        "no host answers in lattice `{}` at {}: start one with `trellis host`, \
                         or leave --nats-url out and `trellis dev` starts its own",
                        g.lattice,
                        g.nats_url()
                    );
                }
            }
            // Named but not there: say so rather than start another.
            Err(e) if g.nats_url.is_some() => return Err(e),
            Err(_) => {}
        }
    }
    let server = LocalNatsServer::start(None).await?;
    let mut global = g.clone();
    global.nats_url = Some(server.url());
    let mut config = trellis_host::HostConfig::new(server.url(), &g.lattice);
    config.name = "dev".to_owned();
    config.allow_unsigned = true;
    config.builtins = crate::builtins::all();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let host = tokio::spawn(async move {
        if let Err(e) = trellis_host::run(config, async move { drop(stopped.await) }).await {
            eprintln!("error: the development host stopped: {e}");
        }
    });
    let client = super::connect(&global).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let id = loop {
        let hosts = client.hosts(PING_WAIT).await.unwrap_or_default();
        if let Some(h) = hosts.into_iter().find(|h| h.name == "dev") {
            break h.id;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the development host did not join within 30 s");
        }
        // Listing returns at once while no host listens yet.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("started a local lattice: nats-server at {} and a host", server.url());
    Ok(Local { client, host: id, own: Some((server, stop, host)) })
}

pub async fn run(g: &Global, args: DevArgs) -> anyhow::Result<ExitCode> {
    let project = Project::detect(&args.path, args.world.as_deref())?;
    let id = args.id.clone().unwrap_or_else(|| project.default_id());
    trellis_lattice::subject::validate_id("component id", &id)?;
    eprintln!("building {}", args.path.display());
    let bytes = project.build().await?;
    let local = lattice(g).await?;
    let result = serve(&local, &project, &id, args.listen, bytes).await;
    if let Project::Python { out, .. } = &project
        && let Some(parent) = out.parent()
    {
        let _ = std::fs::remove_dir_all(parent);
    }
    if let Some((mut server, stop, host)) = local.own {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), host).await;
        server.stop().await;
    } else {
        // Leave a lattice we did not start as we found it: no provider, component or link of
        // ours.
        let provider = format!("{id}-http");
        let _ = local.client.stop_provider(&local.host, &provider).await;
        let _ = local.client.stop_component(&local.host, &id).await;
        if let (Ok(state), Ok(interface)) =
            (local.client.state().await, InterfaceName::parse(HTTP_HANDLER))
        {
            let _ = state.delete_link(&provider, &interface, DEFAULT_LINK_NAME).await;
        }
    }
    result
}

/// Starts `bytes` as `id` behind an http-server on `listen`; replaces it on every change
/// until Ctrl-C.
async fn serve(
    local: &Local,
    project: &Project,
    id: &str,
    listen: SocketAddr,
    bytes: Vec<u8>,
) -> anyhow::Result<ExitCode> {
    let Local { client, host, .. } = local;
    let mut digest = deploy(client, host, id, &bytes).await?;
    let provider = format!("{id}-http");
    client.start_provider(host, &provider, "http-server", true).await?;
    let link = Link {
        source: provider.clone(),
        target: id.to_owned(),
        interface: InterfaceName::parse(HTTP_HANDLER)?,
        name: DEFAULT_LINK_NAME.to_owned(),
        config: [("address".to_owned(), listen.to_string())].into(),
    };
    let outcome = super::link::LinkOutcome::listen(client).await?;
    let revision = client.state().await?.put_link(&link).await?;
    outcome.wait_all([link.key()].into(), revision).await?;
    println!("serving `{id}` at http://{listen}/ ({digest}); watching for changes, Ctrl-C stops");

    let (changes, mut changed) = mpsc::channel::<()>(1);
    let concerned = project.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
            && event.paths.iter().any(|p| concerned.concerns(p))
        {
            let _ = changes.try_send(());
        }
    })?;
    for (path, mode) in project.watched() {
        watcher.watch(&path, mode).with_context(|| format!("cannot watch {}", path.display()))?;
    }
    let stop = super::host::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(ExitCode::SUCCESS),
            Some(()) = changed.recv() => {}
        }
        // Editors write in bursts: wait for the burst to end.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while changed.try_recv().is_ok() {}
        eprintln!("change seen; rebuilding");
        match project.build().await {
            Ok(bytes) => match deploy(client, host, id, &bytes).await {
                Ok(new) if new == digest => eprintln!("unchanged ({digest})"),
                Ok(new) => {
                    println!("replaced `{id}`: {digest} -> {new}");
                    digest = new;
                }
                Err(e) => {
                    eprintln!("error: the new version did not start: {e:#}; still serving {digest}")
                }
            },
            Err(e) => eprintln!("{e:#}\nstill serving the previous version ({digest})"),
        }
    }
}

/// Uploads `bytes` and starts them as `id` on `host`, in place of what runs there.
async fn deploy(
    client: &LatticeClient,
    host: &str,
    id: &str,
    bytes: &[u8],
) -> anyhow::Result<String> {
    let digest = client.state().await?.put_artifact(bytes).await?;
    let request = StartComponentRequest {
        component_id: id.to_owned(),
        digest: digest.clone(),
        replace: true,
        ..Default::default()
    };
    client.start_component_with(host, request).await?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_name_is_read_from_its_section() {
        let toml = "[workspace]\nname = \"no\"\n\n[package]\nversion = \"1\"\nname = \"my-app\"\n";
        assert_eq!(package_name(toml).as_deref(), Some("my-app"));
        assert_eq!(package_name("[dependencies]\nname = \"x\"\n"), None);
    }

    #[test]
    fn ids_keep_to_the_characters_ids_allow() {
        let p = Project::Rust { dir: ".".into(), name: "my_app".into() };
        assert_eq!(p.default_id(), "my-app");
        let w = Project::Wasm { file: "out/http_hello.wasm".into() };
        assert_eq!(w.default_id(), "http-hello");
        let py = Project::Python { dir: "apps/py_hello".into(), world: None, out: "x".into() };
        assert_eq!(py.default_id(), "py-hello");
    }

    #[test]
    fn a_python_app_is_rebuilt_for_its_sources_only() {
        let py = Project::Python { dir: "app".into(), world: None, out: "/tmp/x/app.wasm".into() };
        assert!(py.concerns(Path::new("app/app.py")));
        assert!(py.concerns(Path::new("app/lib/util.py")));
        assert!(py.concerns(Path::new("app/wit/world.wit")));
        assert!(!py.concerns(Path::new("app/__pycache__/app.cpython-311.pyc")));
        assert!(!py.concerns(Path::new("app/.venv/lib/site-packages/x.py")));
        assert!(!py.concerns(Path::new("app/notes.md")));
    }

    #[test]
    fn a_python_app_without_wit_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "").unwrap();
        let e = Project::detect(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("no wit/") && e.contains("--world"), "{e}");
        std::fs::create_dir(dir.path().join("wit")).unwrap();
        let p = Project::detect(dir.path(), Some("wasi:http/proxy")).unwrap();
        assert!(matches!(p, Project::Python { world: Some(w), .. } if w == "wasi:http/proxy"));
    }
}

//! Contexts: named sets of connection settings (NATS URLs, credentials, TLS, lattice, operator
//! key), like the nats CLI's. Stored one JSON file per context under
//! `$XDG_CONFIG_HOME/trellis/contexts/` (`~/.config` without it), readable by their owner only;
//! the selected one's name in `$XDG_CONFIG_HOME/trellis/context`.
//!
//! A context fills in what the command line and the environment leave unset: a flag beats its
//! `TRELLIS_*` variable, which beats the context, which beats the default.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};

use crate::args::Global;

/// One context's settings; unset ones are left to flags, the environment and defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lattice: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_creds: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_nkey: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_tls_ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_tls_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_tls_key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub js_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_key: Option<PathBuf>,
    /// Where `trellis console` serves, for commands that link to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
}

/// Where contexts live.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The user's store: `$XDG_CONFIG_HOME/trellis` or `$HOME/.config/trellis`.
    pub fn user() -> anyhow::Result<Self> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
                Some(home) => PathBuf::from(home).join(".config"),
                None => bail!("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep contexts"),
            },
        };
        Ok(Self { dir: base.join("trellis") })
    }

    fn file(&self, name: &str) -> anyhow::Result<PathBuf> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !ok {
            bail!(
                "`{name}` is not a context name: use letters, digits, `-`, `_` and `.` (not first), \
                 at most 64"
            );
        }
        Ok(self.dir.join("contexts").join(format!("{name}.json")))
    }

    fn selection(&self) -> PathBuf {
        self.dir.join("context")
    }

    /// The settings of context `name`.
    pub fn load(&self, name: &str) -> anyhow::Result<Settings> {
        let file = self.file(name)?;
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "no context `{name}`: `trellis context ls` lists them, `trellis context add` makes one"
                )
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        serde_json::from_str(&text)
            .with_context(|| format!("context `{name}` ({}) is not valid", file.display()))
    }

    /// Writes context `name`, readable by its owner only.
    pub fn save(&self, name: &str, settings: &Settings) -> anyhow::Result<()> {
        let file = self.file(name)?;
        let dir = file.parent().unwrap_or(&self.dir);
        create_private_dir(dir)?;
        let json = serde_json::to_string_pretty(settings)?;
        write_private(&file, json.as_bytes())
    }

    /// Deletes context `name` (and the selection, if it was the selected one).
    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        let file = self.file(name)?;
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("no context `{name}`: `trellis context ls` lists them")
            }
            other => other.with_context(|| format!("cannot delete {}", file.display()))?,
        }
        if self.selected()?.as_deref() == Some(name) {
            std::fs::remove_file(self.selection())?;
        }
        Ok(())
    }

    /// Every context's name, sorted.
    pub fn names(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.dir.join("contexts");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The selected context's name, if one is selected.
    pub fn selected(&self) -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(self.selection()) {
            Ok(name) => Ok(Some(name.trim().to_owned()).filter(|n| !n.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("cannot read the selected context"),
        }
    }

    /// Selects context `name` (which must exist).
    pub fn select(&self, name: &str) -> anyhow::Result<()> {
        self.load(name)?;
        create_private_dir(&self.dir)?;
        write_private(&self.selection(), name.as_bytes())
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes `bytes` to `file` with mode 0600, replacing it whole (a reader never sees half).
fn write_private(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temp = file.with_extension("tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("cannot write {}", temp.display()))?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(&temp, file).with_context(|| format!("cannot write {}", file.display()))
}

/// Where argument `id` got its value: the command line, the environment, a default, or
/// nowhere. Global arguments are recorded on the subcommand that was given them, so every level
/// is asked.
fn source(matches: &ArgMatches, id: &str) -> Option<ValueSource> {
    let (mut level, mut found) = (Some(matches), None);
    while let Some(m) = level {
        match m.value_source(id) {
            Some(s @ (ValueSource::CommandLine | ValueSource::EnvVariable)) => return Some(s),
            other => found = found.or(other),
        }
        level = m.subcommand().map(|(_, sub)| sub);
    }
    found
}

/// Fills what `matches` left unset in `g` from the context `--context` names, or the selected
/// one; returns its name.
pub fn apply(g: &mut Global, matches: &ArgMatches) -> anyhow::Result<Option<String>> {
    let store = Store::user()?;
    let name = match g.context.clone() {
        Some(name) => name,
        None => match store.selected()? {
            Some(name) => name,
            None => return Ok(None),
        },
    };
    let s = store.load(&name)?;
    let unset = |id: &str| {
        !matches!(source(matches, id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
    };
    if unset("nats_url") && s.nats_url.is_some() {
        g.nats_url = s.nats_url;
    }
    if let Some(lattice) = s.lattice.filter(|_| unset("lattice")) {
        g.lattice = lattice;
    }
    let paths = [
        ("nats_creds", &mut g.nats_creds, s.nats_creds),
        ("nats_nkey", &mut g.nats_nkey, s.nats_nkey),
        ("nats_tls_ca", &mut g.nats_tls_ca, s.nats_tls_ca),
        ("nats_tls_cert", &mut g.nats_tls_cert, s.nats_tls_cert),
        ("nats_tls_key", &mut g.nats_tls_key, s.nats_tls_key),
        ("operator_key", &mut g.operator_key, s.operator_key),
    ];
    for (id, field, value) in paths {
        if unset(id) && value.is_some() {
            *field = value;
        }
    }
    if unset("js_domain") && s.js_domain.is_some() {
        g.js_domain = s.js_domain;
    }
    // Errors name the context the settings came from.
    g.context = Some(name.clone());
    Ok(Some(name))
}

/// The settings given on the command line (for `trellis context add`), paths made absolute.
pub fn from_command_line(
    g: &Global,
    matches: &ArgMatches,
    (description, console_url): (Option<String>, Option<String>),
) -> anyhow::Result<Settings> {
    let given_here = |id: &str| source(matches, id) == Some(ValueSource::CommandLine);
    let path = |id: &str, p: &Option<PathBuf>| -> anyhow::Result<Option<PathBuf>> {
        match p.as_ref().filter(|_| given_here(id)) {
            Some(p) => Ok(Some(
                std::path::absolute(p).with_context(|| format!("--{}", id.replace('_', "-")))?,
            )),
            None => Ok(None),
        }
    };
    let settings = Settings {
        description,
        nats_url: g.nats_url.clone().filter(|_| given_here("nats_url")),
        lattice: Some(g.lattice.clone()).filter(|_| given_here("lattice")),
        nats_creds: path("nats_creds", &g.nats_creds)?,
        nats_nkey: path("nats_nkey", &g.nats_nkey)?,
        nats_tls_ca: path("nats_tls_ca", &g.nats_tls_ca)?,
        nats_tls_cert: path("nats_tls_cert", &g.nats_tls_cert)?,
        nats_tls_key: path("nats_tls_key", &g.nats_tls_key)?,
        js_domain: g.js_domain.clone().filter(|_| given_here("js_domain")),
        operator_key: path("operator_key", &g.operator_key)?,
        console_url,
    };
    Ok(settings)
}

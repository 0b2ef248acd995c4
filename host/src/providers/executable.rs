//! Finding a provider's executable: `trellis-provider-<kind>`.

use std::path::{Path, PathBuf};

/// Looks in `dir` (if given), beside the running executable, then on `PATH`.
pub(crate) fn find_executable(kind: &str, dir: Option<&Path>) -> Result<PathBuf, String> {
    let name = format!("trellis-provider-{kind}");
    let mut searched = Vec::new();
    let beside_me = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = dir.map(Path::to_path_buf).into_iter().chain(beside_me).chain(path_dirs);
    for dir in candidates {
        let path = dir.join(&name);
        if path.is_file() {
            return Ok(path);
        }
        searched.push(dir.display().to_string());
    }
    Err(format!(
        "no provider executable `{name}` found (searched {}); build it with `cargo build -p {name}` \
         or pass --provider-dir",
        searched.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_kind_names_what_to_do() {
        let err = find_executable("no-such-kind", None).unwrap_err();
        assert!(err.contains("trellis-provider-no-such-kind"), "{err}");
        assert!(err.contains("--provider-dir"), "{err}");
    }

    #[test]
    fn finds_in_given_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trellis-provider-x");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(find_executable("x", Some(dir.path())).unwrap(), path);
    }
}

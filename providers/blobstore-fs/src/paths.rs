//! Container and object names as paths under a root, never outside it.

use std::path::{Path, PathBuf};

/// The directory of container `name` under `root`: one plain segment.
pub fn container(root: &Path, name: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        return Err(format!("container name `{name}` may not contain `/`"));
    }
    segment(name).map(|s| root.join(s))
}

/// The file of object `name` in `container_dir`: plain segments separated by `/`.
pub fn object(container_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let mut path = container_dir.to_path_buf();
    for part in name.split('/') {
        path.push(segment(part).map_err(|e| format!("object name `{name}`: {e}"))?);
    }
    Ok(path)
}

fn segment(s: &str) -> Result<&str, String> {
    if s.is_empty() || s == "." || s == ".." || s.contains('\\') || s.contains('\0') {
        return Err(format!(
            "`{s}` is not an allowed name (no empty, `.`, `..`, `\\` or NUL parts)"
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_under_the_root() {
        let root = Path::new("/srv/blobs");
        assert_eq!(container(root, "photos").unwrap(), Path::new("/srv/blobs/photos"));
        let c = container(root, "photos").unwrap();
        assert_eq!(object(&c, "2024/a.png").unwrap(), Path::new("/srv/blobs/photos/2024/a.png"));
        for bad in ["..", "../x", "a/../../b", "/etc/passwd", "a//b", "", ".", "a\\..\\b", "a\0"] {
            assert!(object(&c, bad).is_err(), "{bad:?}");
        }
        for bad in ["..", "a/b", "", "."] {
            assert!(container(root, bad).is_err(), "{bad:?}");
        }
    }
}

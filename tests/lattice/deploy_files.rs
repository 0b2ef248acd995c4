//! Every file under `deploy/` parses: Nomad HCL with an HCL parser, YAML (Helm templates with
//! their template actions taken out) and JSON with theirs, systemd units and environment files
//! line by line. The NATS configurations run for real in `regions.rs` and `accounts.rs`.

use std::path::{Path, PathBuf};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read deploy/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// A Helm template as plain YAML: lines that are only template actions go, inline actions
/// become a scalar.
fn untemplate(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("{{") && trimmed.ends_with("}}") && !trimmed.contains(": ") {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            match rest[start..].find("}}") {
                Some(end) => {
                    out.push('x');
                    rest = &rest[start + end + 2..];
                }
                None => {
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

fn check_yaml(path: &Path, text: &str) {
    let text = if path.components().any(|c| c.as_os_str() == "templates") {
        untemplate(text)
    } else {
        text.to_owned()
    };
    let docs: Result<Vec<serde_json::Value>, _> = serde_saphyr::from_str_multiple(&text);
    if let Err(e) = docs {
        panic!("{} is not valid YAML: {e}\n{text}", path.display());
    }
}

/// `[Section]`, `Key=Value`, comments and blank lines, as systemd reads them.
fn check_systemd(path: &Path, text: &str, sections: bool) {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let ok = line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || (sections && line.starts_with('[') && line.ends_with(']'))
            || line.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        assert!(ok, "{}:{}: not `Key=Value`: {line}", path.display(), n + 1);
    }
}

#[test]
fn every_deploy_file_parses() {
    let mut all = Vec::new();
    files(Path::new(DEPLOY), &mut all);
    all.sort();
    let mut checked = Vec::new();
    for path in &all {
        let text = std::fs::read_to_string(path).expect("utf-8 file");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let kind = match name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("hcl" | "nomad") => {
                if let Err(e) = hcl::parse(&text) {
                    panic!("{} is not valid HCL: {e}", path.display());
                }
                "hcl"
            }
            Some("yaml" | "yml") => {
                check_yaml(path, &text);
                "yaml"
            }
            Some("json") => {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                    panic!("{} is not valid JSON: {e}", path.display());
                }
                "json"
            }
            Some("service") => {
                check_systemd(path, &text, true);
                assert!(text.contains("[Service]"), "{}", path.display());
                "systemd"
            }
            Some("env") => {
                check_systemd(path, &text, false);
                "env"
            }
            // NATS configs run in other tests; Helm helpers and notes are not data.
            Some("conf" | "tpl" | "txt" | "md") => continue,
            _ => panic!("{}: no check for this kind of file; add one", path.display()),
        };
        checked.push((kind, path.strip_prefix(DEPLOY).unwrap_or(path).display().to_string()));
    }
    for kind in ["hcl", "yaml", "systemd"] {
        assert!(checked.iter().any(|(k, _)| *k == kind), "no {kind} files checked: {checked:?}");
    }
    println!("checked {} files: {checked:?}", checked.len());
}

#[test]
fn helm_templates_lose_only_their_actions() {
    let yaml = "kind: DaemonSet\n{{- if .Values.x }}\nname: {{ .Values.name }}\n{{- end }}\n";
    assert_eq!(untemplate(yaml), "kind: DaemonSet\nname: x\n");
}

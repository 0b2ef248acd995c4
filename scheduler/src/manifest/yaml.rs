//! Writes a [`Manifest`] as the YAML an operator would write (`trellis app convert`): fields in
//! the order of `docs/manifest.md`, defaults left out, strings quoted only when YAML would read
//! them as something else. The output reads back as the same manifest.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::Manifest;

/// Keys in the order a reader expects them; others follow alphabetically.
const ORDER: &[&str] = &[
    "name",
    "version",
    "description",
    "source",
    "kind",
    "target",
    "interface",
    "builtin",
    "replicas",
    "requirements",
    "spread",
    "weight",
    "config",
    "limits",
    "reuse",
    "components",
    "providers",
    "links",
    "rollout",
];

impl Manifest {
    /// The manifest as YAML that [`Manifest::from_yaml`] reads back unchanged.
    pub fn to_yaml(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a manifest serializes");
        prune(&mut value);
        let mut out = String::new();
        if let Value::Object(map) = &value {
            write_map(&mut out, map, 0);
        }
        out
    }
}

/// Leaves out what the defaults say anyway: empty maps and lists, `false`, all-zero limits,
/// a rollout batch of 1, a link named `default`.
fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                prune(v);
            }
            // A link's default name.
            if map.contains_key("interface") && map.get("name") == Some(&Value::from("default")) {
                map.remove("name");
            }
            map.retain(|key, v| match v {
                Value::Object(m) => {
                    let zeros = key == "limits" && m.values().all(|v| v.as_u64() == Some(0));
                    let batch_one = key == "rollout" && m.get("batch") == Some(&Value::from(1));
                    !(m.is_empty() || zeros || batch_one)
                }
                Value::Array(a) => !a.is_empty(),
                Value::Bool(b) => *b,
                Value::String(s) => !(key == "description" && s.is_empty()),
                _ => true,
            });
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn ordered(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    let rank = |k: &str| ORDER.iter().position(|o| *o == k).unwrap_or(ORDER.len());
    entries.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    entries
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (i, (key, value)) in ordered(map).into_iter().enumerate() {
        // The first key of a list item shares the item's `- ` line.
        let pad = if i == 0 && out.ends_with("- ") { 0 } else { indent };
        let _ = write!(out, "{:pad$}{}:", "", scalar(&Value::String(key.clone())));
        write_value(out, value, indent);
    }
}

fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                let _ = write!(out, "{:w$}- ", "", w = indent + 2);
                match item {
                    Value::Object(m) if !m.is_empty() => write_map(out, m, indent + 4),
                    other => {
                        out.push_str(&scalar(other));
                        out.push('\n');
                    }
                }
            }
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        other => {
            let _ = writeln!(out, " {}", scalar(other));
        }
    }
}

/// A scalar as YAML: strings plain when nothing else could read them differently, otherwise
/// double-quoted (a JSON string is a valid YAML double-quoted scalar).
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) if plain(s) => s.clone(),
        other => other.to_string(),
    }
}

fn plain(s: &str) -> bool {
    const WORDS: &[&str] = &["true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"];
    // `:` only inside: `wasi:http/incoming-handler` is plain, `key:` would not be.
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && !s.ends_with(':')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./:".contains(&b))
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_read_back_as_written() {
        for text in [
            include_str!("../../../examples/hello.yaml"),
            include_str!("../../../examples/counter.yaml"),
            include_str!("../../../examples/zones.yaml"),
        ] {
            let m = Manifest::from_yaml(text).unwrap();
            let yaml = m.to_yaml();
            let back = Manifest::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert_eq!(back, m, "{yaml}");
            assert!(yaml.starts_with("name: "), "{yaml}");
        }
    }

    #[test]
    fn strings_yaml_would_misread_are_quoted() {
        assert_eq!(scalar(&Value::from("web")), "web");
        assert_eq!(
            scalar(&Value::from("wasi:http/incoming-handler")),
            "wasi:http/incoming-handler"
        );
        assert_eq!(scalar(&Value::from("oci://ghcr.io/a/b:1")), "oci://ghcr.io/a/b:1");
        assert_eq!(scalar(&Value::from("a:")), "\"a:\"");
        assert_eq!(scalar(&Value::from("1")), "\"1\"");
        assert_eq!(scalar(&Value::from("true")), "\"true\"");
        assert_eq!(scalar(&Value::from("127.0.0.1:8080")), "\"127.0.0.1:8080\"");
        assert_eq!(scalar(&Value::from("a \"b\"\n")), "\"a \\\"b\\\"\\n\"");
        assert_eq!(scalar(&Value::from("")), "\"\"");
    }
}

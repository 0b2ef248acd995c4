//! Component keys as NATS KV keys. NATS allows `[-/_=.A-Za-z0-9]` and uses `.` as a token
//! separator, so key `k` of bucket `b` is stored as `escape(b).escape(k)`, where `escape` keeps
//! `[-/_A-Za-z0-9]` and writes every other byte as `=XX` (hex). The mapping is reversible, so
//! `list-keys` returns the component's own keys.

/// The stored key of `key` in namespace `ns`.
pub fn stored(ns: &str, key: &str) -> String {
    let mut out = escape(ns);
    out.push('.');
    out.push_str(&escape(key));
    out
}

/// The prefix every stored key of namespace `ns` starts with.
pub fn prefix(ns: &str) -> String {
    let mut out = escape(ns);
    out.push('.');
    out
}

/// The component key of a stored key under `prefix`; `None` for keys of other namespaces or
/// keys this provider did not write.
pub fn component_key(prefix: &str, stored: &str) -> Option<String> {
    unescape(stored.strip_prefix(prefix)?)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    if s.is_empty() {
        // An empty token is not a valid NATS key; `=` alone never comes out of a non-empty one.
        out.push('=');
        return out;
    }
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    if s == "=" {
        return Some(String::new());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_stay_in_their_namespace() {
        for key in ["plain", "with space", "dots.and:colons", "ünïcode", "=", "", "a/b-c_d"] {
            let stored = stored("ns", key);
            assert!(
                stored.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)),
                "{stored}"
            );
            assert_eq!(component_key(&prefix("ns"), &stored).as_deref(), Some(key));
            assert_eq!(component_key(&prefix("other"), &stored), None);
        }
        assert_ne!(stored("a.b", "c"), stored("a", "b.c"));
        assert_eq!(component_key("ns.", "ns.=Z"), None);
    }
}

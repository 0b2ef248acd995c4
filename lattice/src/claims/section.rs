//! Reading and writing the claims custom section of a component binary.
//!
//! Only the top level of the binary is walked: a preamble, then sections of `id: u8`,
//! `size: LEB128 u32`, payload. A custom section (id 0) starts with its LEB128-prefixed name.
//! Nothing here allocates more than the input, and malformed input is an error, never a panic.

/// Name of the custom section holding the claims JWT.
pub const SECTION_NAME: &str = "trellis-claims";

/// The binary is not a well-formed sequence of sections.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed WebAssembly binary at byte {offset}: {what}")]
pub struct SectionError {
    /// Where parsing stopped.
    pub offset: usize,
    /// What was wrong.
    pub what: &'static str,
}

/// The component without any claims section, and the claims token if there was exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The binary with every claims section removed: what the claims hash covers.
    pub stripped: Vec<u8>,
    /// The token bytes of each claims section found.
    pub tokens: Vec<Vec<u8>>,
}

/// Splits `wasm` into its claims sections and everything else.
pub fn split(wasm: &[u8]) -> Result<Split, SectionError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(SectionError { offset: 0, what: "no `\\0asm` preamble" });
    }
    let mut stripped = Vec::with_capacity(wasm.len());
    stripped.extend_from_slice(&wasm[..8]);
    let mut tokens = Vec::new();
    let mut at = 8;
    while at < wasm.len() {
        let start = at;
        let id = wasm[at];
        at += 1;
        let (size, used) =
            leb128_u32(&wasm[at..]).ok_or(SectionError { offset: at, what: "bad section size" })?;
        at += used;
        let end = at
            .checked_add(size as usize)
            .filter(|&e| e <= wasm.len())
            .ok_or(SectionError { offset: at, what: "section runs past the end" })?;
        let payload = &wasm[at..end];
        match (id, custom_name(payload)) {
            (0, Some((name, data))) if name == SECTION_NAME.as_bytes() => {
                tokens.push(data.to_vec())
            }
            (0, None) => {
                return Err(SectionError { offset: at, what: "bad custom section name" });
            }
            _ => stripped.extend_from_slice(&wasm[start..end]),
        }
        at = end;
    }
    Ok(Split { stripped, tokens })
}

/// Appends a claims section carrying `token` to `stripped` (a binary without one).
pub fn append(stripped: &[u8], token: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(token.len() + SECTION_NAME.len() + 5);
    write_leb128_u32(&mut payload, SECTION_NAME.len() as u32);
    payload.extend_from_slice(SECTION_NAME.as_bytes());
    payload.extend_from_slice(token);
    let mut out = Vec::with_capacity(stripped.len() + payload.len() + 6);
    out.extend_from_slice(stripped);
    out.push(0);
    write_leb128_u32(&mut out, payload.len() as u32);
    out.extend_from_slice(&payload);
    out
}

fn custom_name(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, used) = leb128_u32(payload)?;
    let end = used.checked_add(len as usize).filter(|&e| e <= payload.len())?;
    Some((&payload[used..end], &payload[end..]))
}

fn leb128_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().take(5).enumerate() {
        let bits = u32::from(b & 0x7f);
        if i == 4 && bits > 0x0f {
            return None;
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn write_leb128_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPONENT_PREAMBLE: &[u8] = b"\0asm\x0d\0\x01\0";

    fn with_custom(name: &str, data: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        write_leb128_u32(&mut payload, name.len() as u32);
        payload.extend_from_slice(name.as_bytes());
        payload.extend_from_slice(data);
        let mut out = COMPONENT_PREAMBLE.to_vec();
        out.push(0);
        write_leb128_u32(&mut out, payload.len() as u32);
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn append_then_split_round_trips() {
        let base = with_custom("other", b"keep me");
        let signed = append(&base, b"token");
        let split = split(&signed).unwrap();
        assert_eq!(split.stripped, base);
        assert_eq!(split.tokens, vec![b"token".to_vec()]);
    }

    #[test]
    fn leb128_round_trips_and_rejects_overlong() {
        for v in [0u32, 1, 127, 128, 300, 1 << 20, u32::MAX] {
            let mut buf = Vec::new();
            write_leb128_u32(&mut buf, v);
            assert_eq!(leb128_u32(&buf), Some((v, buf.len())));
        }
        assert_eq!(leb128_u32(&[0x80, 0x80, 0x80, 0x80, 0x80]), None);
        assert_eq!(leb128_u32(&[0xff, 0xff, 0xff, 0xff, 0x7f]), None);
        assert_eq!(leb128_u32(&[]), None);
    }

    #[test]
    fn malformed_binaries_are_errors() {
        assert!(split(b"nope").is_err());
        let mut truncated = append(COMPONENT_PREAMBLE, b"token");
        truncated.pop();
        assert!(split(&truncated).is_err());
        let mut huge = COMPONENT_PREAMBLE.to_vec();
        huge.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(split(&huge).is_err());
    }
}

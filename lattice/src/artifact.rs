//! Recognising WebAssembly components before anything uploads or compiles them.

/// What kind of file `bytes` are, judged by the 8-byte preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A component (what Trellis runs).
    Component,
    /// A core module: needs wrapping into a component first.
    CoreModule,
    /// Not WebAssembly.
    NotWasm,
}

/// Classifies `bytes` by the WebAssembly preamble.
pub fn sniff(bytes: &[u8]) -> WasmKind {
    match bytes.get(..8) {
        Some(h) if h.starts_with(b"\0asm") && h[4..8] == [1, 0, 0, 0] => WasmKind::CoreModule,
        Some(h) if h.starts_with(b"\0asm") => WasmKind::Component,
        _ => WasmKind::NotWasm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_preambles() {
        assert_eq!(sniff(b"\0asm\x0d\0\x01\0rest"), WasmKind::Component);
        assert_eq!(sniff(b"\0asm\x01\0\0\0"), WasmKind::CoreModule);
        assert_eq!(sniff(b"hello world"), WasmKind::NotWasm);
        assert_eq!(sniff(b"\0asm"), WasmKind::NotWasm);
    }
}

//! Reading and writing the claims custom section of a component binary.
//!
//! `wasmparser` walks the top level of the binary (a component or a core module) section by
//! section without descending into nested modules or function bodies; every section other than
//! the claims one is kept byte for byte, so the claims hash covers exactly what was signed.
//! Malformed input is a [`SectionError`], never a panic.

use std::borrow::Cow;

use wasm_encoder::Section as _;
use wasmparser::{Chunk, Parser, Payload};

/// Name of the custom section holding the claims JWT.
pub const SECTION_NAME: &str = "trellis-claims";

/// The binary is not a well-formed WebAssembly component or module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed WebAssembly binary at byte {offset}: {what}")]
pub struct SectionError {
    /// Where parsing stopped.
    pub offset: usize,
    /// What was wrong.
    pub what: String,
}

impl From<wasmparser::BinaryReaderError> for SectionError {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        Self { offset: e.offset(), what: e.message().to_owned() }
    }
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
    let mut parser = Parser::new(0);
    let mut stripped = Vec::with_capacity(wasm.len());
    let mut tokens = Vec::new();
    // Where the next section's header starts: sections follow each other with no gaps.
    let mut at = 0;
    loop {
        let payload = match parser.parse(&wasm[at..], true)? {
            Chunk::Parsed { payload, .. } => payload,
            // Only an incremental parse (`eof` false) asks for more.
            Chunk::NeedMoreData(_) => {
                return Err(SectionError { offset: wasm.len(), what: "unexpected end".into() });
            }
        };
        let claims = match payload {
            Payload::End(_) => return Ok(Split { stripped, tokens }),
            Payload::CustomSection(section) if section.name() == SECTION_NAME => {
                Some(section.data().to_vec())
            }
            // Function bodies are not walked one by one: the code section is kept whole.
            Payload::CodeSectionStart { .. } => {
                parser.skip_section();
                None
            }
            // Nested modules and components were skipped by the parser; so is everything else.
            _ => None,
        };
        let end = usize::try_from(parser.offset())
            .ok()
            .filter(|&end| end <= wasm.len())
            .ok_or(SectionError { offset: at, what: "section runs past the end".into() })?;
        match claims {
            Some(token) => tokens.push(token),
            None => stripped.extend_from_slice(&wasm[at..end]),
        }
        at = end;
    }
}

/// Appends a claims section carrying `token` to `stripped` (a binary without one).
pub fn append(stripped: &[u8], token: &[u8]) -> Vec<u8> {
    let section = wasm_encoder::CustomSection {
        name: Cow::Borrowed(SECTION_NAME),
        data: Cow::Borrowed(token),
    };
    let mut out = Vec::with_capacity(stripped.len() + token.len() + SECTION_NAME.len() + 12);
    out.extend_from_slice(stripped);
    section.append_to(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPONENT_PREAMBLE: &[u8] = b"\0asm\x0d\0\x01\0";

    /// A component with a core module (a function and its body) and another custom section.
    fn component() -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, Component, CustomSection, ExportKind, ExportSection, Function,
            FunctionSection, Instruction, Module, ModuleSection, TypeSection,
        };
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], [wasm_encoder::ValType::I32]);
        module.section(&types);
        let mut functions = FunctionSection::new();
        functions.function(0);
        module.section(&functions);
        let mut exports = ExportSection::new();
        exports.export("answer", ExportKind::Func, 0);
        module.section(&exports);
        let mut code = CodeSection::new();
        let mut body = Function::new([]);
        body.instruction(&Instruction::I32Const(42)).instruction(&Instruction::End);
        code.function(&body);
        module.section(&code);
        let mut component = Component::new();
        component.section(&ModuleSection(&module));
        component.section(&CustomSection { name: "other".into(), data: b"keep me".into() });
        component.finish()
    }

    #[test]
    fn append_then_split_round_trips() {
        let base = component();
        let signed = append(&base, b"token");
        let split = split(&signed).unwrap();
        assert_eq!(split.stripped, base);
        assert_eq!(split.tokens, vec![b"token".to_vec()]);
        wasmparser::Validator::new().validate_all(&signed).expect("a valid component");
    }

    #[test]
    fn the_section_is_encoded_as_before() {
        // Signatures made before wasm-encoder wrote the section still verify: same bytes.
        let mut expected = COMPONENT_PREAMBLE.to_vec();
        expected.extend_from_slice(&[0, 20, 14]);
        expected.extend_from_slice(b"trellis-claimsjwt:a");
        assert_eq!(append(COMPONENT_PREAMBLE, b"jwt:a"), expected);
    }

    #[test]
    fn core_modules_split_too() {
        let mut module = wasm_encoder::Module::new();
        module.section(&wasm_encoder::TypeSection::new());
        let module = module.finish();
        let split = split(&append(&module, b"t")).unwrap();
        assert_eq!((split.stripped, split.tokens), (module, vec![b"t".to_vec()]));
    }

    #[test]
    fn malformed_binaries_are_errors() {
        assert!(split(b"nope").is_err());
        assert!(split(b"\0asm\x02\0\0\0").is_err(), "unknown version");
        let mut truncated = append(COMPONENT_PREAMBLE, b"token");
        truncated.pop();
        assert!(split(&truncated).is_err());
        let mut huge = COMPONENT_PREAMBLE.to_vec();
        huge.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(split(&huge).is_err());
        let mut overlong = COMPONENT_PREAMBLE.to_vec();
        overlong.extend_from_slice(&[0, 0x80, 0x80, 0x80, 0x80, 0x80]);
        assert!(split(&overlong).is_err());
    }
}

//! Which WASI generation a component targets, read from its binary before it is compiled: the
//! host compiles WASI 0.2 components with an engine whose concurrency support is off (it costs
//! every call), and WASI 0.3 ones with an engine that has it.
//!
//! Only the top level of the binary is walked (nested modules are skipped): the names of its
//! imports and exports, and its canonical functions (an async lift or lower, or a stream, future
//! or task built-in, needs the concurrent engine even without a `@0.3` name). An import of a
//! versioned WASI package the host has no generation for (`0.3.0-rc-*`, `0.4.0`, ...) is
//! refused here, with its name and the versions this host serves.

use wasmparser::{CanonicalFunction, CanonicalOption, Chunk, Parser, Payload};

use super::component::LoadError;

/// The WASI generations a component can target on this host.
/// Ordered: a component with any 0.3 part is a 0.3 component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Generation {
    /// WASI 0.2.x: synchronous calls, one at a time per instance.
    P2,
    /// WASI 0.3.x: the component model's async; an instance may serve several calls at once.
    P3,
}

/// WASI packages that come in generations (their interfaces are served by wasmtime-wasi and
/// wasmtime-wasi-http); other `wasi:` packages (keyvalue, config, blobstore, logging) have
/// bindings of their own at their own versions.
const VERSIONED: &[&str] = &["cli", "clocks", "filesystem", "http", "io", "random", "sockets"];

/// What this host offers for the packages of [`VERSIONED`], as said in refusals.
pub const OFFERED: &str = "0.2.x (0.2.0 and later) and 0.3.x (0.3.0 and later)";

/// The generation `bytes` target, or why the host cannot serve them. Malformed binaries are
/// left to the compiler, which says what is wrong: they count as WASI 0.2 here.
pub fn inspect(bytes: &[u8]) -> Result<Generation, LoadError> {
    let mut parser = Parser::new(0);
    let mut at = 0;
    let mut generation = Generation::P2;
    loop {
        let Some(rest) = bytes.get(at..) else { return Ok(generation) };
        let payload = match parser.parse(rest, true) {
            Ok(Chunk::Parsed { payload, consumed }) => {
                at += consumed;
                payload
            }
            Ok(Chunk::NeedMoreData(_)) | Err(_) => return Ok(generation),
        };
        match payload {
            Payload::End(_) => return Ok(generation),
            Payload::ComponentImportSection(imports) => {
                for import in imports.into_iter().flatten() {
                    generation = generation.max(of_name(import.name.name)?);
                }
            }
            Payload::ComponentExportSection(exports) => {
                for export in exports.into_iter().flatten() {
                    generation = generation.max(of_name(export.name.name)?);
                }
            }
            Payload::ComponentCanonicalSection(canonicals)
                if canonicals.clone().into_iter().flatten().any(|c| needs_concurrency(&c)) =>
            {
                generation = Generation::P3;
            }
            Payload::CodeSectionStart { size, .. } => {
                parser.skip_section();
                at += size as usize;
            }
            // Nested modules and components are skipped by the parser.
            _ => {}
        }
    }
}

/// The generation an import or export name asks for: P3 for `wasi:<versioned>/*@0.3.x`;
/// refused for another version of a versioned WASI package.
fn of_name(name: &str) -> Result<Generation, LoadError> {
    let Some(rest) = name.strip_prefix("wasi:") else { return Ok(Generation::P2) };
    let Some((package, rest)) = rest.split_once('/') else { return Ok(Generation::P2) };
    let Some((_, version)) = rest.split_once('@') else { return Ok(Generation::P2) };
    if !VERSIONED.contains(&package) {
        return Ok(Generation::P2);
    }
    match generation_of_version(version) {
        Some(generation) => Ok(generation),
        None => Err(LoadError::UnsupportedWasi { import: name.to_owned(), offered: OFFERED }),
    }
}

/// `0.2.x` and `0.3.x` (any patch, no pre-release): wasmtime's linker resolves any patch of
/// either to the one it defines. A pre-release (`0.3.0-rc-2025-09-16`) matches nothing.
fn generation_of_version(version: &str) -> Option<Generation> {
    let mut parts = version.splitn(3, '.');
    let (major, minor, patch) = (parts.next()?, parts.next()?, parts.next()?);
    // Build metadata (`+...`) does not change what a version is; a pre-release does.
    let patch = patch.split_once('+').map_or(patch, |(p, _)| p);
    if major != "0" || patch.is_empty() || !patch.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match minor {
        "2" => Some(Generation::P2),
        "3" => Some(Generation::P3),
        _ => None,
    }
}

/// Whether a canonical function uses the component model's async (which the engine without
/// concurrency support refuses to compile).
fn needs_concurrency(function: &CanonicalFunction) -> bool {
    let is_async = |options: &[CanonicalOption]| {
        options.iter().any(|o| matches!(o, CanonicalOption::Async | CanonicalOption::Callback(_)))
    };
    match function {
        CanonicalFunction::Lift { options, .. } | CanonicalFunction::Lower { options, .. } => {
            is_async(options)
        }
        CanonicalFunction::ResourceNew { .. }
        | CanonicalFunction::ResourceDrop { .. }
        | CanonicalFunction::ResourceRep { .. } => false,
        // Tasks, subtasks, streams, futures, waitable sets, error contexts, backpressure,
        // context slots, threads: all built-ins of the async model.
        _ => true,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use wasm_encoder::{
        Component, ComponentExportKind, ComponentImportSection, ComponentTypeRef,
        ComponentTypeSection,
    };

    /// A component importing an (empty) instance under each of `names`.
    pub(in crate::runtime) fn importing(names: &[&str]) -> Vec<u8> {
        let mut component = Component::new();
        let mut types = ComponentTypeSection::new();
        types.instance(&wasm_encoder::InstanceType::new());
        component.section(&types);
        let mut imports = ComponentImportSection::new();
        for name in names {
            imports.import(*name, ComponentTypeRef::Instance(0));
        }
        component.section(&imports);
        component.finish()
    }

    /// A component importing `import` as an instance with `now: func() -> u64` (the shape of
    /// `wasi:clocks/monotonic-clock.now` in 0.2 and 0.3), and a 0.2 `stdout`.
    pub(in crate::runtime) fn importing_now(import: &str) -> Vec<u8> {
        use wasm_encoder::{ComponentValType, PrimitiveValType};
        let mut component = Component::new();
        let mut types = ComponentTypeSection::new();
        let mut instance = wasm_encoder::InstanceType::new();
        let no_params: [(&str, ComponentValType); 0] = [];
        let u64 = ComponentValType::Primitive(PrimitiveValType::U64);
        instance.ty().function().params(no_params).result(Some(u64));
        instance.export("now", ComponentTypeRef::Func(0));
        types.instance(&instance);
        types.instance(&wasm_encoder::InstanceType::new());
        component.section(&types);
        let mut imports = ComponentImportSection::new();
        imports.import(import, ComponentTypeRef::Instance(0));
        imports.import("wasi:cli/stdout@0.2.3", ComponentTypeRef::Instance(1));
        component.section(&imports);
        component.finish()
    }

    /// A component re-exporting an imported instance under `export`.
    fn exporting(export: &str) -> Vec<u8> {
        let mut component = Component::new();
        let mut types = ComponentTypeSection::new();
        types.instance(&wasm_encoder::InstanceType::new());
        component.section(&types);
        let mut imports = ComponentImportSection::new();
        imports.import("my:pkg/thing", ComponentTypeRef::Instance(0));
        component.section(&imports);
        let mut exports = wasm_encoder::ComponentExportSection::new();
        exports.export(export, ComponentExportKind::Instance, 0, None);
        component.section(&exports);
        component.finish()
    }

    #[test]
    fn wasi_0_2_imports_are_generation_p2() {
        let wasm = importing(&["wasi:cli/stdout@0.2.0", "wasi:http/types@0.2.12"]);
        assert_eq!(inspect(&wasm), Ok(Generation::P2));
    }

    #[test]
    fn any_wasi_0_3_patch_is_generation_p3_next_to_0_2_imports() {
        for version in ["0.3.0", "0.3.2", "0.3.17"] {
            let import = format!("wasi:clocks/monotonic-clock@{version}");
            let wasm = importing(&["wasi:cli/stderr@0.2.6", &import]);
            assert_eq!(inspect(&wasm), Ok(Generation::P3), "{import}");
        }
    }

    #[test]
    fn a_wasi_0_3_handler_export_is_generation_p3() {
        assert_eq!(inspect(&exporting("wasi:http/handler@0.3.0")), Ok(Generation::P3));
        assert_eq!(inspect(&exporting("wasi:http/incoming-handler@0.2.3")), Ok(Generation::P2));
    }

    #[test]
    fn a_release_candidate_import_is_refused_with_its_name_and_the_offered_versions() {
        let import = "wasi:http/types@0.3.0-rc-2025-09-16";
        let err = inspect(&importing(&["wasi:cli/stdout@0.2.0", import])).unwrap_err();
        assert_eq!(err, LoadError::UnsupportedWasi { import: import.to_owned(), offered: OFFERED });
        let message = err.to_string();
        assert!(message.contains(import) && message.contains(OFFERED), "{message}");
    }

    #[test]
    fn future_and_past_generations_are_refused() {
        for import in ["wasi:random/random@0.4.0", "wasi:io/streams@1.0.0", "wasi:cli/exit@0.1.0"] {
            let err = inspect(&importing(&[import])).unwrap_err();
            assert!(
                matches!(&err, LoadError::UnsupportedWasi { import: i, .. } if i == import),
                "{import}: {err}"
            );
        }
    }

    #[test]
    fn other_wasi_packages_keep_their_own_versions() {
        let wasm = importing(&["wasi:keyvalue/store@0.2.0-draft", "wasi:config/store@0.2.0-draft"]);
        assert_eq!(inspect(&wasm), Ok(Generation::P2));
    }

    #[test]
    fn versions_are_read_strictly() {
        assert_eq!(generation_of_version("0.3.1+build"), Some(Generation::P3));
        for version in ["0.3", "0.3.", "0.3.x", "0.2.0-draft", "00.3.0x", ""] {
            assert_eq!(generation_of_version(version), None, "{version}");
        }
    }

    #[test]
    fn garbage_is_left_to_the_compiler() {
        assert_eq!(inspect(b"not wasm"), Ok(Generation::P2));
        assert_eq!(inspect(&[]), Ok(Generation::P2));
    }
}

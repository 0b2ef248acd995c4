//! The claims decoders never panic: a signed component and its token, each mutated many ways
//! (a quick stand-in for the `claims_token` fuzz target in `fuzz/`, run on every test run).

#[path = "../../lattice/tests/mutants/mod.rs"]
mod mutants;

use mutants::on_mutants;

use trellis_claims::{self as claims, ClaimsInput, section};

/// A valid component: a core module with memory, data and a function body, an instance of it,
/// and a custom section, so mutants reach past the preamble into every kind of section framing.
fn component() -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, Component, CustomSection, DataSection, ExportKind, ExportSection, Function,
        FunctionSection, InstanceSection, Instruction, MemorySection, MemoryType, Module,
        ModuleArg, ModuleSection, TypeSection, ValType,
    };
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    module.section(&memories);
    let mut exports = ExportSection::new();
    exports.export("double", ExportKind::Func, 0).export("memory", ExportKind::Memory, 0);
    module.section(&exports);
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instruction(&Instruction::LocalGet(0))
        .instruction(&Instruction::LocalGet(0))
        .instruction(&Instruction::I32Add)
        .instruction(&Instruction::End);
    code.function(&body);
    module.section(&code);
    let mut data = DataSection::new();
    data.active(0, &wasm_encoder::ConstExpr::i32_const(8), b"hello".iter().copied());
    module.section(&data);

    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    let mut instances = InstanceSection::new();
    instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    component.section(&instances);
    component.section(&CustomSection { name: "producers".into(), data: b"trellis".into() });
    let wasm = component.finish();
    wasmparser::Validator::new().validate_all(&wasm).expect("the seed is a valid component");
    wasm
}

#[test]
fn claims_sections_and_tokens_survive_mutation() {
    let account = nkeys::KeyPair::new_account();
    let input = ClaimsInput {
        name: "n".into(),
        rev: 1,
        allow: vec!["a:b/c".into()],
        valid_for: None,
        no_reuse: false,
        callers: vec![],
    };
    let signed = claims::sign(&component(), &account, &input, 1_700_000_000).unwrap();
    let trusted = [account.public_key()];
    let walked = std::cell::Cell::new(0);
    on_mutants(&signed, 3000, |m| {
        walked.set(walked.get() + usize::from(section::split(m).is_ok()));
        let _ = claims::inspect(m);
        let _ = claims::verify(m, &trusted, 1_700_000_000);
    });
    // Edits inside a section's content keep the framing: the walk goes on to the end.
    assert!(walked.get() > 100, "only {} of 3000 mutants walked through", walked.get());
    // Mutating only the token keeps the framing and exercises the JWT decoder.
    let split = section::split(&signed).unwrap();
    on_mutants(&split.tokens[0], 3000, |token| {
        let _ = claims::inspect(&section::append(&split.stripped, token));
    });
}

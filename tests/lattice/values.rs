//! Arguments from the network against a real component's types: `decode_all` answers every
//! input, random or mangled, with values or a typed error, never a panic, for every function
//! of the test interface (records, variants, enums, flags, options, results, tuples, lists,
//! chars, strings, integers and floats).

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use rmpv::Value;
use trellis_host::runtime::values::decode_all;
use trellis_tests::component;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Type};
use wasmtime::{Config, Engine};

/// A msgpack value of every kind the decoder meets, up to four levels deep.
fn msgpack() -> impl Strategy<Value = Value> {
    const WORDS: [&str; 15] = [
        "red", "green", "blue", "read", "write", "exec", "circle", "rect", "empty", "ok", "err",
        "x", "y", "label", "",
    ];
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        (0u64..300).prop_map(Value::from),
        any::<u64>().prop_map(|bits| Value::F64(f64::from_bits(bits))),
        any::<u32>().prop_map(|bits| Value::F32(f32::from_bits(bits))),
        prop::sample::select(&WORDS[..]).prop_map(Value::from),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::Binary),
    ];
    leaf.prop_recursive(4, 64, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Value::Map),
            inner.prop_map(|v| Value::Array(vec![v])),
        ]
    })
}

/// Encoded arguments: an array of `n` values (the right length, so decoding reaches the
/// types), a third of the time with up to three bytes flipped, cut or inserted.
fn arguments(n: usize) -> impl Strategy<Value = Vec<u8>> {
    let args = prop::collection::vec(msgpack(), n).prop_map(|vs| encode(&Value::Array(vs)));
    let damage = prop::collection::vec((0u8..3, any::<Index>(), any::<u8>()), 1..=3);
    (args, prop::option::weighted(1.0 / 3.0, damage)).prop_map(|(mut bytes, damage)| {
        for (how, at, byte) in damage.into_iter().flatten() {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] ^= 1 << (byte % 8),
                1 => bytes.truncate(i.max(1)),
                _ => bytes.insert(i, byte),
            }
        }
        bytes
    })
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("encode");
    out
}

#[test]
fn random_and_mangled_arguments_are_errors_or_values_never_panics() {
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config).expect("engine");
    let wasm = std::fs::read(component("greeter")).expect("greeter.wasm");
    let component = Component::new(&engine, &wasm).expect("component");
    let mut functions: Vec<(String, Vec<(String, Type)>)> = Vec::new();
    for (name, item) in component.component_type().exports(&engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
        for (function, item) in instance.exports(&engine) {
            if let ComponentItem::ComponentFunc(f) = item.ty {
                let params = f.params().map(|(n, t)| (n.to_owned(), t)).collect();
                functions.push((format!("{name}.{function}"), params));
            }
        }
    }
    assert!(functions.len() >= 9, "the test interface's functions: {functions:?}");

    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    for (name, params) in &functions {
        let config =
            ProptestConfig { cases: 3000, failure_persistence: None, ..Default::default() };
        let result = TestRunner::new(config).run(&arguments(params.len()), |bytes| {
            let types = params.iter().map(|(n, t)| (n.as_str(), t.clone()));
            match decode_all(&bytes, types) {
                Ok(_) => accepted.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    assert!(!e.to_string().is_empty(), "{name}: an error says what is wrong");
                    refused.fetch_add(1, Ordering::Relaxed)
                }
            };
            Ok(())
        });
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
    }
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    // Both sides reached: the inputs are not all rejected at the door.
    assert!(accepted > 0 && refused > 0, "accepted {accepted}, refused {refused}");
}

//! Arguments from the network against a real component's types: `decode_all` answers every
//! input, random or mangled, with values or a typed error, never a panic, for every function
//! of the test interface (records, variants, enums, flags, options, results, tuples, lists,
//! chars, strings, integers and floats).

use rmpv::Value;
use trellis_host::runtime::values::decode_all;
use trellis_tests::component;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Type};
use wasmtime::{Config, Engine};

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random msgpack value, `depth` levels deep at most.
fn value(rng: &mut Rng, depth: u32) -> Value {
    let leaf = depth == 0;
    match rng.below(if leaf { 8 } else { 11 }) {
        0 => Value::Nil,
        1 => Value::Boolean(rng.next().is_multiple_of(2)),
        2 => Value::from(rng.next() as i64),
        3 => Value::from(rng.next() % 300),
        4 => Value::F64(f64::from_bits(rng.next())),
        5 => Value::F32(f32::from_bits(rng.next() as u32)),
        6 => {
            let words = [
                "red", "green", "blue", "read", "write", "exec", "circle", "rect", "empty", "ok",
                "err", "x", "y", "label", "",
            ];
            Value::from(words[rng.below(words.len())])
        }
        7 => Value::Binary((0..rng.below(8)).map(|_| rng.next() as u8).collect()),
        8 => Value::Array((0..rng.below(5)).map(|_| value(rng, depth - 1)).collect()),
        9 => Value::Map(
            (0..rng.below(4)).map(|_| (value(rng, depth - 1), value(rng, depth - 1))).collect(),
        ),
        _ => Value::Array(vec![value(rng, depth - 1)]),
    }
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

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (0, 0);
    for (name, params) in &functions {
        for round in 0..3000u32 {
            // Arrays of the right length most of the time, so decoding reaches the types.
            let args = Value::Array((0..params.len()).map(|_| value(&mut rng, 4)).collect());
            let mut bytes = encode(&args);
            if round.is_multiple_of(3) && !bytes.is_empty() {
                for _ in 0..=rng.below(3) {
                    let i = rng.below(bytes.len());
                    match rng.below(3) {
                        0 => bytes[i] ^= 1 << rng.below(8),
                        1 => bytes.truncate(i.max(1)),
                        _ => bytes.insert(i, rng.next() as u8),
                    }
                }
            }
            let types = params.iter().map(|(n, t)| (n.as_str(), t.clone()));
            match decode_all(&bytes, types) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    assert!(!e.to_string().is_empty(), "{name}: an error says what is wrong");
                    refused += 1;
                }
            }
        }
    }
    // Both sides reached: the inputs are not all rejected at the door.
    assert!(accepted > 0 && refused > 0, "accepted {accepted}, refused {refused}");
}

//! Component-model values as msgpack, for calls between components over any WIT interface.
//!
//! The encoding is self-describing and JSON-friendly, so `trellis call` can write arguments as
//! JSON: integers and floats as numbers, `list<u8>` as binary (an array of numbers is accepted
//! too), `char` and `string` as strings, other lists and tuples as arrays, records as maps by
//! field name, enums as their case name, variants and results as the case name (no payload) or
//! a one-entry map `{case: payload}`, `option` as nil or the value (`[value]` when the payload is
//! itself an option), flags as an array of names. Decoding checks every value against the
//! receiving side's type and names the path of a mismatch. Resources, futures and streams do not
//! cross the lattice.

use rmpv::Value;
use wasmtime::component::{Type, Val};

/// A value that does not fit the expected type, with where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValueError {
    path: String,
    message: String,
}

fn mismatch(path: &str, message: impl Into<String>) -> ValueError {
    ValueError {
        path: if path.is_empty() { "value".into() } else { path.to_owned() },
        message: message.into(),
    }
}

/// Encodes a component value.
pub fn encode(val: &Val) -> Result<Value, ValueError> {
    Ok(match val {
        Val::Bool(b) => Value::Boolean(*b),
        Val::S8(n) => Value::from(*n),
        Val::U8(n) => Value::from(*n),
        Val::S16(n) => Value::from(*n),
        Val::U16(n) => Value::from(*n),
        Val::S32(n) => Value::from(*n),
        Val::U32(n) => Value::from(*n),
        Val::S64(n) => Value::from(*n),
        Val::U64(n) => Value::from(*n),
        Val::Float32(f) => Value::F32(*f),
        Val::Float64(f) => Value::F64(*f),
        Val::Char(c) => Value::String(c.to_string().into()),
        Val::String(s) => Value::String(s.as_str().into()),
        // list<u8> as msgpack binary: bodies and blobs stay compact.
        Val::List(items) if !items.is_empty() && items.iter().all(|v| matches!(v, Val::U8(_))) => {
            Value::Binary(items.iter().map(|v| if let Val::U8(b) = v { *b } else { 0 }).collect())
        }
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Value::Array(items.iter().map(encode).collect::<Result<_, _>>()?)
        }
        Val::Map(pairs) => Value::Map(
            pairs.iter().map(|(k, v)| Ok((encode(k)?, encode(v)?))).collect::<Result<_, _>>()?,
        ),
        Val::Record(fields) => Value::Map(
            fields
                .iter()
                .map(|(name, v)| Ok((Value::String(name.as_str().into()), encode(v)?)))
                .collect::<Result<_, _>>()?,
        ),
        Val::Enum(case) => Value::String(case.as_str().into()),
        Val::Variant(case, payload) => case_value(case, payload.as_deref())?,
        Val::Result(Ok(payload)) => case_value("ok", payload.as_deref())?,
        Val::Result(Err(payload)) => case_value("err", payload.as_deref())?,
        Val::Option(None) => Value::Nil,
        Val::Option(Some(inner)) => match inner.as_ref() {
            nested @ Val::Option(_) => Value::Array(vec![encode(nested)?]),
            other => encode(other)?,
        },
        Val::Flags(names) => {
            Value::Array(names.iter().map(|n| Value::String(n.as_str().into())).collect())
        }
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => {
            return Err(mismatch("", "resources, futures and streams cannot cross the lattice"));
        }
    })
}

fn case_value(case: &str, payload: Option<&Val>) -> Result<Value, ValueError> {
    Ok(match payload {
        None => Value::String(case.into()),
        Some(v) => Value::Map(vec![(Value::String(case.into()), encode(v)?)]),
    })
}

/// Decodes `value` as a value of type `ty`; `path` names where it is, for errors.
pub fn decode(value: &Value, ty: &Type, path: &str) -> Result<Val, ValueError> {
    let int = |what: &str| -> Result<i128, ValueError> {
        match value {
            Value::Integer(i) => i
                .as_i64()
                .map(i128::from)
                .or_else(|| i.as_u64().map(i128::from))
                .ok_or_else(|| mismatch(path, format!("expected {what}"))),
            _ => Err(mismatch(path, format!("expected {what}, got {}", kind(value)))),
        }
    };
    macro_rules! integer {
        ($variant:ident, $t:ty, $name:literal) => {{
            let n = int($name)?;
            Val::$variant(
                <$t>::try_from(n)
                    .map_err(|_| mismatch(path, format!("{n} is out of range for {}", $name)))?,
            )
        }};
    }
    Ok(match ty {
        Type::Bool => match value {
            Value::Boolean(b) => Val::Bool(*b),
            _ => return Err(mismatch(path, format!("expected bool, got {}", kind(value)))),
        },
        Type::S8 => integer!(S8, i8, "s8"),
        Type::U8 => integer!(U8, u8, "u8"),
        Type::S16 => integer!(S16, i16, "s16"),
        Type::U16 => integer!(U16, u16, "u16"),
        Type::S32 => integer!(S32, i32, "s32"),
        Type::U32 => integer!(U32, u32, "u32"),
        Type::S64 => integer!(S64, i64, "s64"),
        Type::U64 => integer!(U64, u64, "u64"),
        Type::Float32 => Val::Float32(float(value, path)? as f32),
        Type::Float64 => Val::Float64(float(value, path)?),
        Type::Char => {
            let s = string(value, path)?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(mismatch(path, "expected a single character")),
            }
        }
        Type::String => Val::String(string(value, path)?.to_owned()),
        Type::List(list) => {
            let item = list.ty();
            if let (Value::Binary(bytes), Type::U8) = (value, &item) {
                return Ok(Val::List(bytes.iter().map(|b| Val::U8(*b)).collect()));
            }
            let items = array(value, path)?;
            Val::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| decode(v, &item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::FixedLengthList(list) => {
            let item = list.ty();
            let items = array(value, path)?;
            if items.len() != list.len() as usize {
                return Err(mismatch(
                    path,
                    format!("expected {} items, got {}", list.len(), items.len()),
                ));
            }
            Val::FixedLengthList(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| decode(v, &item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Map(map) => {
            let Value::Map(pairs) = value else {
                return Err(mismatch(path, format!("expected a map, got {}", kind(value))));
            };
            let (kt, vt) = (map.key(), map.value());
            Val::Map(
                pairs
                    .iter()
                    .map(|(k, v)| {
                        Ok((decode(k, &kt, path)?, decode(v, &vt, &format!("{path}.{k}"))?))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Tuple(tuple) => {
            let items = array(value, path)?;
            let types: Vec<Type> = tuple.types().collect();
            if items.len() != types.len() {
                return Err(mismatch(
                    path,
                    format!("expected a {}-tuple, got {} items", types.len(), items.len()),
                ));
            }
            Val::Tuple(
                items
                    .iter()
                    .zip(&types)
                    .enumerate()
                    .map(|(i, (v, t))| decode(v, t, &format!("{path}.{i}")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Record(record) => {
            let Value::Map(pairs) = value else {
                return Err(mismatch(
                    path,
                    format!("expected a record (map), got {}", kind(value)),
                ));
            };
            let mut fields = Vec::with_capacity(pairs.len());
            for field in record.fields() {
                let found = pairs.iter().find(|(k, _)| k.as_str() == Some(field.name));
                let sub = format!("{path}.{}", field.name);
                let v = match (found, &field.ty) {
                    (Some((_, v)), ty) => decode(v, ty, &sub)?,
                    // A missing optional field is `none`.
                    (None, Type::Option(_)) => Val::Option(None),
                    (None, _) => return Err(mismatch(&sub, "missing field")),
                };
                fields.push((field.name.to_owned(), v));
            }
            if let Some((k, _)) =
                pairs.iter().find(|(k, _)| !record.fields().any(|f| k.as_str() == Some(f.name)))
            {
                return Err(mismatch(path, format!("unknown field {k}")));
            }
            Val::Record(fields)
        }
        Type::Enum(e) => {
            let case = string(value, path)?;
            if !e.names().any(|n| n == case) {
                let names: Vec<&str> = e.names().collect();
                return Err(mismatch(path, format!("`{case}` is not one of {}", names.join(", "))));
            }
            Val::Enum(case.to_owned())
        }
        Type::Variant(variant) => {
            let (case, payload) = case_of(value, path)?;
            let Some(c) = variant.cases().find(|c| c.name == case) else {
                let names: Vec<&str> = variant.cases().map(|c| c.name).collect();
                return Err(mismatch(path, format!("`{case}` is not one of {}", names.join(", "))));
            };
            let payload = decode_payload(payload, c.ty.as_ref(), &format!("{path}.{case}"))?;
            Val::Variant(case.to_owned(), payload)
        }
        Type::Result(result) => {
            let (case, payload) = case_of(value, path)?;
            match case {
                "ok" => Val::Result(Ok(decode_payload(
                    payload,
                    result.ok().as_ref(),
                    &format!("{path}.ok"),
                )?)),
                "err" => Val::Result(Err(decode_payload(
                    payload,
                    result.err().as_ref(),
                    &format!("{path}.err"),
                )?)),
                other => {
                    return Err(mismatch(path, format!("expected `ok` or `err`, got `{other}`")));
                }
            }
        }
        Type::Option(option) => {
            let inner = option.ty();
            match (value, &inner) {
                (Value::Nil, _) => Val::Option(None),
                (Value::Array(items), Type::Option(_)) if items.len() == 1 => {
                    Val::Option(Some(Box::new(decode(&items[0], &inner, path)?)))
                }
                (_, Type::Option(_)) => {
                    return Err(mismatch(path, "expected nil or [value] for a nested option"));
                }
                _ => Val::Option(Some(Box::new(decode(value, &inner, path)?))),
            }
        }
        Type::Flags(flags) => {
            let mut set = Vec::new();
            for item in array(value, path)? {
                let name = string(item, path)?;
                if !flags.names().any(|n| n == name) {
                    return Err(mismatch(path, format!("`{name}` is not a flag of this type")));
                }
                set.push(name.to_owned());
            }
            Val::Flags(set)
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(mismatch(path, "resources, futures and streams cannot cross the lattice"));
        }
    })
}

fn decode_payload(
    payload: Option<&Value>,
    ty: Option<&Type>,
    path: &str,
) -> Result<Option<Box<Val>>, ValueError> {
    match (payload, ty) {
        (None | Some(Value::Nil), None) => Ok(None),
        (Some(v), Some(ty)) => Ok(Some(Box::new(decode(v, ty, path)?))),
        (None, Some(_)) => Err(mismatch(path, "this case carries a value")),
        (Some(_), None) => Err(mismatch(path, "this case carries no value")),
    }
}

/// `"case"` or `{"case": payload}`.
fn case_of<'v>(value: &'v Value, path: &str) -> Result<(&'v str, Option<&'v Value>), ValueError> {
    match value {
        Value::String(s) => {
            s.as_str().map(|s| (s, None)).ok_or_else(|| mismatch(path, "case name is not UTF-8"))
        }
        Value::Map(pairs) if pairs.len() == 1 => {
            let (k, v) = &pairs[0];
            let case = k.as_str().ok_or_else(|| mismatch(path, "case name must be a string"))?;
            Ok((case, Some(v)))
        }
        _ => Err(mismatch(
            path,
            format!("expected a case name or {{case: value}}, got {}", kind(value)),
        )),
    }
}

fn string<'v>(value: &'v Value, path: &str) -> Result<&'v str, ValueError> {
    match value {
        Value::String(s) => s.as_str().ok_or_else(|| mismatch(path, "string is not UTF-8")),
        _ => Err(mismatch(path, format!("expected a string, got {}", kind(value)))),
    }
}

fn array<'v>(value: &'v Value, path: &str) -> Result<&'v [Value], ValueError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(mismatch(path, format!("expected an array, got {}", kind(value)))),
    }
}

fn float(value: &Value, path: &str) -> Result<f64, ValueError> {
    match value {
        Value::F32(f) => Ok(f64::from(*f)),
        Value::F64(f) => Ok(*f),
        Value::Integer(i) => i.as_f64().ok_or_else(|| mismatch(path, "expected a number")),
        _ => Err(mismatch(path, format!("expected a number, got {}", kind(value)))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Boolean(_) => "a bool",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "binary",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension value",
    }
}

/// Encodes call arguments or results as one msgpack array.
pub fn encode_all(vals: &[Val]) -> Result<Vec<u8>, ValueError> {
    let array = Value::Array(vals.iter().map(encode).collect::<Result<_, _>>()?);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &array).map_err(|e| mismatch("", e.to_string()))?;
    Ok(out)
}

/// Decodes a msgpack array into values of `types` (arguments or results), checking each.
pub fn decode_all<'t>(
    bytes: &[u8],
    types: impl ExactSizeIterator<Item = (&'t str, Type)>,
) -> Result<Vec<Val>, ValueError> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH)
        .map_err(|e| mismatch("", format!("undecodable msgpack: {e}")))?;
    let Value::Array(items) = value else {
        return Err(mismatch("", "expected an array of values"));
    };
    if items.len() != types.len() {
        return Err(mismatch("", format!("expected {} values, got {}", types.len(), items.len())));
    }
    items.iter().zip(types).map(|(v, (name, ty))| decode(v, &ty, name)).collect()
}

/// Deepest nesting accepted from the network.
const MAX_DEPTH: usize = 128;

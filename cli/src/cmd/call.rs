//! `trellis call <component> <interface>.<function> --args '<json>'`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rmpv::Value;
use serde_json::Value as Json;
use trellis_lattice::signing::Signer;

use crate::args::{CallArgs, Global, Output};
use crate::output::print_json;

pub async fn run(g: &Global, args: CallArgs) -> anyhow::Result<ExitCode> {
    let Some((interface, function)) = args.function.rsplit_once('.') else {
        bail!("expected `namespace:package/interface.function`, got `{}`", args.function);
    };
    let json: Json = serde_json::from_str(&args.args).context("--args is not valid JSON")?;
    let Json::Array(_) = json else {
        bail!("--args must be a JSON array of the function's arguments, for example '[\"bob\"]'");
    };
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &to_msgpack(&json))?;
    let mut lattice = super::connect(g).await?;
    if let Some(seed) = &args.seed {
        let seed = std::fs::read_to_string(seed)
            .with_context(|| format!("cannot read {}", seed.display()))?;
        let key = nkeys::KeyPair::from_seed(seed.trim())
            .ok()
            .filter(|k| matches!(k.key_pair_type(), nkeys::KeyPairType::Server))
            .context("--seed does not hold a host seed (`trellis keys gen host`)")?;
        lattice = lattice.with_signer(Signer::new(key, None));
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let reply = lattice
        .invoke(&args.component, interface, function, payload.into(), timeout)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut reader = reply.as_ref();
    let value = rmpv::decode::read_value(&mut reader).context("undecodable reply")?;
    let results = match to_json(&value) {
        Json::Array(mut results) if results.len() == 1 => results.remove(0),
        other => other,
    };
    match g.output {
        Output::Json => print_json(&results),
        Output::Text => println!("{results}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn to_msgpack(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s.as_str().into()),
        Json::Array(items) => Value::Array(items.iter().map(to_msgpack).collect()),
        Json::Object(fields) => Value::Map(
            fields.iter().map(|(k, v)| (Value::String(k.as_str().into()), to_msgpack(v))).collect(),
        ),
    }
}

fn to_json(value: &Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Json::from(u),
            (None, Some(i)) => Json::from(i),
            _ => Json::Null,
        },
        Value::F32(f) => Json::from(f64::from(*f)),
        Value::F64(f) => Json::from(*f),
        Value::String(s) => Json::String(s.as_str().unwrap_or_default().to_owned()),
        Value::Binary(b) => Json::Array(b.iter().map(|b| Json::from(*b)).collect()),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(pairs) => Json::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = k.as_str().map_or_else(|| k.to_string(), str::to_owned);
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(..) => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_msgpack_round_trip() {
        let json: Json = serde_json::from_str(
            r#"[1, -2, 2.5, "s", null, true, [1, 2], {"x": 1, "label": null}, {"circle": 1.5}]"#,
        )
        .unwrap();
        assert_eq!(to_json(&to_msgpack(&json)), json);
    }
}

//! `broker-message` and the function arguments and results of the contract, in the lattice's
//! component value encoding (msgpack: records as maps, `list<u8>` as binary, `option` as nil or
//! the value, `result` as `"ok"` or `{"ok"|"err": value}`).

use rmpv::Value;

/// `wasmcloud:messaging/types.broker-message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMessage {
    pub subject: String,
    pub body: Vec<u8>,
    pub reply_to: Option<String>,
}

impl BrokerMessage {
    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            (Value::from("subject"), Value::from(self.subject.as_str())),
            (Value::from("body"), Value::Binary(self.body.clone())),
            (Value::from("reply-to"), self.reply_to.as_deref().map_or(Value::Nil, Value::from)),
        ])
    }

    pub fn from_value(value: &Value) -> Result<Self, String> {
        let Value::Map(fields) = value else { return Err("broker-message is not a record".into()) };
        let field =
            |name: &str| fields.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v);
        let subject =
            field("subject").and_then(Value::as_str).ok_or("broker-message lacks a subject")?;
        let body = match field("body") {
            Some(v) => bytes(v)?,
            None => Vec::new(),
        };
        let reply_to = match field("reply-to") {
            None | Some(Value::Nil) => None,
            Some(v) => Some(v.as_str().ok_or("reply-to is not a string")?.to_owned()),
        };
        Ok(Self { subject: subject.to_owned(), body, reply_to })
    }
}

/// `list<u8>`: binary, or an array of small integers.
pub fn bytes(value: &Value) -> Result<Vec<u8>, String> {
    match value {
        Value::Binary(b) => Ok(b.clone()),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| "body is not bytes".to_owned())
            })
            .collect(),
        _ => Err("body is not bytes".into()),
    }
}

/// Decodes a call's argument array.
pub fn args(payload: &[u8]) -> Result<Vec<Value>, String> {
    let mut reader = payload;
    match rmpv::decode::read_value_with_max_depth(&mut reader, 32) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(_) => Err("arguments are not an array".into()),
        Err(e) => Err(format!("undecodable arguments: {e}")),
    }
}

/// Encodes values as a call's argument or result array.
pub fn encode(values: Vec<Value>) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &Value::Array(values));
    out
}

/// `result<_, string>` or `result<T, string>`.
pub fn result(outcome: Result<Option<Value>, String>) -> Value {
    match outcome {
        Ok(None) => Value::from("ok"),
        Ok(Some(v)) => Value::Map(vec![(Value::from("ok"), v)]),
        Err(e) => Value::Map(vec![(Value::from("err"), Value::from(e.as_str()))]),
    }
}

/// Reads a `result<_, string>` reply: `Err` with the component's message.
pub fn read_result(reply: &[u8]) -> Result<(), String> {
    let values = args(reply)?;
    match values.first() {
        Some(Value::String(s)) if s.as_str() == Some("ok") => Ok(()),
        Some(Value::Map(pairs)) if pairs.len() == 1 => match (&pairs[0].0, &pairs[0].1) {
            (k, _) if k.as_str() == Some("ok") => Ok(()),
            (k, v) if k.as_str() == Some("err") => {
                Err(v.as_str().unwrap_or("(no message)").to_owned())
            }
            _ => Err("unexpected reply".into()),
        },
        _ => Err("unexpected reply".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_results_round_trip() {
        let msg = BrokerMessage {
            subject: "a.b".into(),
            body: b"hi".to_vec(),
            reply_to: Some("r".into()),
        };
        assert_eq!(BrokerMessage::from_value(&msg.to_value()).unwrap(), msg);
        assert!(read_result(&encode(vec![result(Ok(None))])).is_ok());
        assert_eq!(read_result(&encode(vec![result(Err("no".into()))])).unwrap_err(), "no");
        assert!(args(&[0xc1]).is_err());
        assert!(BrokerMessage::from_value(&Value::from(1)).is_err());
    }
}

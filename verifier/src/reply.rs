//! Reading the parts of replies the verifier needs, whatever RESP version shaped them.

use redis::Value;

/// A bulk or simple string (or an integer, as text).
pub(crate) fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.clone().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        Value::Double(d) => Some(d.to_string().into_bytes()),
        _ => None,
    }
}

/// A bulk or simple string (or an integer, as text), taken out of the reply.
pub(crate) fn into_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        other => bytes(&other),
    }
}

/// A simple or bulk string reply as text, without copying it.
pub(crate) fn str(value: &Value) -> Option<&str> {
    match value {
        Value::SimpleString(s) => Some(s),
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::VerbatimString { text, .. } => Some(text),
        Value::Okay => Some("OK"),
        _ => None,
    }
}

/// A string reply as text.
pub(crate) fn text(value: &Value) -> Option<String> {
    bytes(value).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// An integer reply (or a string holding one).
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(_) | Value::SimpleString(_) => text(value)?.parse().ok(),
        _ => None,
    }
}

/// The items of an array, set or flattened map reply; `Nil` is empty.
pub(crate) fn items(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Map(pairs) => Some(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// `[k1, v1, k2, v2, ...]` (or a map) as pairs.
pub(crate) fn pairs(value: Value) -> Option<Vec<(Value, Value)>> {
    if let Value::Map(pairs) = value {
        return Some(pairs);
    }
    let items = items(value)?;
    if items.len() % 2 != 0 {
        return None;
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Some(out)
}

/// The items of an array reply as strings, each taken out of the reply.
pub(crate) fn into_byte_items(value: Value) -> Option<Vec<Vec<u8>>> {
    items(value)?.into_iter().map(into_bytes).collect()
}

/// `[k1, v1, k2, v2, ...]` (or a map) as pairs of strings, taken out of the reply.
pub(crate) fn into_byte_pairs(value: Value) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    pairs(value)?
        .into_iter()
        .map(|(k, v)| Some((into_bytes(k)?, into_bytes(v)?)))
        .collect()
}

/// The error text of an error reply.
pub(crate) fn error(value: &Value) -> Option<String> {
    match value {
        Value::ServerError(e) => Some(e.to_string()),
        _ => None,
    }
}

/// A `SCAN`-family reply: the next cursor and the items.
pub(crate) fn scan(value: Value) -> Option<(u64, Vec<Value>)> {
    let mut parts = items(value)?.into_iter();
    let cursor = text(&parts.next()?)?.parse().ok()?;
    let found = items(parts.next()?)?;
    Some((cursor, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_arrays_become_pairs() {
        let flat = Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::Int(1),
            Value::BulkString(b"b".to_vec()),
            Value::Int(2),
        ]);
        let pairs = pairs(flat).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(int(&pairs[1].1), Some(2));
        assert!(super::pairs(Value::Array(vec![Value::Nil])).is_none());
    }
}

//! JSON ⇄ CBOR conversions for tools and tests that write CBOR payloads as JSON (the `eval`
//! NDJSON format does). Not on the evaluation path.

use cbor4ii::core::Value as Cbor;
use serde_json::Value as Json;

use crate::payload::{Document, Format};

/// Encodes a JSON value as CBOR: null as CBOR null, integers as CBOR integers, other numbers
/// as floats, objects as maps with text keys.
///
/// ```
/// let cbor = twinguard_core::convert::json_to_cbor(&serde_json::json!({"a": null}));
/// assert_eq!(cbor, [0xa1, 0x61, b'a', 0xf6]);
/// ```
pub fn json_to_cbor(value: &Json) -> Vec<u8> {
    let mut writer = cbor4ii::core::utils::BufWriter::new(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = cbor4ii::core::enc::Encode::encode(&to_cbor(value), &mut writer);
    writer.into_inner()
}

pub(crate) fn to_cbor(value: &Json) -> Cbor {
    match value {
        Json::Null => Cbor::Null,
        Json::Bool(b) => Cbor::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cbor::Integer(i.into()),
            (None, Some(u)) => Cbor::Integer(u.into()),
            _ => Cbor::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Cbor::Text(s.clone()),
        Json::Array(a) => Cbor::Array(a.iter().map(to_cbor).collect()),
        Json::Object(o) => Cbor::Map(
            o.iter()
                .map(|(k, v)| (Cbor::Text(k.clone()), to_cbor(v)))
                .collect(),
        ),
    }
}

/// Decodes CBOR into a JSON value for display. Byte strings become arrays of numbers, tags
/// are dropped. Fails, naming the cause, on malformed or too deeply nested input.
pub fn cbor_to_json(bytes: &[u8]) -> Result<Json, crate::Invalid> {
    // The host's own parser checks well-formedness and nesting depth first, so the recursive
    // serde decoder below cannot be driven into a stack overflow.
    Document::new(Some(Format::Cbor), bytes.to_vec())
        .field("")
        .map_err(|e| crate::Invalid::new(e.to_string()))?;
    cbor4ii::serde::from_slice(bytes).map_err(|e| crate::Invalid::new(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_null_and_numbers() {
        let v = serde_json::json!({"n": null, "i": -3, "u": u64::MAX, "f": 2.5, "a": [true, "x"]});
        assert_eq!(cbor_to_json(&json_to_cbor(&v)).unwrap(), v);
    }

    #[test]
    fn deep_or_malformed_cbor_is_an_error_not_a_crash() {
        assert!(cbor_to_json(&vec![0x81; 100_000]).is_err());
        assert!(cbor_to_json(&[0xa1, 0x61]).is_err());
    }
}

//! Canonical JSON text: object keys sorted, no whitespace, the escaping serde_json uses.
//!
//! Two values that are equal as JSON (`{"a":1,"b":2}` and `{"b":2,"a":1}`) have the same canonical
//! text, whatever map type serde_json was built with (its `preserve_order` feature keeps insertion
//! order, and any crate in a dependency graph can switch it on), so it is a sound dedup key and a
//! stable size measure.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Appends the canonical JSON text of `value` to `out`.
pub fn write_canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // `Number`'s Display is its JSON form; writing to a String cannot fail.
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

/// How error messages name the kind of a JSON value: "null", "a boolean", "a number",
/// "a string", "an array", "an object".
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The canonical JSON text of `value` as a new string.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical_json(value, &mut out);
    out
}

fn write_object(map: &Map<String, Value>, out: &mut String) {
    out.push('{');
    let sorted = map.keys().zip(map.keys().skip(1)).all(|(a, b)| a <= b);
    if sorted {
        // The default serde_json map is a BTreeMap: already in order, no allocation.
        for (i, (key, value)) in map.iter().enumerate() {
            write_member(i, key, value, out);
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (i, (key, value)) in entries.into_iter().enumerate() {
            write_member(i, key, value, out);
        }
    }
    out.push('}');
}

fn write_member(index: usize, key: &str, value: &Value, out: &mut String) {
    if index > 0 {
        out.push(',');
    }
    write_json_string(key, out);
    out.push(':');
    write_canonical_json(value, out);
}

/// Writes `s` as a JSON string literal, escaping exactly what serde_json escapes. Every byte
/// that needs escaping is ASCII, and no byte of a multi-byte UTF-8 sequence is, so the scan runs
/// over bytes and copies the runs between escapes whole.
fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    let mut run_start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is an ASCII byte's index, so both slices end on character boundaries.
        out.push_str(&s[run_start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escaped);
        }
        run_start = i + 1;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_at_every_depth() {
        let a = json!({"b": [1, {"y": 2, "x": 1}], "a": null});
        assert_eq!(canonical_json(&a), r#"{"a":null,"b":[1,{"x":1,"y":2}]}"#);
    }

    #[test]
    fn escapes_like_serde_json() {
        let s = "quote\" back\\ nl\n tab\t nul\u{0} bell\u{7} del\u{7f} é😀";
        assert_eq!(canonical_json(&json!(s)), serde_json::to_string(s).unwrap());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn matches_serde_json_on_sorted_maps_and_parses_back(value in arb_json()) {
            let text = canonical_json(&value);
            // serde_json's default map is sorted, so its compact output is canonical too.
            prop_assert_eq!(&text, &serde_json::to_string(&value).unwrap());
            // The workspace enables serde_json's `float_roundtrip`, so even floats come back exactly.
            let back: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, value);
        }
    }
}

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

/// The bytes that must be escaped inside a JSON string (control characters, `"` and `\\`), as
/// a table: one load per byte in the scan.
const ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// The index of the first byte of `bytes` that needs escaping. Eight bytes at a time: a word
/// with no control character, `"` or `\\` is skipped with a few arithmetic operations (the
/// classic "has a byte less than n / equal to c" tests, exact as to whether one exists), and
/// only a word that has one is scanned byte by byte.
fn first_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    let mut base = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
        let quote = has_zero(word ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash != 0 {
            return chunk
                .iter()
                .position(|&b| ESCAPE[usize::from(b)])
                .map(|i| base + i);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| ESCAPE[usize::from(b)])
        .map(|i| base + i)
}

/// Writes `s` as a JSON string literal, escaping exactly what serde_json escapes. Every byte
/// that needs escaping is ASCII, and no byte of a multi-byte UTF-8 sequence is, so the scan runs
/// over bytes and copies the runs between escapes whole (in the common case, the whole string
/// in one copy).
fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(offset) = first_escape(&bytes[start..]) {
        let i = start + offset;
        // `i` is an ASCII byte's index, so both slices end on character boundaries.
        out.push_str(&s[start..i]);
        let b = bytes[i];
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
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

    #[test]
    fn escapes_at_every_position_of_long_strings_like_serde_json() {
        // The scan skips eight bytes at a time: put each escapable byte at each offset of
        // strings long enough to span several words, next to multi-byte characters.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', '😀'] {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 31] {
                for at in 0..=len {
                    let mut s: String = "abcdefgh".repeat(4).chars().take(len).collect();
                    s.insert(at, special);
                    assert_eq!(
                        canonical_json(&json!(s)),
                        serde_json::to_string(&s).unwrap(),
                        "{s:?}"
                    );
                }
            }
        }
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

//! Turning JSON outputs into text: ROMA's extraction rules (reference §14.5), plan listings and
//! the compressed-output guard (reference B19). Pure functions.

use std::fmt::Write as _;

use taskctx_domain::{Map, Value, canonical_json};

/// What an absent output renders as (reference §14.5 rule 1).
pub(crate) const NO_OUTPUT: &str = "[No output]";

/// Renders an output the way ROMA's formatter extracts it (reference §14.5), never truncating:
///
/// 1. `null` → `[No output]`; 2. a string → itself;
/// 3. an object with `output_text_with_citations` or `output_text` (a string) → that text;
///    with `query_used` and `results` → `Query: …` and the numbered titles and snippets;
///    with `result` → that value rendered; with `sub_tasks` (an array) → `[Plan with N sub-tasks]`;
/// 4. anything else → compact canonical JSON (keys sorted, so the text is stable).
///
/// Long gzip+base64 strings (ROMA's compressed results) anywhere inside are replaced by a short
/// note rather than copied into a prompt.
pub fn extract_output(value: &Value) -> String {
    match value {
        Value::Null => NO_OUTPUT.to_string(),
        Value::String(s) => compressed_note(s).unwrap_or_else(|| s.clone()),
        Value::Object(map) => extract_object(map).unwrap_or_else(|| compact_json(value)),
        _ => compact_json(value),
    }
}

fn extract_object(map: &Map<String, Value>) -> Option<String> {
    for key in ["output_text_with_citations", "output_text"] {
        if let Some(Value::String(text)) = map.get(key) {
            return Some(compressed_note(text).unwrap_or_else(|| text.clone()));
        }
    }
    if let (Some(query), Some(results)) = (map.get("query_used"), map.get("results")) {
        let mut out = String::from("Query: ");
        match query {
            Value::String(q) => out.push_str(q),
            other => out.push_str(&compact_json(other)),
        }
        if let Value::Array(results) = results
            && !results.is_empty()
        {
            out.push_str("\nResults:");
            let mut n = 0;
            for result in results {
                let Value::Object(result) = result else {
                    continue;
                };
                n += 1;
                let title = text_field(result, &["title"]).unwrap_or("No title");
                let body = text_field(result, &["snippet", "body"]).unwrap_or("No content");
                let _ = write!(out, "\n{n}. {title}\n   {body}");
            }
        }
        return Some(out);
    }
    if let Some(result) = map.get("result") {
        return Some(extract_output(result));
    }
    if let Some(Value::Array(sub_tasks)) = map.get("sub_tasks") {
        return Some(format!("[Plan with {} sub-tasks]", sub_tasks.len()));
    }
    None
}

fn text_field<'a>(map: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| match map.get(*k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    })
}

/// Compact canonical JSON with compressed blobs replaced.
fn compact_json(value: &Value) -> String {
    match strip_compressed(value) {
        Some(stripped) => canonical_json(&stripped),
        None => canonical_json(value),
    }
}

/// `value` with every compressed string replaced by its note; `None` when there is none.
fn strip_compressed(value: &Value) -> Option<Value> {
    match value {
        Value::String(s) => compressed_note(s).map(Value::String),
        Value::Array(items) => {
            let changed: Vec<Option<Value>> = items.iter().map(strip_compressed).collect();
            if changed.iter().all(Option::is_none) {
                return None;
            }
            Some(Value::Array(
                changed
                    .into_iter()
                    .zip(items)
                    .map(|(c, o)| c.unwrap_or_else(|| o.clone()))
                    .collect(),
            ))
        }
        Value::Object(map) => {
            let changed: Vec<Option<Value>> = map.values().map(strip_compressed).collect();
            if changed.iter().all(Option::is_none) {
                return None;
            }
            Some(Value::Object(
                map.iter()
                    .zip(changed)
                    .map(|((k, o), c)| (k.clone(), c.unwrap_or_else(|| o.clone())))
                    .collect(),
            ))
        }
        _ => None,
    }
}

/// The shortest string taken for a compressed blob: shorter base64 is left alone.
const MIN_COMPRESSED_CHARS: usize = 64;

/// A note for a gzip+base64 blob (`H4sI…`, the base64 of gzip's magic bytes), or `None`.
pub(crate) fn compressed_note(s: &str) -> Option<String> {
    let trimmed = s.trim();
    if trimmed.len() >= MIN_COMPRESSED_CHARS
        && trimmed.starts_with("H4sI")
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r'))
    {
        Some(format!(
            "[compressed output not shown: {} characters of gzip+base64]",
            trimmed.len()
        ))
    } else {
        None
    }
}

/// Whether a record's `aux_data` marks its output as compressed (ROMA's batched state manager
/// sets `compressed: true`).
pub(crate) fn marked_compressed(aux_data: &Map<String, Value>) -> bool {
    matches!(aux_data.get("compressed"), Some(Value::Bool(true)))
}

/// Renders a plan for a plan modifier: a ROMA `PlanOutput` (`{"sub_tasks": [{goal, task_type,
/// node_type, depends_on_indices}, …]}`) or a bare array of sub-tasks becomes one line per
/// sub-task, numbered from 0 like `depends_on_indices`:
///
/// ```text
/// [0] SEARCH/EXECUTE: Find vendor data
/// [1] WRITE/EXECUTE: Write the comparison (depends on 0)
/// ```
///
/// Anything else is compact canonical JSON.
pub fn render_plan(plan: &Value) -> String {
    let sub_tasks = match plan {
        Value::Object(map) => match map.get("sub_tasks") {
            Some(Value::Array(items)) => items,
            _ => return extract_output(plan),
        },
        Value::Array(items) => items,
        Value::String(s) => return s.clone(),
        _ => return compact_json(plan),
    };
    if sub_tasks.is_empty() {
        return "[Plan with 0 sub-tasks]".to_string();
    }
    let mut out = String::new();
    for (i, task) in sub_tasks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let Value::Object(task) = task else {
            let _ = write!(out, "[{i}] {}", compact_json(task));
            continue;
        };
        let goal = text_field(task, &["goal"]).unwrap_or("(no goal)");
        let task_type = text_field(task, &["task_type"]).unwrap_or("?");
        let _ = write!(out, "[{i}] {task_type}");
        if let Some(node_type) = text_field(task, &["node_type"]) {
            let _ = write!(out, "/{node_type}");
        }
        let _ = write!(out, ": {goal}");
        if let Some(Value::Array(deps)) = task.get("depends_on_indices")
            && !deps.is_empty()
        {
            let deps: Vec<String> = deps.iter().map(compact_json).collect();
            let _ = write!(out, " (depends on {})", deps.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extraction_follows_roma_rules() {
        assert_eq!(extract_output(&Value::Null), "[No output]");
        assert_eq!(extract_output(&json!("text")), "text");
        assert_eq!(
            extract_output(&json!({"output_text": "plain", "other": 1})),
            "plain"
        );
        assert_eq!(
            extract_output(&json!({"output_text_with_citations": "cited [1]", "output_text": "x"})),
            "cited [1]"
        );
        assert_eq!(
            extract_output(&json!({"query_used": "batteries", "results": [
                {"title": "A", "snippet": "first"}, "skipped", {"body": "second"}
            ]})),
            "Query: batteries\nResults:\n1. A\n   first\n2. No title\n   second"
        );
        assert_eq!(
            extract_output(&json!({"result": {"b": 1, "a": 2}})),
            r#"{"a":2,"b":1}"#
        );
        assert_eq!(
            extract_output(&json!({"sub_tasks": [{}, {}]})),
            "[Plan with 2 sub-tasks]"
        );
        assert_eq!(extract_output(&json!([1, "two"])), r#"[1,"two"]"#);
        assert_eq!(extract_output(&json!(42)), "42");
    }

    #[test]
    fn compressed_blobs_are_not_copied() {
        let blob = format!("H4sIAAAAAAAA{}", "A".repeat(200));
        assert!(extract_output(&json!(blob)).starts_with("[compressed output not shown"));
        let nested = extract_output(&json!({"data": blob, "compressed": true}));
        assert!(!nested.contains("H4sI"), "{nested}");
        assert_eq!(extract_output(&json!("H4sI short")), "H4sI short");
    }

    #[test]
    fn plans_are_listed_with_their_dependencies() {
        let plan = json!({"sub_tasks": [
            {"goal": "Find data", "task_type": "SEARCH", "node_type": "EXECUTE", "depends_on_indices": []},
            {"goal": "Write it", "task_type": "WRITE", "depends_on_indices": [0]},
        ]});
        assert_eq!(
            render_plan(&plan),
            "[0] SEARCH/EXECUTE: Find data\n[1] WRITE: Write it (depends on 0)"
        );
        assert_eq!(render_plan(&json!({"x": 1})), r#"{"x":1}"#);
    }
}

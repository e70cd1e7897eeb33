//! Fixtures shared by the checks and by adapter-specific tests: updates, records, hostile ids.

use serde_json::json;
use taskctx_domain::{
    ChatId, ContextUpdate, MAX_ID_BYTES, Map, TaskId, TaskRecord, TaskStatus, TaskType, Timestamp,
    UpdateType, Value,
};

/// A message update numbered `n`, stamped at `1_700_000_000 + n` seconds (distinct, increasing).
pub fn update(n: u64) -> ContextUpdate {
    let mut metadata = Map::new();
    metadata.insert("n".into(), json!(n));
    ContextUpdate {
        timestamp: Timestamp::from_secs(1_700_000_000.0 + n as f64 + 0.125).unwrap_or_default(),
        update_type: UpdateType::MESSAGE,
        data: json!({"text": format!("update {n}"), "n": n}),
        metadata,
    }
}

/// Updates numbered `range`.
pub fn updates(range: std::ops::Range<u64>) -> Vec<ContextUpdate> {
    range.map(update).collect()
}

/// Updates whose payloads exercise the JSON encoder: unicode, escapes, nesting, floats, null,
/// an unknown update type, a one-megabyte string.
pub fn awkward_updates() -> Vec<ContextUpdate> {
    let kind = |k: &str| UpdateType::new(k).unwrap_or(UpdateType::MESSAGE);
    let at = |s: f64| Timestamp::from_secs(s).unwrap_or_default();
    vec![
        ContextUpdate::new(
            kind("message"),
            json!("héllo 😀 \"quoted\" \\ back\nnew\u{0}nul"),
        )
        .at(at(1.5)),
        ContextUpdate::new(
            kind("custom kind/with slash"),
            json!({"z": [1, 2.5, -3e-7, null], "a": {"b": {"c": true}}}),
        )
        .at(at(1_700_000_000.123_456_7)),
        ContextUpdate::new(kind("error"), Value::Null).at(at(0.0)),
        ContextUpdate::new(kind("model_usage"), json!(u64::MAX)).at(at(-5.25)),
        ContextUpdate::new(kind("message"), json!("x".repeat(1 << 20))).at(at(2.0)),
        {
            let mut metadata = Map::new();
            metadata.insert("nested".into(), json!({"k": ["v", {"w": 1}]}));
            metadata.insert("ünï".into(), json!("cödé"));
            ContextUpdate::new(kind("file_operation"), json!({"path": "../../etc/passwd"}))
                .at(at(3.0))
                .with_metadata(metadata)
        },
    ]
}

/// Valid ids that break naive file-name or key schemes: traversal, absolute paths, separators,
/// case twins, look-alikes, the longest id, emoji. Every pair is distinct.
pub fn hostile_id_strings() -> Vec<String> {
    vec![
        "a".into(),
        "A".into(),
        "a/b".into(),
        "a_b".into(),
        "a%2Fb".into(),
        "a\\b".into(),
        "..".into(),
        ".".into(),
        "../../x".into(),
        "/abs/path".into(),
        "C:\\windows".into(),
        "with space ".into(),
        "é".into(),
        "e\u{301}".into(),
        "😀 emoji".into(),
        "ａ".into(),
        "CON".into(),
        "x".repeat(MAX_ID_BYTES),
        "é".repeat(MAX_ID_BYTES / 2),
        ".hidden".into(),
        "trailing.".into(),
        "~tilde".into(),
    ]
}

/// [`hostile_id_strings`] as chat ids.
pub fn hostile_chat_ids() -> Vec<ChatId> {
    hostile_id_strings()
        .into_iter()
        .filter_map(|s| ChatId::new(s).ok())
        .collect()
}

/// [`hostile_id_strings`] as task ids.
pub fn hostile_task_ids() -> Vec<TaskId> {
    hostile_id_strings()
        .into_iter()
        .filter_map(|s| TaskId::new(s).ok())
        .collect()
}

/// A chat id from a literal the fixture knows is valid.
pub fn chat(id: &str) -> ChatId {
    ChatId::new(id).unwrap_or_else(|e| panic!("fixture chat id {id:?}: {e}"))
}

/// A task id from a literal the fixture knows is valid.
pub fn task(id: &str) -> TaskId {
    TaskId::new(id).unwrap_or_else(|e| panic!("fixture task id {id:?}: {e}"))
}

/// A DONE record `id` under `parent` (if any), with a short output.
pub fn record(id: &str, parent: Option<&str>) -> TaskRecord {
    let mut record = TaskRecord::new(task(id), format!("goal of {id}"), TaskType::Think);
    record.parent_task_id = parent.map(task);
    record.status = TaskStatus::Done;
    record.output_content = Some(json!(format!("output of {id}")));
    record.created_at = Timestamp::from_secs(1_700_000_000.0).unwrap_or_default();
    record.updated_at = record.created_at;
    record
}

/// [`record`] with a plan listing `children` in order.
pub fn parent_record(id: &str, parent: Option<&str>, children: &[&str]) -> TaskRecord {
    let mut record = record(id, parent);
    record.child_task_ids = children.iter().map(|c| task(c)).collect();
    record
}

/// A record with every optional field set, to check that adapters store all of it.
pub fn full_record(id: &str) -> TaskRecord {
    let mut record = parent_record(id, Some("root"), &["c.1", "c.2"]);
    record.node_type = Some(taskctx_domain::NodeType::Plan);
    record
        .input_params
        .insert("q".into(), json!({"deep": [1, "two"]}));
    record.output_content = Some(json!({"output_text": "ünïcode 😀", "n": 1.25}));
    record.output_type_description = Some("text_output".into());
    record.output_summary = Some("A summary long enough to count as specific".into());
    record.completed_at = Timestamp::from_secs(1_700_000_100.5);
    record.layer = Some(2);
    record.error_message = Some("none really".into());
    record.sub_graph_id = Some(format!("subgraph_{id}"));
    record.overall_objective = Some("the objective".into());
    record
        .aux_data
        .insert("depends_on_indices".into(), json!([0, 1]));
    record
}

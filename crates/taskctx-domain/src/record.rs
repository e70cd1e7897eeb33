//! `TaskRecord` and its enums: one task of a hierarchical plan (SPEC R1.3, ROMA §2.2).
//!
//! Serialisation uses taskctx's field names. Deserialisation also accepts ROMA's
//! (`child_task_ids_generated`, `planned_sub_task_ids`, `result`, `input_params_dict`,
//! `timestamp_created`, …) so ROMA task dumps import directly; where a dump carries both a name and
//! its alias (ROMA writes `output_content` *and* `result`), the taskctx name wins. Enum values
//! parse case-insensitively; unknown values are typed errors that name the field and the value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::id::TaskId;
use crate::time::Timestamp;

/// A value that is not one of an enum's variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of {expected}")]
pub struct UnknownVariant {
    /// Which enum ("task type", "task status", …).
    pub kind: &'static str,
    /// The rejected value (at most 64 characters of it).
    pub value: String,
    /// The accepted values, comma-separated.
    pub expected: &'static str,
}

macro_rules! string_enum {
    (
        $(#[$doc:meta])* $name:ident, $kind:literal, $expected:literal {
            $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical upper-case spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let trimmed = s.trim();
                // ROMA sometimes writes the Python repr (`TaskStatus.DONE`); keep the last part.
                let bare = trimmed.rsplit('.').next().unwrap_or(trimmed);
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(bare))
                    .ok_or_else(|| UnknownVariant {
                        kind: $kind,
                        value: s.chars().take(64).collect(),
                        expected: $expected,
                    })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum!(
    /// What a task does (ROMA `TaskType`).
    TaskType, "task type", "WRITE, THINK, SEARCH, AGGREGATE, CODE_INTERPRET, IMAGE_GENERATION" {
        /// Produce text.
        Write => "WRITE",
        /// Reason or analyse.
        Think => "THINK",
        /// Look something up.
        Search => "SEARCH",
        /// Combine the results of sub-tasks.
        Aggregate => "AGGREGATE",
        /// Run code.
        CodeInterpret => "CODE_INTERPRET",
        /// Make an image.
        ImageGeneration => "IMAGE_GENERATION",
    }
);

string_enum!(
    /// Whether a task is decomposed or executed (ROMA `NodeType`).
    NodeType, "node type", "PLAN, EXECUTE" {
        /// Decomposed into sub-tasks.
        Plan => "PLAN",
        /// Atomic work.
        Execute => "EXECUTE",
    }
);

string_enum!(
    /// Where a task is in its life cycle (ROMA `TaskStatus`).
    TaskStatus, "task status",
    "PENDING, READY, RUNNING, PLAN_DONE, AGGREGATING, DONE, FAILED, NEEDS_REPLAN, CANCELLED" {
        /// Created, waiting for its dependencies.
        Pending => "PENDING",
        /// Ready to run.
        Ready => "READY",
        /// Running.
        Running => "RUNNING",
        /// Planned; its sub-tasks are running.
        PlanDone => "PLAN_DONE",
        /// Its sub-tasks' results are being combined.
        Aggregating => "AGGREGATING",
        /// Finished successfully.
        Done => "DONE",
        /// Finished with an error.
        Failed => "FAILED",
        /// Its plan must be made again.
        NeedsReplan => "NEEDS_REPLAN",
        /// Abandoned.
        Cancelled => "CANCELLED",
    }
);

impl TaskStatus {
    /// DONE, FAILED and CANCELLED: the task will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// The `aux_data` key listing 0-based positions of dependencies in the parent's plan.
pub const DEPENDS_ON_INDICES: &str = "depends_on_indices";
/// The `aux_data` key listing dependency task ids directly.
pub const DEPENDENCY_IDS: &str = "dependency_ids";

/// One task of a hierarchical plan.
///
/// `revision` is maintained by record stores: whatever a caller sets is replaced on `put`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawTaskRecord")]
pub struct TaskRecord {
    /// Primary key (ROMA: `root`, `root.1`, `root.1.2`, …).
    pub task_id: TaskId,
    /// What the task is meant to achieve.
    pub goal: String,
    /// What kind of work it is.
    pub task_type: TaskType,
    /// Plan or execute, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_type: Option<NodeType>,
    /// Parameters the task was run with (ROMA `input_params_dict`).
    pub input_params: Map<String, Value>,
    /// The task's result (ROMA `output_content` / `result`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_content: Option<Value>,
    /// A label for the kind of output (`search_results`, `text_output`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_type_description: Option<String>,
    /// A short summary of the output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_summary: Option<String>,
    /// Life-cycle state.
    pub status: TaskStatus,
    /// When the task was created.
    pub created_at: Timestamp,
    /// When the record last changed.
    pub updated_at: Timestamp,
    /// When the task reached a final state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// The task this one was planned by; `None` for a root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<TaskId>,
    /// Sub-tasks in plan order (ROMA `child_task_ids_generated` / `planned_sub_task_ids`).
    pub child_task_ids: Vec<TaskId>,
    /// Depth in the plan: root 0, child = parent + 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<u32>,
    /// Why the task failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The sub-graph holding this task's plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_graph_id: Option<String>,
    /// The goal of the whole project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overall_objective: Option<String>,
    /// Extra data; `depends_on_indices` and `dependency_ids` are interpreted.
    pub aux_data: Map<String, Value>,
    /// Store-maintained revision: 0 before the first `put`, then 1, 2, ….
    pub revision: u64,
}

impl TaskRecord {
    /// A PENDING record created now, with everything else empty.
    pub fn new(task_id: TaskId, goal: impl Into<String>, task_type: TaskType) -> Self {
        let now = Timestamp::now();
        Self {
            task_id,
            goal: goal.into(),
            task_type,
            node_type: None,
            input_params: Map::new(),
            output_content: None,
            output_type_description: None,
            output_summary: None,
            status: TaskStatus::Pending,
            created_at: now,
            updated_at: now,
            completed_at: None,
            parent_task_id: None,
            child_task_ids: Vec::new(),
            layer: None,
            error_message: None,
            sub_graph_id: None,
            overall_objective: None,
            aux_data: Map::new(),
            revision: 0,
        }
    }

    /// Whether the task has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_task_id.is_none()
    }

    /// The position of `child` in this record's plan, if it is listed.
    pub fn plan_position(&self, child: &TaskId) -> Option<usize> {
        self.child_task_ids.iter().position(|id| id == child)
    }
}

/// The wire form accepted on input: every taskctx name and every ROMA alias, all optional, so that
/// a dump carrying both a name and its alias does not fail as a duplicate field.
#[derive(Deserialize)]
struct RawTaskRecord {
    task_id: TaskId,
    goal: Option<String>,
    task_type: TaskType,
    node_type: Option<NodeType>,
    input_params: Option<Map<String, Value>>,
    input_params_dict: Option<Map<String, Value>>,
    // `null` must read back as `Some(Null)`, not `None`, or a record would change across a round
    // trip; absence is `None`.
    #[serde(default, deserialize_with = "present")]
    output_content: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    output_type_description: Option<String>,
    output_summary: Option<String>,
    status: TaskStatus,
    created_at: Option<Timestamp>,
    timestamp_created: Option<Timestamp>,
    updated_at: Option<Timestamp>,
    timestamp_updated: Option<Timestamp>,
    completed_at: Option<Timestamp>,
    timestamp_completed: Option<Timestamp>,
    parent_task_id: Option<TaskId>,
    parent_node_id: Option<TaskId>,
    child_task_ids: Option<Vec<TaskId>>,
    child_task_ids_generated: Option<Vec<TaskId>>,
    planned_sub_task_ids: Option<Vec<TaskId>>,
    layer: Option<u32>,
    error_message: Option<String>,
    error: Option<String>,
    sub_graph_id: Option<String>,
    overall_objective: Option<String>,
    aux_data: Option<Map<String, Value>>,
    revision: Option<u64>,
}

impl From<RawTaskRecord> for TaskRecord {
    fn from(raw: RawTaskRecord) -> Self {
        let created_at = raw.created_at.or(raw.timestamp_created);
        let updated_at = raw.updated_at.or(raw.timestamp_updated);
        let completed_at = raw.completed_at.or(raw.timestamp_completed);
        // A dump without creation time falls back to the next best time it has.
        let created = created_at
            .or(updated_at)
            .or(completed_at)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        Self {
            task_id: raw.task_id,
            goal: raw.goal.unwrap_or_default(),
            task_type: raw.task_type,
            node_type: raw.node_type,
            input_params: raw
                .input_params
                .or(raw.input_params_dict)
                .unwrap_or_default(),
            output_content: prefer_non_null(raw.output_content, raw.result),
            output_type_description: raw.output_type_description,
            output_summary: raw.output_summary,
            status: raw.status,
            created_at: created,
            updated_at: updated_at.unwrap_or(created),
            completed_at,
            parent_task_id: raw.parent_task_id.or(raw.parent_node_id),
            child_task_ids: raw
                .child_task_ids
                .or(raw.child_task_ids_generated)
                .or(raw.planned_sub_task_ids)
                .unwrap_or_default(),
            layer: raw.layer,
            error_message: raw.error_message.or(raw.error),
            sub_graph_id: raw.sub_graph_id,
            overall_objective: raw.overall_objective,
            aux_data: raw.aux_data.unwrap_or_default(),
            revision: raw.revision.unwrap_or(0),
        }
    }
}

/// Any present value, `null` included, as `Some`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The first of a name and its alias that carries a value; ROMA may write `output_content: null`
/// beside a real `result`.
fn prefer_non_null(primary: Option<Value>, alias: Option<Value>) -> Option<Value> {
    match (primary, alias) {
        (Some(Value::Null), Some(alias)) => Some(alias),
        (Some(primary), _) => Some(primary),
        (None, alias) => alias,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_null_output_survives_a_round_trip_and_an_alias_fills_a_null() {
        let mut record = TaskRecord::new(TaskId::new("n").unwrap(), "g", TaskType::Think);
        record.output_content = Some(Value::Null);
        let back: TaskRecord =
            serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(back.output_content, Some(Value::Null));
        record.output_content = None;
        let back: TaskRecord =
            serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(back.output_content, None);
        let roma: TaskRecord = serde_json::from_value(json!({
            "task_id": "r", "goal": "g", "task_type": "WRITE", "status": "DONE",
            "output_content": null, "result": "the text"
        }))
        .unwrap();
        assert_eq!(roma.output_content, Some(json!("the text")));
    }

    #[test]
    fn enums_parse_case_insensitively_and_reject_unknown_values() {
        assert_eq!("done".parse::<TaskStatus>().unwrap(), TaskStatus::Done);
        assert_eq!(
            "Plan_Done".parse::<TaskStatus>().unwrap(),
            TaskStatus::PlanDone
        );
        assert_eq!(
            "TaskStatus.DONE".parse::<TaskStatus>().unwrap(),
            TaskStatus::Done
        );
        assert_eq!(
            "code_interpret".parse::<TaskType>().unwrap(),
            TaskType::CodeInterpret
        );
        let err = "PLAN".parse::<TaskType>().unwrap_err();
        assert_eq!(err.kind, "task type");
        assert!(err.to_string().contains("\"PLAN\""), "{err}");
        assert!("".parse::<NodeType>().is_err());
    }

    #[test]
    fn imports_a_roma_dump_with_both_names_and_aliases() {
        let roma = json!({
            "task_id": "root.1",
            "goal": "Find sources",
            "task_type": "search",
            "node_type": "EXECUTE",
            "input_params_dict": {"q": 1},
            "output_content": "found",
            "result": "found",
            "output_type_description": "search_results",
            "output_summary": "Search completed: found",
            "status": "DONE",
            "timestamp_created": "2025-09-19T12:00:00",
            "timestamp_updated": "2025-09-19T12:00:05.5",
            "timestamp_completed": "2025-09-19T12:00:05.5",
            "parent_task_id": "root",
            "child_task_ids_generated": [],
            "planned_sub_task_ids": [],
            "layer": 1,
            "error_message": null,
            "sub_graph_id": null,
            "aux_data": {"depends_on_indices": []},
            "some_future_field": true
        });
        let record: TaskRecord = serde_json::from_value(roma).unwrap();
        assert_eq!(record.task_id, "root.1");
        assert_eq!(record.task_type, TaskType::Search);
        assert_eq!(record.input_params["q"], 1);
        assert_eq!(record.output_content, Some(json!("found")));
        assert_eq!(record.parent_task_id.as_ref().unwrap(), "root");
        assert_eq!(record.created_at.as_secs(), 1_758_283_200.0);
        assert_eq!(record.updated_at.as_secs(), 1_758_283_205.5);
        assert_eq!(record.layer, Some(1));
        assert_eq!(record.revision, 0);
    }

    #[test]
    fn roma_child_lists_fill_child_task_ids() {
        let record: TaskRecord = serde_json::from_value(json!({
            "task_id": "root", "goal": "g", "task_type": "THINK", "status": "PLAN_DONE",
            "planned_sub_task_ids": ["root.1", "root.2"]
        }))
        .unwrap();
        assert_eq!(record.child_task_ids.len(), 2);
        assert_eq!(record.child_task_ids[1], "root.2");
    }

    #[test]
    fn round_trips_through_its_own_format() {
        let mut record = TaskRecord::new(TaskId::new("a/b").unwrap(), "goal", TaskType::Write);
        record.output_content = Some(json!({"output_text": "x"}));
        record.child_task_ids = vec![TaskId::new("c").unwrap()];
        record.revision = 3;
        let text = serde_json::to_string(&record).unwrap();
        let back: TaskRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn invalid_fields_are_named_in_the_error() {
        let err = serde_json::from_value::<TaskRecord>(json!({
            "task_id": "x", "goal": "g", "task_type": "WRITE", "status": "FINISHED"
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown task status \"FINISHED\""), "{err}");
        let err = serde_json::from_value::<TaskRecord>(json!({
            "task_id": "", "goal": "g", "task_type": "WRITE", "status": "DONE"
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("task id must not be empty"), "{err}");
    }
}

//! File and model trackers, derived from the history so a restarted process sees the same state.
//!
//! AIECS kept them only in memory and lost them on restart. Here every tracked operation is also
//! a history update, and the trackers are a replay of those updates: the live path and the
//! restore path are the same function, [`Trackers::observe`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use taskctx_domain::{ContextUpdate, Map, Timestamp, UpdateType};

/// The last operation seen on one file (AIECS `file_tracker[path]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// What was done: `read`, `write`, `delete`, …
    pub operation: String,
    /// Who did it (AIECS default `task`).
    pub source: String,
    /// When.
    pub timestamp: Timestamp,
    /// Always `active` (AIECS compatibility).
    pub state: String,
}

/// One use of a model (AIECS `model_tracker` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelUsage {
    /// The model, e.g. `gpt-4o`.
    pub model_id: String,
    /// Who serves it, e.g. `openai`.
    pub provider_id: String,
    /// How it was used, e.g. `chat`.
    pub mode: String,
    /// When.
    pub timestamp: Timestamp,
}

impl ModelUsage {
    /// Whether `other` is the same model, provider and mode (the timestamp does not count: AIECS
    /// compared it too, so repeats were never detected).
    pub fn same_use(&self, other: &ModelUsage) -> bool {
        self.model_id == other.model_id
            && self.provider_id == other.provider_id
            && self.mode == other.mode
    }
}

/// Files and models seen so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Trackers {
    pub(crate) files: BTreeMap<String, FileEntry>,
    pub(crate) models: Vec<ModelUsage>,
}

impl Trackers {
    /// Rebuilds the trackers from a history.
    pub(crate) fn from_history(history: &[ContextUpdate]) -> Self {
        let mut trackers = Self::default();
        history.iter().for_each(|u| trackers.observe(u));
        trackers
    }

    /// Applies one update: `file_operation` and `model_usage` updates change the trackers, the
    /// rest are ignored. Malformed ones (e.g. imported from elsewhere) are skipped, not errors.
    pub(crate) fn observe(&mut self, update: &ContextUpdate) {
        if update.update_type == UpdateType::FILE_OPERATION {
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
            let (Some(path), Some(operation)) = (
                text(update.data.get("path")),
                text(update.data.get("operation")),
            ) else {
                return;
            };
            let source = text(update.metadata.get("source")).unwrap_or_else(|| "task".to_owned());
            self.files.insert(
                path,
                FileEntry {
                    operation,
                    source,
                    timestamp: update.timestamp,
                    state: "active".to_owned(),
                },
            );
        } else if update.update_type == UpdateType::MODEL_USAGE
            && let Ok(usage) = serde_json::from_value::<ModelUsage>(update.data.clone())
        {
            self.models.push(usage);
        }
    }

    /// Whether `usage` repeats the last recorded model usage.
    pub(crate) fn repeats_last_model(&self, usage: &ModelUsage) -> bool {
        self.models.last().is_some_and(|last| last.same_use(usage))
    }
}

/// The history update that records a file operation.
pub(crate) fn file_update(path: &str, operation: &str, source: &str) -> ContextUpdate {
    let mut metadata = Map::new();
    metadata.insert("source".to_owned(), json!(source));
    ContextUpdate::new(
        UpdateType::FILE_OPERATION,
        json!({"path": path, "operation": operation}),
    )
    .with_metadata(metadata)
}

/// The history update that records a model usage.
pub(crate) fn model_update(usage: &ModelUsage) -> ContextUpdate {
    let data = serde_json::to_value(usage).unwrap_or(Value::Null);
    ContextUpdate::new(UpdateType::MODEL_USAGE, data).at(usage.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaying_the_history_rebuilds_both_trackers() {
        let usage = ModelUsage {
            model_id: "m".into(),
            provider_id: "p".into(),
            mode: "chat".into(),
            timestamp: Timestamp::from_secs(5.0).unwrap(),
        };
        let history = vec![
            file_update("a.txt", "read", "task"),
            file_update("a.txt", "write", "tool"),
            model_update(&usage),
            ContextUpdate::new(UpdateType::FILE_OPERATION, json!("malformed")),
        ];
        let trackers = Trackers::from_history(&history);
        assert_eq!(trackers.files.len(), 1);
        assert_eq!(trackers.files["a.txt"].operation, "write");
        assert_eq!(trackers.files["a.txt"].source, "tool");
        assert_eq!(trackers.models, vec![usage.clone()]);
        let later = ModelUsage {
            timestamp: Timestamp::from_secs(9.0).unwrap(),
            ..usage
        };
        assert!(trackers.repeats_last_model(&later));
    }
}

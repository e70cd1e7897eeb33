//! `ContextUpdate` and `UpdateType`: one entry of a task context's history (SPEC R1.1).
//!
//! The JSON field names are exactly AIECS's four (`timestamp`, `update_type`, `data`,
//! `metadata`), so AIECS `context_history_*.json` entries deserialise unchanged.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// The kind of a history entry: a well-known constant or any other non-empty string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UpdateType(Cow<'static, str>);

/// An update type that is the empty string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("update type must not be empty")]
pub struct EmptyUpdateType;

impl UpdateType {
    /// A conversation message.
    pub const MESSAGE: UpdateType = UpdateType(Cow::Borrowed("message"));
    /// A change of metadata.
    pub const METADATA: UpdateType = UpdateType(Cow::Borrowed("metadata"));
    /// A resource was registered.
    pub const RESOURCE: UpdateType = UpdateType(Cow::Borrowed("resource"));
    /// A file was read, written or deleted.
    pub const FILE_OPERATION: UpdateType = UpdateType(Cow::Borrowed("file_operation"));
    /// A model was used.
    pub const MODEL_USAGE: UpdateType = UpdateType(Cow::Borrowed("model_usage"));
    /// Something failed.
    pub const ERROR: UpdateType = UpdateType(Cow::Borrowed("error"));

    /// The well-known kinds, in the order SPEC R1.1 lists them.
    pub const WELL_KNOWN: [UpdateType; 6] = [
        Self::MESSAGE,
        Self::METADATA,
        Self::RESOURCE,
        Self::FILE_OPERATION,
        Self::MODEL_USAGE,
        Self::ERROR,
    ];

    /// Wraps any non-empty kind; a well-known name reuses its static string.
    pub fn new(kind: impl Into<String>) -> Result<Self, EmptyUpdateType> {
        let kind = kind.into();
        if kind.is_empty() {
            return Err(EmptyUpdateType);
        }
        Ok(Self::WELL_KNOWN
            .into_iter()
            .find(|known| known.as_str() == kind)
            .unwrap_or(Self(Cow::Owned(kind))))
    }

    /// The kind as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UpdateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UpdateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpdateType({:?})", self.0)
    }
}

impl std::str::FromStr for UpdateType {
    type Err = EmptyUpdateType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl PartialEq<str> for UpdateType {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for UpdateType {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<'de> Deserialize<'de> for UpdateType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let kind = String::deserialize(deserializer)?;
        Self::new(kind).map_err(serde::de::Error::custom)
    }
}

/// One entry of a history: when, what kind, the payload, and free-form metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextUpdate {
    /// Seconds since the Unix epoch (AIECS `time.time()`).
    pub timestamp: Timestamp,
    /// What kind of update this is.
    pub update_type: UpdateType,
    /// The payload: any JSON value.
    pub data: Value,
    /// Free-form metadata; a missing field reads as empty.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl ContextUpdate {
    /// An update stamped with the current time and empty metadata.
    pub fn new(update_type: UpdateType, data: Value) -> Self {
        Self {
            timestamp: Timestamp::now(),
            update_type,
            data,
            metadata: Map::new(),
        }
    }

    /// Replaces the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Replaces the timestamp.
    #[must_use]
    pub fn at(mut self, timestamp: Timestamp) -> Self {
        self.timestamp = timestamp;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_an_aiecs_history_entry_unchanged() {
        let entry = json!({
            "timestamp": 1_700_000_000.5,
            "update_type": "file_operation",
            "data": {"path": "a.txt", "operation": "write"},
            "metadata": {"source": "task"}
        });
        let update: ContextUpdate = serde_json::from_value(entry.clone()).unwrap();
        assert_eq!(update.update_type, UpdateType::FILE_OPERATION);
        assert_eq!(update.timestamp.as_secs(), 1_700_000_000.5);
        assert_eq!(serde_json::to_value(&update).unwrap(), entry);
    }

    #[test]
    fn any_non_empty_kind_is_accepted_and_empty_is_rejected() {
        assert_eq!(
            UpdateType::new("monitoring").unwrap().as_str(),
            "monitoring"
        );
        assert_eq!(UpdateType::new("message").unwrap(), UpdateType::MESSAGE);
        assert_eq!(UpdateType::new(""), Err(EmptyUpdateType));
        let err = serde_json::from_value::<ContextUpdate>(
            json!({"timestamp": 1, "update_type": "", "data": null}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("update type must not be empty"),
            "{err}"
        );
    }

    #[test]
    fn missing_metadata_reads_as_empty_but_missing_data_is_an_error() {
        let update: ContextUpdate =
            serde_json::from_value(json!({"timestamp": 1, "update_type": "message", "data": "hi"}))
                .unwrap();
        assert!(update.metadata.is_empty());
        assert!(
            serde_json::from_value::<ContextUpdate>(
                json!({"timestamp": 1, "update_type": "message"})
            )
            .is_err()
        );
    }
}

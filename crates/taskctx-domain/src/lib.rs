#![doc = include_str!("../README.md")]

mod canonical;
mod history;
mod id;
mod optimize;
mod record;
mod summary;
mod time;
mod tokens;
mod update;

pub use canonical::{canonical_json, json_kind, write_canonical_json};
pub use history::{active_metadata, truncate_history};
pub use id::{ChatId, IdError, MAX_ID_BYTES, TaskId, UserId};
pub use optimize::{OptimizeReport, Selection, SizeBudget, optimize_history, select_optimized};
pub use record::{
    DEPENDENCY_IDS, DEPENDS_ON_INDICES, NodeType, TaskRecord, TaskStatus, TaskType, UnknownVariant,
};
pub use summary::{MIN_SPECIFIC_SUMMARY_CHARS, is_generic_summary};
pub use time::{Timestamp, TimestampError};
pub use tokens::{HeuristicTokenCounter, TokenCounter};
pub use update::{ContextUpdate, EmptyUpdateType, UpdateType};

/// Re-exported so callers build `data` and `metadata` with the same JSON types.
pub use serde_json::{Map, Value};

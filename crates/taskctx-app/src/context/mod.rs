//! Task contexts (SPEC §5): the AIECS `TaskContext`, with its defects fixed.
//!
//! A [`TaskContext`] holds one chat's typed history, the file and model trackers derived from it,
//! metadata with toggles, and resources that are always closed. It loads its history when opened,
//! so a restarted process sees the same state, and saves through any
//! [`HistoryStore`](taskctx_store::HistoryStore) in one of three [`Persistence`] modes.
//! [`task_context`] and [`task_context_blocking`] run a body in a scope that records failures,
//! closes resources and saves, whatever happens.

mod error;
mod health;
mod init;
mod resources;
mod retention;
mod scope;
mod task_context;
mod trackers;
mod unwind;

pub use error::{CleanupError, ContextError, ScopeError};
pub use health::{
    ContextStats, Finding, HealthReport, LARGE_CONTEXT_CHARS, MANY_ENTRIES, Severity,
};
pub use init::ContextInit;
pub use resources::{
    AsyncClose, BoxError, Resource, ResourceCloseError, SyncClose, on_close, on_close_async,
};
pub use retention::{RetentionTask, SweepReport, spawn_retention, sweep_histories};
pub use scope::{BlockingContext, task_context, task_context_blocking};
pub use task_context::{
    AddResourceError, HistoryBudget, Persistence, TaskContext, TaskContextBuilder,
};
pub use trackers::{FileEntry, ModelUsage};

use serde_json::Value;

/// AIECS's `build_context(data)`: the `to_dict()` of a fresh context made from an AIECS `data`
/// dict — no history is loaded or stored.
pub fn build_context(data: &Value) -> Result<Value, ContextError> {
    Ok(TaskContext::detached(ContextInit::from_aiecs(data)?).to_json())
}

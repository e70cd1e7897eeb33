//! Errors of the context builder: what a caller can get back instead of a context.

use taskctx_domain::TaskId;
use taskctx_store::StoreError;

/// A context-type name that is not one of the six.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown context type {value:?}; expected one of default, planning, execution, aggregation, \
     atomization, modification"
)]
pub struct UnknownContextType {
    /// The rejected name (at most 64 characters of it).
    pub value: String,
}

/// Why [`ContextBuilderService::build`](super::ContextBuilderService::build) returned no context.
///
/// Once the current task's record has been read, every failure (store errors, panics in a
/// strategy or collaborator) yields the degraded minimal context instead of an error (SPEC R6.7);
/// these errors only happen before that point, when not even the goal is known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The task does not exist.
    #[error("task `{task_id}` not found")]
    TaskNotFound {
        /// The requested id.
        task_id: TaskId,
    },
    /// Reading the task's own record failed.
    #[error("reading task `{task_id}` failed: {source}")]
    Store {
        /// The requested id.
        task_id: TaskId,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// Reading the task's own record panicked inside the store.
    #[error("reading task `{task_id}` panicked: {detail}")]
    Panicked {
        /// The requested id.
        task_id: TaskId,
        /// The panic message.
        detail: String,
    },
}

impl BuildError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store { source, .. } => source.is_retryable(),
            Self::TaskNotFound { .. } | Self::Panicked { .. } => false,
        }
    }
}

//! Errors of task contexts and their scopes.

use std::fmt;

use taskctx_domain::{ChatId, IdError};
use taskctx_store::StoreError;

use super::resources::ResourceCloseError;

/// What went wrong in a task context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The history could not be loaded when the context was opened.
    #[error("could not load the history of chat `{chat}`: {source}")]
    Load {
        /// The chat.
        chat: ChatId,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// Updates could not be saved. They stay in the context, and the next save retries them.
    #[error("could not save the history of chat `{chat}`: {source}")]
    Save {
        /// The chat.
        chat: ChatId,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The data a context was created from is unusable.
    #[error("invalid task-context data: {0}")]
    InvalidData(String),
    /// An id in the data is invalid.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// The blocking scope was entered on an async runtime thread, where it would block the
    /// runtime (or panic). Use the async scope there.
    #[error(
        "the blocking task-context scope cannot run on an async runtime thread; use `task_context` there"
    )]
    BlockingInsideRuntime,
    /// The blocking scope could not start its runtime.
    #[error("could not start a runtime for the blocking task-context scope: {0}")]
    Runtime(#[source] std::io::Error),
}

impl ContextError {
    /// Whether retrying the same call can succeed (a store error that is itself retryable).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Load { source, .. } | Self::Save { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

/// What failed while a scope was cleaning up: resources that did not close, and a save that did
/// not succeed. Every failure is here; none stopped the others.
#[derive(Debug, Default)]
pub struct CleanupError {
    /// Resources whose close failed or panicked, in the order they were closed.
    pub close_errors: Vec<ResourceCloseError>,
    /// The final save, if it failed.
    pub save_error: Option<ContextError>,
}

impl CleanupError {
    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.close_errors.is_empty() && self.save_error.is_none()
    }

    /// `Err(self)` if anything failed, else `Ok(())`.
    pub fn into_result(self) -> Result<(), CleanupError> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for CleanupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-context cleanup failed:")?;
        for error in &self.close_errors {
            write!(f, " {error};")?;
        }
        if let Some(error) = &self.save_error {
            write!(f, " {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CleanupError {}

/// How a task-context scope failed.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError<E> {
    /// The context could not be opened; the body did not run.
    #[error("could not open the task context: {0}")]
    Open(#[source] ContextError),
    /// The body returned an error. Cleanup ran; what failed in it, if anything, is attached.
    #[error("task failed: {error}")]
    Body {
        /// The body's error.
        error: E,
        /// Failures during cleanup, if any.
        cleanup: Option<CleanupError>,
    },
    /// The body succeeded but cleanup failed (a resource did not close, or the save failed).
    #[error(transparent)]
    Cleanup(CleanupError),
}

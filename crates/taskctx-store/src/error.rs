//! `StoreError`: the one error type of every storage adapter and decorator.

use std::io;

use taskctx_domain::{IdError, TaskId};

/// What went wrong in a store. Variants say what happened, not which backend it happened in;
/// adapters map their private errors into these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The thing an operation needs does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. "task record `root.1`".
        what: String,
    },
    /// A conditional write found another revision than it expected: someone else wrote first.
    #[error("conflict on {what}: expected revision {expected}, found {actual}")]
    Conflict {
        /// What was written, e.g. "task record `root.1`".
        what: String,
        /// The revision the writer expected (0 = must not exist).
        expected: u64,
        /// The revision the store holds (0 = does not exist).
        actual: u64,
    },
    /// An id failed validation.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// An argument is unusable for a reason other than an id (e.g. a duplicate in one batch).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Stored data cannot be read. It is left as it is, never overwritten or deleted silently.
    #[error("corrupt data at {location}: {detail}")]
    Corrupt {
        /// Where: a file path and line, a key, a table row.
        location: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Another process holds the store.
    #[error("store at {path} is locked by another process ({detail})")]
    Locked {
        /// The store's location.
        path: String,
        /// What the lock attempt reported.
        detail: String,
    },
    /// An operating-system I/O error.
    #[error("I/O error while {action}: {source}")]
    Io {
        /// What the store was doing, e.g. "appending to chat `a`".
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The backend failed in a way the other variants do not describe.
    #[error("storage backend error: {detail}")]
    Backend {
        /// What the backend reported.
        detail: String,
        /// Whether the same call may succeed later.
        retryable: bool,
    },
    /// The store cannot do this at all.
    #[error("{operation} is not supported by this store")]
    Unsupported {
        /// The operation that was asked for.
        operation: &'static str,
    },
}

impl StoreError {
    /// Whether repeating the operation (after re-reading, for `Conflict`) can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Conflict { .. } | Self::Locked { .. } => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            Self::Backend { retryable, .. } => *retryable,
            Self::NotFound { .. }
            | Self::InvalidId(_)
            | Self::InvalidInput(_)
            | Self::Corrupt { .. }
            | Self::Unsupported { .. } => false,
        }
    }

    /// An [`StoreError::Io`] with a description of what was being done.
    pub fn io(action: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }

    /// The [`StoreError::Conflict`] of a task record whose revision is not the expected one.
    pub fn record_conflict(id: &TaskId, expected: u64, actual: u64) -> Self {
        Self::Conflict {
            what: format!("task record `{id}`"),
            expected,
            actual,
        }
    }

    /// A [`StoreError::Corrupt`] at `location`.
    pub fn corrupt(location: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            location: location.into(),
            detail: detail.into(),
        }
    }
}

/// The result type of every store operation.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability_follows_the_cause() {
        let conflict = StoreError::Conflict {
            what: "task record `a`".into(),
            expected: 1,
            actual: 2,
        };
        assert!(conflict.is_retryable());
        assert!(!StoreError::corrupt("f.jsonl:3", "bad json").is_retryable());
        assert!(StoreError::io("x", io::Error::from(io::ErrorKind::Interrupted)).is_retryable());
        assert!(
            !StoreError::io("x", io::Error::from(io::ErrorKind::PermissionDenied)).is_retryable()
        );
        assert_eq!(
            conflict.to_string(),
            "conflict on task record `a`: expected revision 1, found 2"
        );
    }
}

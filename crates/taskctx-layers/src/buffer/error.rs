//! What a failed flush reports (`FlushError`, with the ids of conflicting records), and the error
//! of `into_inner`, which hands the buffer back.

use std::fmt;

use taskctx_domain::TaskId;
use taskctx_store::{RecordStore, StoreError};

use crate::buffer::BufferedRecordStore;

/// A buffered record the store would not take because it held another revision than the
/// buffer expected: another writer changed the record since it was buffered. The record's
/// buffered puts are discarded; reads show the store's version again.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushConflict {
    /// The record.
    pub id: TaskId,
    /// The revision the buffer expected the store to hold (0: absent).
    pub expected: u64,
    /// The revision the store held (0: absent).
    pub actual: u64,
    /// How many buffered puts of this record were discarded.
    pub discarded: usize,
}

/// What went wrong in a flush.
///
/// A flush stores what it can: batches are written in order; a batch refused because of
/// [conflicts](Self::conflicts) has those records' puts discarded and the rest retried. Any
/// other failure stops the flush and leaves the unwritten puts buffered ([`pending`](Self::pending)),
/// visible to reads, for the next flush to retry.
#[derive(Debug)]
#[non_exhaustive]
pub struct FlushError {
    /// Buffered puts this flush stored before it stopped.
    pub written: usize,
    /// Records another writer changed; their buffered puts were discarded.
    pub conflicts: Vec<FlushConflict>,
    /// The failure that stopped the flush, if one did (the unwritten puts stay buffered).
    pub error: Option<StoreError>,
    /// Puts still buffered after this flush.
    pub pending: usize,
}

impl FlushError {
    /// The ids of the records whose buffered puts were discarded.
    pub fn conflicting_ids(&self) -> impl ExactSizeIterator<Item = &TaskId> {
        self.conflicts.iter().map(|c| &c.id)
    }

    /// How many buffered puts were discarded.
    pub fn discarded(&self) -> usize {
        self.conflicts.iter().map(|c| c.discarded).sum()
    }

    /// A flush that could not start or finish for `error`, with every put still buffered.
    pub(crate) fn stopped(error: StoreError, pending: usize) -> Self {
        Self {
            written: 0,
            conflicts: Vec::new(),
            error: Some(error),
            pending,
        }
    }
}

/// Up to this many ids are named in messages; the rest are counted.
const NAMED_IDS: usize = 10;

/// Names `ids` as "`a`, `b` and 3 more".
pub(crate) fn name_ids<'a>(ids: impl ExactSizeIterator<Item = &'a TaskId>) -> String {
    let total = ids.len();
    let mut named: Vec<String> = ids.take(NAMED_IDS).map(|id| format!("`{id}`")).collect();
    if total > NAMED_IDS {
        named.push(format!("{} more", total - NAMED_IDS));
    }
    named.join(", ")
}

impl fmt::Display for FlushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flush stored {} buffered writes", self.written)?;
        if !self.conflicts.is_empty() {
            write!(
                f,
                "; discarded {} buffered writes to task records {} changed by another writer",
                self.discarded(),
                name_ids(self.conflicting_ids())
            )?;
        }
        if let Some(error) = &self.error {
            write!(f, "; stopped with {} still buffered: {error}", self.pending)?;
        }
        Ok(())
    }
}

impl std::error::Error for FlushError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<FlushError> for StoreError {
    /// The stopping error (with what the flush was doing), else a `Conflict` naming the
    /// discarded records with the revisions of the first.
    fn from(flush: FlushError) -> Self {
        let names = name_ids(flush.conflicting_ids());
        match (flush.error, flush.conflicts.first()) {
            (Some(StoreError::Io { action, source }), _) => StoreError::Io {
                action: format!("flushing buffered writes: {action}"),
                source,
            },
            (Some(StoreError::Backend { detail, retryable }), _) => StoreError::Backend {
                detail: format!("flushing buffered writes: {detail}"),
                retryable,
            },
            (Some(other), _) => other,
            (None, Some(first)) => StoreError::Conflict {
                what: format!(
                    "task records {names} (buffered writes discarded at flush: another writer \
                     changed them)"
                ),
                expected: first.expected,
                actual: first.actual,
            },
            (None, None) => StoreError::Backend {
                detail: "flushing buffered writes failed".into(),
                retryable: false,
            },
        }
    }
}

/// [`BufferedRecordStore::into_inner`] could not flush everything: the buffer comes back with
/// what the flush reported.
pub struct IntoInnerError<S: RecordStore> {
    store: BufferedRecordStore<S>,
    error: FlushError,
}

impl<S: RecordStore> IntoInnerError<S> {
    pub(crate) fn new(store: BufferedRecordStore<S>, error: FlushError) -> Self {
        Self { store, error }
    }

    /// What the final flush reported.
    pub fn error(&self) -> &FlushError {
        &self.error
    }

    /// The buffer (still usable, or to call `into_inner` on again) and the flush's report.
    pub fn into_parts(self) -> (BufferedRecordStore<S>, FlushError) {
        (self.store, self.error)
    }
}

impl<S: RecordStore> fmt::Debug for IntoInnerError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoInnerError")
            .field("store", &self.store)
            .field("error", &self.error)
            .finish()
    }
}

impl<S: RecordStore> fmt::Display for IntoInnerError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not unwrap the write buffer: {}", self.error)
    }
}

impl<S: RecordStore> std::error::Error for IntoInnerError<S> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

//! Conveniences over the ports, implemented once for every store (never by hand).

use std::sync::Arc;

use async_trait::async_trait;
use taskctx_domain::{ChatId, ContextUpdate, TaskId, TaskRecord};

use crate::error::{StoreError, StoreResult};
use crate::history::HistoryStore;
use crate::record::RecordStore;

/// Conveniences for every [`HistoryStore`].
#[async_trait]
pub trait HistoryStoreExt: HistoryStore {
    /// Appends one update and returns its sequence number.
    async fn append_one(&self, chat: &ChatId, update: ContextUpdate) -> StoreResult<u64> {
        let range = self.append(chat, std::slice::from_ref(&update)).await?;
        Ok(range.start)
    }
}

impl<T: HistoryStore + ?Sized> HistoryStoreExt for T {}

/// Conveniences for every [`RecordStore`].
#[async_trait]
pub trait RecordStoreExt: RecordStore {
    /// Stores a new record; [`StoreError::Conflict`] if the id is taken.
    async fn create(&self, record: TaskRecord) -> StoreResult<u64> {
        self.put(record, Some(0)).await
    }

    /// Stores a changed record, expecting the store to still hold `record.revision`.
    async fn update(&self, record: TaskRecord) -> StoreResult<u64> {
        let expected = record.revision;
        self.put(record, Some(expected)).await
    }

    /// Stores a record whatever the store holds (imports).
    async fn upsert(&self, record: TaskRecord) -> StoreResult<u64> {
        self.put(record, None).await
    }

    /// The record, or [`StoreError::NotFound`].
    async fn require(&self, id: &TaskId) -> StoreResult<Arc<TaskRecord>> {
        self.get(id).await?.ok_or_else(|| StoreError::NotFound {
            what: format!("task record `{id}`"),
        })
    }
}

impl<T: RecordStore + ?Sized> RecordStoreExt for T {}

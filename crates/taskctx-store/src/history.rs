//! The `HistoryStore` port: one ordered, append-mostly history of `ContextUpdate`s per chat.

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use taskctx_domain::{ChatId, ContextUpdate, Timestamp};

use crate::error::StoreResult;

/// One chat as `list` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatSummary {
    /// The chat.
    pub chat_id: ChatId,
    /// How many updates its history holds.
    pub entries: u64,
    /// The timestamp of its last update (by position), if it has any.
    pub last_timestamp: Option<Timestamp>,
}

/// Totals over a history store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistoryStats {
    /// Chats in the store.
    pub chats: u64,
    /// Updates over all chats.
    pub updates: u64,
    /// Bytes the store occupies on disk, where the adapter can tell.
    pub bytes_on_disk: Option<u64>,
}

/// Stores one history per chat.
///
/// # Contract
///
/// Every adapter and decorator keeps these promises; the conformance suite in `taskctx-testkit`
/// checks them.
///
/// - **Sequence numbers** are 0-based positions: the first update of a chat has sequence 0, and
///   `append` returns the range of positions it assigned. `replace` renumbers from 0.
/// - **Existence**: a chat exists from its first non-empty `append` or any `replace` until
///   `delete`. `load` of a chat that does not exist returns an empty history, not an error. An
///   empty `append` writes nothing and does not create the chat.
/// - **Read-your-writes**: once a write returned `Ok`, every read through the same store sees it.
/// - **Durability**: for durable adapters, a write that returned `Ok` survives `kill -9` of the
///   process immediately after.
/// - **Atomicity**: a failed write changes nothing. `append` adds all of its updates or none.
///   `replace` is atomic: readers see the old or the new history, never a mix, also across a
///   crash.
/// - **Corruption** is reported as [`StoreError::Corrupt`](crate::StoreError::Corrupt) naming the
///   location; unreadable data is never overwritten or deleted silently.
/// - **Processes**: a second process opening the same durable store either works correctly or gets
///   [`StoreError::Locked`](crate::StoreError::Locked) when it opens it.
/// - **Ordering**: `list` returns chats in byte order of their ids.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait HistoryStore: Send + Sync + Debug + 'static {
    /// Appends `updates` to the chat's history, in order, and returns the sequence numbers they
    /// were given.
    async fn append(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<Range<u64>>;

    /// The chat's whole history, in order (empty for an unknown chat).
    async fn load(&self, chat: &ChatId) -> StoreResult<Vec<ContextUpdate>>;

    /// The updates with sequence numbers `from` and later: element `i` has sequence `from + i`.
    /// Empty when `from` is at or beyond the end.
    async fn load_since(&self, chat: &ChatId, from: u64) -> StoreResult<Vec<ContextUpdate>>;

    /// Replaces the chat's whole history atomically (used by optimisation and truncation).
    async fn replace(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<()>;

    /// Every chat with its entry count and last timestamp, in byte order of the ids.
    async fn list(&self) -> StoreResult<Vec<ChatSummary>>;

    /// Deletes the chat's history; returns whether it existed.
    async fn delete(&self, chat: &ChatId) -> StoreResult<bool>;

    /// Totals over the store.
    async fn stats(&self) -> StoreResult<HistoryStats>;
}

macro_rules! forward_history_store {
    ($wrapper:ty) => {
        #[async_trait]
        impl<T: HistoryStore + ?Sized> HistoryStore for $wrapper {
            async fn append(
                &self,
                chat: &ChatId,
                updates: &[ContextUpdate],
            ) -> StoreResult<Range<u64>> {
                (**self).append(chat, updates).await
            }
            async fn load(&self, chat: &ChatId) -> StoreResult<Vec<ContextUpdate>> {
                (**self).load(chat).await
            }
            async fn load_since(
                &self,
                chat: &ChatId,
                from: u64,
            ) -> StoreResult<Vec<ContextUpdate>> {
                (**self).load_since(chat, from).await
            }
            async fn replace(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<()> {
                (**self).replace(chat, updates).await
            }
            async fn list(&self) -> StoreResult<Vec<ChatSummary>> {
                (**self).list().await
            }
            async fn delete(&self, chat: &ChatId) -> StoreResult<bool> {
                (**self).delete(chat).await
            }
            async fn stats(&self) -> StoreResult<HistoryStats> {
                (**self).stats().await
            }
        }
    };
}

forward_history_store!(Arc<T>);
forward_history_store!(Box<T>);

//! `MemoryHistoryStore`: histories in a map of per-chat vectors.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use taskctx_domain::{ChatId, ContextUpdate};
use taskctx_store::{ChatSummary, HistoryStats, HistoryStore, StoreResult};

type Chat = Arc<RwLock<Vec<ContextUpdate>>>;

/// Histories held in memory: the reference implementation of [`HistoryStore`].
///
/// The map of chats and each chat have their own read-write lock, so readers never block each
/// other and writers to different chats only meet for the moment it takes to find their chat.
/// Cloning the store gives another handle to the same histories.
#[derive(Debug, Clone, Default)]
pub struct MemoryHistoryStore {
    chats: Arc<RwLock<BTreeMap<ChatId, Chat>>>,
}

impl MemoryHistoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn chat(&self, chat: &ChatId) -> Option<Chat> {
        let chats = self.chats.read().unwrap_or_else(PoisonError::into_inner);
        chats.get(chat).cloned()
    }
}

#[async_trait]
impl HistoryStore for MemoryHistoryStore {
    async fn append(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<Range<u64>> {
        let mut batch = updates.to_vec();
        let push = |history: &mut Vec<ContextUpdate>, batch: &mut Vec<ContextUpdate>| {
            let start = history.len() as u64;
            history.append(batch);
            start..history.len() as u64
        };
        {
            // The map lock stays held (shared) while the chat is written, so a concurrent
            // `delete` or `replace` cannot detach the vector under this append and lose it.
            let chats = self.chats.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = chats.get(chat) {
                let mut history = entry.write().unwrap_or_else(PoisonError::into_inner);
                return Ok(push(&mut history, &mut batch));
            }
        }
        if batch.is_empty() {
            return Ok(0..0);
        }
        let mut chats = self.chats.write().unwrap_or_else(PoisonError::into_inner);
        let entry = chats.entry(chat.clone()).or_default();
        let mut history = entry.write().unwrap_or_else(PoisonError::into_inner);
        Ok(push(&mut history, &mut batch))
    }

    async fn load(&self, chat: &ChatId) -> StoreResult<Vec<ContextUpdate>> {
        self.load_since(chat, 0).await
    }

    async fn load_since(&self, chat: &ChatId, from: u64) -> StoreResult<Vec<ContextUpdate>> {
        let Some(entry) = self.chat(chat) else {
            return Ok(Vec::new());
        };
        let history = entry.read().unwrap_or_else(PoisonError::into_inner);
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(history.get(from..).map(<[_]>::to_vec).unwrap_or_default())
    }

    async fn replace(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<()> {
        let fresh = Arc::new(RwLock::new(updates.to_vec()));
        // Swapping the whole vector under the map's write lock: readers see old or new.
        let mut chats = self.chats.write().unwrap_or_else(PoisonError::into_inner);
        chats.insert(chat.clone(), fresh);
        Ok(())
    }

    async fn list(&self) -> StoreResult<Vec<ChatSummary>> {
        let chats = self.chats.read().unwrap_or_else(PoisonError::into_inner);
        Ok(chats
            .iter()
            .map(|(chat_id, entry)| {
                let history = entry.read().unwrap_or_else(PoisonError::into_inner);
                ChatSummary {
                    chat_id: chat_id.clone(),
                    entries: history.len() as u64,
                    last_timestamp: history.last().map(|u| u.timestamp),
                }
            })
            .collect())
    }

    async fn delete(&self, chat: &ChatId) -> StoreResult<bool> {
        let mut chats = self.chats.write().unwrap_or_else(PoisonError::into_inner);
        Ok(chats.remove(chat).is_some())
    }

    async fn stats(&self) -> StoreResult<HistoryStats> {
        let chats = self.chats.read().unwrap_or_else(PoisonError::into_inner);
        let updates = chats
            .values()
            .map(|entry| entry.read().unwrap_or_else(PoisonError::into_inner).len() as u64)
            .sum();
        Ok(HistoryStats {
            chats: chats.len() as u64,
            updates,
            bytes_on_disk: None,
        })
    }
}

//! Fakes shared by the task-context tests: a store that counts what it is asked to append, and
//! one whose writes can be switched to fail.
#![allow(dead_code)]

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use taskctx_domain::{ChatId, ContextUpdate};
use taskctx_store::{ChatSummary, HistoryStats, HistoryStore, StoreError, StoreResult};
use taskctx_store_memory::MemoryHistoryStore;

/// The memory store, with counters of appended batches and entries and a switch that makes every
/// write fail with an I/O error.
#[derive(Debug, Default)]
pub(crate) struct Instrumented {
    pub(crate) inner: MemoryHistoryStore,
    pub(crate) appends: AtomicUsize,
    pub(crate) appended_entries: AtomicUsize,
    pub(crate) replaces: AtomicUsize,
    pub(crate) failing: AtomicBool,
}

impl Instrumented {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn fail_writes(&self, fail: bool) {
        self.failing.store(fail, Ordering::SeqCst);
    }

    fn check(&self) -> StoreResult<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::io(
                "writing (injected failure)",
                std::io::Error::other("disk full"),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl HistoryStore for Instrumented {
    async fn append(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<Range<u64>> {
        self.check()?;
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.appended_entries
            .fetch_add(updates.len(), Ordering::SeqCst);
        self.inner.append(chat, updates).await
    }
    async fn load(&self, chat: &ChatId) -> StoreResult<Vec<ContextUpdate>> {
        self.inner.load(chat).await
    }
    async fn load_since(&self, chat: &ChatId, from: u64) -> StoreResult<Vec<ContextUpdate>> {
        self.inner.load_since(chat, from).await
    }
    async fn replace(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<()> {
        self.check()?;
        self.replaces.fetch_add(1, Ordering::SeqCst);
        self.inner.replace(chat, updates).await
    }
    async fn list(&self) -> StoreResult<Vec<ChatSummary>> {
        self.inner.list().await
    }
    async fn delete(&self, chat: &ChatId) -> StoreResult<bool> {
        self.check()?;
        self.inner.delete(chat).await
    }
    async fn stats(&self) -> StoreResult<HistoryStats> {
        self.inner.stats().await
    }
}

pub(crate) fn chat(id: &str) -> ChatId {
    ChatId::new(id).unwrap()
}

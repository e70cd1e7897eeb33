//! `SledHistoryStore`: the `HistoryStore` port over the `history` and `chats` trees.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use sled::IVec;
use sled::transaction::{Transactional, TransactionalTree};
use taskctx_domain::{ChatId, ContextUpdate};
use taskctx_store::{ChatSummary, HistoryStats, HistoryStore, StoreError, StoreResult};

use crate::codec::{ChatMeta, chat_location, decode_chunk, encode_chunks, entry_location};
use crate::error::{TxResult, abort, from_sled, from_transaction};
use crate::keys::{history_key, history_prefix, history_seq};
use crate::store::{Inner, blocking};

/// The history port of a [`SledStore`](crate::SledStore).
///
/// A chat's entries live in the `history` tree as chunks of consecutive entries, each under
/// `encode(chat) ++ position of its first entry (u64 BE)`; the `chats` tree holds, under the raw
/// id, how many entries the chat has and its last timestamp. Both change in one sled transaction,
/// so a chat's chunks always tile positions `0..entries`, also after a crash. Every write is
/// durable before it returns (group commit). Cloning gives another handle to the same store.
#[derive(Debug, Clone)]
pub struct SledHistoryStore {
    inner: Arc<Inner>,
}

impl SledHistoryStore {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

/// Reads a chat's metadata inside a transaction; corrupt metadata aborts it.
fn meta_in(chats: &TransactionalTree, chat: &str) -> TxResult<Option<ChatMeta>> {
    match chats.get(chat.as_bytes())? {
        None => Ok(None),
        Some(bytes) => match ChatMeta::decode(chat, &bytes) {
            Ok(meta) => Ok(Some(meta)),
            Err(error) => abort(error),
        },
    }
}

/// Reads a chat's metadata outside a transaction.
fn meta(inner: &Inner, chat: &str) -> StoreResult<Option<ChatMeta>> {
    inner
        .chats
        .get(chat.as_bytes())
        .map_err(|e| from_sled(&format!("reading {}", chat_location(chat)), e))?
        .map(|bytes| ChatMeta::decode(chat, &bytes))
        .transpose()
}

/// Encoded chunks, ready to be inserted repeatedly (a transaction closure may run more than
/// once, and cloning an `IVec` is a reference count, not a copy).
fn chunks(updates: &[ContextUpdate]) -> StoreResult<Vec<(u64, IVec)>> {
    Ok(encode_chunks(updates)?
        .into_iter()
        .map(|(offset, bytes)| (offset, IVec::from(bytes)))
        .collect())
}

/// Every history key of the chat (one per chunk). The caller holds the chat's write lock, so
/// none is added or removed until it is done.
fn chunk_keys(inner: &Inner, chat: &str, prefix: &[u8]) -> StoreResult<Vec<IVec>> {
    inner
        .history
        .scan_prefix(prefix)
        .keys()
        .collect::<sled::Result<Vec<_>>>()
        .map_err(|e| from_sled(&format!("reading the history of chat `{chat}`"), e))
}

/// Reads entries `from..` of `chat`. The caller holds the chat's read lock, so no `replace` or
/// `delete` runs meanwhile; appends may, but only add chunks past the count read first.
fn load_since(inner: &Inner, chat: &str, from: u64) -> StoreResult<Vec<ContextUpdate>> {
    let Some(meta) = meta(inner, chat)? else {
        return Ok(Vec::new());
    };
    if from >= meta.entries {
        return Ok(Vec::new());
    }
    let prefix = history_prefix(chat);
    let reading = |seq: u64| format!("reading {}", entry_location(chat, seq));
    // The chunk holding `from` is the last one starting at or before it.
    let first = inner
        .history
        .range(history_key(&prefix, 0)..=history_key(&prefix, from))
        .next_back()
        .transpose()
        .map_err(|e| from_sled(&reading(from), e))?
        .and_then(|(key, _)| history_seq(&key))
        .ok_or_else(|| missing(chat, 0, &meta))?;
    let expected = usize::try_from(meta.entries - from).unwrap_or(usize::MAX);
    let mut updates = Vec::with_capacity(expected.min(1 << 16));
    let mut next = first;
    let end = history_key(&prefix, meta.entries);
    for item in inner.history.range(history_key(&prefix, first)..end) {
        let (key, value) = item.map_err(|e| from_sled(&reading(next), e))?;
        // Chunks tile the positions: each starts where the previous one ended.
        if history_seq(&key) != Some(next) {
            return Err(missing(chat, next, &meta));
        }
        let chunk = decode_chunk(chat, next, &value)?;
        let after = next + chunk.len() as u64;
        if after > meta.entries {
            return Err(StoreError::corrupt(
                entry_location(chat, next),
                format!(
                    "the chunk ends at position {after}, past the {} entries {} counts",
                    meta.entries,
                    chat_location(chat)
                ),
            ));
        }
        let skip = usize::try_from(from.saturating_sub(next)).unwrap_or(usize::MAX);
        updates.extend(chunk.into_iter().skip(skip));
        next = after;
    }
    if next != meta.entries {
        return Err(missing(chat, next, &meta));
    }
    Ok(updates)
}

/// The error for a chat whose entries from `seq` on are not where its metadata says.
fn missing(chat: &str, seq: u64, meta: &ChatMeta) -> StoreError {
    StoreError::corrupt(
        entry_location(chat, seq),
        format!(
            "entries missing: {} counts {} entries, but none is stored from position {seq}",
            chat_location(chat),
            meta.entries
        ),
    )
}

#[async_trait]
impl HistoryStore for SledHistoryStore {
    async fn append(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<Range<u64>> {
        let chat = chat.as_str().to_owned();
        if updates.is_empty() {
            // Writes nothing (and so creates nothing): only tell where the chat ends.
            return blocking(&self.inner, "reading a chat's length", move |inner| {
                let entries = meta(inner, &chat)?.map_or(0, |m| m.entries);
                Ok(entries..entries)
            })
            .await;
        }
        let chunks = chunks(updates)?;
        let count = updates.len() as u64;
        let last_timestamp = updates.last().map(|u| u.timestamp);
        blocking(&self.inner, "appending", move |inner| {
            let prefix = history_prefix(&chat);
            let range = {
                // Shared: appends run alongside readers, not while a replace or delete of this
                // chat lists its chunks.
                let _appending = inner.read_chat(&chat);
                // The count and the chunks change in one transaction: sequence numbers are
                // assigned without gaps or duplicates however many tasks append at once.
                (&inner.chats, &inner.history)
                    .transaction(|(chats, history)| {
                        let start = meta_in(chats, &chat)?.map_or(0, |m| m.entries);
                        let Some(end) = start.checked_add(count) else {
                            return abort(StoreError::InvalidInput(format!(
                                "chat `{chat}` cannot hold more entries"
                            )));
                        };
                        for (offset, value) in &chunks {
                            history.insert(history_key(&prefix, start + offset), value.clone())?;
                        }
                        let meta = ChatMeta {
                            entries: end,
                            last_timestamp,
                        };
                        chats.insert(chat.as_bytes(), &meta.encode()[..])?;
                        Ok(start..end)
                    })
                    .map_err(|e| from_transaction(&format!("appending to chat `{chat}`"), e))?
            };
            inner.make_durable()?;
            Ok(range)
        })
        .await
    }

    async fn load(&self, chat: &ChatId) -> StoreResult<Vec<ContextUpdate>> {
        self.load_since(chat, 0).await
    }

    async fn load_since(&self, chat: &ChatId, from: u64) -> StoreResult<Vec<ContextUpdate>> {
        let chat = chat.as_str().to_owned();
        blocking(&self.inner, "loading a history", move |inner| {
            let _reading = inner.read_chat(&chat);
            load_since(inner, &chat, from)
        })
        .await
    }

    async fn replace(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<()> {
        let chat = chat.as_str().to_owned();
        let chunks = chunks(updates)?;
        let count = updates.len() as u64;
        let last_timestamp = updates.last().map(|u| u.timestamp);
        blocking(&self.inner, "replacing a history", move |inner| {
            let prefix = history_prefix(&chat);
            {
                // Readers and appenders wait while the history is swapped (see
                // `Inner::chat_locks`); the transaction makes the swap all-or-nothing across a
                // crash.
                let _rewriting = inner.rewrite_chat(&chat);
                let old_keys = chunk_keys(inner, &chat, &prefix)?;
                let new_keys: Vec<Vec<u8>> = chunks
                    .iter()
                    .map(|(offset, _)| history_key(&prefix, *offset))
                    .collect();
                (&inner.chats, &inner.history)
                    .transaction(|(chats, history)| {
                        // Corrupt metadata aborts: it must not be overwritten blindly.
                        meta_in(chats, &chat)?;
                        for key in &old_keys {
                            history.remove(key.clone())?;
                        }
                        for (key, (_, value)) in new_keys.iter().zip(&chunks) {
                            history.insert(key.as_slice(), value.clone())?;
                        }
                        let meta = ChatMeta {
                            entries: count,
                            last_timestamp,
                        };
                        chats.insert(chat.as_bytes(), &meta.encode()[..])?;
                        Ok(())
                    })
                    .map_err(|e| from_transaction(&format!("replacing chat `{chat}`"), e))?;
            }
            inner.make_durable()
        })
        .await
    }

    async fn list(&self) -> StoreResult<Vec<ChatSummary>> {
        blocking(&self.inner, "listing chats", |inner| {
            let mut chats = Vec::new();
            // Keys of the chats tree are the raw ids, so sled's order is the contract's order.
            for item in inner.chats.iter() {
                let (key, value) = item.map_err(|e| from_sled("listing chats", e))?;
                let id = String::from_utf8(key.to_vec())
                    .ok()
                    .and_then(|s| ChatId::new(s).ok())
                    .ok_or_else(|| {
                        StoreError::corrupt(
                            chat_location(&String::from_utf8_lossy(&key)),
                            "the key is not a valid chat id",
                        )
                    })?;
                let meta = ChatMeta::decode(id.as_str(), &value)?;
                chats.push(ChatSummary {
                    chat_id: id,
                    entries: meta.entries,
                    last_timestamp: meta.last_timestamp,
                });
            }
            Ok(chats)
        })
        .await
    }

    async fn delete(&self, chat: &ChatId) -> StoreResult<bool> {
        let chat = chat.as_str().to_owned();
        blocking(&self.inner, "deleting a history", move |inner| {
            let prefix = history_prefix(&chat);
            let existed = {
                let _rewriting = inner.rewrite_chat(&chat);
                let keys = chunk_keys(inner, &chat, &prefix)?;
                (&inner.chats, &inner.history)
                    .transaction(|(chats, history)| {
                        if meta_in(chats, &chat)?.is_none() {
                            return Ok(false);
                        }
                        for key in &keys {
                            history.remove(key.clone())?;
                        }
                        chats.remove(chat.as_bytes())?;
                        Ok(true)
                    })
                    .map_err(|e| from_transaction(&format!("deleting chat `{chat}`"), e))?
            };
            // Also when nothing existed: the answer may rest on another writer's delete that is
            // not durable yet.
            inner.make_durable()?;
            Ok(existed)
        })
        .await
    }

    async fn stats(&self) -> StoreResult<HistoryStats> {
        blocking(&self.inner, "counting histories", |inner| {
            let mut stats = HistoryStats::default();
            for item in inner.chats.iter() {
                let (key, value) = item.map_err(|e| from_sled("counting histories", e))?;
                let meta = ChatMeta::decode(&String::from_utf8_lossy(&key), &value)?;
                stats.chats += 1;
                stats.updates += meta.entries;
            }
            stats.bytes_on_disk = inner.bytes_on_disk();
            Ok(stats)
        })
        .await
    }
}

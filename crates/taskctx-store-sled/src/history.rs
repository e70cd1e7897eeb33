//! `SledHistoryStore`: the `HistoryStore` port over the `history` and `chats` trees.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use sled::IVec;
use sled::transaction::Transactional;
use taskctx_domain::{ChatId, ContextUpdate};
use taskctx_store::{ChatSummary, HistoryStats, HistoryStore, StoreError, StoreResult};

use crate::codec::{ChatMeta, chat_location, decode_update, encode_update, entry_location};
use crate::error::{TxResult, abort, from_sled, from_transaction};
use crate::keys::{history_key, history_prefix, history_seq};
use crate::store::{Inner, blocking};

/// The history port of a [`SledStore`](crate::SledStore).
///
/// Entry `seq` of chat `c` lives in the `history` tree under `encode(c) ++ seq (u64 BE)`; the
/// `chats` tree holds, under the raw id, how many entries the chat has and its last timestamp.
/// Both change in one sled transaction, so the entries of a chat are exactly the sequences
/// `0..entries`, also after a crash. Every write is durable before it returns (group commit).
/// Cloning gives another handle to the same store.
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
fn meta_in(chats: &sled::transaction::TransactionalTree, chat: &str) -> TxResult<Option<ChatMeta>> {
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

fn encode_all(updates: &[ContextUpdate]) -> StoreResult<Vec<IVec>> {
    updates
        .iter()
        .map(|u| encode_update(u).map(IVec::from))
        .collect()
}

/// Reads entries `from..` of `chat`. The caller holds the chat's read lock, so no `replace` or
/// `delete` runs meanwhile; appends may, but only add entries past the count read first.
fn load_since(inner: &Inner, chat: &str, from: u64) -> StoreResult<Vec<ContextUpdate>> {
    let Some(meta) = meta(inner, chat)? else {
        return Ok(Vec::new());
    };
    if from >= meta.entries {
        return Ok(Vec::new());
    }
    let prefix = history_prefix(chat);
    let expected = usize::try_from(meta.entries - from).unwrap_or(usize::MAX);
    let mut updates = Vec::with_capacity(expected.min(1 << 16));
    let mut next = from;
    let range = history_key(&prefix, from)..history_key(&prefix, meta.entries);
    for item in inner.history.range(range) {
        let (key, value) =
            item.map_err(|e| from_sled(&format!("reading {}", entry_location(chat, next)), e))?;
        if history_seq(&key) != Some(next) {
            break;
        }
        updates.push(decode_update(chat, next, &value)?);
        next += 1;
    }
    // The chat's keys are exactly `prefix ++ seq` for seqs `0..entries` and the scan is bounded
    // by the count, so a gap or a short scan can only mean that entries are missing.
    if next != meta.entries {
        return Err(StoreError::corrupt(
            entry_location(chat, next),
            format!(
                "entry missing: {} says the chat has {} entries, found {}",
                chat_location(chat),
                meta.entries,
                next
            ),
        ));
    }
    Ok(updates)
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
        let values = encode_all(updates)?;
        let last_timestamp = updates.last().map(|u| u.timestamp);
        blocking(&self.inner, "appending", move |inner| {
            let prefix = history_prefix(&chat);
            let count = values.len() as u64;
            // The count and the entries change in one transaction: sequence numbers are
            // assigned without gaps or duplicates however many tasks append at once.
            let range = (&inner.chats, &inner.history)
                .transaction(|(chats, history)| {
                    let start = meta_in(chats, &chat)?.map_or(0, |m| m.entries);
                    let Some(end) = start.checked_add(count) else {
                        return abort(StoreError::InvalidInput(format!(
                            "chat `{chat}` cannot hold more entries"
                        )));
                    };
                    for (seq, value) in (start..end).zip(&values) {
                        history.insert(history_key(&prefix, seq), value.clone())?;
                    }
                    let meta = ChatMeta {
                        entries: end,
                        last_timestamp,
                    };
                    chats.insert(chat.as_bytes(), &meta.encode()[..])?;
                    Ok(start..end)
                })
                .map_err(|e| from_transaction(&format!("appending to chat `{chat}`"), e))?;
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
        let values = encode_all(updates)?;
        let last_timestamp = updates.last().map(|u| u.timestamp);
        blocking(&self.inner, "replacing a history", move |inner| {
            let prefix = history_prefix(&chat);
            let count = values.len() as u64;
            {
                // Readers wait while the history is swapped (see `Inner::chat_locks`); the
                // transaction makes the swap all-or-nothing across a crash.
                let _rewriting = inner.rewrite_chat(&chat);
                (&inner.chats, &inner.history)
                    .transaction(|(chats, history)| {
                        // Corrupt metadata aborts: without the old count we cannot know which
                        // entries to remove, and the metadata must not be overwritten blindly.
                        let old = meta_in(chats, &chat)?.map_or(0, |m| m.entries);
                        for (seq, value) in (0..count).zip(&values) {
                            history.insert(history_key(&prefix, seq), value.clone())?;
                        }
                        for seq in count..old {
                            history.remove(history_key(&prefix, seq))?;
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
                (&inner.chats, &inner.history)
                    .transaction(|(chats, history)| {
                        let Some(meta) = meta_in(chats, &chat)? else {
                            return Ok(false);
                        };
                        for seq in 0..meta.entries {
                            history.remove(history_key(&prefix, seq))?;
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

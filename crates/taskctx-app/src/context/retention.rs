//! Retention: keep at most `max_history_files` histories, deleting the oldest (the seed's
//! `max_history_files` and `cleanup_interval`, which AIECS named but never implemented).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use taskctx_domain::ChatId;
use taskctx_store::{HistoryStore, StoreResult};

/// What a sweep did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Histories left.
    pub kept: usize,
    /// Histories deleted, oldest first.
    pub deleted: Vec<ChatId>,
}

/// Deletes the oldest histories beyond `max_histories`. Age is the timestamp of a history's last
/// update; empty histories count as oldest; ties go by chat id, so a sweep is deterministic.
pub async fn sweep_histories(
    store: &dyn HistoryStore,
    max_histories: usize,
) -> StoreResult<SweepReport> {
    let mut chats = store.list().await?;
    if chats.len() <= max_histories {
        return Ok(SweepReport {
            kept: chats.len(),
            deleted: Vec::new(),
        });
    }
    chats.sort_by(|a, b| {
        let age =
            |t: Option<taskctx_domain::Timestamp>| t.map_or(f64::NEG_INFINITY, |t| t.as_secs());
        age(a.last_timestamp)
            .total_cmp(&age(b.last_timestamp))
            .then_with(|| a.chat_id.cmp(&b.chat_id))
    });
    let excess = chats.len() - max_histories;
    let mut deleted = Vec::with_capacity(excess);
    for chat in chats.into_iter().take(excess) {
        if store.delete(&chat.chat_id).await? {
            deleted.push(chat.chat_id);
        }
    }
    tracing::info!(
        deleted = deleted.len(),
        kept = max_histories,
        "history retention sweep"
    );
    Ok(SweepReport {
        kept: max_histories,
        deleted,
    })
}

/// A running retention task; dropping it stops the task.
#[derive(Debug)]
pub struct RetentionTask {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for RetentionTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Sweeps `store` every `interval` on the current tokio runtime (the first sweep runs at once).
/// A failed sweep is logged and retried at the next tick.
pub fn spawn_retention(
    store: Arc<dyn HistoryStore>,
    max_histories: usize,
    interval: Duration,
) -> RetentionTask {
    let handle = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = sweep_histories(&*store, max_histories).await {
                tracing::warn!(%error, "history retention sweep failed");
            }
        }
    });
    RetentionTask { handle }
}

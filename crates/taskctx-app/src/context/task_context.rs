//! `TaskContext`: one conversation's or task's typed history, trackers and resources.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use taskctx_domain::{
    ChatId, ContextUpdate, OptimizeReport, SizeBudget, Timestamp, TokenCounter, UpdateType, UserId,
    active_metadata, select_optimized, truncate_history,
};
use taskctx_store::HistoryStore;

use super::error::{CleanupError, ContextError};
use super::init::ContextInit;
use super::resources::{Entry, Resource, ResourceCloseError, close_all, close_one};
use super::trackers::{FileEntry, ModelUsage, Trackers, file_update, model_update};
use crate::tokens::default_token_counter;

/// When updates reach the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Persistence {
    /// Every update is appended before the call returns: durable on return (for durable stores).
    #[default]
    WriteThrough,
    /// Updates are kept in memory and appended by `save()` and at scope exit. A save appends
    /// only what is not stored yet, so its cost does not grow with the history.
    Buffered,
    /// Nothing is loaded or stored.
    Off,
}

impl FromStr for Persistence {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "write-through" | "write_through" | "writethrough" => Ok(Self::WriteThrough),
            "buffered" => Ok(Self::Buffered),
            "off" | "none" => Ok(Self::Off),
            _ => Err(format!(
                "unknown persistence mode {s:?}; expected write-through, buffered or off"
            )),
        }
    }
}

impl fmt::Display for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WriteThrough => "write-through",
            Self::Buffered => "buffered",
            Self::Off => "off",
        })
    }
}

/// The size limit of a history optimisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryBudget {
    /// Characters of the canonical JSON of each entry's data (the AIECS unit; default 1000).
    Chars(usize),
    /// Tokens of the same text, counted by the context's token counter.
    Tokens(usize),
}

impl Default for HistoryBudget {
    fn default() -> Self {
        Self::Chars(1000)
    }
}

/// A task context: a typed history with file and model trackers, metadata, and resources that are
/// always closed.
///
/// Cheap to clone: clones share one context, so several tasks of a process can use it at once.
/// Updates from concurrent tasks are stored in the order they were added. When the last clone is
/// dropped without `close` (e.g. a scope's future was cancelled), remaining resources are closed
/// and unsaved updates appended on the tokio runtime, if there is one, or on the spot.
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

struct Inner {
    user_id: UserId,
    chat_id: ChatId,
    metadata: Map<String, Value>,
    toggles: BTreeMap<String, bool>,
    persistence: Persistence,
    store: Option<Arc<dyn HistoryStore>>,
    counter: OnceLock<Arc<dyn TokenCounter>>,
    start_time: Timestamp,
    started: Instant,
    state: Mutex<State>,
    /// Serialises saves and rewrites so the store receives updates in exactly the local order.
    /// An async mutex by design: it is held across the store call and guards no data itself.
    save_lock: tokio::sync::Mutex<()>,
    resources: Mutex<Vec<Entry>>,
}

#[derive(Debug)]
struct State {
    history: Vec<ContextUpdate>,
    /// How many leading entries of `history` are in the store.
    persisted: usize,
    trackers: Trackers,
}

impl State {
    /// Appends `update` to the history and the trackers. The history grows by half its length
    /// (at least 4) rather than doubling: most contexts hold a few updates and a process may
    /// hold thousands of contexts, and growth by half keeps appends amortised O(1). Ten
    /// updates take 12 slots instead of 16 (A6: 2,076 -> 1,724 bytes per context).
    fn add(&mut self, update: ContextUpdate) {
        self.trackers.observe(&update);
        if self.history.len() == self.history.capacity() {
            let extra = (self.history.len() / 2).max(4);
            self.history.reserve_exact(extra);
        }
        self.history.push(update);
    }
}

/// Configures and opens a [`TaskContext`].
#[derive(Debug)]
#[must_use]
pub struct TaskContextBuilder {
    pub(crate) init: ContextInit,
    store: Option<Arc<dyn HistoryStore>>,
    persistence: Option<Persistence>,
    counter: Option<Arc<dyn TokenCounter>>,
}

impl TaskContextBuilder {
    /// The store histories are loaded from and saved to.
    pub fn store(mut self, store: Arc<dyn HistoryStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// When updates are saved (default: write-through with a store, off without).
    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = Some(persistence);
        self
    }

    /// The token counter for token budgets and stats (default: the o200k_base BPE counter,
    /// loaded on first use).
    pub fn token_counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.counter = Some(counter);
        self
    }

    /// Opens the context: loads the chat's history and rebuilds the trackers from it.
    pub async fn open(self) -> Result<TaskContext, ContextError> {
        let persistence = self.persistence.unwrap_or(if self.store.is_some() {
            Persistence::WriteThrough
        } else {
            Persistence::Off
        });
        let store = match (persistence, self.store) {
            (Persistence::Off, _) => None,
            (_, Some(store)) => Some(store),
            (mode, None) => {
                return Err(ContextError::InvalidData(format!(
                    "persistence `{mode}` needs a history store"
                )));
            }
        };
        let chat_id = self.init.chat_id.clone().unwrap_or_else(ChatId::generate);
        let history = match &store {
            Some(store) => store
                .load(&chat_id)
                .await
                .map_err(|source| ContextError::Load {
                    chat: chat_id.clone(),
                    source,
                })?,
            None => Vec::new(),
        };
        tracing::debug!(chat_id = %chat_id, entries = history.len(), %persistence, "task context opened");
        Ok(TaskContext::assemble(
            self.init,
            chat_id,
            persistence,
            store,
            self.counter,
            history,
        ))
    }
}

impl TaskContext {
    /// A context with persistence off and an empty history, made without any I/O.
    pub fn detached(init: ContextInit) -> TaskContext {
        let chat_id = init.chat_id.clone().unwrap_or_else(ChatId::generate);
        Self::assemble(init, chat_id, Persistence::Off, None, None, Vec::new())
    }

    fn assemble(
        init: ContextInit,
        chat_id: ChatId,
        persistence: Persistence,
        store: Option<Arc<dyn HistoryStore>>,
        counter: Option<Arc<dyn TokenCounter>>,
        history: Vec<ContextUpdate>,
    ) -> TaskContext {
        let trackers = Trackers::from_history(&history);
        let counter_cell = OnceLock::new();
        if let Some(c) = counter {
            let _ = counter_cell.set(c);
        }
        TaskContext {
            inner: Arc::new(Inner {
                user_id: init.user_id.unwrap_or_default(),
                chat_id,
                metadata: init.metadata,
                toggles: init.metadata_toggles,
                persistence,
                store,
                counter: counter_cell,
                start_time: Timestamp::now(),
                started: Instant::now(),
                state: Mutex::new(State {
                    persisted: history.len(),
                    history,
                    trackers,
                }),
                save_lock: tokio::sync::Mutex::new(()),
                resources: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts configuring a context.
    pub fn builder(init: ContextInit) -> TaskContextBuilder {
        TaskContextBuilder {
            init,
            store: None,
            persistence: None,
            counter: None,
        }
    }

    /// Opens a write-through context on `store`.
    pub async fn open(
        init: ContextInit,
        store: Arc<dyn HistoryStore>,
    ) -> Result<TaskContext, ContextError> {
        Self::builder(init).store(store).open().await
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn resources(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.inner
            .resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The user.
    pub fn user_id(&self) -> &UserId {
        &self.inner.user_id
    }

    /// The chat whose history this is.
    pub fn chat_id(&self) -> &ChatId {
        &self.inner.chat_id
    }

    /// All metadata, including keys toggled off.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.inner.metadata
    }

    /// The metadata toggles.
    pub fn metadata_toggles(&self) -> &BTreeMap<String, bool> {
        &self.inner.toggles
    }

    /// The persistence mode.
    pub fn persistence(&self) -> Persistence {
        self.inner.persistence
    }

    /// When the context was opened.
    pub fn start_time(&self) -> Timestamp {
        self.inner.start_time
    }

    /// How long ago the context was opened.
    pub fn elapsed(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// The token counter (the default BPE counter is loaded on first use).
    pub fn token_counter(&self) -> Arc<dyn TokenCounter> {
        Arc::clone(self.inner.counter.get_or_init(default_token_counter))
    }

    /// A copy of the history.
    pub fn history(&self) -> Vec<ContextUpdate> {
        self.state().history.clone()
    }

    /// Calls `f` with the history, without copying it.
    pub fn with_history<R>(&self, f: impl FnOnce(&[ContextUpdate]) -> R) -> R {
        f(&self.state().history)
    }

    /// How many updates the history holds.
    pub fn history_len(&self) -> usize {
        self.state().history.len()
    }

    /// How many updates are not in the store yet (buffered mode, or after a failed save).
    pub fn pending_updates(&self) -> usize {
        match self.inner.persistence {
            Persistence::Off => 0,
            _ => {
                let state = self.state();
                state.history.len() - state.persisted
            }
        }
    }

    /// The last operation on each tracked file.
    pub fn file_tracker(&self) -> BTreeMap<String, FileEntry> {
        self.state().trackers.files.clone()
    }

    /// Model usages in order.
    pub fn model_tracker(&self) -> Vec<ModelUsage> {
        self.state().trackers.models.clone()
    }

    /// The names of registered resources, in registration order.
    pub fn resource_names(&self) -> Vec<String> {
        self.resources().iter().map(|e| e.name.clone()).collect()
    }

    /// Appends an update stamped now. In write-through mode it is stored before this returns; on
    /// a save error it stays in the context as pending and the next save retries it.
    pub async fn add_context_update(
        &self,
        update_type: UpdateType,
        data: Value,
        metadata: Option<Map<String, Value>>,
    ) -> Result<(), ContextError> {
        // Built whole: `ContextUpdate::new(..).with_metadata(..)` would drop an empty map.
        let update = ContextUpdate {
            timestamp: Timestamp::now(),
            update_type,
            data,
            metadata: metadata.unwrap_or_default(),
        };
        self.push(update).await
    }

    /// Appends a prepared update (its timestamp is kept).
    pub async fn push(&self, update: ContextUpdate) -> Result<(), ContextError> {
        self.record(update);
        self.save_if_write_through().await
    }

    /// Adds to the history and the trackers without saving.
    pub(crate) fn record(&self, update: ContextUpdate) {
        self.state().add(update);
    }

    async fn save_if_write_through(&self) -> Result<(), ContextError> {
        if self.inner.persistence == Persistence::WriteThrough {
            self.save().await
        } else {
            Ok(())
        }
    }

    /// Registers a resource to be closed at scope exit (in reverse registration order) and
    /// records a `resource` update. A resource already registered under `name` is closed first,
    /// never leaked; if that close fails, the new resource is still registered and the failure
    /// is returned as [`AddResourceError::ReplacedCloseFailed`].
    pub async fn add_resource(
        &self,
        name: impl Into<String>,
        resource: impl Resource,
    ) -> Result<(), AddResourceError> {
        let name = name.into();
        let kind = resource.kind().to_owned();
        let replaced = {
            let mut resources = self.resources();
            let replaced = resources
                .iter()
                .position(|e| e.name == name)
                .map(|i| resources.remove(i));
            resources.push(Entry {
                name: name.clone(),
                resource: Box::new(resource),
            });
            replaced
        };
        let close_result = match replaced {
            Some(entry) => close_one(entry).await,
            None => Ok(()),
        };
        let mut metadata = Map::new();
        metadata.insert("type".to_owned(), json!(kind));
        self.add_context_update(UpdateType::RESOURCE, json!({"name": name}), Some(metadata))
            .await
            .map_err(AddResourceError::Save)?;
        close_result.map_err(AddResourceError::ReplacedCloseFailed)
    }

    /// Records a file operation (`source` defaults to `task` in AIECS) and updates the tracker.
    pub async fn track_file_operation(
        &self,
        path: &str,
        operation: &str,
        source: &str,
    ) -> Result<(), ContextError> {
        self.push(file_update(path, operation, source)).await
    }

    /// Records a model usage unless it repeats the last one (same model, provider and mode);
    /// returns whether it was recorded. (AIECS compared timestamps too, so it recorded every
    /// call.)
    pub async fn track_model_usage(
        &self,
        model_id: &str,
        provider_id: &str,
        mode: &str,
    ) -> Result<bool, ContextError> {
        let usage = ModelUsage {
            model_id: model_id.to_owned(),
            provider_id: provider_id.to_owned(),
            mode: mode.to_owned(),
            timestamp: Timestamp::now(),
        };
        {
            let mut state = self.state();
            if state.trackers.repeats_last_model(&usage) {
                return Ok(false);
            }
            state.add(model_update(&usage));
        }
        self.save_if_write_through().await?;
        Ok(true)
    }

    /// Appends every update that is not in the store yet (a no-op with persistence off). Only
    /// the missing tail is sent, so the cost does not depend on the history's length.
    pub async fn save(&self) -> Result<(), ContextError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let _saving = self.inner.save_lock.lock().await;
        let (start, batch) = {
            let state = self.state();
            if state.persisted == state.history.len() {
                return Ok(());
            }
            (state.persisted, state.history[state.persisted..].to_vec())
        };
        let stored = store
            .append(&self.inner.chat_id, &batch)
            .await
            .map_err(|source| ContextError::Save {
                chat: self.inner.chat_id.clone(),
                source,
            })?;
        if stored.start != start as u64 {
            tracing::warn!(
                chat_id = %self.inner.chat_id,
                expected = start,
                stored = stored.start,
                "another writer appended to this chat; its updates are not in this context"
            );
        }
        // Only pushes happen without the save lock, so `start + len` is still the right mark.
        self.state().persisted = start + batch.len();
        Ok(())
    }

    /// Removes duplicate updates (same type and canonical data; the newest stays) and then the
    /// oldest entries beyond `budget`, keeping chronological order. The store's history is
    /// replaced atomically; if that fails, nothing changes and the error is returned.
    pub async fn optimize_context(
        &self,
        budget: HistoryBudget,
    ) -> Result<OptimizeReport, ContextError> {
        let counter;
        let size_budget = match budget {
            HistoryBudget::Chars(limit) => SizeBudget::Chars(limit),
            HistoryBudget::Tokens(limit) => {
                counter = self.token_counter();
                SizeBudget::Tokens {
                    limit,
                    counter: &*counter,
                }
            }
        };
        if self.inner.store.is_none() {
            // Nothing to rewrite in a store: filter in place under the state lock, moving the
            // kept updates instead of copying them. The save lock keeps it apart from a
            // concurrent truncation, which plans and installs under that lock.
            let _saving = self.inner.save_lock.lock().await;
            let mut state = self.state();
            let selection = select_optimized(&state.history, size_budget);
            let report = selection.report();
            if report.optimized() {
                selection.apply(&mut state.history);
                state.persisted = state.history.len();
                state.trackers = Trackers::from_history(&state.history);
            }
            return Ok(report);
        }
        self.rewrite(|history| {
            let selection = select_optimized(history, size_budget);
            let report = selection.report();
            let kept = report
                .optimized()
                .then(|| selection.kept(history).cloned().collect());
            (kept, report)
        })
        .await
    }

    /// Keeps the updates stamped at or before `until` and returns how many were removed; the
    /// store is rewritten only if something was removed.
    pub async fn truncate_context_history(&self, until: Timestamp) -> Result<usize, ContextError> {
        self.rewrite(|history| {
            let mut kept = history.to_vec();
            let removed = truncate_history(&mut kept, until);
            ((removed > 0).then_some(kept), removed)
        })
        .await
    }

    /// Computes a new history with `plan`; if it returns one, stores it with `replace` and only
    /// then installs it locally, so a failed write changes nothing.
    async fn rewrite<R>(
        &self,
        plan: impl FnOnce(&[ContextUpdate]) -> (Option<Vec<ContextUpdate>>, R),
    ) -> Result<R, ContextError> {
        let _saving = self.inner.save_lock.lock().await;
        let (new_history, outcome, planned_len) = {
            let state = self.state();
            let (new_history, outcome) = plan(&state.history);
            (new_history, outcome, state.history.len())
        };
        let Some(new_history) = new_history else {
            return Ok(outcome);
        };
        if let Some(store) = &self.inner.store {
            store
                .replace(&self.inner.chat_id, &new_history)
                .await
                .map_err(|source| ContextError::Save {
                    chat: self.inner.chat_id.clone(),
                    source,
                })?;
        }
        let mut state = self.state();
        // Updates pushed while the store was being rewritten were not part of the plan: keep
        // them after the new history, still pending, for the next save.
        let split_at = planned_len.min(state.history.len());
        let arrived_meanwhile = state.history.split_off(split_at);
        state.persisted = new_history.len();
        state.trackers = Trackers::from_history(&new_history);
        state.history = new_history;
        for update in arrived_meanwhile {
            state.add(update);
        }
        Ok(outcome)
    }

    /// The metadata without keys whose toggle is `false`.
    pub fn get_active_metadata(&self) -> Map<String, Value> {
        active_metadata(&self.inner.metadata, &self.inner.toggles)
    }

    /// The context as AIECS's `to_dict()` shapes it: `user_id`, `chat_id`, active `metadata`,
    /// `context_history`, `file_tracker`, `model_tracker`.
    pub fn to_json(&self) -> Value {
        let state = self.state();
        json!({
            "user_id": self.inner.user_id,
            "chat_id": self.inner.chat_id,
            "metadata": self.get_active_metadata(),
            "context_history": state.history,
            "file_tracker": state.trackers.files,
            "model_tracker": state.trackers.models,
        })
    }

    /// Closes every resource (last registered first) and saves; reports every failure.
    pub async fn close(&self) -> Result<(), CleanupError> {
        let resources = std::mem::take(&mut *self.resources());
        let close_errors = close_all(resources).await;
        let save_error = self.save().await.err();
        CleanupError {
            close_errors,
            save_error,
        }
        .into_result()
    }

    /// Closes every resource now, last registered first, and returns the failures.
    pub async fn close_resources(&self) -> Vec<ResourceCloseError> {
        let resources = std::mem::take(&mut *self.resources());
        close_all(resources).await
    }

    pub(crate) fn store(&self) -> Option<&Arc<dyn HistoryStore>> {
        self.inner.store.as_ref()
    }

    pub(crate) fn persisted_len(&self) -> usize {
        self.state().persisted
    }

    pub(crate) fn resource_count(&self) -> usize {
        self.resources().len()
    }
}

/// Why [`TaskContext::add_resource`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AddResourceError {
    /// The resource is registered, but the one it replaced failed to close.
    #[error("the replaced resource failed to close: {0}")]
    ReplacedCloseFailed(#[source] ResourceCloseError),
    /// The resource is registered, but its `resource` update could not be saved (it is pending).
    #[error(transparent)]
    Save(ContextError),
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("user_id", &self.inner.user_id)
            .field("chat_id", &self.inner.chat_id)
            .field("persistence", &self.inner.persistence)
            .field("entries", &self.history_len())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let resources = std::mem::take(
            self.resources
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let pending: Vec<ContextUpdate> = match &self.store {
            Some(_) => state.history.drain(state.persisted..).collect(),
            None => Vec::new(),
        };
        if resources.is_empty() && pending.is_empty() {
            return;
        }
        let store = self.store.clone();
        let chat = self.chat_id.clone();
        let cleanup = async move {
            let errors = close_all(resources).await;
            if !errors.is_empty() {
                tracing::error!(chat_id = %chat, failures = errors.len(), "resources failed to close after the context was dropped");
            }
            if let (Some(store), false) = (store, pending.is_empty())
                && let Err(error) = store.append(&chat, &pending).await
            {
                tracing::error!(chat_id = %chat, %error, lost = pending.len(), "unsaved updates could not be stored after the context was dropped");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(cleanup);
            }
            Err(_) => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(cleanup),
                Err(error) => {
                    tracing::error!(%error, "no runtime to close resources of a dropped context")
                }
            },
        }
    }
}

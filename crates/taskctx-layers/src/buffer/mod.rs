//! `BufferedRecordStore`: a write buffer over any `RecordStore` (SPEC R4.2) that batches `put`s
//! into `put_many`, flushes by count, age, on demand and on shutdown, and answers reads as if it
//! had flushed.

mod config;
mod error;
mod state;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use taskctx_domain::{TaskId, TaskRecord, TaskStatus};
use taskctx_store::{PutRecord, RecordStats, RecordStore, StoreError, StoreResult, order_children};
use tokio::sync::{Notify, RwLock};
use tokio::task::JoinHandle;

pub use config::{WriteBufferConfig, WriteBufferLayer};
pub use error::{FlushConflict, FlushError, IntoInnerError};
use state::BufferState;

/// How long the age flusher waits before retrying a flush that failed with writes left.
const RETRY_FLOOR: Duration = Duration::from_millis(100);

/// The write buffer's counters, as read by [`BufferedRecordStore::buffer_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BufferStats {
    /// Puts buffered now (not yet durable).
    pub pending: u64,
    /// Flushes that stored at least one put.
    pub flushes: u64,
    /// Puts stored by flushes.
    pub flushed_writes: u64,
    /// Flushes that reported a conflict or stopped with an error.
    pub failed_flushes: u64,
    /// Buffered puts discarded because another writer changed their record.
    pub discarded_writes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    pending: AtomicU64,
    flushes: AtomicU64,
    flushed_writes: AtomicU64,
    failed_flushes: AtomicU64,
    discarded_writes: AtomicU64,
}

/// Why a flush ran, for logs.
#[derive(Debug, Clone, Copy)]
enum Cause {
    Count,
    Age,
    Explicit,
    BeforeWrite,
    Shutdown,
    Drop,
}

/// What the buffer's handle, its age flusher and a drop-time flush share.
struct Shared<S> {
    inner: S,
    config: WriteBufferConfig,
    /// The buffer. Writers (`put`, flushes, and the other writes, which flush first) hold it
    /// exclusively across the inner calls they make; readers share it across theirs. So writes
    /// through the buffer are serialised — two racing puts of one record give exactly one
    /// `Conflict`, as a store's must — and a reader never merges the overlay with an inner
    /// answer taken in the middle of a flush (where a record could count twice in `stats`).
    /// Readers still run in parallel with each other.
    state: RwLock<BufferState>,
    /// Wakes the age flusher when the queue stops being empty.
    wake: Arc<Notify>,
    age_task: AgeTask,
    counters: Counters,
}

/// The age flusher's handle; aborts the task when the buffer goes away.
#[derive(Default)]
struct AgeTask {
    handle: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Set once a missing runtime or a dead task was reported, so it is logged once.
    reported: AtomicBool,
}

impl AgeTask {
    fn take(&self) -> Option<JoinHandle<()>> {
        self.handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Stops the task and waits until it is gone (with any handle on the buffer it held).
    async fn stop(&self) {
        if let Some(handle) = self.take() {
            handle.abort();
            // A cancelled task reports `JoinError::Cancelled`; nothing to do with it.
            let _ = handle.await;
        }
    }
}

impl Drop for AgeTask {
    fn drop(&mut self) {
        if let Some(handle) = self.take() {
            handle.abort();
        }
    }
}

/// A write buffer over the record store `S`.
///
/// | method | what the buffer does |
/// |---|---|
/// | `put` | buffer: checks the precondition against the newest buffered revision of the record, else the store's; queues the record with the next revision and returns it; flushes when `max_pending` puts are queued |
/// | `put_many`, `delete`, `delete_subtree`, `clear` | flush first, then pass through |
/// | `get`, `get_many` | overlay: the newest buffered record where there is one, else the store's |
/// | `children`, `by_status`, `by_layer`, `roots` | overlay: the store's answer with buffered records replacing, removing or joining entries, in the contract's order |
/// | `stats` | overlay: the store's totals minus what the buffered records replace, plus them |
///
/// # Consistency
///
/// Every read returns exactly what the inner store would return if the buffer had been flushed
/// just before: buffered writes are visible at once, to every caller. Revisions too: a put
/// returns the revision the record will have in the store.
///
/// # Durability
///
/// **A buffered put is not durable until a flush that stored it returns `Ok`**: a crash, a
/// `kill -9`, or dropping the buffer outside a tokio runtime loses it. [`flush`](Self::flush)
/// is a durability point; [`shutdown`](Self::shutdown) (or [`into_inner`](Self::into_inner))
/// flushes for a clean close. Dropping the buffer with puts pending starts a best-effort flush
/// on the current runtime and logs a warning. Writes other than `put` flush first, so they
/// are durable on return like the inner store's. After a crash the store holds a prefix of the
/// accepted puts: flushes write them in order.
///
/// # Flushing
///
/// A flush does not coalesce puts of one record: it writes the queue as successive `put_many`
/// batches, each the longest run of queued puts naming no record twice, each put expecting the
/// revision the one before it stores. That keeps every revision a put returned equal to the one
/// stored.
///
/// The buffer assumes it is the only writer of the records it buffers. If another writer
/// changes one in the meantime, the flush gets a `Conflict`: that record's buffered puts are
/// discarded (reads show the store's version again), the rest is written, and the flush
/// reports the records in [`FlushError::conflicts`]. Flushes triggered by count, age, another
/// write or a drop log such reports (error level) and count them in
/// [`BufferStats::discarded_writes`]; a `put` whose own record was discarded returns the
/// `Conflict`. A flush stopped by any other error keeps the unwritten puts buffered and
/// visible, to be retried by the next flush; the `put` that triggered it is taken back and
/// returns the error, so a failed put changes nothing.
pub struct BufferedRecordStore<S: RecordStore> {
    /// Declared first, so it is dropped while `shared` is still alive.
    guard: DropGuard<S>,
    shared: Arc<Shared<S>>,
}

/// Flushes what is left, best effort, when the buffer is dropped without `shutdown`.
struct DropGuard<S: RecordStore> {
    shared: Weak<Shared<S>>,
    armed: bool,
}

impl<S: RecordStore> Drop for DropGuard<S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let pending = shared.counters.pending.load(Ordering::Relaxed);
        if pending == 0 {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::warn!(
                    pending,
                    "write buffer dropped with buffered writes; flushing them in the background \
                     (best effort: call shutdown().await for a durable close)"
                );
                runtime.spawn(async move {
                    let mut state = shared.state.write().await;
                    // Failures are logged by the flush itself; nobody is left to tell.
                    let _ = shared.flush_locked(&mut state, Cause::Drop).await;
                });
            }
            Err(_) => tracing::error!(
                pending,
                "write buffer dropped outside a tokio runtime: its buffered writes are lost \
                 (call shutdown().await before dropping it)"
            ),
        }
    }
}

impl<S: RecordStore> BufferedRecordStore<S> {
    /// Wraps `inner` in a write buffer configured by `config`. Needs no runtime: the age
    /// flusher starts with the first buffered put.
    pub fn new(inner: S, config: WriteBufferConfig) -> Self {
        Self::from_shared(Arc::new(Shared {
            inner,
            config,
            state: RwLock::new(BufferState::default()),
            wake: Arc::new(Notify::new()),
            age_task: AgeTask::default(),
            counters: Counters::default(),
        }))
    }

    fn from_shared(shared: Arc<Shared<S>>) -> Self {
        Self {
            guard: DropGuard {
                shared: Arc::downgrade(&shared),
                armed: true,
            },
            shared,
        }
    }

    /// The wrapped store. It does not hold buffered puts until they are flushed, and writing to
    /// it directly makes the next flush of those records conflict.
    pub fn get_ref(&self) -> &S {
        &self.shared.inner
    }

    /// The configuration this buffer runs with.
    pub fn config(&self) -> &WriteBufferConfig {
        &self.shared.config
    }

    /// How many puts are buffered (not yet durable).
    pub fn pending(&self) -> usize {
        usize::try_from(self.shared.counters.pending.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// The counters.
    pub fn buffer_stats(&self) -> BufferStats {
        let c = &self.shared.counters;
        BufferStats {
            pending: c.pending.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            flushed_writes: c.flushed_writes.load(Ordering::Relaxed),
            failed_flushes: c.failed_flushes.load(Ordering::Relaxed),
            discarded_writes: c.discarded_writes.load(Ordering::Relaxed),
        }
    }

    /// Stores every buffered put and returns how many it stored; when it returns `Ok` they are
    /// durable (as durable as the inner store makes a `put_many`). See [`FlushError`] for what
    /// a failure means.
    pub async fn flush(&self) -> Result<usize, FlushError> {
        let mut state = self.shared.state.write().await;
        self.shared.flush_locked(&mut state, Cause::Explicit).await
    }

    /// Flushes and closes the buffer: the age flusher stops, and later puts pass straight
    /// through to the inner store. If the flush stops with puts still buffered, the buffer stays
    /// open (call again to retry). Calling it again after it closed does nothing.
    pub async fn shutdown(&self) -> Result<usize, FlushError> {
        let mut state = self.shared.state.write().await;
        if state.closed {
            return Ok(0);
        }
        let result = self.shared.flush_locked(&mut state, Cause::Shutdown).await;
        if state.queue.is_empty() {
            state.closed = true;
            drop(state);
            self.shared.age_task.stop().await;
        }
        result
    }

    /// Flushes, closes (see [`shutdown`](Self::shutdown)) and unwraps the store. If the flush
    /// reports anything, the buffer comes back inside the error with the report.
    pub async fn into_inner(self) -> Result<S, IntoInnerError<S>> {
        if let Err(error) = self.shutdown().await {
            return Err(IntoInnerError::new(self, error));
        }
        let Self { mut guard, shared } = self;
        guard.armed = false;
        drop(guard);
        match Arc::try_unwrap(shared) {
            Ok(Shared { inner, .. }) => Ok(inner),
            // Only a background flush can still hold the buffer; it is closed and empty.
            Err(shared) => Err(IntoInnerError::new(
                Self::from_shared(shared),
                FlushError::stopped(
                    StoreError::Backend {
                        detail: "the write buffer is still held by a background flush".into(),
                        retryable: true,
                    },
                    0,
                ),
            )),
        }
    }

    /// Starts the age flusher if there is an age limit and it is not running.
    fn start_age_task(&self) {
        let Some(max_age) = self.shared.config.max_age else {
            return;
        };
        let age_task = &self.shared.age_task;
        let mut slot = age_task
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = slot.as_ref() {
            if handle.is_finished() && !age_task.reported.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    "the write buffer's age flusher stopped (does the tokio runtime have its time \
                     driver enabled?); buffered writes are flushed by count and on demand only"
                );
            }
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                *slot = Some(runtime.spawn(age_flusher(
                    Arc::downgrade(&self.shared),
                    Arc::clone(&self.shared.wake),
                    max_age,
                )));
            }
            Err(_) => {
                if !age_task.reported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "write buffer used outside a tokio runtime: no age-based flushing"
                    );
                }
            }
        }
    }
}

/// Flushes the buffer behind `shared` whenever its oldest put reaches `max_age`. Holds the buffer
/// only while looking at it or flushing, so dropping the buffer ends the task (the buffer also
/// aborts it).
async fn age_flusher<S: RecordStore>(
    shared: Weak<Shared<S>>,
    wake: Arc<Notify>,
    max_age: Duration,
) {
    loop {
        let oldest = {
            let Some(strong) = shared.upgrade() else {
                return;
            };
            let state = strong.state.read().await;
            if state.closed {
                return;
            }
            state.oldest
        };
        // A deadline past what an `Instant` can hold (a huge `max_age`) never comes.
        match oldest.and_then(|since| since.checked_add(max_age)) {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            // `Notify` keeps a wake-up sent before this wait starts, so none is lost.
            None => wake.notified().await,
        }
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let mut state = strong.state.write().await;
        if state.closed {
            return;
        }
        if state.oldest.is_none_or(|since| since.elapsed() < max_age) {
            continue;
        }
        let failed = strong.flush_locked(&mut state, Cause::Age).await.is_err();
        let left = !state.queue.is_empty();
        drop(state);
        drop(strong);
        if failed && left {
            // The store is failing: do not retry in a tight loop.
            tokio::time::sleep(max_age.max(RETRY_FLOOR)).await;
        }
    }
}

impl<S: RecordStore> Shared<S> {
    fn sync_pending(&self, state: &BufferState) {
        self.counters
            .pending
            .store(state.queue.len() as u64, Ordering::Relaxed);
    }

    /// Writes the queue in batches (see [`BufferedRecordStore`], "Flushing"). The caller holds
    /// the buffer exclusively. Cancel-safe: a batch leaves the queue only once stored, and a
    /// batch stored by a cancelled flush is recognised by the next one (see `settle_conflict`).
    async fn flush_locked(
        &self,
        state: &mut BufferState,
        cause: Cause,
    ) -> Result<usize, FlushError> {
        let mut written = 0;
        let mut conflicts = Vec::new();
        let stopped = loop {
            let len = state.next_batch_len();
            if len == 0 {
                break None;
            }
            let batch: Vec<PutRecord> = state
                .queue
                .iter()
                .take(len)
                .map(|r| PutRecord::new(TaskRecord::clone(r), Some(r.revision.saturating_sub(1))))
                .collect();
            match self.inner.put_many(batch).await {
                Ok(revisions) => {
                    let stored: Vec<_> = state.queue.drain(..len).collect();
                    if stored
                        .iter()
                        .map(|r| r.revision)
                        .ne(revisions.iter().copied())
                    {
                        // Impossible for a store that keeps the contract: every put carried
                        // its precondition.
                        tracing::warn!(
                            "inner store returned other revisions than the write buffer \
                             promised: {revisions:?}"
                        );
                    }
                    for record in &stored {
                        state.mark_written(record);
                    }
                    state.queue_changed();
                    written += len;
                }
                Err(error @ StoreError::Conflict { .. }) => {
                    match self.settle_conflict(state, len).await {
                        Ok((landed, found)) if landed > 0 || !found.is_empty() => {
                            written += landed;
                            conflicts.extend(found);
                        }
                        Ok(_) => break Some(error),
                        Err(lookup) => {
                            tracing::warn!(
                                "could not read back the records of a conflicting batch: {lookup}"
                            );
                            break Some(error);
                        }
                    }
                }
                Err(error) => break Some(error),
            }
        };
        self.sync_pending(state);
        let counters = &self.counters;
        if written > 0 {
            counters.flushes.fetch_add(1, Ordering::Relaxed);
            counters
                .flushed_writes
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        if stopped.is_none() && conflicts.is_empty() {
            if written > 0 {
                tracing::debug!(?cause, written, "write buffer flushed");
            }
            return Ok(written);
        }
        let failure = FlushError {
            written,
            conflicts,
            error: stopped,
            pending: state.queue.len(),
        };
        counters.failed_flushes.fetch_add(1, Ordering::Relaxed);
        counters
            .discarded_writes
            .fetch_add(failure.discarded() as u64, Ordering::Relaxed);
        tracing::error!(?cause, "write buffer flush failed: {failure}");
        Err(failure)
    }

    /// After the first `len` queued puts (one per id) were refused with a `Conflict`, finds out
    /// which records changed: one whose store holds exactly the buffered record at its revision
    /// was stored by an earlier, interrupted flush and counts as written; one holding anything
    /// else was changed by another writer, and its puts are discarded. Returns how many counted
    /// as written and the conflicts.
    async fn settle_conflict(
        &self,
        state: &mut BufferState,
        len: usize,
    ) -> StoreResult<(usize, Vec<FlushConflict>)> {
        let batch: Vec<Arc<TaskRecord>> = state.queue.iter().take(len).cloned().collect();
        let ids: Vec<TaskId> = batch.iter().map(|r| r.task_id.clone()).collect();
        let stored = self.inner.get_many(&ids).await?;
        if stored.len() != ids.len() {
            return Err(StoreError::Backend {
                detail: format!(
                    "inner store answered get_many for {} ids with {} items",
                    ids.len(),
                    stored.len()
                ),
                retryable: false,
            });
        }
        let mut landed = Vec::new();
        let mut conflicts = Vec::new();
        for (write, stored) in batch.iter().zip(stored) {
            let expected = write.revision.saturating_sub(1);
            let actual = stored.as_ref().map_or(0, |s| s.revision);
            if actual == expected {
                continue;
            }
            if stored.as_deref() == Some(&**write) {
                landed.push(Arc::clone(write));
            } else {
                conflicts.push(FlushConflict {
                    id: write.task_id.clone(),
                    expected,
                    actual,
                    discarded: 0,
                });
            }
        }
        state.remove_written(&landed);
        for conflict in &mut conflicts {
            conflict.discarded = state.discard(&conflict.id);
        }
        Ok((landed.len(), conflicts))
    }

    /// Flushes before a write that is not a `put`. Fails only if puts stay buffered: then the
    /// write must not run (it would overtake them). Discarded conflicts were logged.
    async fn flush_before_write(&self, state: &mut BufferState) -> StoreResult<()> {
        if state.queue.is_empty() {
            return Ok(());
        }
        match self.flush_locked(state, Cause::BeforeWrite).await {
            Err(failure) if failure.error.is_some() => Err(failure.into()),
            _ => Ok(()),
        }
    }
}

impl<S: RecordStore> fmt::Debug for BufferedRecordStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferedRecordStore")
            .field("inner", &self.shared.inner)
            .field("config", &self.shared.config)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: RecordStore> RecordStore for BufferedRecordStore<S> {
    /// Buffer: checks `expected_revision` against the newest buffered revision of the record,
    /// else the store's, queues the record with the next revision and returns it (the revision
    /// the store will hold); flushes when `max_pending` puts are queued. After `shutdown`,
    /// passes through.
    async fn put(
        &self,
        mut record: TaskRecord,
        expected_revision: Option<u64>,
    ) -> StoreResult<u64> {
        let shared = &self.shared;
        let mut state = shared.state.write().await;
        if state.closed {
            drop(state);
            return shared.inner.put(record, expected_revision).await;
        }
        let id = record.task_id.clone();
        let (current, original) = match state.latest.get(&id) {
            Some(buffered) => (buffered.revision, None),
            None => {
                let stored = shared.inner.get(&id).await?;
                (stored.as_ref().map_or(0, |r| r.revision), Some(stored))
            }
        };
        if let Some(expected) = expected_revision
            && expected != current
        {
            return Err(StoreError::record_conflict(&id, expected, current));
        }
        record.revision = current + 1;
        let revision = record.revision;
        let record = Arc::new(record);
        let was_empty = state.queue.is_empty();
        state.push(Arc::clone(&record), original);
        shared.sync_pending(&state);
        if was_empty {
            self.start_age_task();
            shared.wake.notify_one();
        }
        if state.queue.len() < shared.config.max_pending.max(1) {
            return Ok(revision);
        }
        let Err(failure) = shared.flush_locked(&mut state, Cause::Count).await else {
            return Ok(revision);
        };
        if state.rollback_last(&record) {
            // The flush stopped before this put: take it back, so the failed put changes nothing.
            shared.sync_pending(&state);
            return Err(failure.into());
        }
        if let Some(mine) = failure.conflicts.iter().find(|c| c.id == id) {
            return Err(StoreError::Conflict {
                what: format!(
                    "task record `{id}` (its buffered writes were discarded at flush: another \
                     writer changed it)"
                ),
                expected: mine.expected,
                actual: mine.actual,
            });
        }
        // This put was stored; the conflicts of other records were logged and counted.
        Ok(revision)
    }

    /// Flush first, then pass through (so the batch lands after every earlier put).
    async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>> {
        let mut state = self.shared.state.write().await;
        self.shared.flush_before_write(&mut state).await?;
        self.shared.inner.put_many(batch).await
    }

    /// Overlay: the newest buffered version of the record, else the store's.
    async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>> {
        let state = self.shared.state.read().await;
        if let Some(record) = state.latest.get(id) {
            return Ok(Some(Arc::clone(record)));
        }
        self.shared.inner.get(id).await
    }

    /// Overlay: buffered ids are answered from the buffer, the rest by one inner `get_many`.
    async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
        let state = self.shared.state.read().await;
        if state.latest.is_empty() {
            return self.shared.inner.get_many(ids).await;
        }
        let unbuffered: Vec<TaskId> = ids
            .iter()
            .filter(|id| !state.latest.contains_key(*id))
            .cloned()
            .collect();
        let mut stored = if unbuffered.is_empty() {
            Vec::new()
        } else {
            self.shared.inner.get_many(&unbuffered).await?
        }
        .into_iter();
        if stored.len() != unbuffered.len() {
            return Err(StoreError::Backend {
                detail: format!(
                    "inner store answered get_many for {} ids with {} items",
                    unbuffered.len(),
                    stored.len()
                ),
                retryable: false,
            });
        }
        Ok(ids
            .iter()
            .map(|id| match state.latest.get(id) {
                Some(record) => Some(Arc::clone(record)),
                None => stored.next().flatten(),
            })
            .collect())
    }

    /// Overlay: the store's children with buffered records replacing or removing their stored
    /// versions and buffered children added, in plan order of the parent as buffered or stored.
    async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>> {
        let state = self.shared.state.read().await;
        let mut list = self.shared.inner.children(parent).await?;
        if state.latest.is_empty() || !state.overlay_children(parent, &mut list) {
            return Ok(list);
        }
        let parent_record = match state.latest.get(parent) {
            Some(record) => Some(Arc::clone(record)),
            None => self.shared.inner.get(parent).await?,
        };
        order_children(parent_record.as_deref(), &mut list);
        Ok(list)
    }

    /// Overlay: the store's records with this status, buffered versions applied, by id.
    async fn by_status(&self, status: TaskStatus) -> StoreResult<Vec<Arc<TaskRecord>>> {
        let state = self.shared.state.read().await;
        let stored = self.shared.inner.by_status(status).await?;
        Ok(state.overlay_sorted(stored, |r| r.status == status))
    }

    /// Overlay: the store's records in this layer, buffered versions applied, by id.
    async fn by_layer(&self, layer: u32) -> StoreResult<Vec<Arc<TaskRecord>>> {
        let state = self.shared.state.read().await;
        let stored = self.shared.inner.by_layer(layer).await?;
        Ok(state.overlay_sorted(stored, |r| r.layer == Some(layer)))
    }

    /// Overlay: the store's roots, buffered versions applied, by id.
    async fn roots(&self) -> StoreResult<Vec<Arc<TaskRecord>>> {
        let state = self.shared.state.read().await;
        let stored = self.shared.inner.roots().await?;
        Ok(state.overlay_sorted(stored, TaskRecord::is_root))
    }

    /// Flush first, then pass through.
    async fn delete(&self, id: &TaskId) -> StoreResult<bool> {
        let mut state = self.shared.state.write().await;
        self.shared.flush_before_write(&mut state).await?;
        self.shared.inner.delete(id).await
    }

    /// Flush first, then pass through.
    async fn delete_subtree(&self, id: &TaskId) -> StoreResult<u64> {
        let mut state = self.shared.state.write().await;
        self.shared.flush_before_write(&mut state).await?;
        self.shared.inner.delete_subtree(id).await
    }

    /// Flush first, then pass through (flushing keeps a failed clear from losing the puts).
    async fn clear(&self) -> StoreResult<()> {
        let mut state = self.shared.state.write().await;
        self.shared.flush_before_write(&mut state).await?;
        self.shared.inner.clear().await
    }

    /// Overlay: the store's totals with each buffered record's stored version taken out and the
    /// buffered version counted in. A layer that only replaced records had is checked against the
    /// store (`by_layer`) before it is dropped from the set.
    async fn stats(&self) -> StoreResult<RecordStats> {
        let state = self.shared.state.read().await;
        let mut stats = self.shared.inner.stats().await?;
        if state.latest.is_empty() {
            return Ok(stats);
        }
        for layer in state.overlay_stats(&mut stats) {
            let holders = self.shared.inner.by_layer(layer).await?;
            if holders
                .iter()
                .all(|r| state.latest.contains_key(&r.task_id))
            {
                stats.layers.remove(&layer);
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::error::name_ids;
    use super::*;

    #[test]
    fn conflicts_name_ids_and_convert_to_a_store_conflict() {
        let failure = FlushError {
            written: 3,
            conflicts: vec![FlushConflict {
                id: TaskId::new("x").unwrap(),
                expected: 1,
                actual: 2,
                discarded: 2,
            }],
            error: None,
            pending: 0,
        };
        assert_eq!(
            failure.to_string(),
            "flush stored 3 buffered writes; discarded 2 buffered writes to task records `x` \
             changed by another writer"
        );
        match StoreError::from(failure) {
            StoreError::Conflict {
                what,
                expected: 1,
                actual: 2,
            } => assert!(what.contains("`x`"), "{what}"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        let ids: Vec<TaskId> = (0..12)
            .map(|i| TaskId::new(format!("t{i}")).unwrap())
            .collect();
        assert!(name_ids(ids.iter()).ends_with("`t9`, 2 more"));
    }
}

//! `CachedRecordStore`: a read-through cache over any `RecordStore` (SPEC R4.1), bounded by
//! entries and bytes, with an optional TTL, counters, and read-your-writes for writes through it.

mod config;
mod keys;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use taskctx_domain::{TaskId, TaskRecord, TaskStatus};
use taskctx_store::{PutRecord, RecordStats, RecordStore, StoreError, StoreResult};
use tokio::sync::{Mutex, MutexGuard};

use config::MAX_TTL;
pub use config::{CacheConfig, CacheLayer};
use keys::{CacheKey, Cached, Entry, Epochs, KeyRef};

use crate::size::{Weigher, approx_record_bytes};

/// The cache's counters, as read by [`CachedRecordStore::cache_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from the cache (`get`, each id of `get_many`, `children`).
    pub hits: u64,
    /// Reads that went to the inner store.
    pub misses: u64,
    /// Entries removed because the cache was full or their TTL passed (not invalidations).
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
    /// Approximate bytes held now (see [`approx_record_bytes`]).
    pub approx_bytes: u64,
}

impl CacheStats {
    /// Hits over all cached reads, 0.0 to 1.0 (0.0 before the first read).
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// Counters shared with moka's eviction listener, which outlives no cache but must be `'static`.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    bytes: AtomicU64,
}

/// A read-through cache over the record store `S`.
///
/// | method | what the cache does |
/// |---|---|
/// | `get` | cache on read: answers from the cache, else reads `S` and caches the answer, also `None` |
/// | `get_many` | cache on read, per id: only the ids not cached go to `S`, in one `get_many` |
/// | `children` | cache on read: the whole ordered list, per parent |
/// | `put`, `put_many` | invalidate on write: the record, its children list (its plan may have changed), and the children lists of its old and new parent |
/// | `delete` | invalidate on write: the record, its children list, its parent's children list |
/// | `delete_subtree`, `clear` | invalidate on write: every entry |
/// | `by_status`, `by_layer`, `roots`, `stats` | pass through, uncached |
///
/// # Consistency
///
/// Reads through the cache see every write made through it once that write has returned
/// (read-your-writes), also under concurrent use: a reader racing a writer never caches what
/// it read before the write (write epochs, see the crate docs). Writes made
/// *around* the cache (another process, or code writing to the inner store directly) are seen
/// once the entries they touch expire (`ttl`) or are evicted, or after
/// [`invalidate_all`](Self::invalidate_all).
pub struct CachedRecordStore<S> {
    inner: S,
    config: CacheConfig,
    cache: Cache<CacheKey, Entry>,
    weigher: Weigher,
    counters: Arc<Counters>,
    epochs: Epochs,
    /// Readers insert under the read side; writers bump epochs and invalidate under the write
    /// side, so an epoch check and the insert it guards are one step for writers (see `publish`).
    /// Held for a few moka calls, never across an `.await`.
    gate: RwLock<()>,
    /// One writer lock per epoch stripe: writes of one id are serialised from reading the old
    /// parent to invalidating, so the parent a write invalidates is the one it replaced.
    writers: Box<[Mutex<()>]>,
}

impl<S: RecordStore> CachedRecordStore<S> {
    /// Wraps `inner` in a cache configured by `config`.
    pub fn new(inner: S, config: CacheConfig) -> Self {
        let weigher = Weigher::new(config.max_entries, config.max_bytes);
        let counters = Arc::new(Counters::default());
        let listener = Arc::clone(&counters);
        let mut builder = Cache::builder()
            .max_capacity(weigher.capacity())
            .weigher(|_key: &CacheKey, entry: &Entry| entry.weight)
            .eviction_listener(move |_key, entry: Entry, cause: RemovalCause| {
                // Every removal (eviction, expiry, invalidation, replacement) gives back its
                // bytes; only size and expiry count as evictions.
                let _ = listener
                    .bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                        Some(b.saturating_sub(entry.bytes))
                    });
                if cause.was_evicted() {
                    listener.evictions.fetch_add(1, Ordering::Relaxed);
                }
            });
        if let Some(ttl) = config.ttl {
            builder = builder.time_to_live(ttl.min(MAX_TTL));
        }
        let epochs = Epochs::new();
        let writers = (0..epochs.len()).map(|_| Mutex::new(())).collect();
        Self {
            inner,
            config,
            cache: builder.build(),
            weigher,
            counters,
            epochs,
            gate: RwLock::new(()),
            writers,
        }
    }

    /// The wrapped store. Writing to it directly bypasses invalidation: such writes are seen
    /// through the cache only after the TTL or [`invalidate_all`](Self::invalidate_all).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the store, dropping the cache.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The configuration this cache runs with.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The counters. Runs moka's pending maintenance first, so `entries`, `approx_bytes` and
    /// `evictions` are exact at the moment of the call (costs a little work; not for hot paths).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.run_pending_tasks();
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            entries: self.cache.entry_count(),
            approx_bytes: self.counters.bytes.load(Ordering::Relaxed),
        }
    }

    /// Drops every entry, e.g. after writing around the cache. Reads in flight do not cache what
    /// they read.
    pub fn invalidate_all(&self) {
        let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        self.epochs.bump_all();
        self.cache.invalidate_all();
    }

    fn hit(&self) {
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
    }

    fn miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// The cached answer of `get(id)`, if any; `None` is a miss, `Some(None)` a cached absence.
    fn cached_record(&self, id: &TaskId) -> Option<Option<Arc<TaskRecord>>> {
        match self.cache.get(&KeyRef::record(id))?.value {
            Cached::Record(record) => Some(record),
            Cached::Children(_) => None,
        }
    }

    /// Caches `value` under `key`, read from the inner store after the key's stripe was at
    /// `epoch` — unless a write to that stripe finished meanwhile.
    ///
    /// The race this closes: a reader misses, reads the old record from the inner store, a
    /// writer writes the new one and invalidates, and only then the reader inserts the old
    /// record — which would stay cached, stale, until evicted. Writers therefore do
    /// `inner write → bump the epoch → invalidate`, and readers do
    /// `note the epoch → inner read → insert only if the epoch did not move`. If the writer
    /// bumped before the reader noted the epoch, its inner write came before the reader's inner
    /// read, so the reader read the new value. Otherwise the writer's bump-and-invalidate and
    /// the reader's check-and-insert are ordered by `gate`: either the insert comes first and
    /// the writer's invalidation removes it, or the bump comes first and the reader does not
    /// insert. (Checking after inserting and removing on a change, without the gate, leaves a
    /// moment in which another reader can see the stale entry after the writer has returned.)
    fn publish(&self, key: KeyRef<'_>, value: Cached, epoch: u64) {
        let bytes = entry_bytes(key.id(), &value);
        let Some(weight) = self.weigher.weight(bytes) else {
            return; // caching disabled, or larger than the whole byte budget
        };
        let _gate = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        if self.epochs.load(key.id()) != epoch {
            return;
        }
        // Add before inserting: the listener subtracts when the entry leaves, maybe at once.
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.cache.insert(
            key.to_owned_key(),
            Entry {
                value,
                bytes,
                weight,
            },
        );
    }

    /// Removes the entries of `keys` and moves their epochs on (after the inner write).
    fn invalidate<'a>(&self, keys: impl IntoIterator<Item = KeyRef<'a>>) {
        let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            self.epochs.bump(key.id());
            self.cache.invalidate(&key);
        }
    }

    /// Invalidates what a write of record `id` can change: the record, its own children list
    /// (its plan may have changed; when deleted its children fall back to id order), and the
    /// children lists of the parents it had and has.
    fn invalidate_written(&self, written: &[Written]) {
        self.invalidate(written.iter().flat_map(|w| {
            [
                Some(KeyRef::record(&w.id)),
                Some(KeyRef::children(&w.id)),
                w.old_parent.as_ref().map(KeyRef::children),
                w.new_parent.as_ref().map(KeyRef::children),
            ]
            .into_iter()
            .flatten()
        }));
    }

    /// A guard that invalidates for `written` (`None`: everything) when dropped.
    fn invalidate_on_drop(&self, written: Option<Vec<Written>>) -> InvalidateOnDrop<'_, S> {
        InvalidateOnDrop {
            store: self,
            written,
        }
    }

    /// Locks the writer stripes of `ids`, in stripe order so that batches cannot deadlock.
    async fn lock_writers<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a TaskId>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let stripes: BTreeSet<usize> = ids.into_iter().map(|id| self.epochs.stripe(id)).collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            if let Some(lock) = self.writers.get(stripe) {
                guards.push(lock.lock().await);
            }
        }
        guards
    }

    /// The parents the records `ids` have before a write: from the cache where it holds the
    /// record (current, as writes of these ids are locked out), else from the inner store.
    async fn current_parents(&self, ids: &[&TaskId]) -> StoreResult<Vec<Option<TaskId>>> {
        let mut parents: Vec<Option<Option<TaskId>>> = ids
            .iter()
            .map(|id| {
                self.cached_record(id)
                    .map(|r| r.and_then(|r| r.parent_task_id.clone()))
            })
            .collect();
        let unknown: Vec<TaskId> = ids
            .iter()
            .zip(&parents)
            .filter(|(_, p)| p.is_none())
            .map(|(id, _)| (*id).clone())
            .collect();
        if !unknown.is_empty() {
            let found = self.inner.get_many(&unknown).await?;
            check_len("get_many", unknown.len(), found.len())?;
            let mut found = found.into_iter();
            for parent in parents.iter_mut().filter(|p| p.is_none()) {
                *parent = Some(
                    found
                        .next()
                        .flatten()
                        .and_then(|r| r.parent_task_id.clone()),
                );
            }
        }
        Ok(parents.into_iter().map(Option::flatten).collect())
    }
}

/// One record a write touches, with the parent it had and the one it gets.
struct Written {
    id: TaskId,
    old_parent: Option<TaskId>,
    new_parent: Option<TaskId>,
}

/// Invalidates when dropped: after the write returns, and also when the caller cancels the
/// write (drops its future) while the inner store may already have written. Declared after the
/// writer locks, so it runs before they are released.
struct InvalidateOnDrop<'a, S: RecordStore> {
    store: &'a CachedRecordStore<S>,
    written: Option<Vec<Written>>,
}

impl<S: RecordStore> Drop for InvalidateOnDrop<'_, S> {
    fn drop(&mut self) {
        match &self.written {
            Some(written) => self.store.invalidate_written(written),
            None => self.store.invalidate_all(),
        }
    }
}

/// Approximate bytes of one entry: its key, its slot, and what it holds.
fn entry_bytes(id: &TaskId, value: &Cached) -> u64 {
    let fixed = (size_of::<CacheKey>() + id.as_str().len() + size_of::<Entry>()) as u64;
    let held = match value {
        Cached::Record(None) => 0,
        Cached::Record(Some(record)) => approx_record_bytes(record),
        // Records in a list are often also cached by id and then shared; counting them in full
        // again over-estimates, which keeps the byte bound safe.
        Cached::Children(list) => list
            .iter()
            .map(|r| size_of::<Arc<TaskRecord>>() as u64 + approx_record_bytes(r))
            .sum(),
    };
    fixed + held
}

/// Fails when an inner store answers a batch call with the wrong number of items.
fn check_len(call: &str, asked: usize, got: usize) -> StoreResult<()> {
    if asked == got {
        Ok(())
    } else {
        Err(StoreError::Backend {
            detail: format!("inner store answered {call} for {asked} ids with {got} items"),
            retryable: false,
        })
    }
}

impl<S: fmt::Debug> fmt::Debug for CachedRecordStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedRecordStore")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("hits", &self.counters.hits.load(Ordering::Relaxed))
            .field("misses", &self.counters.misses.load(Ordering::Relaxed))
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: RecordStore> RecordStore for CachedRecordStore<S> {
    /// Invalidate on write: writes through, then drops the record's entry, its children list and
    /// the children lists of its old and new parent.
    async fn put(&self, record: TaskRecord, expected_revision: Option<u64>) -> StoreResult<u64> {
        let id = record.task_id.clone();
        let new_parent = record.parent_task_id.clone();
        let _writers = self.lock_writers([&id]).await;
        let old_parent = self
            .current_parents(&[&id])
            .await?
            .into_iter()
            .next()
            .flatten();
        // Also after a failure: it should have changed nothing, but dropping entries is safe.
        let _invalidate = self.invalidate_on_drop(Some(vec![Written {
            id,
            old_parent,
            new_parent,
        }]));
        self.inner.put(record, expected_revision).await
    }

    /// Invalidate on write: as `put`, for every record of the batch.
    async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>> {
        let written: Vec<(TaskId, Option<TaskId>)> = batch
            .iter()
            .map(|p| (p.record.task_id.clone(), p.record.parent_task_id.clone()))
            .collect();
        let ids: Vec<&TaskId> = written.iter().map(|(id, _)| id).collect();
        let _writers = self.lock_writers(ids.iter().copied()).await;
        let old_parents = self.current_parents(&ids).await?;
        let _invalidate = self.invalidate_on_drop(Some(
            written
                .iter()
                .zip(old_parents)
                .map(|((id, new_parent), old_parent)| Written {
                    id: id.clone(),
                    old_parent,
                    new_parent: new_parent.clone(),
                })
                .collect(),
        ));
        self.inner.put_many(batch).await
    }

    /// Cache on read: the cached record or absence, else the inner store's answer, then cached.
    async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>> {
        if let Some(record) = self.cached_record(id) {
            self.hit();
            return Ok(record);
        }
        self.miss();
        let epoch = self.epochs.load(id);
        let record = self.inner.get(id).await?;
        self.publish(KeyRef::record(id), Cached::Record(record.clone()), epoch);
        Ok(record)
    }

    /// Cache on read, per id: cached ids are answered at once, the others (each once) go to the
    /// inner store in one `get_many` and are cached.
    async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
        let mut answers: Vec<Option<Option<Arc<TaskRecord>>>> =
            ids.iter().map(|id| self.cached_record(id)).collect();
        let mut seen = HashSet::new();
        let mut missing: Vec<TaskId> = Vec::new();
        for (id, answer) in ids.iter().zip(&answers) {
            if answer.is_some() {
                self.hit();
            } else {
                self.miss();
                if seen.insert(id) {
                    missing.push(id.clone());
                }
            }
        }
        if !missing.is_empty() {
            let epochs: Vec<u64> = missing.iter().map(|id| self.epochs.load(id)).collect();
            let found = self.inner.get_many(&missing).await?;
            check_len("get_many", missing.len(), found.len())?;
            let mut by_id: HashMap<&TaskId, Option<Arc<TaskRecord>>> =
                HashMap::with_capacity(missing.len());
            for ((id, record), epoch) in missing.iter().zip(found).zip(epochs) {
                self.publish(KeyRef::record(id), Cached::Record(record.clone()), epoch);
                by_id.insert(id, record);
            }
            for (id, answer) in ids.iter().zip(answers.iter_mut()) {
                if answer.is_none() {
                    *answer = Some(by_id.get(id).cloned().flatten());
                }
            }
        }
        Ok(answers.into_iter().map(Option::flatten).collect())
    }

    /// Cache on read: the cached ordered list, else the inner store's, then cached (also empty).
    async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>> {
        if let Some(entry) = self.cache.get(&KeyRef::children(parent))
            && let Cached::Children(list) = entry.value
        {
            self.hit();
            return Ok(list.to_vec());
        }
        self.miss();
        let epoch = self.epochs.load(parent);
        let list = self.inner.children(parent).await?;
        self.publish(
            KeyRef::children(parent),
            Cached::Children(Arc::from(list.as_slice())),
            epoch,
        );
        Ok(list)
    }

    /// Pass through, uncached (a scan whose answer any write could change).
    async fn by_status(&self, status: TaskStatus) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.inner.by_status(status).await
    }

    /// Pass through, uncached.
    async fn by_layer(&self, layer: u32) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.inner.by_layer(layer).await
    }

    /// Pass through, uncached.
    async fn roots(&self) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.inner.roots().await
    }

    /// Invalidate on write: deletes, then drops the record's entry, its children list (its
    /// children are now ordered by id) and its parent's children list.
    async fn delete(&self, id: &TaskId) -> StoreResult<bool> {
        let _writers = self.lock_writers([id]).await;
        let old_parent = self
            .current_parents(&[id])
            .await?
            .into_iter()
            .next()
            .flatten();
        let _invalidate = self.invalidate_on_drop(Some(vec![Written {
            id: id.clone(),
            old_parent,
            new_parent: None,
        }]));
        self.inner.delete(id).await
    }

    /// Invalidate on write: deletes, then drops every entry (the subtree is not known here).
    async fn delete_subtree(&self, id: &TaskId) -> StoreResult<u64> {
        let _invalidate = self.invalidate_on_drop(None);
        self.inner.delete_subtree(id).await
    }

    /// Invalidate on write: clears the inner store, then every entry.
    async fn clear(&self) -> StoreResult<()> {
        let _invalidate = self.invalidate_on_drop(None);
        self.inner.clear().await
    }

    /// Pass through, uncached.
    async fn stats(&self) -> StoreResult<RecordStats> {
        self.inner.stats().await
    }
}

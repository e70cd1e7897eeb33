//! `MemoryRecordStore`: task records in sharded maps with a parent→children index.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use taskctx_domain::{TaskId, TaskRecord, TaskStatus};
use taskctx_store::{
    PutRecord, RecordStats, RecordStore, StoreError, StoreResult, order_children,
    reject_duplicate_ids,
};

/// Enough shards that two or more reader threads rarely touch the same lock word.
const SHARDS: usize = 32;

type Shard = RwLock<HashMap<TaskId, Arc<TaskRecord>>>;
type ChildIndex = HashMap<TaskId, BTreeMap<TaskId, Arc<TaskRecord>>>;

/// Task records held in memory: the reference implementation of [`RecordStore`].
///
/// Records live in [`SHARDS`] independently locked maps, so concurrent `get`s scale with threads.
/// A parent→children index holds the children's records themselves, so `children` costs
/// O(k log k) for k children whatever the store size. Writers are serialised by one mutex, which
/// makes `put_many` all-or-nothing: every precondition is checked before anything changes.
/// Readers running during a batch may see part of it applied (no snapshot isolation).
/// Cloning the store gives another handle to the same records.
#[derive(Debug, Clone)]
pub struct MemoryRecordStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Shard]>,
    children: RwLock<ChildIndex>,
    writer: Mutex<()>,
}

impl Default for MemoryRecordStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRecordStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
                children: RwLock::default(),
                writer: Mutex::new(()),
            }),
        }
    }
}

impl Inner {
    fn shard(&self, id: &TaskId) -> &Shard {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        let index = (hasher.finish() as usize) % self.shards.len();
        &self.shards[index]
    }

    fn get(&self, id: &TaskId) -> Option<Arc<TaskRecord>> {
        let shard = self
            .shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        shard.get(id).cloned()
    }

    fn scan(&self, keep: impl Fn(&TaskRecord) -> bool) -> Vec<Arc<TaskRecord>> {
        let mut found: Vec<Arc<TaskRecord>> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
                shard
                    .values()
                    .filter(|r| keep(r))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        found.sort_by(|a, b| a.task_id.as_str().cmp(b.task_id.as_str()));
        found
    }

    /// Stores `record` (already revisioned) and keeps the children index in step. Callers hold
    /// the writer lock.
    fn install(&self, record: Arc<TaskRecord>) {
        let previous = {
            let mut shard = self
                .shard(&record.task_id)
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            shard.insert(record.task_id.clone(), Arc::clone(&record))
        };
        self.index(previous.as_deref(), record);
    }

    /// Moves `record`'s children-index entry from `previous`'s parent to its own. Callers hold
    /// the writer lock.
    fn index(&self, previous: Option<&TaskRecord>, record: Arc<TaskRecord>) {
        let mut children = self
            .children
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(old_parent) = previous.and_then(|p| p.parent_task_id.as_ref())
            && record.parent_task_id.as_ref() != Some(old_parent)
        {
            remove_child(&mut children, old_parent, &record.task_id);
        }
        if let Some(parent) = &record.parent_task_id {
            let id = record.task_id.clone();
            // The parent's id is copied only for its first child.
            match children.get_mut(parent) {
                Some(siblings) => {
                    siblings.insert(id, record);
                }
                None => {
                    children.insert(parent.clone(), BTreeMap::from([(id, record)]));
                }
            }
        }
    }

    /// Removes one record and its index entry. Callers hold the writer lock.
    fn remove(&self, id: &TaskId) -> Option<Arc<TaskRecord>> {
        let removed = {
            let mut shard = self
                .shard(id)
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            shard.remove(id)
        };
        if let Some(parent) = removed.as_ref().and_then(|r| r.parent_task_id.as_ref()) {
            let mut children = self
                .children
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            remove_child(&mut children, parent, id);
        }
        removed
    }
}

fn remove_child(children: &mut ChildIndex, parent: &TaskId, child: &TaskId) {
    if let Some(siblings) = children.get_mut(parent) {
        siblings.remove(child);
        if siblings.is_empty() {
            children.remove(parent);
        }
    }
}

#[async_trait]
impl RecordStore for MemoryRecordStore {
    async fn put(
        &self,
        mut record: TaskRecord,
        expected_revision: Option<u64>,
    ) -> StoreResult<u64> {
        let _writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // One write lock of the record's shard for the revision check and the insert.
        let mut shard = self
            .inner
            .shard(&record.task_id)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let actual = shard.get(&record.task_id).map_or(0, |r| r.revision);
        if let Some(expected) = expected_revision
            && expected != actual
        {
            return Err(StoreError::record_conflict(
                &record.task_id,
                expected,
                actual,
            ));
        }
        record.revision = actual + 1;
        let revision = record.revision;
        let record = Arc::new(record);
        let previous = shard.insert(record.task_id.clone(), Arc::clone(&record));
        drop(shard);
        self.inner.index(previous.as_deref(), record);
        Ok(revision)
    }

    async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>> {
        let _writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        reject_duplicate_ids(&batch)?;
        let mut revisions = Vec::with_capacity(batch.len());
        for put in &batch {
            let id = &put.record.task_id;
            let actual = self.inner.get(id).map_or(0, |r| r.revision);
            if let Some(expected) = put.expected_revision
                && expected != actual
            {
                return Err(StoreError::record_conflict(id, expected, actual));
            }
            revisions.push(actual + 1);
        }
        for (put, revision) in batch.into_iter().zip(&revisions) {
            let mut record = put.record;
            record.revision = *revision;
            self.inner.install(Arc::new(record));
        }
        Ok(revisions)
    }

    async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>> {
        Ok(self.inner.get(id))
    }

    async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
        Ok(ids.iter().map(|id| self.inner.get(id)).collect())
    }

    async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>> {
        let mut children: Vec<Arc<TaskRecord>> = {
            let index = self
                .inner
                .children
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            index
                .get(parent)
                .map(|c| c.values().cloned().collect())
                .unwrap_or_default()
        };
        let parent_record = self.inner.get(parent);
        order_children(parent_record.as_deref(), &mut children);
        Ok(children)
    }

    async fn by_status(&self, status: TaskStatus) -> StoreResult<Vec<Arc<TaskRecord>>> {
        Ok(self.inner.scan(|r| r.status == status))
    }

    async fn by_layer(&self, layer: u32) -> StoreResult<Vec<Arc<TaskRecord>>> {
        Ok(self.inner.scan(|r| r.layer == Some(layer)))
    }

    async fn roots(&self) -> StoreResult<Vec<Arc<TaskRecord>>> {
        Ok(self.inner.scan(TaskRecord::is_root))
    }

    async fn delete(&self, id: &TaskId) -> StoreResult<bool> {
        let _writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(self.inner.remove(id).is_some())
    }

    async fn delete_subtree(&self, id: &TaskId) -> StoreResult<u64> {
        let _writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Collect first (cycle-safe through `visited`), then remove.
        let mut visited = HashSet::new();
        let mut pending = vec![id.clone()];
        {
            let index = self
                .inner
                .children
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            while let Some(next) = pending.pop() {
                if let Some(children) = index.get(&next) {
                    pending.extend(children.keys().filter(|c| !visited.contains(*c)).cloned());
                }
                visited.insert(next);
            }
        }
        let removed = visited
            .iter()
            .filter(|id| self.inner.remove(id).is_some())
            .count();
        Ok(removed as u64)
    }

    async fn clear(&self) -> StoreResult<()> {
        let _writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for shard in &self.inner.shards {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        self.inner
            .children
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    async fn stats(&self) -> StoreResult<RecordStats> {
        let mut stats = RecordStats::default();
        for shard in &self.inner.shards {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            shard.values().for_each(|r| stats.add(r));
        }
        Ok(stats)
    }
}

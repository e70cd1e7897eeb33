//! The `RecordStore` port: task records of hierarchical plans, with revisions and a children index.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use taskctx_domain::{TaskId, TaskRecord, TaskStatus};

use crate::error::{StoreError, StoreResult};

/// One write of a batch: the record and the revision the writer expects the store to hold.
#[derive(Debug, Clone, PartialEq)]
pub struct PutRecord {
    /// The record to store; its `revision` field is ignored and replaced.
    pub record: TaskRecord,
    /// `None`: write whatever is there. `Some(0)`: the record must not exist yet.
    /// `Some(r)`: the store must hold revision `r`.
    pub expected_revision: Option<u64>,
}

impl PutRecord {
    /// A write with the given precondition.
    pub fn new(record: TaskRecord, expected_revision: Option<u64>) -> Self {
        Self {
            record,
            expected_revision,
        }
    }

    /// An unconditional write (import, upsert).
    pub fn upsert(record: TaskRecord) -> Self {
        Self::new(record, None)
    }
}

/// Totals over a record store.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecordStats {
    /// Records in the store.
    pub total: u64,
    /// Records per status (statuses with no records are absent).
    pub per_status: BTreeMap<TaskStatus, u64>,
    /// The distinct layers of records that have one.
    pub layers: BTreeSet<u32>,
}

impl RecordStats {
    /// Counts `record` into the totals (adapters that scan use this so all agree).
    pub fn add(&mut self, record: &TaskRecord) {
        self.total += 1;
        *self.per_status.entry(record.status).or_insert(0) += 1;
        if let Some(layer) = record.layer {
            self.layers.insert(layer);
        }
    }
}

/// Stores task records.
///
/// Reads return `Arc<TaskRecord>`: records are immutable once stored, so sharing them with caches
/// and context builders costs a reference count, not a deep copy. To change a record, clone it
/// (`Arc::unwrap_or_clone`), edit, and `put` it with the revision you read.
///
/// # Contract
///
/// Every adapter and decorator keeps these promises; the conformance suite in `taskctx-testkit`
/// checks them.
///
/// - **Revisions**: the first `put` of a record gives revision 1 and each later `put` adds 1; the
///   returned and later read record carries it. `put` with `Some(r)` fails with
///   [`StoreError::Conflict`](crate::StoreError::Conflict) unless the store holds revision `r`
///   (`Some(0)`: unless the record is absent), so two writers never silently overwrite each other.
/// - **Batches**: `put_many` checks every precondition before writing anything. Adapters that
///   report the `atomic_batch` capability write all or nothing, also across a crash; others may
///   leave a prefix of the batch written after an I/O failure (never after a conflict). Two puts
///   of one id in a batch are [`StoreError::InvalidInput`](crate::StoreError::InvalidInput).
/// - **Children** are the records whose `parent_task_id` is the parent, ordered by their position
///   in the parent record's `child_task_ids` (plan order); children the plan does not list follow,
///   in byte order of their ids. The cost does not depend on the store size (indexed).
/// - **Other lists** (`by_status`, `by_layer`, `roots`) are in byte order of task ids.
/// - **Deletion**: `delete` removes one record, not its children (they stay, as orphans);
///   `delete_subtree` removes a record and all its descendants, and tolerates cycles.
/// - Read-your-writes, durability, atomicity of each single write, corruption and multi-process
///   rules are those of [`HistoryStore`](crate::HistoryStore).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RecordStore: Send + Sync + Debug + 'static {
    /// Stores `record` if the precondition holds and returns its new revision.
    async fn put(&self, record: TaskRecord, expected_revision: Option<u64>) -> StoreResult<u64>;

    /// Stores a batch (see the contract for atomicity) and returns the new revisions in order.
    async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>>;

    /// The record, if it exists.
    async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>>;

    /// The records, in the order of `ids` (`None` where absent).
    async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>>;

    /// The children of `parent` in plan order.
    async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>>;

    /// Records with this status, by id.
    async fn by_status(&self, status: TaskStatus) -> StoreResult<Vec<Arc<TaskRecord>>>;

    /// Records in this layer, by id.
    async fn by_layer(&self, layer: u32) -> StoreResult<Vec<Arc<TaskRecord>>>;

    /// Records without a parent, by id.
    async fn roots(&self) -> StoreResult<Vec<Arc<TaskRecord>>>;

    /// Deletes one record; returns whether it existed.
    async fn delete(&self, id: &TaskId) -> StoreResult<bool>;

    /// Deletes a record and all its descendants; returns how many records were removed.
    async fn delete_subtree(&self, id: &TaskId) -> StoreResult<u64>;

    /// Deletes every record.
    async fn clear(&self) -> StoreResult<()>;

    /// Totals per status and the layers in use.
    async fn stats(&self) -> StoreResult<RecordStats>;
}

macro_rules! forward_record_store {
    ($wrapper:ty) => {
        #[async_trait]
        impl<T: RecordStore + ?Sized> RecordStore for $wrapper {
            async fn put(
                &self,
                record: TaskRecord,
                expected_revision: Option<u64>,
            ) -> StoreResult<u64> {
                (**self).put(record, expected_revision).await
            }
            async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>> {
                (**self).put_many(batch).await
            }
            async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>> {
                (**self).get(id).await
            }
            async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
                (**self).get_many(ids).await
            }
            async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>> {
                (**self).children(parent).await
            }
            async fn by_status(&self, status: TaskStatus) -> StoreResult<Vec<Arc<TaskRecord>>> {
                (**self).by_status(status).await
            }
            async fn by_layer(&self, layer: u32) -> StoreResult<Vec<Arc<TaskRecord>>> {
                (**self).by_layer(layer).await
            }
            async fn roots(&self) -> StoreResult<Vec<Arc<TaskRecord>>> {
                (**self).roots().await
            }
            async fn delete(&self, id: &TaskId) -> StoreResult<bool> {
                (**self).delete(id).await
            }
            async fn delete_subtree(&self, id: &TaskId) -> StoreResult<u64> {
                (**self).delete_subtree(id).await
            }
            async fn clear(&self) -> StoreResult<()> {
                (**self).clear().await
            }
            async fn stats(&self) -> StoreResult<RecordStats> {
                (**self).stats().await
            }
        }
    };
}

forward_record_store!(Arc<T>);
forward_record_store!(Box<T>);

/// Rejects a batch that names one task twice, as the contract requires before any precondition is
/// looked at (each store calls this first, so all of them refuse alike).
pub fn reject_duplicate_ids(batch: &[PutRecord]) -> StoreResult<()> {
    let mut seen = HashSet::with_capacity(batch.len());
    match batch.iter().find(|put| !seen.insert(&put.record.task_id)) {
        Some(put) => Err(StoreError::InvalidInput(format!(
            "task record `{}` appears twice in one batch",
            put.record.task_id
        ))),
        None => Ok(()),
    }
}

/// Orders `children` of `parent` as the contract says: plan order first, then unlisted ones by id.
/// Adapters call this on the records their index returns, so every adapter orders alike.
/// O(k log k) for k children.
pub fn order_children(parent: Option<&TaskRecord>, children: &mut [Arc<TaskRecord>]) {
    // First occurrence wins if a plan lists an id twice: insert in reverse so it overwrites.
    let positions: HashMap<&str, usize> = parent
        .map(|p| {
            p.child_task_ids
                .iter()
                .enumerate()
                .rev()
                .map(|(i, id)| (id.as_str(), i))
                .collect()
        })
        .unwrap_or_default();
    let position = |child: &TaskRecord| {
        positions
            .get(child.task_id.as_str())
            .copied()
            .unwrap_or(usize::MAX)
    };
    children.sort_by(|a, b| {
        position(a)
            .cmp(&position(b))
            .then_with(|| a.task_id.as_str().cmp(b.task_id.as_str()))
    });
}

//! `SledRecordStore`: the `RecordStore` port over the `records` tree and the `children` index.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use sled::transaction::{Transactional, TransactionalTree};
use taskctx_domain::{TaskId, TaskRecord, TaskStatus};
use taskctx_store::{
    PutRecord, RecordStats, RecordStore, StoreError, StoreResult, order_children,
    reject_duplicate_ids,
};

use crate::codec::{CHILDREN_TREE, decode_record, encode_record, record_location};
use crate::error::{TxResult, abort, from_sled, from_transaction};
use crate::keys::{child_key, children_prefix};
use crate::store::{Inner, blocking, read};

/// The record port of a [`SledStore`](crate::SledStore).
///
/// Records live in the `records` tree under their raw id, as JSON (revision included). The
/// `children` tree indexes them by parent: one empty value under `encode(parent) ++ child id`
/// per record that has a parent, changed in the same transaction as the record, so `children`
/// reads one key range whatever the store size. Every write is durable before it returns (group
/// commit); `put_many` is one transaction, all or nothing. Cloning gives another handle to the
/// same store.
#[derive(Debug, Clone)]
pub struct SledRecordStore {
    inner: Arc<Inner>,
}

impl SledRecordStore {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

/// Reads a record inside a transaction; a corrupt one aborts it (it is never overwritten).
fn record_in(records: &TransactionalTree, id: &str) -> TxResult<Option<TaskRecord>> {
    match records.get(id.as_bytes())? {
        None => Ok(None),
        Some(bytes) => match decode_record(id.as_bytes(), &bytes) {
            Ok(record) => Ok(Some(record)),
            Err(error) => abort(error),
        },
    }
}

/// Reads a record outside a transaction.
fn record(inner: &Inner, id: &str) -> StoreResult<Option<TaskRecord>> {
    inner
        .records
        .get(id.as_bytes())
        .map_err(|e| from_sled(&format!("reading {}", record_location(id)), e))?
        .map(|bytes| decode_record(id.as_bytes(), &bytes))
        .transpose()
}

/// Writes one record of a batch inside the transaction: checks its precondition, gives it the
/// next revision and moves its children-index entry if its parent changed.
fn put_in(
    records: &TransactionalTree,
    children: &TransactionalTree,
    put: &PutRecord,
) -> TxResult<u64> {
    let id = &put.record.task_id;
    let old = record_in(records, id.as_str())?;
    let actual = old.as_ref().map_or(0, |r| r.revision);
    if let Some(expected) = put.expected_revision
        && expected != actual
    {
        return abort(StoreError::record_conflict(id, expected, actual));
    }
    let Some(revision) = actual.checked_add(1) else {
        return abort(StoreError::InvalidInput(format!(
            "task record `{id}` has reached the largest revision"
        )));
    };
    // The closure may run again if sled retries the transaction, so the caller's record is only
    // borrowed and copied here.
    let mut record = put.record.clone();
    record.revision = revision;
    let bytes = match encode_record(&record) {
        Ok(bytes) => bytes,
        Err(error) => return abort(error),
    };
    records.insert(id.as_str().as_bytes(), bytes)?;
    let old_parent = old.as_ref().and_then(|r| r.parent_task_id.as_ref());
    let new_parent = record.parent_task_id.as_ref();
    if old_parent != new_parent {
        if let Some(parent) = old_parent {
            children.remove(child_key(parent.as_str(), id.as_str()))?;
        }
        if let Some(parent) = new_parent {
            children.insert(child_key(parent.as_str(), id.as_str()), &[][..])?;
        }
    }
    Ok(revision)
}

/// Removes one record and its children-index entry inside the transaction; whether it existed.
fn remove_in(
    records: &TransactionalTree,
    children: &TransactionalTree,
    id: &str,
) -> TxResult<bool> {
    let Some(old) = record_in(records, id)? else {
        return Ok(false);
    };
    records.remove(id.as_bytes())?;
    if let Some(parent) = &old.parent_task_id {
        children.remove(child_key(parent.as_str(), id))?;
    }
    Ok(true)
}

/// The ids the children index lists under `parent`, in byte order.
fn indexed_children(inner: &Inner, parent: &str) -> StoreResult<Vec<String>> {
    let prefix = children_prefix(parent);
    let mut ids = Vec::new();
    for item in inner.children.scan_prefix(&prefix) {
        let (key, _) = item.map_err(|e| {
            from_sled(
                &format!("reading the children of task record `{parent}`"),
                e,
            )
        })?;
        let child = String::from_utf8(key[prefix.len()..].to_vec()).map_err(|_| {
            StoreError::corrupt(
                format!(
                    "{CHILDREN_TREE}/{parent:?}/{:?}",
                    String::from_utf8_lossy(&key[prefix.len()..])
                ),
                "the child id is not UTF-8",
            )
        })?;
        ids.push(child);
    }
    Ok(ids)
}

/// The records listed under `parent` whose record still names it as parent. The check skips an
/// entry read just before a concurrent write moved or deleted its child (the index and the
/// record change together, but a scan is not one atomic read).
fn children_of(inner: &Inner, parent: &str) -> StoreResult<Vec<TaskRecord>> {
    let mut found = Vec::new();
    for child in indexed_children(inner, parent)? {
        if let Some(record) = record(inner, &child)?
            && record.parent_task_id.as_ref().map(TaskId::as_str) == Some(parent)
        {
            found.push(record);
        }
    }
    Ok(found)
}

/// Every record (in byte order of ids) that `keep` accepts.
fn scan(inner: &Inner, keep: impl Fn(&TaskRecord) -> bool) -> StoreResult<Vec<Arc<TaskRecord>>> {
    let mut found = Vec::new();
    for item in inner.records.iter() {
        let (key, value) = item.map_err(|e| from_sled("scanning task records", e))?;
        let record = decode_record(&key, &value)?;
        if keep(&record) {
            found.push(Arc::new(record));
        }
    }
    Ok(found)
}

/// Stores a batch in one transaction and makes it durable.
fn put_batch(inner: &Inner, batch: &[PutRecord]) -> StoreResult<Vec<u64>> {
    let revisions = {
        let _writing = inner.write_records();
        (&inner.records, &inner.children)
            .transaction(|(records, children)| {
                batch
                    .iter()
                    .map(|put| put_in(records, children, put))
                    .collect::<TxResult<Vec<u64>>>()
            })
            .map_err(|e| {
                let what = match batch {
                    [one] => format!("putting task record `{}`", one.record.task_id),
                    _ => format!("putting a batch of {} task records", batch.len()),
                };
                from_transaction(&what, e)
            })?
    };
    inner.make_durable()?;
    Ok(revisions)
}

#[async_trait]
impl RecordStore for SledRecordStore {
    async fn put(&self, record: TaskRecord, expected_revision: Option<u64>) -> StoreResult<u64> {
        let batch = [PutRecord::new(record, expected_revision)];
        let revisions = blocking(&self.inner, "putting a task record", move |inner| {
            put_batch(inner, &batch)
        })
        .await?;
        revisions
            .first()
            .copied()
            .ok_or_else(|| StoreError::Backend {
                detail: "a put returned no revision".to_owned(),
                retryable: false,
            })
    }

    async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>> {
        reject_duplicate_ids(&batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        blocking(&self.inner, "putting task records", move |inner| {
            put_batch(inner, &batch)
        })
        .await
    }

    async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>> {
        let id = id.as_str().to_owned();
        read(&self.inner, "reading a task record", move |inner| {
            Ok(record(inner, &id)?.map(Arc::new))
        })
        .await
    }

    async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
        let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        read(&self.inner, "reading task records", move |inner| {
            ids.iter()
                .map(|id| Ok(record(inner, id)?.map(Arc::new)))
                .collect()
        })
        .await
    }

    async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>> {
        let parent = parent.as_str().to_owned();
        read(&self.inner, "reading children", move |inner| {
            let mut children: Vec<Arc<TaskRecord>> = children_of(inner, &parent)?
                .into_iter()
                .map(Arc::new)
                .collect();
            let parent_record = record(inner, &parent)?;
            order_children(parent_record.as_ref(), &mut children);
            Ok(children)
        })
        .await
    }

    async fn by_status(&self, status: TaskStatus) -> StoreResult<Vec<Arc<TaskRecord>>> {
        blocking(&self.inner, "scanning task records", move |inner| {
            scan(inner, |r| r.status == status)
        })
        .await
    }

    async fn by_layer(&self, layer: u32) -> StoreResult<Vec<Arc<TaskRecord>>> {
        blocking(&self.inner, "scanning task records", move |inner| {
            scan(inner, |r| r.layer == Some(layer))
        })
        .await
    }

    async fn roots(&self) -> StoreResult<Vec<Arc<TaskRecord>>> {
        blocking(&self.inner, "scanning task records", |inner| {
            scan(inner, TaskRecord::is_root)
        })
        .await
    }

    async fn delete(&self, id: &TaskId) -> StoreResult<bool> {
        let id = id.as_str().to_owned();
        blocking(&self.inner, "deleting a task record", move |inner| {
            let existed = {
                let _writing = inner.write_records();
                (&inner.records, &inner.children)
                    .transaction(|(records, children)| remove_in(records, children, &id))
                    .map_err(|e| from_transaction(&format!("deleting task record `{id}`"), e))?
            };
            // Also when nothing existed: the answer may rest on another writer's delete that is
            // not durable yet.
            inner.make_durable()?;
            Ok(existed)
        })
        .await
    }

    async fn delete_subtree(&self, id: &TaskId) -> StoreResult<u64> {
        let root = id.as_str().to_owned();
        blocking(&self.inner, "deleting a subtree", move |inner| {
            let removed = {
                // No record write runs between walking the index and deleting what it found.
                let _restructuring = inner.restructure_records();
                let mut seen: HashSet<String> = HashSet::from([root.clone()]);
                let mut doomed = Vec::new();
                let mut pending = vec![root.clone()];
                while let Some(next) = pending.pop() {
                    for child in children_of(inner, &next)? {
                        let child = child.task_id.into_string();
                        // `seen` makes cycles (a is b's parent and b is a's) terminate.
                        if seen.insert(child.clone()) {
                            pending.push(child);
                        }
                    }
                    doomed.push(next);
                }
                (&inner.records, &inner.children)
                    .transaction(|(records, children)| {
                        let mut removed = 0u64;
                        for id in &doomed {
                            if remove_in(records, children, id)? {
                                removed += 1;
                            }
                        }
                        Ok(removed)
                    })
                    .map_err(|e| {
                        from_transaction(&format!("deleting the subtree of `{root}`"), e)
                    })?
            };
            inner.make_durable()?;
            Ok(removed)
        })
        .await
    }

    async fn clear(&self) -> StoreResult<()> {
        blocking(&self.inner, "clearing task records", |inner| {
            {
                let _restructuring = inner.restructure_records();
                let keys = |tree: &sled::Tree| -> StoreResult<Vec<sled::IVec>> {
                    tree.iter()
                        .keys()
                        .collect::<sled::Result<Vec<_>>>()
                        .map_err(|e| from_sled("clearing task records", e))
                };
                let record_keys = keys(&inner.records)?;
                let child_keys = keys(&inner.children)?;
                // One transaction: a crash leaves every record or none (sled's own
                // `Tree::clear` removes key by key and is not atomic).
                (&inner.records, &inner.children)
                    .transaction(|(records, children)| {
                        for key in &record_keys {
                            records.remove(key.clone())?;
                        }
                        for key in &child_keys {
                            children.remove(key.clone())?;
                        }
                        Ok(())
                    })
                    .map_err(|e| from_transaction("clearing task records", e))?;
            }
            inner.make_durable()
        })
        .await
    }

    async fn stats(&self) -> StoreResult<RecordStats> {
        blocking(&self.inner, "counting task records", |inner| {
            let mut stats = RecordStats::default();
            for item in inner.records.iter() {
                let (key, value) = item.map_err(|e| from_sled("counting task records", e))?;
                stats.add(&decode_record(&key, &value)?);
            }
            Ok(stats)
        })
        .await
    }
}

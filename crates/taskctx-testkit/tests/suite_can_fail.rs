//! The suite catches broken stores: each deliberately broken wrapper around the memory store must
//! fail the check aimed at its breakage (and the property checks), or the suite proves nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use async_trait::async_trait;
use taskctx_domain::{ChatId, ContextUpdate, TaskId, TaskRecord, TaskStatus};
use taskctx_store::{
    ChatSummary, HistoryStats, HistoryStore, PutRecord, RecordStats, RecordStore, StoreResult,
};
use taskctx_store_memory::{MemoryHistoryStore, MemoryRecordStore};
use taskctx_testkit::{Capabilities, Harness, Stores, checks, props, run_check};

/// How a wrapper misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Breakage {
    None,
    /// `load` forgets the newest update.
    LoadDropsLast,
    /// `append` is a read-modify-write through `replace`: concurrent appends lose updates.
    RacyAppend,
    /// `put` ignores the expected revision: writers overwrite each other.
    IgnoresRevision,
    /// `children` ignores plan order.
    ChildrenById,
    /// `delete` on histories claims success but keeps the data.
    DeleteIsNoOp,
}

#[derive(Debug)]
struct Broken {
    how: Breakage,
    history: MemoryHistoryStore,
    records: MemoryRecordStore,
}

#[async_trait]
impl HistoryStore for Broken {
    async fn append(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<Range<u64>> {
        if self.how == Breakage::RacyAppend && !updates.is_empty() {
            let mut all = self.history.load(chat).await?;
            tokio::task::yield_now().await;
            let start = all.len() as u64;
            all.extend_from_slice(updates);
            self.history.replace(chat, &all).await?;
            return Ok(start..all.len() as u64);
        }
        self.history.append(chat, updates).await
    }
    async fn load(&self, chat: &ChatId) -> StoreResult<Vec<ContextUpdate>> {
        let mut all = self.history.load(chat).await?;
        if self.how == Breakage::LoadDropsLast {
            all.pop();
        }
        Ok(all)
    }
    async fn load_since(&self, chat: &ChatId, from: u64) -> StoreResult<Vec<ContextUpdate>> {
        self.history.load_since(chat, from).await
    }
    async fn replace(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<()> {
        self.history.replace(chat, updates).await
    }
    async fn list(&self) -> StoreResult<Vec<ChatSummary>> {
        self.history.list().await
    }
    async fn delete(&self, chat: &ChatId) -> StoreResult<bool> {
        if self.how == Breakage::DeleteIsNoOp {
            return Ok(!self.history.load(chat).await?.is_empty());
        }
        self.history.delete(chat).await
    }
    async fn stats(&self) -> StoreResult<HistoryStats> {
        self.history.stats().await
    }
}

#[async_trait]
impl RecordStore for Broken {
    async fn put(&self, record: TaskRecord, expected: Option<u64>) -> StoreResult<u64> {
        let expected = if self.how == Breakage::IgnoresRevision {
            None
        } else {
            expected
        };
        self.records.put(record, expected).await
    }
    async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>> {
        self.records.put_many(batch).await
    }
    async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>> {
        self.records.get(id).await
    }
    async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
        self.records.get_many(ids).await
    }
    async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>> {
        let mut children = self.records.children(parent).await?;
        if self.how == Breakage::ChildrenById {
            children.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        }
        Ok(children)
    }
    async fn by_status(&self, status: TaskStatus) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.records.by_status(status).await
    }
    async fn by_layer(&self, layer: u32) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.records.by_layer(layer).await
    }
    async fn roots(&self) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.records.roots().await
    }
    async fn delete(&self, id: &TaskId) -> StoreResult<bool> {
        self.records.delete(id).await
    }
    async fn delete_subtree(&self, id: &TaskId) -> StoreResult<u64> {
        self.records.delete_subtree(id).await
    }
    async fn clear(&self) -> StoreResult<()> {
        self.records.clear().await
    }
    async fn stats(&self) -> StoreResult<RecordStats> {
        self.records.stats().await
    }
}

struct BrokenHarness(Arc<Broken>);

impl BrokenHarness {
    fn new(how: Breakage) -> Self {
        Self(Arc::new(Broken {
            how,
            history: MemoryHistoryStore::new(),
            records: MemoryRecordStore::new(),
        }))
    }
}

#[async_trait]
impl Harness for BrokenHarness {
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }
    async fn open(&self) -> StoreResult<Stores> {
        Ok(Stores {
            history: self.0.clone(),
            records: self.0.clone(),
        })
    }
}

fn fails(run: impl FnOnce()) -> bool {
    catch_unwind(AssertUnwindSafe(run)).is_err()
}

macro_rules! check {
    ($how:expr, $name:ident) => {{
        let harness = BrokenHarness::new($how);
        fails(|| run_check(stringify!($name), checks::$name(&harness)))
    }};
}

#[test]
fn an_honest_wrapper_passes_so_the_breakages_below_are_what_fails() {
    assert!(!check!(
        Breakage::None,
        history_load_returns_appends_in_order
    ));
    assert!(!check!(
        Breakage::None,
        history_concurrent_appends_to_one_chat
    ));
    assert!(!check!(Breakage::None, records_conditional_put_conflicts));
    assert!(!check!(Breakage::None, records_racing_writers_one_wins));
    assert!(!check!(Breakage::None, records_children_in_plan_order));
    assert!(!check!(
        Breakage::None,
        history_delete_removes_only_that_chat
    ));
}

#[test]
fn a_store_that_loses_data_fails() {
    assert!(check!(
        Breakage::LoadDropsLast,
        history_load_returns_appends_in_order
    ));
    assert!(fails(|| props::history_matches_model(|| {
        BrokenHarness::new(Breakage::LoadDropsLast)
    })));
}

#[test]
fn a_store_that_loses_concurrent_appends_fails() {
    assert!(check!(
        Breakage::RacyAppend,
        history_concurrent_appends_to_one_chat
    ));
}

#[test]
fn a_store_that_lets_writers_overwrite_each_other_fails() {
    assert!(check!(
        Breakage::IgnoresRevision,
        records_conditional_put_conflicts
    ));
    assert!(check!(
        Breakage::IgnoresRevision,
        records_racing_writers_one_wins
    ));
    assert!(fails(|| props::records_match_model(|| BrokenHarness::new(
        Breakage::IgnoresRevision
    ))));
}

#[test]
fn a_store_that_ignores_plan_order_fails() {
    assert!(check!(
        Breakage::ChildrenById,
        records_children_in_plan_order
    ));
    assert!(fails(|| props::records_match_model(|| BrokenHarness::new(
        Breakage::ChildrenById
    ))));
}

#[test]
fn a_store_whose_delete_does_nothing_fails() {
    assert!(check!(
        Breakage::DeleteIsNoOp,
        history_delete_removes_only_that_chat
    ));
    assert!(fails(|| props::history_matches_model(|| {
        BrokenHarness::new(Breakage::DeleteIsNoOp)
    })));
}

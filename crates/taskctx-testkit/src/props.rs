//! Property checks: random operation sequences run against the store under test and against a
//! plain model (a map of vectors, a map of records) whose behaviour is obvious; every answer must
//! agree. Reopens are part of the sequences for persistent stores.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use taskctx_domain::{ChatId, ContextUpdate, TaskId, TaskRecord, TaskStatus, Timestamp};
use taskctx_store::{ChatSummary, PutRecord, RecordStats, StoreError};

use crate::fixtures::{chat, record, task, update};
use crate::harness::{Harness, Stores};

const CHATS: &[&str] = &["a", "A", "a/b", "a_b", "../x", "é"];
const TASKS: &[&str] = &["r", "r.1", "r.2", "R.1", "x/y", "..", "r.1.1"];

/// One operation on a history store.
#[derive(Debug, Clone)]
enum HistoryOp {
    Append { chat: usize, count: u64 },
    Replace { chat: usize, keep_every: usize },
    Delete { chat: usize },
    LoadSince { chat: usize, from: u64 },
    Reopen,
}

fn history_op(persistent: bool) -> impl Strategy<Value = HistoryOp> {
    let chat = 0..CHATS.len();
    prop_oneof![
        5 => (chat.clone(), 0u64..4).prop_map(|(chat, count)| HistoryOp::Append { chat, count }),
        1 => (chat.clone(), 1usize..4).prop_map(|(chat, keep_every)| HistoryOp::Replace { chat, keep_every }),
        1 => chat.clone().prop_map(|chat| HistoryOp::Delete { chat }),
        2 => (chat, 0u64..8).prop_map(|(chat, from)| HistoryOp::LoadSince { chat, from }),
        (if persistent { 1 } else { 0 }) => Just(HistoryOp::Reopen),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a tokio runtime: {e}"),
    }
}

fn fail(error: StoreError) -> TestCaseError {
    TestCaseError::fail(format!("store error: {error}"))
}

/// Random histories: appends, replaces, deletes, tail reads and reopens agree with a model.
pub fn history_matches_model<H: Harness, F: Fn() -> H>(make: F) {
    let persistent = make().capabilities().persistent;
    let cases = make().property_cases();
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let ops = prop::collection::vec(history_op(persistent), 1..40);
    let result = runner.run(&ops, |ops| {
        rt.block_on(async {
            let harness = make();
            let mut stores: Option<Stores> = Some(harness.open().await.map_err(fail)?);
            let mut model: BTreeMap<ChatId, Vec<ContextUpdate>> = BTreeMap::new();
            let mut next = 0u64;
            for op in ops {
                let s = stores
                    .as_ref()
                    .ok_or_else(|| TestCaseError::fail("store not open"))?;
                match op {
                    HistoryOp::Append { chat: c, count } => {
                        let id = chat(CHATS[c]);
                        let batch: Vec<ContextUpdate> = (next..next + count).map(update).collect();
                        next += count;
                        let range = s.history.append(&id, &batch).await.map_err(fail)?;
                        let entry_len = model.get(&id).map_or(0, Vec::len) as u64;
                        prop_assert_eq!(range, entry_len..entry_len + count);
                        if count > 0 {
                            model.entry(id).or_default().extend(batch);
                        }
                    }
                    HistoryOp::Replace {
                        chat: c,
                        keep_every,
                    } => {
                        let id = chat(CHATS[c]);
                        let kept: Vec<ContextUpdate> = model
                            .get(&id)
                            .map(|h| h.iter().step_by(keep_every).cloned().collect())
                            .unwrap_or_default();
                        s.history.replace(&id, &kept).await.map_err(fail)?;
                        model.insert(id, kept);
                    }
                    HistoryOp::Delete { chat: c } => {
                        let id = chat(CHATS[c]);
                        let existed = s.history.delete(&id).await.map_err(fail)?;
                        prop_assert_eq!(existed, model.remove(&id).is_some());
                    }
                    HistoryOp::LoadSince { chat: c, from } => {
                        let id = chat(CHATS[c]);
                        let got = s.history.load_since(&id, from).await.map_err(fail)?;
                        let expected: Vec<ContextUpdate> = model
                            .get(&id)
                            .map(|h| h.iter().skip(from as usize).cloned().collect())
                            .unwrap_or_default();
                        prop_assert_eq!(got, expected);
                    }
                    HistoryOp::Reopen => {
                        // Every handle must be gone before the store is opened again.
                        drop(stores.take());
                        stores = Some(harness.open().await.map_err(fail)?);
                    }
                }
                let s = stores
                    .as_ref()
                    .ok_or_else(|| TestCaseError::fail("store not open"))?;
                let listed = s.history.list().await.map_err(fail)?;
                let expected: Vec<ChatSummary> = model
                    .iter()
                    .map(|(id, h)| ChatSummary {
                        chat_id: id.clone(),
                        entries: h.len() as u64,
                        last_timestamp: h.last().map(|u| u.timestamp),
                    })
                    .collect();
                prop_assert_eq!(listed, expected);
            }
            let s = stores
                .as_ref()
                .ok_or_else(|| TestCaseError::fail("store not open"))?;
            for (id, h) in &model {
                prop_assert_eq!(&s.history.load(id).await.map_err(fail)?, h);
            }
            Ok(())
        })
    });
    if let Err(error) = result {
        panic!("history property failed: {error}");
    }
}

/// One operation on a record store.
#[derive(Debug, Clone)]
enum RecordOp {
    Put {
        id: usize,
        parent: Option<usize>,
        plan: Vec<usize>,
        status: usize,
        expect: Expect,
    },
    PutMany(Vec<(usize, Option<usize>, Expect)>),
    Delete(usize),
    DeleteSubtree(usize),
    Clear,
    Reopen,
}

/// Which precondition a generated put carries, relative to the model's revision.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    Current,
    Stale,
    Absent,
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Any),
        Just(Expect::Current),
        Just(Expect::Stale),
        Just(Expect::Absent)
    ]
}

fn record_op(persistent: bool) -> impl Strategy<Value = RecordOp> {
    let id = 0..TASKS.len();
    let parent = prop::option::of(0..TASKS.len());
    prop_oneof![
        8 => (id.clone(), parent.clone(), prop::collection::vec(0..TASKS.len(), 0..4), 0..TaskStatus::ALL.len(), expect())
            .prop_map(|(id, parent, plan, status, expect)| RecordOp::Put { id, parent, plan, status, expect }),
        2 => prop::collection::vec((id.clone(), parent, expect()), 0..4).prop_map(RecordOp::PutMany),
        1 => id.clone().prop_map(RecordOp::Delete),
        1 => id.prop_map(RecordOp::DeleteSubtree),
        1 => Just(RecordOp::Clear),
        (if persistent { 1 } else { 0 }) => Just(RecordOp::Reopen),
    ]
}

fn expected_revision(
    model: &BTreeMap<TaskId, TaskRecord>,
    id: &TaskId,
    expect: Expect,
) -> Option<u64> {
    let current = model.get(id).map_or(0, |r| r.revision);
    match expect {
        Expect::Any => None,
        Expect::Current => Some(current),
        Expect::Stale => Some(current + 1),
        Expect::Absent => Some(0),
    }
}

fn make_record(id: usize, parent: Option<usize>, plan: &[usize], status: usize) -> TaskRecord {
    let mut r = record(TASKS[id], parent.map(|p| TASKS[p]));
    r.child_task_ids = plan.iter().map(|p| task(TASKS[*p])).collect();
    r.status = TaskStatus::ALL[status % TaskStatus::ALL.len()];
    r.layer = Some(id as u32 % 3);
    r.updated_at = Timestamp::from_secs(id as f64).unwrap_or_default();
    r
}

/// The model's answer to `children`: a scan, ordered by plan position then id.
fn model_children(model: &BTreeMap<TaskId, TaskRecord>, parent: &TaskId) -> Vec<TaskRecord> {
    let plan: Vec<TaskId> = model
        .get(parent)
        .map(|p| p.child_task_ids.clone())
        .unwrap_or_default();
    let mut children: Vec<TaskRecord> = model
        .values()
        .filter(|r| r.parent_task_id.as_ref() == Some(parent))
        .cloned()
        .collect();
    children.sort_by_key(|c| {
        (
            plan.iter()
                .position(|p| *p == c.task_id)
                .unwrap_or(usize::MAX),
            c.task_id.as_str().to_owned(),
        )
    });
    children
}

fn model_subtree(model: &BTreeMap<TaskId, TaskRecord>, root: &TaskId) -> Vec<TaskId> {
    let mut found = vec![root.clone()];
    let mut i = 0;
    while i < found.len() {
        let current = found[i].clone();
        for r in model.values() {
            if r.parent_task_id.as_ref() == Some(&current) && !found.contains(&r.task_id) {
                found.push(r.task_id.clone());
            }
        }
        i += 1;
    }
    found
}

/// Random puts (conditional and not), batches, deletes, subtree deletes, clears and reopens agree
/// with a model: records, revisions, conflicts, children order, roots and stats.
pub fn records_match_model<H: Harness, F: Fn() -> H>(make: F) {
    let persistent = make().capabilities().persistent;
    let cases = make().property_cases();
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let ops = prop::collection::vec(record_op(persistent), 1..30);
    let result = runner.run(&ops, |ops| {
        rt.block_on(async {
            let harness = make();
            let mut stores: Option<Stores> = Some(harness.open().await.map_err(fail)?);
            let mut model: BTreeMap<TaskId, TaskRecord> = BTreeMap::new();
            for op in ops {
                let s = stores
                    .as_ref()
                    .ok_or_else(|| TestCaseError::fail("store not open"))?;
                match op {
                    RecordOp::Put {
                        id,
                        parent,
                        plan,
                        status,
                        expect,
                    } => {
                        let r = make_record(id, parent, &plan, status);
                        let expected = expected_revision(&model, &r.task_id, expect);
                        let current = model.get(&r.task_id).map_or(0, |m| m.revision);
                        let result = s.records.put(r.clone(), expected).await;
                        match expected {
                            Some(e) if e != current => {
                                prop_assert!(
                                    matches!(result, Err(StoreError::Conflict { .. })),
                                    "{:?}",
                                    result
                                );
                            }
                            _ => {
                                let revision = result.map_err(fail)?;
                                prop_assert_eq!(revision, current + 1);
                                let mut stored = r;
                                stored.revision = revision;
                                model.insert(stored.task_id.clone(), stored);
                            }
                        }
                    }
                    RecordOp::PutMany(entries) => {
                        let mut batch = Vec::new();
                        let mut ids = Vec::new();
                        let mut conflict = false;
                        for (id, parent, expect) in &entries {
                            let r = make_record(*id, *parent, &[], *id);
                            let expected = expected_revision(&model, &r.task_id, *expect);
                            let current = model.get(&r.task_id).map_or(0, |m| m.revision);
                            conflict |= expected.is_some_and(|e| e != current);
                            ids.push(r.task_id.clone());
                            batch.push(PutRecord::new(r, expected));
                        }
                        let mut unique = ids.clone();
                        unique.sort();
                        unique.dedup();
                        let duplicate = unique.len() != ids.len();
                        let result = s.records.put_many(batch.clone()).await;
                        if duplicate {
                            prop_assert!(
                                matches!(result, Err(StoreError::InvalidInput(_))),
                                "{:?}",
                                result
                            );
                        } else if conflict {
                            prop_assert!(
                                matches!(result, Err(StoreError::Conflict { .. })),
                                "{:?}",
                                result
                            );
                        } else {
                            let revisions = result.map_err(fail)?;
                            for (put, revision) in batch.into_iter().zip(revisions) {
                                let current =
                                    model.get(&put.record.task_id).map_or(0, |m| m.revision);
                                prop_assert_eq!(revision, current + 1);
                                let mut stored = put.record;
                                stored.revision = revision;
                                model.insert(stored.task_id.clone(), stored);
                            }
                        }
                    }
                    RecordOp::Delete(id) => {
                        let id = task(TASKS[id]);
                        let existed = s.records.delete(&id).await.map_err(fail)?;
                        prop_assert_eq!(existed, model.remove(&id).is_some());
                    }
                    RecordOp::DeleteSubtree(id) => {
                        let id = task(TASKS[id]);
                        let doomed = model_subtree(&model, &id);
                        let removed = s.records.delete_subtree(&id).await.map_err(fail)?;
                        let expected = doomed.iter().filter(|d| model.remove(*d).is_some()).count();
                        prop_assert_eq!(removed, expected as u64);
                    }
                    RecordOp::Clear => {
                        s.records.clear().await.map_err(fail)?;
                        model.clear();
                    }
                    RecordOp::Reopen => {
                        // Every handle must be gone before the store is opened again.
                        drop(stores.take());
                        stores = Some(harness.open().await.map_err(fail)?);
                    }
                }
                let s = stores
                    .as_ref()
                    .ok_or_else(|| TestCaseError::fail("store not open"))?;
                for name in TASKS {
                    let id = task(name);
                    let got = s.records.get(&id).await.map_err(fail)?;
                    prop_assert_eq!(got.as_deref(), model.get(&id), "get {}", name);
                    let children: Vec<TaskRecord> = s
                        .records
                        .children(&id)
                        .await
                        .map_err(fail)?
                        .iter()
                        .map(|r| TaskRecord::clone(r))
                        .collect();
                    prop_assert_eq!(
                        children,
                        model_children(&model, &id),
                        "children of {}",
                        name
                    );
                }
                let roots: Vec<String> = s
                    .records
                    .roots()
                    .await
                    .map_err(fail)?
                    .iter()
                    .map(|r| r.task_id.to_string())
                    .collect();
                let expected_roots: Vec<String> = model
                    .values()
                    .filter(|r| r.is_root())
                    .map(|r| r.task_id.to_string())
                    .collect();
                prop_assert_eq!(roots, expected_roots);
                let mut expected_stats = RecordStats::default();
                model.values().for_each(|r| expected_stats.add(r));
                prop_assert_eq!(s.records.stats().await.map_err(fail)?, expected_stats);
                let ids = |records: Vec<std::sync::Arc<TaskRecord>>| -> Vec<String> {
                    records.iter().map(|r| r.task_id.to_string()).collect()
                };
                for status in TaskStatus::ALL {
                    let expected: Vec<String> = model
                        .values()
                        .filter(|r| r.status == *status)
                        .map(|r| r.task_id.to_string())
                        .collect();
                    let got = ids(s.records.by_status(*status).await.map_err(fail)?);
                    prop_assert_eq!(got, expected, "by_status {}", status);
                }
                for layer in 0..3 {
                    let expected: Vec<String> = model
                        .values()
                        .filter(|r| r.layer == Some(layer))
                        .map(|r| r.task_id.to_string())
                        .collect();
                    let got = ids(s.records.by_layer(layer).await.map_err(fail)?);
                    prop_assert_eq!(got, expected, "by_layer {}", layer);
                }
            }
            Ok(())
        })
    });
    if let Err(error) = result {
        panic!("record property failed: {error}");
    }
}

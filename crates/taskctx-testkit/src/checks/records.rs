//! Contract checks for `RecordStore` (SPEC R2.2, R2.3). Each `pub async fn` is one check.

use std::collections::BTreeSet;
use std::sync::Arc;

use taskctx_domain::{TaskId, TaskRecord, TaskStatus};
use taskctx_store::{PutRecord, StoreError};

use crate::fixtures::{full_record, hostile_task_ids, parent_record, record, task};
use crate::harness::{Capability, CheckResult, Harness, must, open, require};

fn ids(records: &[Arc<TaskRecord>]) -> Vec<&str> {
    records.iter().map(|r| r.task_id.as_str()).collect()
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: u64, actual: u64) {
    match result {
        Err(StoreError::Conflict {
            expected: e,
            actual: a,
            ..
        }) => assert_eq!((e, a), (expected, actual), "conflict revisions"),
        other => {
            panic!("expected a Conflict (expected {expected}, actual {actual}), got {other:?}")
        }
    }
}

/// The first `put` gives revision 1, `get` returns the record with it, unknown ids are `None`.
pub async fn records_put_then_get(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    assert!(must("get", s.records.get(&task("x"))).await.is_none());
    let mut written = record("x", None);
    written.revision = 42; // ignored: the store owns revisions
    assert_eq!(must("put", s.records.put(written.clone(), None)).await, 1);
    let read = must("get", s.records.get(&task("x")))
        .await
        .expect("record x");
    written.revision = 1;
    assert_eq!(*read, written);
    Ok(())
}

/// Every field of a record, nested JSON included, comes back exactly.
pub async fn records_round_trip_every_field(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let mut written = full_record("full");
    must("put", s.records.put(written.clone(), None)).await;
    written.revision = 1;
    let read = must("get", s.records.get(&task("full")))
        .await
        .expect("record");
    assert_eq!(*read, written);
    // An explicit JSON null output is a value, distinct from no output at all.
    for (id, output) in [
        ("null-output", Some(serde_json::Value::Null)),
        ("no-output", None),
    ] {
        let mut written = record(id, None);
        written.output_content = output;
        must("put", s.records.put(written.clone(), None)).await;
        written.revision = 1;
        let read = must("get", s.records.get(&task(id))).await.expect("record");
        assert_eq!(*read, written, "{id}");
    }
    Ok(())
}

/// Each `put` adds one to the revision.
pub async fn records_revisions_increase_by_one(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    for expected in 1..=5u64 {
        assert_eq!(
            must("put", s.records.put(record("x", None), None)).await,
            expected
        );
    }
    let read = must("get", s.records.get(&task("x")))
        .await
        .expect("record");
    assert_eq!(read.revision, 5);
    Ok(())
}

/// A conditional `put` with the wrong revision is a `Conflict` that names both revisions and
/// changes nothing; `Some(0)` means "must not exist".
pub async fn records_conditional_put_conflicts(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    assert_eq!(
        must("create", s.records.put(record("x", None), Some(0))).await,
        1
    );
    assert_conflict(s.records.put(record("x", None), Some(0)).await, 0, 1);
    assert_conflict(s.records.put(record("y", None), Some(3)).await, 3, 0);
    let mut changed = record("x", None);
    changed.goal = "changed".into();
    assert_conflict(s.records.put(changed.clone(), Some(2)).await, 2, 1);
    let read = must("get", s.records.get(&task("x")))
        .await
        .expect("record");
    assert_eq!((read.revision, read.goal.as_str()), (1, "goal of x"));
    assert!(must("get", s.records.get(&task("y"))).await.is_none());
    assert_eq!(must("update", s.records.put(changed, Some(1))).await, 2);
    Ok(())
}

/// Writers racing on one record with the same expected revision: exactly one wins, the others
/// get `Conflict`, and the winner's write is what the store holds.
pub async fn records_racing_writers_one_wins(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    must("put", s.records.put(record("x", None), None)).await;
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = Arc::clone(&s.records);
        tasks.push(tokio::spawn(async move {
            let mut mine = record("x", None);
            mine.goal = format!("writer {writer}");
            (writer, store.put(mine, Some(1)).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (writer, result) = t
            .await
            .unwrap_or_else(|e| panic!("writer task failed: {e}"));
        match result {
            Ok(revision) => {
                assert_eq!(revision, 2);
                winners.push(writer);
            }
            Err(error) => assert_conflict::<u64>(Err(error), 1, 2),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let read = must("get", s.records.get(&task("x")))
        .await
        .expect("record");
    assert_eq!(read.goal, format!("writer {}", winners[0]));
    Ok(())
}

/// `put_many` checks every precondition first: one conflict means nothing of the batch is written.
pub async fn records_put_many_all_or_nothing_on_conflict(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    must("put", s.records.put(record("a", None), None)).await;
    let batch = vec![
        PutRecord::new(record("new1", None), Some(0)),
        PutRecord::new(record("a", None), Some(7)),
        PutRecord::new(record("new2", None), None),
    ];
    assert_conflict(s.records.put_many(batch).await, 7, 1);
    assert!(must("get", s.records.get(&task("new1"))).await.is_none());
    assert!(must("get", s.records.get(&task("new2"))).await.is_none());
    let ok = vec![
        PutRecord::new(record("new1", None), Some(0)),
        PutRecord::new(record("a", None), Some(1)),
    ];
    assert_eq!(must("put_many", s.records.put_many(ok)).await, vec![1, 2]);
    assert_eq!(
        must("put_many", s.records.put_many(Vec::new())).await,
        Vec::<u64>::new()
    );
    Ok(())
}

/// Two puts of one id in a batch are rejected as invalid input, and nothing is written.
pub async fn records_put_many_rejects_duplicate_ids(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let batch = vec![
        PutRecord::upsert(record("z", None)),
        PutRecord::upsert(record("d", None)),
        PutRecord::upsert(record("d", None)),
    ];
    match s.records.put_many(batch).await {
        Err(StoreError::InvalidInput(message)) => assert!(message.contains('d'), "{message}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert!(must("get", s.records.get(&task("z"))).await.is_none());
    Ok(())
}

/// `get_many` answers in the order asked, with `None` for gaps.
pub async fn records_get_many_keeps_order(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    for id in ["a", "b", "c"] {
        must("put", s.records.put(record(id, None), None)).await;
    }
    let asked = [task("c"), task("nope"), task("a"), task("c")];
    let got = must("get_many", s.records.get_many(&asked)).await;
    let got: Vec<Option<&str>> = got
        .iter()
        .map(|r| r.as_ref().map(|r| r.task_id.as_str()))
        .collect();
    assert_eq!(got, vec![Some("c"), None, Some("a"), Some("c")]);
    Ok(())
}

/// Children come in the parent's plan order, then unlisted children by id; records naming another
/// parent, and plan entries without a record, are not children.
pub async fn records_children_in_plan_order(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let plan = ["p.3", "p.1", "missing", "p.2"];
    must("put", s.records.put(parent_record("p", None, &plan), None)).await;
    for id in ["p.1", "p.2", "p.3", "p.0-unlisted", "p.z-unlisted"] {
        must("put", s.records.put(record(id, Some("p")), None)).await;
    }
    must("put", s.records.put(record("other", Some("q")), None)).await;
    let children = must("children", s.records.children(&task("p"))).await;
    assert_eq!(
        ids(&children),
        vec!["p.3", "p.1", "p.2", "p.0-unlisted", "p.z-unlisted"]
    );
    assert!(
        must("children", s.records.children(&task("p.1")))
            .await
            .is_empty()
    );
    assert!(
        must("children", s.records.children(&task("nobody")))
            .await
            .is_empty()
    );
    // Children of a parent that has no record are still found, by id.
    let orphans = must("children", s.records.children(&task("q"))).await;
    assert_eq!(ids(&orphans), vec!["other"]);
    Ok(())
}

/// The children index follows re-parenting, deletion and plan changes.
pub async fn records_children_follow_changes(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    must(
        "put",
        s.records.put(parent_record("p", None, &["c1", "c2"]), None),
    )
    .await;
    must("put", s.records.put(parent_record("q", None, &[]), None)).await;
    must("put", s.records.put(record("c1", Some("p")), None)).await;
    must("put", s.records.put(record("c2", Some("p")), None)).await;
    must("put", s.records.put(record("c1", Some("q")), None)).await;
    assert_eq!(
        ids(&must("children", s.records.children(&task("p"))).await),
        vec!["c2"]
    );
    assert_eq!(
        ids(&must("children", s.records.children(&task("q"))).await),
        vec!["c1"]
    );
    must("put", s.records.put(record("c1", None), None)).await;
    assert!(
        must("children", s.records.children(&task("q")))
            .await
            .is_empty()
    );
    must("put", s.records.put(record("c3", Some("p")), None)).await;
    must(
        "put",
        s.records.put(parent_record("p", None, &["c3", "c2"]), None),
    )
    .await;
    assert_eq!(
        ids(&must("children", s.records.children(&task("p"))).await),
        vec!["c3", "c2"]
    );
    must("delete", s.records.delete(&task("c3"))).await;
    assert_eq!(
        ids(&must("children", s.records.children(&task("p"))).await),
        vec!["c2"]
    );
    // A child's record, not a stale copy, is returned.
    let mut c2 = record("c2", Some("p"));
    c2.goal = "new goal".into();
    must("put", s.records.put(c2, None)).await;
    let children = must("children", s.records.children(&task("p"))).await;
    assert_eq!(
        (children[0].goal.as_str(), children[0].revision),
        ("new goal", 2)
    );
    Ok(())
}

/// `by_status`, `by_layer` and `roots` list matching records in byte order of their ids.
pub async fn records_queries_in_id_order(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let put = |id: &'static str, parent: Option<&'static str>, status, layer| {
        let mut r = record(id, parent);
        r.status = status;
        r.layer = layer;
        r
    };
    let records = vec![
        put("b", None, TaskStatus::Done, Some(0)),
        put("a", None, TaskStatus::Running, Some(0)),
        put("b.2", Some("b"), TaskStatus::Done, Some(1)),
        put("B.1", Some("b"), TaskStatus::Failed, Some(1)),
        put("n", None, TaskStatus::Done, None),
    ];
    for r in records {
        must("put", s.records.put(r, None)).await;
    }
    let done = must("by_status", s.records.by_status(TaskStatus::Done)).await;
    assert_eq!(ids(&done), vec!["b", "b.2", "n"]);
    let layer1 = must("by_layer", s.records.by_layer(1)).await;
    assert_eq!(ids(&layer1), vec!["B.1", "b.2"]);
    let roots = must("roots", s.records.roots()).await;
    assert_eq!(ids(&roots), vec!["a", "b", "n"]);
    assert!(
        must("by_status", s.records.by_status(TaskStatus::Cancelled))
            .await
            .is_empty()
    );
    Ok(())
}

/// `delete` removes one record and leaves its children in place, as orphans.
pub async fn records_delete_keeps_children(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    must("put", s.records.put(parent_record("p", None, &["c"]), None)).await;
    must("put", s.records.put(record("c", Some("p")), None)).await;
    assert!(must("delete", s.records.delete(&task("p"))).await);
    assert!(!must("delete", s.records.delete(&task("p"))).await);
    assert!(must("get", s.records.get(&task("p"))).await.is_none());
    assert!(must("get", s.records.get(&task("c"))).await.is_some());
    assert_eq!(
        ids(&must("children", s.records.children(&task("p"))).await),
        vec!["c"]
    );
    // Re-creating a deleted record starts its revisions again.
    assert_eq!(
        must("put", s.records.put(record("p", None), Some(0))).await,
        1
    );
    Ok(())
}

/// `delete_subtree` removes a record and every descendant, survives cycles, and spares the rest.
pub async fn records_delete_subtree(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    for (id, parent) in [
        ("r", None),
        ("r.1", Some("r")),
        ("r.2", Some("r")),
        ("r.1.1", Some("r.1")),
        ("r.1.1.1", Some("r.1.1")),
        ("other", None),
        ("cyc.a", Some("cyc.b")),
        ("cyc.b", Some("cyc.a")),
    ] {
        must("put", s.records.put(record(id, parent), None)).await;
    }
    assert_eq!(
        must("delete_subtree", s.records.delete_subtree(&task("r.1"))).await,
        3
    );
    assert!(must("get", s.records.get(&task("r.1.1.1"))).await.is_none());
    assert!(must("get", s.records.get(&task("r.2"))).await.is_some());
    assert_eq!(
        must("delete_subtree", s.records.delete_subtree(&task("cyc.a"))).await,
        2
    );
    assert_eq!(
        must("delete_subtree", s.records.delete_subtree(&task("gone"))).await,
        0
    );
    let left: BTreeSet<String> = must("stats", s.records.stats())
        .await
        .per_status
        .keys()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(left, BTreeSet::from(["DONE".to_owned()]));
    assert_eq!(must("stats", s.records.stats()).await.total, 3);
    Ok(())
}

/// `clear` removes every record and the children index.
pub async fn records_clear_removes_everything(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    must("put", s.records.put(parent_record("p", None, &["c"]), None)).await;
    must("put", s.records.put(record("c", Some("p")), None)).await;
    must("clear", s.records.clear()).await;
    assert_eq!(must("stats", s.records.stats()).await.total, 0);
    assert!(
        must("children", s.records.children(&task("p")))
            .await
            .is_empty()
    );
    assert!(must("roots", s.records.roots()).await.is_empty());
    assert_eq!(
        must("put", s.records.put(record("c", None), Some(0))).await,
        1
    );
    Ok(())
}

/// `stats` counts records per status and lists the layers in use.
pub async fn records_stats_per_status_and_layer(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    for (id, status, layer) in [
        ("a", TaskStatus::Done, Some(0)),
        ("b", TaskStatus::Done, Some(2)),
        ("c", TaskStatus::Failed, None),
    ] {
        let mut r = record(id, None);
        r.status = status;
        r.layer = layer;
        must("put", s.records.put(r, None)).await;
    }
    let stats = must("stats", s.records.stats()).await;
    assert_eq!(stats.total, 3);
    assert_eq!(stats.per_status.get(&TaskStatus::Done), Some(&2));
    assert_eq!(stats.per_status.get(&TaskStatus::Failed), Some(&1));
    assert_eq!(stats.per_status.get(&TaskStatus::Pending), None);
    assert_eq!(stats.layers.into_iter().collect::<Vec<_>>(), vec![0, 2]);
    Ok(())
}

/// Hostile task ids are stored separately, returned exactly, and usable as parents.
pub async fn records_hostile_ids_are_distinct_and_exact(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let all = hostile_task_ids();
    let parent = all[0].as_str().to_owned();
    for id in &all {
        let mut r = record(id.as_str(), None);
        if id.as_str() != parent {
            r.parent_task_id = Some(task(&parent));
        }
        r.goal = format!("goal {id}");
        must("put", s.records.put(r, Some(0))).await;
    }
    for id in &all {
        let read = must("get", s.records.get(id))
            .await
            .unwrap_or_else(|| panic!("{id:?} missing"));
        assert_eq!(&read.task_id, id);
        assert_eq!(read.goal, format!("goal {id}"));
    }
    let children: BTreeSet<TaskId> = must("children", s.records.children(&task(&parent)))
        .await
        .iter()
        .map(|r| r.task_id.clone())
        .collect();
    assert_eq!(children.len(), all.len() - 1);
    Ok(())
}

/// Records, revisions and the children index survive dropping every handle and reopening.
pub async fn records_reopen_keeps_everything(h: &dyn Harness) -> CheckResult {
    require(h, Capability::Persistent)?;
    {
        let s = open(h).await;
        must(
            "put",
            s.records.put(parent_record("p", None, &["c2", "c1"]), None),
        )
        .await;
        must("put", s.records.put(record("c1", Some("p")), None)).await;
        must("put", s.records.put(record("c2", Some("p")), None)).await;
        must("put", s.records.put(record("c2", Some("p")), None)).await;
        must("put", s.records.put(full_record("full"), None)).await;
        must("put", s.records.put(record("gone", None), None)).await;
        must("delete", s.records.delete(&task("gone"))).await;
    }
    let s = open(h).await;
    let children = must("children", s.records.children(&task("p"))).await;
    assert_eq!(ids(&children), vec!["c2", "c1"]);
    assert_eq!(children[0].revision, 2);
    let mut full = full_record("full");
    full.revision = 1;
    assert_eq!(
        *must("get", s.records.get(&task("full")))
            .await
            .expect("full"),
        full
    );
    assert!(must("get", s.records.get(&task("gone"))).await.is_none());
    assert_conflict(s.records.put(record("c2", Some("p")), Some(1)).await, 1, 2);
    assert_eq!(must("stats", s.records.stats()).await.total, 4);
    Ok(())
}

/// A batch is all-or-nothing also for the records it writes, not only for its preconditions:
/// after `put_many` returns, every record of the batch is there with its revision.
pub async fn records_put_many_writes_every_record(h: &dyn Harness) -> CheckResult {
    require(h, Capability::AtomicBatch)?;
    let s = open(h).await;
    let batch: Vec<PutRecord> = (0..50)
        .map(|i| PutRecord::new(record(&format!("r.{i}"), Some("r")), Some(0)))
        .collect();
    let revisions = must("put_many", s.records.put_many(batch)).await;
    assert_eq!(revisions, vec![1; 50]);
    assert_eq!(
        must("children", s.records.children(&task("r"))).await.len(),
        50
    );
    Ok(())
}

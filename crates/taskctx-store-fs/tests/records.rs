//! Behaviour of the file record store beyond the shared contract: its files, corruption, the
//! batch intent log, interrupted clears, hostile ids on disk, reopening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use taskctx_store::{HistoryStore, PutRecord, RecordStore, StoreError};
use taskctx_store_fs::FsStore;
use taskctx_testkit::fixtures::{
    chat, full_record, hostile_task_ids, parent_record, record, task, updates,
};

fn store(dir: &Path) -> FsStore {
    FsStore::open_blocking(dir).unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_record_is_one_pretty_json_file_with_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let records = store.records();
    records.put(full_record("Root.1"), None).await.unwrap();
    records.put(full_record("Root.1"), Some(1)).await.unwrap();
    let path = store.record_path(&task("Root.1"));
    assert_eq!(path, dir.path().join("records").join("^root.1.json"));
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\n  \""), "pretty: {text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["revision"], 2);
    assert_eq!(value["task_id"], "Root.1");
}

#[tokio::test]
async fn reopening_keeps_records_revisions_and_the_children_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let records = store(dir.path()).records();
        records
            .put(parent_record("p", None, &["p.2", "p.1"]), None)
            .await
            .unwrap();
        let batch = ["p.1", "p.2", "p.3", "q"]
            .iter()
            .map(|id| PutRecord::new(record(id, Some("p")), Some(0)))
            .collect();
        records.put_many(batch).await.unwrap();
        records.put(record("q.1", Some("q")), None).await.unwrap();
        assert_eq!(records.delete_subtree(&task("q")).await.unwrap(), 2);
    }
    let records = store(dir.path()).records();
    let children: Vec<String> = records
        .children(&task("p"))
        .await
        .unwrap()
        .iter()
        .map(|r| r.task_id.to_string())
        .collect();
    assert_eq!(children, vec!["p.2", "p.1", "p.3"]);
    assert!(records.get(&task("q.1")).await.unwrap().is_none());
    assert_eq!(
        records
            .put(record("p.1", Some("p")), Some(1))
            .await
            .unwrap(),
        2
    );
    assert_eq!(records.stats().await.unwrap().total, 4);
    // No intent log or temp file is left behind by completed batches.
    let leftovers: Vec<PathBuf> = files_under(&dir.path().join("records"))
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "json"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every kind of damaged record file is reported, naming the file (and line where there is one),
/// by every record operation; the file is left exactly as it was, and the history half of the
/// store keeps working. Once the file is repaired, the store works without being reopened.
#[tokio::test]
async fn corrupt_record_files_are_reported_and_left_alone() {
    let good = {
        let mut r = record("x", None);
        r.revision = 1;
        serde_json::to_string_pretty(&r).unwrap()
    };
    let cases: Vec<(&str, String, Option<u64>, &str)> = vec![
        (
            "truncated",
            good[..good.len() / 2].to_owned(),
            None,
            "EOF while parsing",
        ),
        (
            "garbled",
            good.replacen("\"goal\"", "goal", 1),
            Some(3),
            "key must be a string",
        ),
        (
            "wrong-type",
            "[1, 2, 3]\n".to_owned(),
            Some(1),
            "invalid type",
        ),
        (
            "zero-length",
            String::new(),
            Some(1),
            "EOF while parsing a value",
        ),
        (
            "bad-status",
            good.replace("\"DONE\"", "\"FINISHED\""),
            None,
            "unknown task status",
        ),
        ("other-id", good.clone(), None, "holds `x`"),
        (
            "no-revision",
            good.replace("\"revision\": 1", "\"revision\": 0"),
            None,
            "no revision",
        ),
    ];
    for (id, content, line, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = store(dir.path()).record_path(&task(id));
        let content = if id == "other-id" {
            content
        } else {
            content.replace("\"x\"", &format!("{id:?}"))
        };
        fs::write(&path, &content).unwrap();
        let store = store(dir.path());
        let records = store.records();
        let check = |result: Result<(), StoreError>| match result {
            Err(StoreError::Corrupt { location, detail }) => {
                let file = path.display().to_string();
                match line {
                    Some(line) => assert_eq!(location, format!("{file}:{line}"), "{id}"),
                    None => assert!(location.starts_with(&file), "{id}: {location}"),
                }
                assert!(detail.contains(needle), "{id}: {detail:?} lacks {needle:?}");
            }
            other => panic!("{id}: expected Corrupt, got {other:?}"),
        };
        check(records.get(&task("y")).await.map(drop));
        check(records.children(&task("y")).await.map(drop));
        check(records.stats().await.map(drop));
        check(records.put(record("y", None), None).await.map(drop));
        check(records.delete(&task(id)).await.map(drop));
        check(records.clear().await);
        assert_eq!(fs::read_to_string(&path).unwrap(), content, "{id} changed");
        // Histories do not depend on records.
        store
            .history()
            .append(&chat("c"), &updates(0..1))
            .await
            .unwrap();
        // Repaired by hand: the next call loads the directory again.
        fs::remove_file(&path).unwrap();
        assert_eq!(records.put(record("y", None), Some(0)).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn an_interrupted_batch_is_finished_when_the_store_is_next_used() {
    let dir = tempfile::tempdir().unwrap();
    {
        let records = store(dir.path()).records();
        records.put(record("old", None), None).await.unwrap();
        records.put(record("keep", None), None).await.unwrap();
    }
    // What a crash right after committing a batch leaves: the intent, none of its writes.
    let mut a = record("a", Some("old"));
    a.revision = 1;
    let mut old = record("old", None);
    old.goal = "changed by the batch".into();
    old.revision = 2;
    let intent = format!(
        "{{\"taskctx_fs_batch\":1,\"ops\":3}}\n{{\"put\":{}}}\n{{\"put\":{}}}\n{{\"delete\":\"keep\"}}\n",
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&old).unwrap(),
    );
    let intent_path = dir.path().join("records").join(".batch-intent");
    fs::write(&intent_path, intent).unwrap();
    let records = store(dir.path()).records();
    assert_eq!(
        records.get(&task("old")).await.unwrap().unwrap().goal,
        "changed by the batch"
    );
    assert_eq!(records.get(&task("a")).await.unwrap().unwrap().revision, 1);
    assert!(records.get(&task("keep")).await.unwrap().is_none());
    assert_eq!(records.children(&task("old")).await.unwrap().len(), 1);
    assert!(!intent_path.exists());
}

#[tokio::test]
async fn a_damaged_intent_log_is_reported_not_applied_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        store(dir.path())
            .records()
            .put(record("a", None), None)
            .await
            .unwrap();
    }
    let intent_path = dir.path().join("records").join(".batch-intent");
    let damaged = "{\"taskctx_fs_batch\":1,\"ops\":2}\n{\"delete\":\"a\"}\n";
    fs::write(&intent_path, damaged).unwrap();
    let records = store(dir.path()).records();
    match records.get(&task("a")).await {
        Err(StoreError::Corrupt { location, detail }) => {
            assert_eq!(location, format!("{}:3", intent_path.display()));
            assert!(detail.contains("announces 2"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read_to_string(&intent_path).unwrap(), damaged);
    assert!(store_file_exists(dir.path(), "a.json"));
}

fn store_file_exists(root: &Path, name: &str) -> bool {
    root.join("records").join(name).exists()
}

#[tokio::test]
async fn an_interrupted_clear_is_finished_when_the_store_is_next_used() {
    let dir = tempfile::tempdir().unwrap();
    {
        store(dir.path())
            .records()
            .put(record("a", None), None)
            .await
            .unwrap();
    }
    // A crash right after `clear` moved the records aside, before the fresh directory existed.
    let trash = dir.path().join(".records-trash-1-0");
    fs::rename(dir.path().join("records"), &trash).unwrap();
    let store = store(dir.path());
    let records = store.records();
    assert_eq!(records.stats().await.unwrap().total, 0);
    assert!(!trash.exists());
    assert!(dir.path().join("records").is_dir());
    assert_eq!(records.put(record("a", None), Some(0)).await.unwrap(), 1);
    records.clear().await.unwrap();
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".records-trash"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(records);
    drop(store);
    assert_eq!(
        self::store(dir.path())
            .records()
            .stats()
            .await
            .unwrap()
            .total,
        0
    );
}

#[tokio::test]
async fn hostile_task_ids_stay_inside_the_root_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ids = hostile_task_ids();
    {
        let records = store(&root).records();
        let batch = ids
            .iter()
            .map(|id| {
                let parent = (id.as_str() != "..").then_some("..");
                PutRecord::new(record(id.as_str(), parent), Some(0))
            })
            .collect();
        records.put_many(batch).await.unwrap();
    }
    let canonical_root = root.canonicalize().unwrap();
    let files = files_under(dir.path());
    for path in &files {
        assert!(
            path.canonicalize().unwrap().starts_with(&canonical_root),
            "{path:?}"
        );
    }
    let record_files = files
        .iter()
        .filter(|p| p.starts_with(root.join("records")))
        .count();
    assert_eq!(record_files, ids.len());
    let records = store(&root).records();
    for id in &ids {
        let read = records.get(id).await.unwrap().unwrap();
        assert_eq!(&read.task_id, id);
    }
    assert_eq!(
        records.children(&task("..")).await.unwrap().len(),
        ids.len() - 1
    );
    assert_eq!(
        records.delete_subtree(&task("..")).await.unwrap(),
        ids.len() as u64
    );
    assert!(files_under(&root.join("records")).is_empty());
}

#[tokio::test]
async fn leftover_temp_files_are_removed_and_foreign_files_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        store(dir.path())
            .records()
            .put(record("a", None), None)
            .await
            .unwrap();
    }
    let records_dir = dir.path().join("records");
    fs::write(records_dir.join(".taskctx-tmp-9-9"), b"{\"half").unwrap();
    fs::write(records_dir.join("notes.txt"), b"hello").unwrap();
    fs::write(records_dir.join("B.json"), b"not canonical, not ours").unwrap();
    let records = store(dir.path()).records();
    assert_eq!(records.stats().await.unwrap().total, 1);
    assert!(!records_dir.join(".taskctx-tmp-9-9").exists());
    assert!(records_dir.join("notes.txt").exists());
}

#[tokio::test]
async fn failed_writes_report_the_record_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let records = store.records();
    records.put(record("a", None), None).await.unwrap();
    let records_dir = dir.path().join("records");
    let aside = dir.path().join("records-aside");
    fs::rename(&records_dir, &aside).unwrap();
    fs::write(&records_dir, b"in the way").unwrap();
    match records.put(record("a", None), Some(1)).await {
        Err(error @ StoreError::Io { .. }) => {
            assert!(error.to_string().contains("records"), "{error}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    let batch = vec![
        PutRecord::upsert(record("b", None)),
        PutRecord::upsert(record("c", None)),
    ];
    assert!(matches!(
        records.put_many(batch.clone()).await,
        Err(StoreError::Io { .. })
    ));
    assert!(matches!(
        records.delete(&task("a")).await,
        Err(StoreError::Io { .. })
    ));
    assert_eq!(records.get(&task("a")).await.unwrap().unwrap().revision, 1);
    assert!(records.get(&task("b")).await.unwrap().is_none());
    fs::remove_file(&records_dir).unwrap();
    fs::rename(&aside, &records_dir).unwrap();
    assert_eq!(records.put_many(batch).await.unwrap(), vec![1, 1]);
    assert_eq!(records.put(record("a", None), Some(1)).await.unwrap(), 2);
    drop(records);
    drop(store);
    let records = self::store(dir.path()).records();
    assert_eq!(records.stats().await.unwrap().total, 3);
}

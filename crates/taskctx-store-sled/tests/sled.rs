//! Behaviour specific to the sled adapter: reopening, corruption, hostile ids at the key level,
//! the in-process lock, group commit, reader atomicity of large replaces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use taskctx_domain::{ChatId, ContextUpdate, TaskRecord, TaskStatus};
use taskctx_store::{HistoryStore, PutRecord, RecordStore, StoreError};
use taskctx_store_sled::{LOCK_FILE_NAME, SledStore};
use taskctx_testkit::fixtures::{
    awkward_updates, chat, full_record, hostile_chat_ids, hostile_task_ids, parent_record, record,
    task, update, updates,
};
use tempfile::TempDir;

fn store_dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taskctx.sled");
    (dir, path)
}

fn open(path: &Path) -> SledStore {
    SledStore::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Opens the store's database with sled directly, as an operator's tool would, while the store is
/// closed.
fn raw(path: &Path) -> sled::Db {
    // The store's own handles may still be closing for a moment (sled's lock); retry briefly.
    for _ in 0..100 {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    panic!("sled::open {} kept failing", path.display());
}

fn expect_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, location: &str) {
    match result {
        Err(StoreError::Corrupt {
            location: found, ..
        }) => assert_eq!(found, location),
        other => panic!("expected Corrupt at {location}, got {other:?}"),
    }
}

#[tokio::test]
async fn reopen_keeps_histories_records_and_the_children_index() {
    let (_dir, path) = store_dir();
    {
        let store = open(&path);
        let history = store.history();
        let records = store.records();
        history.append(&chat("a"), &updates(0..3)).await.unwrap();
        history
            .append(&chat("b"), &awkward_updates())
            .await
            .unwrap();
        history.append(&chat("c"), &updates(0..9)).await.unwrap();
        history
            .replace(&chat("c"), &[update(4), update(8)])
            .await
            .unwrap();
        history.append(&chat("gone"), &updates(0..2)).await.unwrap();
        assert!(history.delete(&chat("gone")).await.unwrap());
        records
            .put(parent_record("p", None, &["p.2", "p.1"]), Some(0))
            .await
            .unwrap();
        records
            .put_many(vec![
                PutRecord::new(record("p.1", Some("p")), Some(0)),
                PutRecord::new(record("p.2", Some("p")), Some(0)),
                PutRecord::upsert(full_record("full")),
            ])
            .await
            .unwrap();
        records
            .put(record("p.2", Some("p")), Some(1))
            .await
            .unwrap();
        let stats = store.flush_stats();
        assert!(stats.flushes >= 1 && stats.durable_writes >= 9, "{stats:?}");
        assert!(path.join(LOCK_FILE_NAME).is_file());
    }
    let store = open(&path);
    let history = store.history();
    let records = store.records();
    assert_eq!(history.load(&chat("a")).await.unwrap(), updates(0..3));
    assert_eq!(history.load(&chat("b")).await.unwrap(), awkward_updates());
    assert_eq!(
        history.load(&chat("c")).await.unwrap(),
        vec![update(4), update(8)]
    );
    assert!(history.load(&chat("gone")).await.unwrap().is_empty());
    let listed: Vec<(String, u64)> = history
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.chat_id.into_string(), c.entries))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("a".to_owned(), 3),
            ("b".to_owned(), awkward_updates().len() as u64),
            ("c".to_owned(), 2)
        ]
    );
    // Positions continue where they were.
    assert_eq!(
        history.append(&chat("c"), &updates(20..21)).await.unwrap(),
        2..3
    );
    let children: Vec<(String, u64)> = records
        .children(&task("p"))
        .await
        .unwrap()
        .iter()
        .map(|r| (r.task_id.to_string(), r.revision))
        .collect();
    assert_eq!(children, vec![("p.2".to_owned(), 2), ("p.1".to_owned(), 1)]);
    let mut full = full_record("full");
    full.revision = 1;
    assert_eq!(*records.get(&task("full")).await.unwrap().unwrap(), full);
    let history_stats = history.stats().await.unwrap();
    assert_eq!((history_stats.chats, history_stats.updates), (3, 3 + 6 + 3));
    assert!(history_stats.bytes_on_disk.unwrap_or(0) > 0);
    assert_eq!(records.stats().await.unwrap().total, 4);
}

#[tokio::test]
async fn corrupt_values_are_reported_with_their_location_and_left_alone() {
    let (_dir, path) = store_dir();
    {
        let store = open(&path);
        let history = store.history();
        let records = store.records();
        // Three appends: three chunks, at positions 0, 1 and 2.
        for n in 0..3 {
            history
                .append(&chat("c"), &updates(n..n + 1))
                .await
                .unwrap();
        }
        history.append(&chat("d"), &updates(0..2)).await.unwrap();
        records
            .put(parent_record("p", None, &["r"]), None)
            .await
            .unwrap();
        records.put(record("r", Some("p")), None).await.unwrap();
        records.put(record("ok", None), None).await.unwrap();
        records.put(record("x", None), None).await.unwrap();
    }
    const GARBAGE: &[u8] = b"\xff\x00 definitely not json";
    let entry_key;
    {
        let db = raw(&path);
        let history = db.open_tree("history").unwrap();
        // Keys sort by chat then position: the second key is chat `c`'s chunk at position 1.
        entry_key = history.iter().keys().nth(1).unwrap().unwrap();
        history.insert(&entry_key, GARBAGE).unwrap();
        let records = db.open_tree("records").unwrap();
        records.insert("r", GARBAGE).unwrap();
        // A well-formed record filed under the wrong key.
        let y = records.get("ok").unwrap().unwrap();
        records.insert("x", y).unwrap();
        db.open_tree("chats").unwrap().insert("d", GARBAGE).unwrap();
        db.flush().unwrap();
    }
    {
        let store = open(&path);
        let history = store.history();
        let records = store.records();

        expect_corrupt(history.load(&chat("c")).await, "history/\"c\"/1");
        // The entries around it are still readable one by one.
        assert_eq!(
            history.load_since(&chat("c"), 2).await.unwrap(),
            updates(2..3)
        );
        expect_corrupt(history.load(&chat("d")).await, "chats/\"d\"");
        expect_corrupt(history.list().await, "chats/\"d\"");
        expect_corrupt(history.stats().await, "chats/\"d\"");
        // Writes that would need the unreadable metadata refuse rather than overwrite it.
        expect_corrupt(
            history.append(&chat("d"), &updates(5..6)).await,
            "chats/\"d\"",
        );
        expect_corrupt(
            history.replace(&chat("d"), &updates(5..6)).await,
            "chats/\"d\"",
        );
        expect_corrupt(history.delete(&chat("d")).await, "chats/\"d\"");

        expect_corrupt(records.get(&task("r")).await, "records/\"r\"");
        expect_corrupt(records.get(&task("x")).await, "records/\"x\"");
        expect_corrupt(records.put(record("r", None), None).await, "records/\"r\"");
        expect_corrupt(
            records
                .put_many(vec![
                    PutRecord::upsert(record("new", None)),
                    PutRecord::upsert(record("r", None)),
                ])
                .await,
            "records/\"r\"",
        );
        assert!(records.get(&task("new")).await.unwrap().is_none());
        expect_corrupt(records.delete(&task("r")).await, "records/\"r\"");
        expect_corrupt(records.children(&task("p")).await, "records/\"r\"");
        expect_corrupt(records.delete_subtree(&task("p")).await, "records/\"r\"");
        expect_corrupt(records.roots().await, "records/\"r\"");
        expect_corrupt(records.stats().await, "records/\"r\"");
        // Intact data stays usable.
        assert_eq!(records.get(&task("ok")).await.unwrap().unwrap().revision, 1);
        assert!(records.get(&task("p")).await.unwrap().is_some());
    }
    let db = raw(&path);
    let history = db.open_tree("history").unwrap();
    assert_eq!(history.get(&entry_key).unwrap().unwrap(), GARBAGE);
    let records = db.open_tree("records").unwrap();
    assert_eq!(records.get("r").unwrap().unwrap(), GARBAGE);
    assert_eq!(
        records.get("x").unwrap().unwrap(),
        records.get("ok").unwrap().unwrap()
    );
    assert_eq!(
        db.open_tree("chats").unwrap().get("d").unwrap().unwrap(),
        GARBAGE
    );
    // The subtree delete that was refused removed nothing either.
    assert!(records.get("p").unwrap().is_some());
}

#[tokio::test]
async fn hostile_and_look_alike_ids_never_share_keys() {
    let (_dir, path) = store_dir();
    let mut chats = hostile_chat_ids();
    for extra in [
        "ab",
        "a b",
        "a/",
        "aa",
        "a\u{7f}x",
        "a\u{2400}",
        "a\u{200b}",
    ] {
        match ChatId::new(extra) {
            Ok(id) => chats.push(id),
            // DEL is a control character: the domain refuses it before it reaches a key.
            Err(_) => assert!(extra.contains('\u{7f}')),
        }
    }
    assert!(
        ChatId::new("a\u{1}").is_err(),
        "control characters never reach a key"
    );
    let tasks = hostile_task_ids();
    {
        let store = open(&path);
        let history = store.history();
        let records = store.records();
        for (n, id) in chats.iter().enumerate() {
            let n = n as u64;
            // Chat number n gets n + 1 entries, all stamped with n.
            let batch: Vec<ContextUpdate> = (0..=n).map(|_| update(n)).collect();
            history.append(id, &batch).await.unwrap();
        }
        for (n, parent) in tasks.iter().enumerate() {
            let mut r = record(parent.as_str(), None);
            r.goal = format!("parent {n}");
            records.put(r, Some(0)).await.unwrap();
            let child = format!("child of {n}");
            records
                .put(record(&child, Some(parent.as_str())), Some(0))
                .await
                .unwrap();
        }
        // Deleting `a` must leave `ab`, `a b`, `a/`, `aa` alone.
        assert!(history.delete(&chat("a")).await.unwrap());
    }
    let store = open(&path);
    let history = store.history();
    let records = store.records();
    for (n, id) in chats.iter().enumerate() {
        let n = n as u64;
        let expected: Vec<ContextUpdate> = if id.as_str() == "a" {
            Vec::new()
        } else {
            (0..=n).map(|_| update(n)).collect()
        };
        assert_eq!(history.load(id).await.unwrap(), expected, "chat {id:?}");
        assert_eq!(
            history.load_since(id, n).await.unwrap().len(),
            usize::from(id.as_str() != "a"),
            "tail of {id:?}"
        );
    }
    let listed: BTreeSet<ChatId> = history
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.chat_id)
        .collect();
    let expected: BTreeSet<ChatId> = chats
        .iter()
        .filter(|c| c.as_str() != "a")
        .cloned()
        .collect();
    assert_eq!(listed, expected);
    for (n, parent) in tasks.iter().enumerate() {
        assert_eq!(
            records.get(parent).await.unwrap().unwrap().goal,
            format!("parent {n}")
        );
        let children: Vec<String> = records
            .children(parent)
            .await
            .unwrap()
            .iter()
            .map(|r| r.task_id.to_string())
            .collect();
        assert_eq!(
            children,
            vec![format!("child of {n}")],
            "children of {parent:?}"
        );
    }
    drop((history, records, store));
    // At the key level: one history chunk per chat (each was one append) and one index key per
    // child, nothing left behind by the delete.
    let db = raw(&path);
    assert_eq!(db.open_tree("history").unwrap().len(), chats.len() - 1);
    assert_eq!(db.open_tree("children").unwrap().len(), tasks.len());
}

#[tokio::test]
async fn a_second_open_in_this_process_is_locked_until_every_handle_is_gone() {
    let (_dir, path) = store_dir();
    let store = open(&path);
    match SledStore::open(&path) {
        Err(StoreError::Locked { path: p, detail }) => {
            assert_eq!(p, path.display().to_string());
            assert!(detail.contains("this process"), "{detail}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // A port handle keeps the store open after the store itself is dropped.
    let history = store.history();
    drop(store);
    assert!(matches!(
        SledStore::open(&path),
        Err(StoreError::Locked { .. })
    ));
    history.append(&chat("c"), &updates(0..1)).await.unwrap();
    drop(history);
    let again = open(&path);
    assert_eq!(
        again.history().load(&chat("c")).await.unwrap(),
        updates(0..1)
    );
}

#[tokio::test]
async fn opening_something_that_is_not_a_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"hello").unwrap();
    match SledStore::open(&file) {
        Err(StoreError::Io { .. }) => {}
        other => panic!("expected Io, got {other:?}"),
    }
}

#[tokio::test]
async fn a_store_of_another_format_is_refused_and_left_alone() {
    let (_dir, path) = store_dir();
    drop(open(&path));
    {
        let db = raw(&path);
        db.insert("taskctx.format", "2").unwrap();
        db.flush().unwrap();
    }
    match SledStore::open(&path) {
        Err(StoreError::Backend { detail, .. }) => assert!(detail.contains("format"), "{detail}"),
        other => panic!("expected a format error, got {other:?}"),
    }
    assert_eq!(
        raw(&path).get("taskctx.format").unwrap().unwrap(),
        &b"2"[..]
    );
}

/// Many writers at once: every write is acknowledged, lands exactly once, survives a reopen, and
/// the writers share flushes instead of paying one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_flushes() {
    const WRITERS: u64 = 64;
    const APPENDS: u64 = 8;
    const CHATS: u64 = 4;
    let (_dir, path) = store_dir();
    let store = open(&path);
    let before = store.flush_stats();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let history = store.history();
        let records = store.records();
        tasks.push(tokio::spawn(async move {
            let c = chat(&format!("chat-{}", writer % CHATS));
            let mut acknowledged = Vec::new();
            for i in 0..APPENDS {
                let n = writer * 1000 + i;
                let range = history.append(&c, &[update(n)]).await.unwrap();
                acknowledged.push((c.clone(), range.start, n));
            }
            records
                .put(record(&format!("r{writer}"), Some("root")), Some(0))
                .await
                .unwrap();
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    let stats = store.flush_stats();
    let writes = stats.durable_writes - before.durable_writes;
    let flushes = stats.flushes - before.flushes;
    writeln!(
        std::io::stderr(),
        "group commit: {writes} durable writes needed {flushes} flushes"
    )
    .unwrap();
    assert_eq!(writes, WRITERS * (APPENDS + 1));
    assert!(
        flushes * 2 <= writes,
        "{flushes} flushes for {writes} writes: writers did not share flushes"
    );
    drop(store);

    let store = open(&path);
    let history = store.history();
    for c in 0..CHATS {
        let loaded = history.load(&chat(&format!("chat-{c}"))).await.unwrap();
        assert_eq!(loaded.len() as u64, WRITERS / CHATS * APPENDS);
    }
    for (c, seq, n) in &acknowledged {
        let loaded = history.load_since(c, *seq).await.unwrap();
        assert_eq!(loaded.first(), Some(&update(*n)), "{c:?} at {seq}");
    }
    assert_eq!(
        store.records().children(&task("root")).await.unwrap().len() as u64,
        WRITERS
    );
}

/// sled iterators lock per step, not per scan; readers of a long history racing a `replace` must
/// still see the old or the new history whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_of_long_histories_never_see_half_a_replace() {
    let (_dir, path) = store_dir();
    let store = open(&path);
    let c = chat("long");
    let old = updates(0..1500);
    let new = updates(5000..6100);
    store.history().append(&c, &old).await.unwrap();
    let mut readers = Vec::new();
    for _ in 0..2 {
        let history = store.history();
        let (c, old, new) = (c.clone(), old.clone(), new.clone());
        readers.push(tokio::spawn(async move {
            for _ in 0..15 {
                let seen = history.load(&c).await.unwrap();
                assert!(seen == old || seen == new, "saw {} entries", seen.len());
                let tail = history.load_since(&c, 1000).await.unwrap();
                assert!(
                    tail == old[1000..] || tail == new[1000..],
                    "tail of {} entries",
                    tail.len()
                );
            }
        }));
    }
    let history = store.history();
    for round in 0..10 {
        let next = if round % 2 == 0 { &new } else { &old };
        history.replace(&c, next).await.unwrap();
    }
    for r in readers {
        r.await.unwrap();
    }
}

/// Records written in one batch are in the store together, with their index entries.
#[tokio::test]
async fn a_batch_moves_children_between_parents_in_one_step() {
    let (_dir, path) = store_dir();
    let store = open(&path);
    let records = store.records();
    for id in ["a", "b"] {
        records.put(record(id, None), None).await.unwrap();
    }
    for id in ["c1", "c2"] {
        records.put(record(id, Some("a")), None).await.unwrap();
    }
    let revisions = records
        .put_many(vec![
            PutRecord::new(record("c1", Some("b")), Some(1)),
            PutRecord::new(record("c2", None), Some(1)),
            PutRecord::new(record("c3", Some("b")), Some(0)),
        ])
        .await
        .unwrap();
    assert_eq!(revisions, vec![2, 2, 1]);
    let ids = |v: Vec<Arc<TaskRecord>>| -> Vec<String> {
        v.iter().map(|r| r.task_id.to_string()).collect()
    };
    assert!(records.children(&task("a")).await.unwrap().is_empty());
    assert_eq!(
        ids(records.children(&task("b")).await.unwrap()),
        ["c1", "c3"]
    );
    assert_eq!(ids(records.roots().await.unwrap()), ["a", "b", "c2"]);
    assert_eq!(
        ids(records.by_status(TaskStatus::Done).await.unwrap()).len(),
        5
    );
}

/// Large appends are stored in several chunks; reads from any position, across chunk
/// boundaries, return exactly the tail, before and after a reopen.
#[tokio::test]
async fn tails_are_exact_across_chunk_boundaries() {
    let (_dir, path) = store_dir();
    let c = chat("chunked");
    let all: Vec<ContextUpdate> = updates(0..3000);
    {
        let store = open(&path);
        let history = store.history();
        history.append(&c, &all[..2500]).await.unwrap();
        history.append(&c, &all[2500..2501]).await.unwrap();
        history.append(&c, &all[2501..]).await.unwrap();
    }
    let chunk_starts: Vec<u64> = {
        let db = raw(&path);
        db.open_tree("history")
            .unwrap()
            .iter()
            .keys()
            .map(|k| {
                let k = k.unwrap();
                u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap())
            })
            .collect()
    };
    assert!(chunk_starts.len() > 3, "{chunk_starts:?}");
    assert!(chunk_starts.contains(&2500) && chunk_starts.contains(&2501));
    let store = open(&path);
    let history = store.history();
    assert_eq!(history.load(&c).await.unwrap(), all);
    let mut probes: Vec<u64> = vec![0, 1, 2999, 3000, 3001, u64::MAX];
    for start in &chunk_starts {
        probes.extend([start.saturating_sub(1), *start, start + 1]);
    }
    for from in probes {
        let expected = all
            .get(usize::try_from(from).unwrap_or(usize::MAX)..)
            .unwrap_or(&[]);
        assert_eq!(
            history.load_since(&c, from).await.unwrap(),
            expected,
            "load_since({from})"
        );
    }
}

/// A chunk missing from the middle of a history is reported where the gap starts; nothing is
/// returned as if the history were shorter.
#[tokio::test]
async fn a_missing_chunk_is_corrupt_at_the_gap() {
    let (_dir, path) = store_dir();
    {
        let store = open(&path);
        for n in 0..4 {
            store
                .history()
                .append(&chat("gap"), &updates(n * 2..n * 2 + 2))
                .await
                .unwrap();
        }
    }
    {
        let db = raw(&path);
        let history = db.open_tree("history").unwrap();
        let third = history.iter().keys().nth(2).unwrap().unwrap();
        history.remove(third).unwrap();
        db.flush().unwrap();
    }
    let store = open(&path);
    let history = store.history();
    expect_corrupt(history.load(&chat("gap")).await, "history/\"gap\"/4");
    expect_corrupt(
        history.load_since(&chat("gap"), 5).await,
        "history/\"gap\"/4",
    );
    assert_eq!(
        history.load_since(&chat("gap"), 6).await.unwrap(),
        updates(6..8)
    );
}

/// Point reads run in place on a multi-thread runtime's workers and on the blocking pool on a
/// current-thread runtime: both give the same answers, also while writers change the records.
#[test]
fn point_reads_answer_alike_on_every_runtime_flavour() {
    let (_dir, path) = store_dir();
    let store = Arc::new(open(&path));
    let reads = |store: Arc<SledStore>| async move {
        let records = store.records();
        let root = records
            .get(&task("root"))
            .await
            .unwrap()
            .map(|r| r.revision);
        let many = records
            .get_many(&[task("c1"), task("missing"), task("c0")])
            .await
            .unwrap()
            .iter()
            .map(|r| r.as_ref().map(|r| r.task_id.as_str().to_owned()))
            .collect::<Vec<_>>();
        let children = records
            .children(&task("root"))
            .await
            .unwrap()
            .iter()
            .map(|r| r.task_id.as_str().to_owned())
            .collect::<Vec<_>>();
        (root, many, children)
    };
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    current.block_on(async {
        let records = store.records();
        records.put(record("root", None), None).await.unwrap();
        for i in 0..3 {
            let id = format!("c{i}");
            records.put(record(&id, Some("root")), None).await.unwrap();
        }
    });
    let expected = (
        Some(1),
        vec![Some("c1".to_owned()), None, Some("c0".to_owned())],
        vec!["c0".to_owned(), "c1".to_owned(), "c2".to_owned()],
    );
    assert_eq!(current.block_on(reads(Arc::clone(&store))), expected);

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    multi.block_on(async {
        // A writer keeps adding children of another parent while readers run on the workers.
        let writer = {
            let records = store.records();
            tokio::spawn(async move {
                for i in 0..40 {
                    let id = format!("other{i}");
                    records
                        .put(record(&id, Some("elsewhere")), None)
                        .await
                        .unwrap();
                }
            })
        };
        let readers: Vec<_> = (0..8)
            .map(|_| tokio::spawn(reads(Arc::clone(&store))))
            .collect();
        for reader in readers {
            assert_eq!(reader.await.unwrap(), expected);
        }
        writer.await.unwrap();
        let others = store.records().children(&task("elsewhere")).await.unwrap();
        assert_eq!(others.len(), 40);
    });
}

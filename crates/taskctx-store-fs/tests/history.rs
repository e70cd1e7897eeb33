//! Behaviour of the file history store beyond the shared contract: its files, torn tails,
//! corruption, hostile ids on disk, reopening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use taskctx_store::{HistoryStore, StoreError};
use taskctx_store_fs::FsStore;
use taskctx_testkit::fixtures::{awkward_updates, chat, hostile_chat_ids, update, updates};

fn store(dir: &Path) -> FsStore {
    FsStore::open_blocking(dir).unwrap()
}

/// Every regular file and directory under `dir`.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            assert!(
                !entry.file_type().unwrap().is_symlink(),
                "{path:?} is a link"
            );
            if entry.file_type().unwrap().is_dir() {
                pending.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

fn expect_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, location: &str, needle: &str) {
    match result {
        Err(StoreError::Corrupt {
            location: found,
            detail,
        }) => {
            assert_eq!(found, location, "location (detail: {detail})");
            assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
        }
        other => panic!("expected Corrupt at {location}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_history_is_one_json_line_per_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let history = store.history();
    let c = chat("Chat 1");
    history.append(&c, &updates(0..2)).await.unwrap();
    history.append(&c, &updates(2..3)).await.unwrap();
    let path = store.history_path(&c);
    assert_eq!(path, dir.path().join("history").join("^chat%201.jsonl"));
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(text.ends_with('\n'));
    for (n, line) in lines.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value, serde_json::to_value(update(n as u64)).unwrap());
    }
}

#[tokio::test]
async fn reopening_keeps_histories_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let history = store(dir.path()).history();
        history.append(&chat("a"), &updates(0..3)).await.unwrap();
        history
            .append(&chat("b"), &awkward_updates())
            .await
            .unwrap();
        history.replace(&chat("e"), &[]).await.unwrap();
    }
    let history = store(dir.path()).history();
    assert_eq!(history.load(&chat("a")).await.unwrap(), updates(0..3));
    assert_eq!(history.load(&chat("b")).await.unwrap(), awkward_updates());
    assert!(history.load(&chat("e")).await.unwrap().is_empty());
    assert_eq!(
        history.append(&chat("a"), &updates(3..5)).await.unwrap(),
        3..5
    );
    assert_eq!(
        history.append(&chat("e"), &updates(0..1)).await.unwrap(),
        0..1
    );
    let listed: Vec<(String, u64)> = history
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.chat_id.into_string(), c.entries))
        .collect();
    assert_eq!(
        listed,
        vec![("a".into(), 5), ("b".into(), 6), ("e".into(), 1)]
    );
    let stats = history.stats().await.unwrap();
    assert_eq!((stats.chats, stats.updates), (3, 12));
    assert!(stats.bytes_on_disk.unwrap() > 1 << 20);
}

#[tokio::test]
async fn a_torn_tail_is_ignored_on_load_and_cut_on_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let c = chat("torn");
    let path = {
        let store = store(dir.path());
        store.history().append(&c, &updates(0..3)).await.unwrap();
        store.history_path(&c)
    };
    let intact = fs::read(&path).unwrap();
    // A crash in the middle of writing the next line.
    let next = serde_json::to_vec(&update(3)).unwrap();
    let mut torn = intact.clone();
    torn.extend_from_slice(&next[..next.len() / 2]);
    fs::write(&path, &torn).unwrap();

    let store = store(dir.path());
    let history = store.history();
    assert_eq!(history.load(&c).await.unwrap(), updates(0..3));
    assert_eq!(history.list().await.unwrap()[0].entries, 3);
    assert_eq!(
        fs::read(&path).unwrap(),
        torn,
        "reading must not change the file"
    );

    assert_eq!(history.append(&c, &updates(10..12)).await.unwrap(), 3..5);
    let mut expected = updates(0..3);
    expected.extend(updates(10..12));
    assert_eq!(history.load(&c).await.unwrap(), expected);
    let repaired = fs::read(&path).unwrap();
    assert!(repaired.starts_with(&intact), "earlier lines intact");
    assert_eq!(repaired.iter().filter(|&&b| b == b'\n').count(), 5);
    drop(history);
    drop(store);
    assert_eq!(
        self::store(dir.path()).history().load(&c).await.unwrap(),
        expected
    );
}

#[tokio::test]
async fn a_torn_first_line_leaves_an_empty_chat_that_appends_start_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let c = chat("new");
    let path = store(dir.path()).history_path(&c);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, b"{\"timestamp\": 1700000000.").unwrap();
    let history = store(dir.path()).history();
    assert!(history.load(&c).await.unwrap().is_empty());
    assert_eq!(history.append(&c, &updates(0..1)).await.unwrap(), 0..1);
    assert_eq!(history.load(&c).await.unwrap(), updates(0..1));
}

#[tokio::test]
async fn a_complete_last_line_without_newline_is_kept_and_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let c = chat("hand-written");
    let path = store(dir.path()).history_path(&c);
    let mut text = String::new();
    for n in 0..2 {
        text.push_str(&serde_json::to_string(&update(n)).unwrap());
        text.push('\n');
    }
    text.pop(); // an editor that does not end the file with a newline
    fs::write(&path, &text).unwrap();
    let history = store(dir.path()).history();
    assert_eq!(history.load(&c).await.unwrap(), updates(0..2));
    assert_eq!(history.append(&c, &updates(2..3)).await.unwrap(), 2..3);
    assert_eq!(history.load(&c).await.unwrap(), updates(0..3));
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);
}

/// Damaged files are reported with the file and line, by every reading call, and are left
/// exactly as they were (also by appends, which refuse when the last line is damaged).
#[tokio::test]
async fn corrupt_histories_are_reported_with_their_location_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let line = |n: u64| serde_json::to_string(&update(n)).unwrap() + "\n";
    let cases: Vec<(&str, String, u64, &str)> = vec![
        (
            "garbled-middle",
            format!("{}{{\"timestamp\": 1, garbage\n{}", line(0), line(2)),
            2,
            "key must be a string",
        ),
        (
            "wrong-type-middle",
            format!("{}[1, 2, 3]\n{}", line(0), line(2)),
            2,
            "invalid type",
        ),
        (
            "missing-field-last",
            format!(
                "{}{{\"timestamp\": 1, \"update_type\": \"message\"}}\n",
                line(0)
            ),
            2,
            "missing field `data`",
        ),
        (
            "empty-line",
            format!("{}\n{}", line(0), line(1)),
            2,
            "empty line",
        ),
        (
            "binary-tail",
            format!("{}\u{1}\u{2}\u{3}binary", line(0)),
            2,
            "expected value",
        ),
        (
            "bad-timestamp",
            "{\"timestamp\": \"later\", \"update_type\": \"message\", \"data\": 1}\n".to_owned(),
            1,
            "invalid timestamp",
        ),
    ];
    let paths: Vec<PathBuf> = {
        let store = store(dir.path());
        cases
            .iter()
            .map(|(id, content, _, _)| {
                let path = store.history_path(&chat(id));
                fs::write(&path, content).unwrap();
                path
            })
            .collect()
    };
    let store = store(dir.path());
    let history = store.history();
    for ((id, content, line, needle), path) in cases.iter().zip(&paths) {
        let c = chat(id);
        let location = format!("{}:{line}", path.display());
        expect_corrupt(history.load(&c).await, &location, needle);
        expect_corrupt(history.load_since(&c, 0).await, &location, needle);
        if *line == content.lines().count() as u64 {
            // The damaged line is the last one: appends refuse rather than write after it.
            expect_corrupt(history.append(&c, &updates(9..10)).await, &location, needle);
        }
        assert_eq!(&fs::read_to_string(path).unwrap(), content, "{id} changed");
    }
    // Listing reports the first damaged chat it meets instead of hiding it.
    assert!(matches!(
        history.list().await,
        Err(StoreError::Corrupt { .. })
    ));
    for ((_, content, _, _), path) in cases.iter().zip(&paths) {
        assert_eq!(&fs::read_to_string(path).unwrap(), content);
    }
}

#[tokio::test]
async fn a_zero_length_file_is_an_existing_empty_chat() {
    let dir = tempfile::tempdir().unwrap();
    let c = chat("zero");
    let path = store(dir.path()).history_path(&c);
    fs::write(&path, b"").unwrap();
    let history = store(dir.path()).history();
    assert!(history.load(&c).await.unwrap().is_empty());
    let listed = history.list().await.unwrap();
    assert_eq!((listed[0].chat_id.as_str(), listed[0].entries), ("zero", 0));
    assert_eq!(history.append(&c, &updates(0..1)).await.unwrap(), 0..1);
}

#[tokio::test]
async fn hostile_ids_stay_inside_the_root_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ids = hostile_chat_ids();
    {
        let history = store(&root).history();
        for (n, id) in ids.iter().enumerate() {
            let n = n as u64;
            history.append(id, &updates(n..n + 1)).await.unwrap();
            history.replace(id, &updates(n..n + 2)).await.unwrap();
        }
    }
    let canonical_root = root.canonicalize().unwrap();
    let everything = tree(dir.path());
    for path in &everything {
        let canonical = path.canonicalize().unwrap();
        assert!(canonical.starts_with(&canonical_root), "{path:?} escaped");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= 255, "{name:?} is too long");
    }
    let history_files = everything
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .count();
    assert_eq!(history_files, ids.len());

    let history = store(&root).history();
    let listed: Vec<String> = history
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.chat_id.into_string())
        .collect();
    let mut expected: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for (n, id) in ids.iter().enumerate() {
        let n = n as u64;
        assert_eq!(history.load(id).await.unwrap(), updates(n..n + 2), "{id:?}");
    }
    // Deleting the long ids removes their continuation directories too.
    for id in &ids {
        assert!(history.delete(id).await.unwrap());
    }
    assert_eq!(tree(&root.join("history")), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn foreign_and_temp_files_are_ignored_and_temps_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let history = store(dir.path()).history();
        history.append(&chat("a"), &updates(0..1)).await.unwrap();
    }
    let history_dir = dir.path().join("history");
    fs::write(history_dir.join("README.txt"), b"notes").unwrap();
    fs::write(
        history_dir.join("A.jsonl"),
        b"not ours: upper case is never encoded so",
    )
    .unwrap();
    fs::write(
        history_dir.join("%61.jsonl"),
        b"a non-canonical spelling of `a`",
    )
    .unwrap();
    fs::create_dir(history_dir.join("stuff")).unwrap();
    fs::write(history_dir.join(".taskctx-tmp-1-1"), b"half a replace").unwrap();
    let history = store(dir.path()).history();
    let listed: Vec<String> = history
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.chat_id.into_string())
        .collect();
    assert_eq!(listed, vec!["a"]);
    assert!(!history_dir.join(".taskctx-tmp-1-1").exists());
    assert!(history_dir.join("README.txt").exists());
}

#[tokio::test]
async fn replace_is_durable_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = chat("r");
    {
        let history = store(dir.path()).history();
        history.append(&c, &updates(0..10)).await.unwrap();
        history.replace(&c, &updates(3..5)).await.unwrap();
        assert_eq!(history.append(&c, &updates(5..6)).await.unwrap(), 2..3);
    }
    let names: Vec<String> = fs::read_dir(dir.path().join("history"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["r.jsonl"]);
    assert_eq!(
        store(dir.path()).history().load(&c).await.unwrap(),
        updates(3..6)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_to_one_chat_keep_every_writers_updates_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let history = std::sync::Arc::new(store.history());
    let c = chat("busy");
    let mut tasks = Vec::new();
    for writer in 0..6u64 {
        let history = std::sync::Arc::clone(&history);
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15u64 {
                let n = writer * 1000 + i;
                let range = history.append(&c, &[update(n)]).await.unwrap();
                assert_eq!(range.end - range.start, 1);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = history.load(&c).await.unwrap();
    assert_eq!(all.len(), 90);
    for writer in 0..6u64 {
        let mine: Vec<_> = all
            .iter()
            .filter(|u| u.metadata["n"].as_u64().unwrap() / 1000 == writer)
            .cloned()
            .collect();
        let expected: Vec<_> = (0..15).map(|i| update(writer * 1000 + i)).collect();
        assert_eq!(mine, expected, "writer {writer} lost or reordered updates");
    }
    drop(history);
    drop(store);
    assert_eq!(
        self::store(dir.path()).history().load(&c).await.unwrap(),
        all
    );
}

#[tokio::test]
async fn failed_writes_report_the_chat_and_file_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let history = store.history();
    history.append(&chat("kept"), &updates(0..2)).await.unwrap();
    // Make the history directory unusable: a file where the directory was.
    let history_dir = dir.path().join("history");
    let aside = dir.path().join("history-aside");
    fs::rename(&history_dir, &aside).unwrap();
    fs::write(&history_dir, b"in the way").unwrap();
    match history.append(&chat("new"), &updates(0..1)).await {
        Err(error @ StoreError::Io { .. }) => {
            let message = error.to_string();
            assert!(message.contains("chat `new`"), "{message}");
            assert!(message.contains("history"), "{message}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(matches!(
        history.append(&chat("kept"), &updates(2..3)).await,
        Err(StoreError::Io { .. })
    ));
    assert!(matches!(
        history.replace(&chat("kept"), &updates(5..6)).await,
        Err(StoreError::Io { .. })
    ));
    fs::remove_file(&history_dir).unwrap();
    fs::rename(&aside, &history_dir).unwrap();
    // Nothing changed, and the store works again without being reopened.
    assert!(history.load(&chat("new")).await.unwrap().is_empty());
    assert_eq!(history.load(&chat("kept")).await.unwrap(), updates(0..2));
    assert_eq!(
        history.append(&chat("kept"), &updates(2..3)).await.unwrap(),
        2..3
    );
    assert_eq!(
        history.append(&chat("new"), &updates(0..1)).await.unwrap(),
        0..1
    );
}

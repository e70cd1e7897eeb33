//! The store across processes: the lock keeps a second opener out, in this process and in
//! another, until the holder is gone; and `kill -9` in the middle of appends and batches loses no
//! acknowledged write and never leaves half a record batch.
//!
//! The other process is this test binary itself, started with [`CHILD_ENV`] set: the test
//! function then plays the child's part instead of the parent's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use taskctx_store::{HistoryStore, PutRecord, RecordStore, StoreError};
use taskctx_store_fs::FsStore;
use taskctx_testkit::fixtures::{chat, record, task, updates};

/// Set in a child process to `ROLE:DIRECTORY`.
const CHILD_ENV: &str = "TASKCTX_FS_TEST_CHILD";

/// The child's role and directory, when this process is a child.
fn child_role() -> Option<(String, PathBuf)> {
    let value = std::env::var(CHILD_ENV).ok()?;
    let (role, dir) = value.split_once(':')?;
    Some((role.to_owned(), PathBuf::from(dir)))
}

/// Runs the test `name` of this binary in a child process with `role`.
fn child(name: &str, role: &str, dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{role}:{}", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_second_open_in_the_same_process_is_locked_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = FsStore::open_blocking(dir.path()).unwrap();
    let history = first.history();
    drop(first);
    match FsStore::open_blocking(dir.path()) {
        Err(error @ StoreError::Locked { .. }) => {
            assert!(error.is_retryable());
            let message = error.to_string();
            assert!(message.contains("locked"), "{message}");
            assert!(
                message.contains(&format!("process {}", std::process::id())),
                "{message}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // The last handle keeps the lock; dropping it releases it.
    drop(history);
    FsStore::open_blocking(dir.path()).unwrap();
}

#[test]
fn a_second_process_gets_locked_while_the_store_is_open() {
    if let Some((role, dir)) = child_role() {
        assert_eq!(role, "open");
        match FsStore::open_blocking(&dir) {
            Ok(_) => say("CHILD-RESULT: opened"),
            Err(StoreError::Locked { detail, .. }) => {
                say(&format!("CHILD-RESULT: locked {detail}"))
            }
            Err(other) => say(&format!("CHILD-RESULT: error {other}")),
        }
        return;
    }
    let run = |dir: &Path| {
        let output = child(
            "a_second_process_gets_locked_while_the_store_is_open",
            "open",
            dir,
        )
        .output()
        .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        stdout
            .lines()
            .find_map(|l| l.split_once("CHILD-RESULT: ").map(|(_, answer)| answer))
            .unwrap_or_else(|| panic!("the child said nothing: {stdout}"))
            .to_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open_blocking(dir.path()).unwrap();
    let answer = run(dir.path());
    assert!(
        answer.starts_with("locked") && answer.contains(&format!("process {}", std::process::id())),
        "{answer}"
    );
    drop(store);
    assert_eq!(run(dir.path()), "opened");
}

/// The child's work until it is killed: appends of three updates numbered by position, and
/// batches of five records sharing one goal, each acknowledged on stdout once it returned.
fn crash_child(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    runtime().block_on(async {
        let store = FsStore::open(dir).await.unwrap();
        let history = store.history();
        let records = store.records();
        let c = chat("c");
        let mut next = history.load(&c).await.unwrap().len() as u64;
        let mut batch = records
            .get(&task("r.0"))
            .await
            .unwrap()
            .map_or(0, |r| r.goal.parse::<u64>().unwrap() + 1);
        while Instant::now() < deadline {
            let range = history.append(&c, &updates(next..next + 3)).await.unwrap();
            next = range.end;
            say(&format!("appended {}", range.end));
            let puts = (0..5)
                .map(|j| {
                    let mut r = record(&format!("r.{j}"), Some("r"));
                    r.goal = batch.to_string();
                    PutRecord::upsert(r)
                })
                .collect();
            records.put_many(puts).await.unwrap();
            say(&format!("batch {batch}"));
            batch += 1;
        }
    });
}

#[test]
fn kill_9_loses_no_acknowledged_write_and_no_batch_is_half_applied() {
    const NAME: &str = "kill_9_loses_no_acknowledged_write_and_no_batch_is_half_applied";
    if let Some((role, dir)) = child_role() {
        assert_eq!(role, "crash");
        crash_child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked_appends = 0u64;
    let mut acked_batch: Option<u64> = None;
    for round in 0..6usize {
        let mut process = child(NAME, "crash", dir.path()).spawn().unwrap();
        let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
        // Kill at a different point of the work each round, mid-append or mid-batch.
        let wait_for = 3 + round * 7;
        let mut seen = 0;
        let mut note = |line: &str| {
            if let Some(end) = line.strip_prefix("appended ") {
                acked_appends = acked_appends.max(end.parse().unwrap());
            } else if let Some(n) = line.strip_prefix("batch ") {
                acked_batch = Some(acked_batch.map_or(0, |b| b).max(n.parse().unwrap()));
            }
        };
        for line in lines.by_ref() {
            let line = line.unwrap();
            note(&line);
            seen += usize::from(line.starts_with("appended ") || line.starts_with("batch "));
            if seen >= wait_for {
                break;
            }
        }
        process.kill().unwrap();
        // Whatever the child acknowledged before it died counts too.
        for line in lines {
            note(&line.unwrap());
        }
        process.wait().unwrap();

        runtime().block_on(async {
            let store = FsStore::open(dir.path()).await.unwrap();
            let history = store.history().load(&chat("c")).await.unwrap();
            assert!(
                history.len() as u64 >= acked_appends,
                "round {round}: {} updates on disk, {acked_appends} acknowledged",
                history.len()
            );
            assert_eq!(history, updates(0..history.len() as u64), "round {round}");
            let records = store.records();
            let goals: Vec<String> = records
                .children(&task("r"))
                .await
                .unwrap()
                .iter()
                .map(|r| r.goal.clone())
                .collect();
            if let Some(acked) = acked_batch {
                assert_eq!(goals.len(), 5, "round {round}: {goals:?}");
                let on_disk: u64 = goals[0].parse().unwrap();
                assert!(
                    on_disk >= acked,
                    "round {round}: batch {on_disk} < acked {acked}"
                );
            }
            assert!(
                goals.windows(2).all(|w| w[0] == w[1]),
                "round {round}: half a batch: {goals:?}"
            );
        });
    }
    assert!(acked_appends > 0 && acked_batch.is_some());
}

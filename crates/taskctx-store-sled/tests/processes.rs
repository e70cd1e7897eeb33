//! Two processes on one store: a second process gets `Locked`; a writer killed with SIGKILL at a
//! random moment loses none of the writes it acknowledged.
//!
//! The child processes are this test binary itself, started with `child_process_entry --exact`
//! and an environment variable that selects what the child does; run normally, that test does
//! nothing.
//!
//! `TASKCTX_SLED_CRASH_CYCLES=200 cargo test -p taskctx-store-sled --test processes -- kill`
//! runs the long crash loop (the default is a handful of cycles).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use taskctx_domain::ContextUpdate;
use taskctx_store::{HistoryStore, PutRecord, RecordStore, StoreError};
use taskctx_store_sled::SledStore;
use taskctx_testkit::fixtures::{chat, record, task, update, updates};

/// What the child does: `locked` (try to open, report) or `crash` (write until killed).
const MODE: &str = "TASKCTX_SLED_TEST_CHILD";
/// The store directory the child works on.
const PATH: &str = "TASKCTX_SLED_TEST_PATH";
/// The crash cycle number, so every cycle writes distinct values.
const CYCLE: &str = "TASKCTX_SLED_TEST_CYCLE";
/// How many kill cycles `acknowledged_writes_survive_kill_9` runs.
const CYCLES: &str = "TASKCTX_SLED_CRASH_CYCLES";

/// A child that outlives its parent stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

/// The histories the `swap` chat is replaced with, alternately.
fn swap_a() -> Vec<ContextUpdate> {
    updates(0..30)
}
fn swap_b() -> Vec<ContextUpdate> {
    updates(500..510)
}

fn random_below(bound: u64) -> u64 {
    RandomState::new().hash_one(Instant::now()) % bound.max(1)
}

fn child(mode: &str, path: &Path, cycle: u64) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MODE, mode)
        .env(PATH, path)
        .env(CYCLE, cycle.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// The child side. Does nothing unless started by one of the tests below.
#[test]
fn child_process_entry() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let path = std::path::PathBuf::from(std::env::var(PATH).unwrap());
    let cycle: u64 = std::env::var(CYCLE).unwrap().parse().unwrap();
    match mode.as_str() {
        "locked" => {
            let line = match SledStore::open(&path) {
                Ok(_) => "OPENED".to_owned(),
                Err(StoreError::Locked { detail, .. }) => format!("LOCKED {detail}"),
                Err(other) => format!("ERROR {other}"),
            };
            writeln!(std::io::stdout(), "{line}").unwrap();
        }
        "crash" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(write_until_killed(&path, cycle));
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Prints one acknowledgement line; a line is only printed after the write returned `Ok`.
fn ack(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ACK {line}").unwrap();
    out.flush().unwrap();
}

async fn write_until_killed(path: &Path, cycle: u64) {
    let store = SledStore::open(path).unwrap();
    let deadline = Instant::now() + CHILD_LIFETIME;
    let mut tasks = Vec::new();
    // Appenders sharing one chat: each update carries a number no other append uses.
    for writer in 0..3u64 {
        let history = store.history();
        tasks.push(tokio::spawn(async move {
            let c = chat("shared");
            for i in 0.. {
                let n = (cycle * 100 + writer) * 1_000_000 + i * 2;
                let range = history.append(&c, &updates(n..n + 2)).await.unwrap();
                ack(format!("H {} {n}", range.start));
                if Instant::now() > deadline {
                    break;
                }
            }
        }));
    }
    // Read-modify-write of one record each, with the revision as precondition.
    for writer in 0..2u64 {
        let records = store.records();
        tasks.push(tokio::spawn(async move {
            let id = task(&format!("rec-{writer}"));
            loop {
                let current = records.get(&id).await.unwrap().map_or(0, |r| r.revision);
                let mut next = record(id.as_str(), None);
                next.goal = format!("rev {}", current + 1);
                let revision = records.put(next, Some(current)).await.unwrap();
                ack(format!("R {id} {revision}"));
                if Instant::now() > deadline {
                    break;
                }
            }
        }));
    }
    // Batches of three new records under one parent: all or nothing.
    {
        let records = store.records();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let group = format!("batch-{cycle}-{i}");
                let batch = (0..3)
                    .map(|k| {
                        PutRecord::new(record(&format!("{group}.{k}"), Some("batches")), Some(0))
                    })
                    .collect();
                records.put_many(batch).await.unwrap();
                ack(format!("B {group}"));
                if Instant::now() > deadline {
                    break;
                }
            }
        }));
    }
    // Replaces alternating between two known histories.
    {
        let history = store.history();
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let (name, next) = if i % 2 == 0 {
                    ("a", swap_a())
                } else {
                    ("b", swap_b())
                };
                history.replace(&chat("swap"), &next).await.unwrap();
                ack(format!("S {name}"));
                if Instant::now() > deadline {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn a_second_process_gets_locked_and_can_open_once_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = SledStore::open(&path).unwrap();
    let output = child("locked", &path, 0).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = answer(&stdout).unwrap_or_else(|| panic!("child said nothing useful: {stdout}"));
    assert!(line.starts_with("LOCKED"), "{line}");
    assert!(
        line.contains(&format!("process {}", std::process::id())),
        "the error names the holder: {line}"
    );
    drop(store);
    let output = child("locked", &path, 0).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(answer(&stdout), Some("OPENED"), "{stdout}");
}

/// The child's answer in its output. libtest may print `test child_process_entry ... ` on the
/// same line before it, so the answer is searched for, not expected at the start of a line.
fn answer(stdout: &str) -> Option<&str> {
    stdout.lines().find_map(|line| {
        ["LOCKED", "OPENED", "ERROR"]
            .iter()
            .find_map(|marker| line.find(marker).map(|at| &line[at..]))
    })
}

/// A child that is killed when the test lets go of it, also when the test fails half way.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything acknowledged by all children so far.
#[derive(Default)]
struct Acknowledged {
    /// Position → number of the first update of an append of two.
    appends: BTreeMap<u64, u64>,
    /// Highest acknowledged revision per record.
    revisions: HashMap<String, u64>,
    /// Batches acknowledged.
    batches: BTreeSet<String>,
    /// Whether any replace was acknowledged.
    replaced: bool,
    /// Acknowledgements read, of every kind.
    total: usize,
}

impl Acknowledged {
    /// Records the acknowledgement in `line`, if there is one; whether there was.
    fn take(&mut self, line: &str) -> bool {
        // libtest may have printed its `test … ` prefix on the same line.
        let Some(at) = line.find("ACK ") else {
            return false;
        };
        let parts: Vec<&str> = line[at..].split(' ').collect();
        match parts.as_slice() {
            ["ACK", "H", seq, n] => {
                self.appends
                    .insert(seq.parse().unwrap(), n.parse().unwrap());
            }
            ["ACK", "R", id, revision] => {
                let revision: u64 = revision.parse().unwrap();
                let best = self.revisions.entry((*id).to_owned()).or_default();
                *best = (*best).max(revision);
            }
            ["ACK", "B", group] => {
                self.batches.insert((*group).to_owned());
            }
            ["ACK", "S", _] => self.replaced = true,
            _ => panic!("unreadable acknowledgement {line:?}"),
        }
        self.total += 1;
        true
    }
}

/// Reopens the store after a kill and checks every acknowledged write is there exactly once.
async fn verify(path: &Path, acked: &Acknowledged) -> usize {
    let store = SledStore::open(path).unwrap_or_else(|e| panic!("reopen after kill: {e}"));
    let history = store.history();
    let records = store.records();

    let shared = history.load(&chat("shared")).await.unwrap();
    let numbers: Vec<u64> = shared
        .iter()
        .map(|u| u.metadata["n"].as_u64().unwrap())
        .collect();
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(distinct.len(), numbers.len(), "an update is stored twice");
    for (&seq, &n) in &acked.appends {
        let at = usize::try_from(seq).unwrap();
        assert_eq!(
            shared.get(at..at + 2),
            Some(&[update(n), update(n + 1)][..]),
            "acknowledged append at {seq} ({n}) lost or moved"
        );
    }

    for (id, &revision) in &acked.revisions {
        let stored =
            records.get(&task(id)).await.unwrap().unwrap_or_else(|| {
                panic!("record {id} acknowledged at revision {revision} is gone")
            });
        assert!(
            stored.revision >= revision,
            "record {id}: acknowledged {revision}, found {}",
            stored.revision
        );
        assert_eq!(stored.goal, format!("rev {}", stored.revision));
    }

    let children = records.children(&task("batches")).await.unwrap();
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for child in &children {
        let id = child.task_id.as_str();
        let group = id.rsplit_once('.').map_or(id, |(g, _)| g);
        *groups.entry(group.to_owned()).or_default() += 1;
    }
    for (group, count) in &groups {
        assert_eq!(*count, 3, "batch {group} is partly stored");
    }
    for group in &acked.batches {
        assert!(
            groups.contains_key(group),
            "acknowledged batch {group} lost"
        );
    }
    // Nothing else appeared: the store holds the batches and the read-modify-write records.
    let roots = records.roots().await.unwrap();
    assert!(roots.iter().all(|r| r.task_id.as_str().starts_with("rec-")));
    assert_eq!(
        records.stats().await.unwrap().total as usize,
        children.len() + roots.len()
    );

    let swap = history.load(&chat("swap")).await.unwrap();
    assert!(
        swap == swap_a() || swap == swap_b() || (swap.is_empty() && !acked.replaced),
        "replace is not atomic across a crash: {} entries",
        swap.len()
    );
    shared.len()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let cycles: u64 = std::env::var(CYCLES)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut acked = Acknowledged::default();
    for cycle in 0..cycles {
        // Mostly mid-stream after some acknowledgements; one cycle in four as early as while
        // the child is still opening (and maybe recovering) the store.
        let early = random_below(4) == 0;
        let wanted = if early {
            0
        } else {
            1 + random_below(200) as usize
        };
        let mut process = KillOnDrop(child("crash", &path, cycle).spawn().unwrap());
        let stdout = process.0.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut seen = 0;
        while seen < wanted {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("cycle {cycle}: the child stopped acknowledging"));
            if acked.take(&line) {
                seen += 1;
            }
        }
        let pause = if early { 40_000 } else { 3_000 };
        std::thread::sleep(Duration::from_micros(random_below(pause)));
        // SIGKILL on Unix: no destructor, no flush, no goodbye.
        process.0.kill().unwrap();
        process.0.wait().unwrap();
        // Lines printed before the kill were acknowledged too.
        reader.join().unwrap();
        for line in lines.try_iter() {
            acked.take(&line);
        }
        let killed_at = started.elapsed();
        let entries = verify(&path, &acked).await;
        writeln!(
            std::io::stderr(),
            "crash cycle {cycle}: killed {killed_at:?} after start, after {seen} acks; all {} \
             acknowledged writes so far verified, shared chat has {entries} entries",
            acked.total
        )
        .unwrap();
    }
}

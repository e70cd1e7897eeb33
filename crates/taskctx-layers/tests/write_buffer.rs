//! Behaviour of the write buffer a user relies on: every flush trigger, reads that see buffered
//! writes exactly as the flushed store would answer, revisions, conflicts reported with their
//! ids, failures that keep writes buffered, and concurrent use.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use taskctx_domain::{TaskId, TaskRecord, TaskStatus};
use taskctx_layers::{BufferedRecordStore, WriteBufferConfig};
use taskctx_store::{PutRecord, RecordStats, RecordStore, StoreError, StoreResult};
use taskctx_store_memory::MemoryRecordStore;
use taskctx_testkit::fixtures::{parent_record, record, task};

fn buffered(
    max_pending: usize,
    max_age: Option<Duration>,
) -> (MemoryRecordStore, BufferedRecordStore<MemoryRecordStore>) {
    let memory = MemoryRecordStore::new();
    let config = WriteBufferConfig::default()
        .with_max_pending(max_pending)
        .with_max_age(max_age);
    (memory.clone(), BufferedRecordStore::new(memory, config))
}

async fn stored(memory: &impl RecordStore, id: &str) -> Option<Arc<TaskRecord>> {
    memory.get(&task(id)).await.unwrap()
}

/// Waits up to two seconds for `id` to reach the store.
async fn wait_until_stored(memory: &MemoryRecordStore, id: &str) -> Duration {
    let start = Instant::now();
    while stored(memory, id).await.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{id} never stored"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn flushes_when_max_pending_puts_are_buffered() {
    let (memory, buffer) = buffered(3, None);
    buffer.put(record("a", None), None).await.unwrap();
    buffer.put(record("b", None), None).await.unwrap();
    assert!(stored(&memory, "a").await.is_none());
    assert_eq!(buffer.pending(), 2);
    buffer.put(record("c", None), None).await.unwrap();
    for id in ["a", "b", "c"] {
        assert!(stored(&memory, id).await.is_some(), "{id}");
    }
    let stats = buffer.buffer_stats();
    assert_eq!(
        (stats.pending, stats.flushes, stats.flushed_writes),
        (0, 1, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_when_the_oldest_put_reaches_max_age() {
    const MAX_AGE: Duration = Duration::from_millis(250);
    let (memory, buffer) = buffered(1_000, Some(MAX_AGE));
    let start = Instant::now();
    buffer.put(record("a", None), None).await.unwrap();
    assert!(stored(&memory, "a").await.is_none());
    wait_until_stored(&memory, "a").await;
    assert!(start.elapsed() >= MAX_AGE);
    assert_eq!(buffer.pending(), 0);
    // The flusher sleeps while the buffer is empty and wakes for the next put.
    tokio::time::sleep(Duration::from_millis(100)).await;
    buffer.put(record("b", None), None).await.unwrap();
    wait_until_stored(&memory, "b").await;
}

#[tokio::test]
async fn a_huge_max_age_never_fires() {
    let (memory, buffer) = buffered(100, Some(Duration::MAX));
    buffer.put(record("a", None), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(stored(&memory, "a").await.is_none());
    assert_eq!(buffer.shutdown().await.unwrap(), 1);
}

#[tokio::test]
async fn flushes_on_demand() {
    let (memory, buffer) = buffered(100, None);
    buffer.put(record("a", None), None).await.unwrap();
    buffer.put(record("a", None), None).await.unwrap();
    buffer.put(record("b", None), None).await.unwrap();
    assert_eq!(buffer.flush().await.unwrap(), 3);
    assert_eq!(stored(&memory, "a").await.unwrap().revision, 2);
    assert!(stored(&memory, "b").await.is_some());
    assert_eq!(buffer.flush().await.unwrap(), 0);
}

#[tokio::test]
async fn shutdown_flushes_and_later_puts_pass_through() {
    let (memory, buffer) = buffered(100, Some(Duration::from_secs(3600)));
    buffer.put(record("a", None), None).await.unwrap();
    assert_eq!(buffer.shutdown().await.unwrap(), 1);
    assert!(stored(&memory, "a").await.is_some());
    assert_eq!(buffer.put(record("b", None), Some(0)).await.unwrap(), 1);
    assert!(stored(&memory, "b").await.is_some());
    assert_eq!(buffer.pending(), 0);
    assert_eq!(buffer.shutdown().await.unwrap(), 0);
}

#[tokio::test]
async fn into_inner_flushes_first() {
    let (_, buffer) = buffered(100, Some(Duration::from_secs(3600)));
    buffer.put(record("a", None), None).await.unwrap();
    let memory = buffer.into_inner().await.unwrap();
    assert!(stored(&memory, "a").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_buffer_flushes_in_the_background() {
    let (memory, buffer) = buffered(100, Some(Duration::from_secs(3600)));
    buffer.put(record("a", None), None).await.unwrap();
    drop(buffer);
    wait_until_stored(&memory, "a").await;
}

#[test]
fn dropping_the_buffer_outside_a_runtime_loses_its_writes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (memory, buffer) = buffered(100, None);
    runtime
        .block_on(buffer.put(record("a", None), None))
        .unwrap();
    drop(buffer); // logged as an error: the documented price of not calling shutdown
    assert!(runtime.block_on(stored(&memory, "a")).is_none());
}

/// Every query, through the buffer and through a store that received the same writes
/// unbuffered, gives the same answer.
async fn assert_same_answers(
    buffer: &BufferedRecordStore<MemoryRecordStore>,
    twin: &MemoryRecordStore,
    ids: &[&str],
) {
    let contents =
        |rs: Vec<Arc<TaskRecord>>| rs.iter().map(|r| TaskRecord::clone(r)).collect::<Vec<_>>();
    let all: Vec<TaskId> = ids.iter().map(|id| task(id)).collect();
    for id in &all {
        assert_eq!(
            buffer.get(id).await.unwrap().as_deref(),
            twin.get(id).await.unwrap().as_deref(),
            "get {id}"
        );
        assert_eq!(
            contents(buffer.children(id).await.unwrap()),
            contents(twin.children(id).await.unwrap()),
            "children of {id}"
        );
    }
    let many = |rs: Vec<Option<Arc<TaskRecord>>>| {
        rs.into_iter()
            .map(|r| r.map(Arc::unwrap_or_clone))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        many(buffer.get_many(&all).await.unwrap()),
        many(twin.get_many(&all).await.unwrap())
    );
    for &status in TaskStatus::ALL {
        assert_eq!(
            contents(buffer.by_status(status).await.unwrap()),
            contents(twin.by_status(status).await.unwrap()),
            "by_status {status}"
        );
    }
    for layer in 0..4 {
        assert_eq!(
            contents(buffer.by_layer(layer).await.unwrap()),
            contents(twin.by_layer(layer).await.unwrap()),
            "by_layer {layer}"
        );
    }
    assert_eq!(
        contents(buffer.roots().await.unwrap()),
        contents(twin.roots().await.unwrap())
    );
    assert_eq!(buffer.stats().await.unwrap(), twin.stats().await.unwrap());
}

#[tokio::test]
async fn reads_answer_as_if_the_buffer_were_flushed() {
    const IDS: &[&str] = &["r", "r.1", "r.2", "r.3", "q", "q.1"];
    let (_, buffer) = buffered(1_000, None);
    let twin = MemoryRecordStore::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for step in 0..400 {
        let id = IDS[next(IDS.len())];
        let parent = [None, Some("r"), Some("q"), Some("r.1")][next(4)];
        let plan: Vec<&str> = (0..next(4)).map(|_| IDS[next(IDS.len())]).collect();
        let mut r = parent_record(id, parent, &plan);
        r.status = TaskStatus::ALL[next(TaskStatus::ALL.len())];
        r.layer = [None, Some(0), Some(1), Some(2), Some(3)][next(5)];
        let expected = match next(3) {
            0 => None,
            1 => Some(twin.get(&task(id)).await.unwrap().map_or(0, |r| r.revision)),
            _ => Some(7),
        };
        let through_buffer = buffer.put(r.clone(), expected).await;
        let direct = twin.put(r, expected).await;
        match (&through_buffer, &direct) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "step {step}"),
            (
                Err(StoreError::Conflict {
                    expected: e1,
                    actual: a1,
                    ..
                }),
                Err(StoreError::Conflict {
                    expected: e2,
                    actual: a2,
                    ..
                }),
            ) => assert_eq!((e1, a1), (e2, a2), "step {step}"),
            other => panic!("step {step}: {other:?}"),
        }
        assert_same_answers(&buffer, &twin, IDS).await;
        // Now and then flush part-way, so some records have stored versions that the buffered
        // ones replace (which `stats` must take out).
        if step % 37 == 36 {
            buffer.flush().await.unwrap();
            assert_same_answers(&buffer, &twin, IDS).await;
        }
    }
    buffer.flush().await.unwrap();
    assert_same_answers(&buffer, &twin, IDS).await;
    assert_same_answers(&buffer, buffer.get_ref(), IDS).await;
}

#[tokio::test]
async fn a_layer_only_replaced_records_had_leaves_the_stats() {
    let (_, buffer) = buffered(100, None);
    let mut a = record("a", None);
    a.layer = Some(5);
    buffer.put(a.clone(), None).await.unwrap();
    let mut b = record("b", None);
    b.layer = Some(6);
    buffer.put(b, None).await.unwrap();
    buffer.flush().await.unwrap();
    a.layer = Some(1);
    buffer.put(a, None).await.unwrap();
    let stats = buffer.stats().await.unwrap();
    assert_eq!(stats.layers.into_iter().collect::<Vec<_>>(), vec![1, 6]);
    assert_eq!(stats.total, 2);
}

/// One `put_many` as the store saw it: ids with their expected revisions.
type Batch = Vec<(String, Option<u64>)>;

/// A memory store that records the batches it is asked to write, and can be told to fail them
/// (`fail`) or to write one and report a failure anyway (`lose_ack`, as when a flush is
/// interrupted after the store wrote).
#[derive(Debug, Default)]
struct Probe {
    inner: MemoryRecordStore,
    batches: Mutex<Vec<Batch>>,
    fail: AtomicBool,
    lose_ack: AtomicBool,
    put_many_calls: AtomicUsize,
}

fn io_error() -> StoreError {
    StoreError::io("writing", io::Error::from(io::ErrorKind::Interrupted))
}

#[async_trait]
impl RecordStore for Probe {
    async fn put(&self, record: TaskRecord, expected: Option<u64>) -> StoreResult<u64> {
        self.inner.put(record, expected).await
    }
    async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>> {
        self.put_many_calls.fetch_add(1, Ordering::Relaxed);
        if self.fail.load(Ordering::Relaxed) {
            return Err(io_error());
        }
        self.batches.lock().unwrap().push(
            batch
                .iter()
                .map(|p| (p.record.task_id.to_string(), p.expected_revision))
                .collect(),
        );
        let result = self.inner.put_many(batch).await;
        if self.lose_ack.swap(false, Ordering::Relaxed) {
            return Err(io_error());
        }
        result
    }
    async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>> {
        self.inner.get(id).await
    }
    async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
        self.inner.get_many(ids).await
    }
    async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.inner.children(parent).await
    }
    async fn by_status(&self, status: TaskStatus) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.inner.by_status(status).await
    }
    async fn by_layer(&self, layer: u32) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.inner.by_layer(layer).await
    }
    async fn roots(&self) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.inner.roots().await
    }
    async fn delete(&self, id: &TaskId) -> StoreResult<bool> {
        self.inner.delete(id).await
    }
    async fn delete_subtree(&self, id: &TaskId) -> StoreResult<u64> {
        self.inner.delete_subtree(id).await
    }
    async fn clear(&self) -> StoreResult<()> {
        self.inner.clear().await
    }
    async fn stats(&self) -> StoreResult<RecordStats> {
        self.inner.stats().await
    }
}

fn probed(max_pending: usize) -> (Arc<Probe>, BufferedRecordStore<Arc<Probe>>) {
    let probe = Arc::new(Probe::default());
    let config = WriteBufferConfig::default()
        .with_max_pending(max_pending)
        .with_max_age(None);
    (Arc::clone(&probe), BufferedRecordStore::new(probe, config))
}

#[tokio::test]
async fn returned_revisions_are_the_stored_ones_and_puts_are_not_coalesced() {
    let (probe, buffer) = probed(100);
    let mut revisions = Vec::new();
    for goal in ["one", "two", "three"] {
        let mut x = record("x", None);
        x.goal = goal.into();
        revisions.push(buffer.put(x, None).await.unwrap());
    }
    revisions.push(buffer.put(record("y", None), Some(0)).await.unwrap());
    let mut x = record("x", None);
    x.goal = "four".into();
    revisions.push(buffer.put(x, Some(3)).await.unwrap());
    assert_eq!(revisions, [1, 2, 3, 1, 4]);
    // What reads return now is what the store will hold.
    assert_eq!(buffer.get(&task("x")).await.unwrap().unwrap().revision, 4);

    assert_eq!(buffer.flush().await.unwrap(), 5);
    let x = stored(&probe.inner, "x").await.unwrap();
    assert_eq!((x.revision, x.goal.as_str()), (4, "four"));
    assert_eq!(stored(&probe.inner, "y").await.unwrap().revision, 1);
    // Longest runs without a repeated id, each put expecting the revision before it.
    let s = |id: &str, e: u64| (id.to_owned(), Some(e));
    assert_eq!(
        *probe.batches.lock().unwrap(),
        vec![
            vec![s("x", 0)],
            vec![s("x", 1)],
            vec![s("x", 2), s("y", 0)],
            vec![s("x", 3)],
        ]
    );
}

#[tokio::test]
async fn a_conflict_at_flush_names_the_record_and_keeps_the_rest() {
    let (memory, buffer) = buffered(100, None);
    buffer.put(record("x", None), None).await.unwrap();
    buffer.put(record("x", None), None).await.unwrap();
    buffer.put(record("y", None), None).await.unwrap();
    // Another writer creates x behind the buffer's back.
    let mut theirs = record("x", None);
    theirs.goal = "theirs".into();
    memory.put(theirs, None).await.unwrap();

    let failure = buffer.flush().await.unwrap_err();
    assert_eq!(
        failure
            .conflicting_ids()
            .map(TaskId::as_str)
            .collect::<Vec<_>>(),
        ["x"]
    );
    let conflict = &failure.conflicts[0];
    assert_eq!(
        (conflict.expected, conflict.actual, conflict.discarded),
        (0, 1, 2)
    );
    assert_eq!(
        (failure.written, failure.pending, failure.discarded()),
        (1, 0, 2)
    );
    assert!(failure.error.is_none());
    assert!(failure.to_string().contains("`x`"), "{failure}");
    // y was stored; x shows the other writer's version again.
    assert!(stored(&memory, "y").await.is_some());
    assert_eq!(
        buffer.get(&task("x")).await.unwrap().unwrap().goal,
        "theirs"
    );
    assert_eq!(buffer.buffer_stats().discarded_writes, 2);
    assert_eq!(buffer.pending(), 0);
    // As a store error it is a Conflict naming the record.
    match StoreError::from(failure) {
        StoreError::Conflict {
            what,
            expected: 0,
            actual: 1,
        } => assert!(what.contains("`x`")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_put_whose_record_conflicts_at_its_flush_fails() {
    let theirs = |id: &str| {
        let mut r = record(id, None);
        r.goal = "theirs".into();
        r
    };
    let (memory, buffer) = buffered(2, None);
    buffer.put(record("x", None), None).await.unwrap();
    memory.put(theirs("x"), None).await.unwrap();
    match buffer.put(record("x", None), None).await {
        Err(StoreError::Conflict {
            what,
            expected: 0,
            actual: 1,
        }) => {
            assert!(what.contains("`x`"), "{what}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Another record's conflict does not fail a put that was stored.
    buffer.put(record("z", None), None).await.unwrap();
    memory.put(theirs("z"), None).await.unwrap();
    assert_eq!(buffer.put(record("w", None), None).await.unwrap(), 1);
    assert!(stored(&memory, "w").await.is_some());
    assert_eq!(buffer.buffer_stats().discarded_writes, 3);
    assert_eq!(
        buffer.get(&task("z")).await.unwrap().unwrap().goal,
        "theirs"
    );
}

#[tokio::test]
async fn an_identical_write_by_another_writer_is_not_a_conflict() {
    // The store already holds exactly what the buffer would write: nothing is lost.
    let (memory, buffer) = buffered(100, None);
    buffer.put(record("x", None), None).await.unwrap();
    memory.put(record("x", None), None).await.unwrap();
    assert_eq!(buffer.flush().await.unwrap(), 1);
    assert_eq!(buffer.buffer_stats().discarded_writes, 0);
}

#[tokio::test]
async fn a_failing_store_keeps_writes_buffered_and_a_failed_put_changes_nothing() {
    let (probe, buffer) = probed(2);
    buffer.put(record("a", None), None).await.unwrap();
    probe.fail.store(true, Ordering::Relaxed);
    let refused = buffer.put(record("b", None), None).await;
    assert!(matches!(refused, Err(StoreError::Io { .. })), "{refused:?}");
    // b was taken back; a is still buffered and visible.
    assert!(buffer.get(&task("b")).await.unwrap().is_none());
    assert!(buffer.get(&task("a")).await.unwrap().is_some());
    assert_eq!(buffer.pending(), 1);

    let failure = buffer.flush().await.unwrap_err();
    assert!(matches!(failure.error, Some(StoreError::Io { .. })));
    assert_eq!((failure.written, failure.pending), (0, 1));
    // Writes other than put refuse to overtake the buffered put.
    assert!(buffer.delete(&task("a")).await.is_err());
    assert!(buffer.get(&task("a")).await.unwrap().is_some());

    probe.fail.store(false, Ordering::Relaxed);
    assert_eq!(buffer.flush().await.unwrap(), 1);
    assert!(stored(&probe.inner, "a").await.is_some());
    assert!(stored(&probe.inner, "b").await.is_none());
}

#[tokio::test]
async fn a_batch_stored_by_an_interrupted_flush_is_not_a_conflict() {
    let (probe, buffer) = probed(100);
    buffer.put(record("a", None), None).await.unwrap();
    buffer.put(record("b", None), None).await.unwrap();
    probe.lose_ack.store(true, Ordering::Relaxed);
    let failure = buffer.flush().await.unwrap_err();
    assert_eq!(failure.pending, 2);
    // The store has them; the next flush sees its own records there and counts them written.
    assert_eq!(buffer.flush().await.unwrap(), 2);
    assert_eq!(buffer.pending(), 0);
    assert_eq!(stored(&probe.inner, "a").await.unwrap().revision, 1);
    assert_eq!(buffer.buffer_stats().discarded_writes, 0);
}

#[tokio::test]
async fn other_writes_flush_first_and_keep_their_order() {
    let (probe, buffer) = probed(100);
    buffer.put(record("x", None), None).await.unwrap();
    // put_many expects the buffered revision: it holds only because the buffer flushed first.
    let revisions = buffer
        .put_many(vec![PutRecord::new(record("x", None), Some(1))])
        .await
        .unwrap();
    assert_eq!(revisions, [2]);
    buffer.put(record("d", None), None).await.unwrap();
    assert!(buffer.delete(&task("d")).await.unwrap());
    assert!(stored(&probe.inner, "d").await.is_none());
    buffer.put(record("c", Some("x")), None).await.unwrap();
    assert_eq!(buffer.delete_subtree(&task("x")).await.unwrap(), 2);
    buffer.put(record("e", None), None).await.unwrap();
    buffer.clear().await.unwrap();
    assert_eq!(buffer.stats().await.unwrap().total, 0);
    assert_eq!(buffer.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_readers_with_age_flushes() {
    let memory = MemoryRecordStore::new();
    let buffer = Arc::new(BufferedRecordStore::new(
        memory.clone(),
        WriteBufferConfig::default()
            .with_max_pending(16)
            .with_max_age(Duration::from_millis(2)),
    ));
    let tasks: Vec<_> = (0..8)
        .map(|writer| {
            let buffer = Arc::clone(&buffer);
            tokio::spawn(async move {
                for n in 0..50u64 {
                    let id = format!("w{writer}.{}", n % 5);
                    let mut r = record(&id, Some(&format!("w{writer}")));
                    r.goal = format!("{n}");
                    let current = buffer
                        .get(&task(&id))
                        .await
                        .unwrap()
                        .map_or(0, |r| r.revision);
                    // Each writer owns its records: its conditional puts never conflict.
                    assert_eq!(buffer.put(r, Some(current)).await.unwrap(), current + 1);
                    let children = buffer.children(&task(&format!("w{writer}"))).await.unwrap();
                    assert_eq!(children.len() as u64, (n + 1).min(5));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    buffer.shutdown().await.unwrap();
    for writer in 0..8 {
        for k in 0..5u64 {
            let r = stored(&memory, &format!("w{writer}.{k}")).await.unwrap();
            assert_eq!(r.revision, 10);
            assert_eq!(r.goal, format!("{}", 45 + k));
        }
    }
    assert!(buffer.buffer_stats().flushes > 1);
}

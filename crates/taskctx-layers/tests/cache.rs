//! Behaviour of the read-through cache a user relies on: counters, both bounds, TTL, children
//! lists never stale after writes through it, the reader/writer race, and concurrent use.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use taskctx_domain::{TaskId, TaskRecord, TaskStatus};
use taskctx_layers::{
    CacheConfig, CacheLayer, CachedRecordStore, Layer, WriteBufferConfig, WriteBufferLayer,
};
use taskctx_store::{PutRecord, RecordStats, RecordStore, StoreError, StoreResult};
use taskctx_store_memory::MemoryRecordStore;
use taskctx_testkit::fixtures::{parent_record, record, task};
use tokio::sync::Notify;

fn cached(config: CacheConfig) -> (MemoryRecordStore, CachedRecordStore<MemoryRecordStore>) {
    let memory = MemoryRecordStore::new();
    (memory.clone(), CachedRecordStore::new(memory, config))
}

fn goal(r: &Option<Arc<TaskRecord>>) -> Option<&str> {
    r.as_ref().map(|r| r.goal.as_str())
}

fn contents(records: &[Arc<TaskRecord>]) -> Vec<TaskRecord> {
    records.iter().map(|r| TaskRecord::clone(r)).collect()
}

#[tokio::test]
async fn hits_and_misses_are_counted_per_read() {
    let (_, store) = cached(CacheConfig::default());
    store.put(record("a", None), None).await.unwrap();
    store.put(record("b", Some("a")), None).await.unwrap();

    assert_eq!(
        goal(&store.get(&task("a")).await.unwrap()),
        Some("goal of a")
    );
    assert_eq!(
        goal(&store.get(&task("a")).await.unwrap()),
        Some("goal of a")
    );
    // Absence is cached too.
    assert!(store.get(&task("nope")).await.unwrap().is_none());
    assert!(store.get(&task("nope")).await.unwrap().is_none());
    let s = store.cache_stats();
    assert_eq!((s.hits, s.misses), (2, 2));

    assert_eq!(store.children(&task("a")).await.unwrap().len(), 1);
    assert_eq!(store.children(&task("a")).await.unwrap().len(), 1);
    let s = store.cache_stats();
    assert_eq!((s.hits, s.misses), (3, 3));

    // get_many goes through the per-id entries: a and nope hit, b misses (once, though asked
    // twice), and is cached for the next read.
    let ids = [task("a"), task("nope"), task("b"), task("b")];
    let got = store.get_many(&ids).await.unwrap();
    assert_eq!(
        got.iter().map(goal).collect::<Vec<_>>(),
        vec![
            Some("goal of a"),
            None,
            Some("goal of b"),
            Some("goal of b")
        ]
    );
    let s = store.cache_stats();
    assert_eq!((s.hits, s.misses), (5, 5));
    store.get(&task("b")).await.unwrap();
    assert_eq!(store.cache_stats().hits, 6);
    assert!(store.cache_stats().hit_rate() > 0.5);

    // A write invalidates: the next read misses and sees the write.
    let mut a = record("a", None);
    a.goal = "new".into();
    store.put(a, Some(1)).await.unwrap();
    assert_eq!(goal(&store.get(&task("a")).await.unwrap()), Some("new"));
    assert_eq!(store.cache_stats().misses, 6);
}

#[tokio::test]
async fn the_entry_bound_holds_and_evictions_are_counted() {
    let (memory, store) = cached(
        CacheConfig::default()
            .with_max_entries(10)
            .with_max_bytes(None),
    );
    for i in 0..50 {
        memory
            .put(record(&format!("r{i}"), None), None)
            .await
            .unwrap();
    }
    for i in 0..50 {
        store.get(&task(&format!("r{i}"))).await.unwrap();
    }
    let s = store.cache_stats();
    assert!(s.entries <= 10, "{s:?}");
    assert!(s.evictions >= 40, "{s:?}");
    // Nothing was invalidated: every entry ever cached is either held or was evicted.
    assert_eq!(s.entries + s.evictions, 50, "{s:?}");
}

#[tokio::test]
async fn the_byte_bound_holds() {
    const MAX_BYTES: u64 = 64 << 10;
    let (memory, store) = cached(
        CacheConfig::default()
            .with_max_entries(1_000)
            .with_max_bytes(MAX_BYTES),
    );
    for i in 0..100 {
        let mut r = record(&format!("big{i}"), None);
        r.output_content = Some(json!("x".repeat(4_000)));
        memory.put(r, None).await.unwrap();
    }
    for round in 0..3 {
        for i in 0..100 {
            store.get(&task(&format!("big{i}"))).await.unwrap();
        }
        let s = store.cache_stats();
        assert!(s.approx_bytes <= MAX_BYTES, "round {round}: {s:?}");
        // Each entry is over 4 kB: at most 16 fit, and the cache is not left empty.
        assert!((1..=16).contains(&s.entries), "round {round}: {s:?}");
    }

    // A record larger than the whole byte budget is never cached.
    let mut huge = record("huge", None);
    huge.output_content = Some(json!("x".repeat(MAX_BYTES as usize)));
    memory.put(huge, None).await.unwrap();
    let misses = store.cache_stats().misses;
    store.get(&task("huge")).await.unwrap();
    store.get(&task("huge")).await.unwrap();
    assert_eq!(store.cache_stats().misses, misses + 2);
}

#[tokio::test]
async fn small_entries_fill_the_entry_bound_under_a_byte_bound() {
    // With the finer weights, small entries are limited by the entry count, not the bytes.
    let (memory, store) = cached(
        CacheConfig::default()
            .with_max_entries(20)
            .with_max_bytes(1 << 20),
    );
    for i in 0..20 {
        memory
            .put(record(&format!("s{i}"), None), None)
            .await
            .unwrap();
    }
    for i in 0..20 {
        store.get(&task(&format!("s{i}"))).await.unwrap();
    }
    assert_eq!(store.cache_stats().entries, 20);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    // Wide margins: the stale read below must happen within the TTL even on a loaded machine.
    let (memory, store) = cached(CacheConfig::default().with_ttl(Duration::from_millis(400)));
    store.put(record("a", None), None).await.unwrap();
    assert_eq!(store.get(&task("a")).await.unwrap().unwrap().revision, 1);

    // A write around the cache is not seen while the entry lives (the documented TTL window)…
    let mut changed = record("a", None);
    changed.goal = "changed elsewhere".into();
    memory.put(changed, Some(1)).await.unwrap();
    assert_eq!(store.get(&task("a")).await.unwrap().unwrap().revision, 1);

    // …and is seen once it expired.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let read = store.get(&task("a")).await.unwrap().unwrap();
    assert_eq!(
        (read.revision, read.goal.as_str()),
        (2, "changed elsewhere")
    );
    assert!(store.cache_stats().evictions >= 1);

    // invalidate_all is the other way to see such writes at once.
    memory.put(record("a", None), Some(2)).await.unwrap();
    store.invalidate_all();
    assert_eq!(store.get(&task("a")).await.unwrap().unwrap().revision, 3);
}

/// Every id's record and children, through the cache and straight from the store, agree.
async fn assert_fresh(store: &CachedRecordStore<MemoryRecordStore>, ids: &[&str]) {
    let memory = store.get_ref();
    for id in ids {
        let id = task(id);
        assert_eq!(
            store.get(&id).await.unwrap().as_deref(),
            memory.get(&id).await.unwrap().as_deref(),
            "record {id}"
        );
        assert_eq!(
            contents(&store.children(&id).await.unwrap()),
            contents(&memory.children(&id).await.unwrap()),
            "children of {id}"
        );
    }
}

#[tokio::test]
async fn children_lists_are_never_stale_after_writes_through_the_cache() {
    let (_, store) = cached(CacheConfig::default().with_ttl(None));
    let ids = ["p", "q", "c1", "c2", "c3"];
    store
        .put(parent_record("p", None, &["c1", "c2"]), None)
        .await
        .unwrap();
    store
        .put(parent_record("q", None, &[]), None)
        .await
        .unwrap();
    store.put(record("c1", Some("p")), None).await.unwrap();
    store.put(record("c2", Some("p")), None).await.unwrap();
    // Each step reads everything first (so it is cached), writes, then compares.
    assert_fresh(&store, &ids).await;

    // Re-parenting: c1 leaves p's list (old parent) and joins q's (new parent).
    store.put(record("c1", Some("q")), None).await.unwrap();
    assert_fresh(&store, &ids).await;
    assert_eq!(store.children(&task("q")).await.unwrap().len(), 1);

    // Plan reorder: p's own write changes the order of p's children.
    store.put(record("c3", Some("p")), None).await.unwrap();
    assert_fresh(&store, &ids).await;
    store
        .put(parent_record("p", None, &["c3", "c2"]), None)
        .await
        .unwrap();
    assert_fresh(&store, &ids).await;
    let order: Vec<String> = store
        .children(&task("p"))
        .await
        .unwrap()
        .iter()
        .map(|r| r.task_id.to_string())
        .collect();
    assert_eq!(order, ["c3", "c2"]);

    // A child's new content shows in its parent's list.
    let mut c2 = record("c2", Some("p"));
    c2.goal = "new goal".into();
    store.put(c2, None).await.unwrap();
    assert_fresh(&store, &ids).await;

    // Deleting a child, then the parent (its children fall back to id order).
    store.delete(&task("c3")).await.unwrap();
    assert_fresh(&store, &ids).await;
    store.put(record("c3", Some("p")), None).await.unwrap();
    store
        .put(parent_record("p", None, &["c3", "c2"]), None)
        .await
        .unwrap();
    assert_fresh(&store, &ids).await;
    store.delete(&task("p")).await.unwrap();
    assert_fresh(&store, &ids).await;

    // A batch that re-parents and re-plans.
    store
        .put_many(vec![
            PutRecord::upsert(parent_record("p", None, &["c2", "c1"])),
            PutRecord::upsert(record("c1", Some("p"))),
            PutRecord::upsert(record("c3", Some("q"))),
        ])
        .await
        .unwrap();
    assert_fresh(&store, &ids).await;

    // A failed write changes nothing, and the cache still agrees.
    let refused = store.put(record("c1", Some("q")), Some(99)).await;
    assert!(matches!(refused, Err(StoreError::Conflict { .. })));
    assert_fresh(&store, &ids).await;

    store.delete_subtree(&task("q")).await.unwrap();
    assert_fresh(&store, &ids).await;
    store.clear().await.unwrap();
    assert_fresh(&store, &ids).await;
}

/// Which read the pausing store holds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    Get,
    Children,
    Put,
}

/// A memory store that, when armed, pauses one read after reading: it tells `read_done`, then
/// waits for `resume`. Lets a test slip a write between a reader's inner read and its insert.
#[derive(Debug, Default)]
struct Pausing {
    inner: MemoryRecordStore,
    armed: Mutex<Option<Pause>>,
    read_done: Notify,
    resume: Notify,
}

impl Pausing {
    fn arm(&self, pause: Pause) {
        *self.armed.lock().unwrap() = Some(pause);
    }

    async fn maybe_pause(&self, op: Pause) {
        let hit = {
            let mut armed = self.armed.lock().unwrap();
            if *armed == Some(op) {
                *armed = None;
                true
            } else {
                false
            }
        };
        if hit {
            self.read_done.notify_one();
            self.resume.notified().await;
        }
    }
}

#[async_trait]
impl RecordStore for Pausing {
    async fn put(&self, record: TaskRecord, expected: Option<u64>) -> StoreResult<u64> {
        let written = self.inner.put(record, expected).await;
        self.maybe_pause(Pause::Put).await;
        written
    }
    async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>> {
        self.inner.put_many(batch).await
    }
    async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>> {
        let read = self.inner.get(id).await;
        self.maybe_pause(Pause::Get).await;
        read
    }
    async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
        self.inner.get_many(ids).await
    }
    async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>> {
        let read = self.inner.children(parent).await;
        self.maybe_pause(Pause::Children).await;
        read
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_overtaken_by_a_write_does_not_cache_the_old_record() {
    let pausing = Arc::new(Pausing::default());
    let store = Arc::new(CachedRecordStore::new(
        Arc::clone(&pausing),
        CacheConfig::default().with_ttl(None),
    ));
    store.put(record("x", None), None).await.unwrap();

    pausing.arm(Pause::Get);
    let reader = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.get(&task("x")).await }
    });
    // The reader has read revision 1 from the inner store and not cached it yet.
    pausing.read_done.notified().await;
    let mut newer = record("x", None);
    newer.goal = "newer".into();
    assert_eq!(store.put(newer, Some(1)).await.unwrap(), 2);
    pausing.resume.notify_one();
    // The reader ran concurrently with the write, so the old record is a fine answer for it…
    assert_eq!(reader.await.unwrap().unwrap().unwrap().revision, 1);
    // …but it must not stay cached.
    for _ in 0..2 {
        let read = store.get(&task("x")).await.unwrap().unwrap();
        assert_eq!((read.revision, read.goal.as_str()), (2, "newer"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_children_read_overtaken_by_a_write_does_not_cache_the_old_list() {
    let pausing = Arc::new(Pausing::default());
    let store = Arc::new(CachedRecordStore::new(
        Arc::clone(&pausing),
        CacheConfig::default().with_ttl(None),
    ));
    store
        .put(parent_record("p", None, &["a", "b"]), None)
        .await
        .unwrap();
    store.put(record("a", Some("p")), None).await.unwrap();

    pausing.arm(Pause::Children);
    let reader = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.children(&task("p")).await }
    });
    pausing.read_done.notified().await;
    store.put(record("b", Some("p")), None).await.unwrap();
    pausing.resume.notify_one();
    assert_eq!(reader.await.unwrap().unwrap().len(), 1);
    for _ in 0..2 {
        assert_eq!(store.children(&task("p")).await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn a_write_cancelled_after_the_store_wrote_still_invalidates() {
    let pausing = Arc::new(Pausing::default());
    let store = CachedRecordStore::new(Arc::clone(&pausing), CacheConfig::default().with_ttl(None));
    store.put(record("x", Some("p")), None).await.unwrap();
    assert_eq!(store.get(&task("x")).await.unwrap().unwrap().revision, 1);
    assert_eq!(store.children(&task("p")).await.unwrap().len(), 1);

    // The inner store writes, then the caller gives up before the put returns.
    pausing.arm(Pause::Put);
    let cancelled = tokio::time::timeout(
        Duration::from_millis(20),
        store.put(record("x", Some("q")), None),
    );
    assert!(cancelled.await.is_err());
    assert_eq!(store.get(&task("x")).await.unwrap().unwrap().revision, 2);
    assert!(store.children(&task("p")).await.unwrap().is_empty());
    assert_eq!(store.children(&task("q")).await.unwrap().len(), 1);
}

/// A tiny deterministic generator, so the concurrency test needs no extra crate.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

const IDS: &[&str] = &["r", "r.1", "r.2", "r.3", "r.1.1", "r.1.2", "x", "x.1", "y"];

async fn mixed_load(store: Arc<dyn RecordStore>, seed: u64, ops: usize) {
    let mut rng = XorShift(seed);
    for _ in 0..ops {
        let id = task(IDS[rng.below(IDS.len())]);
        match rng.below(10) {
            0..=3 => {
                store.get(&id).await.unwrap();
            }
            4 => {
                let ids: Vec<TaskId> = (0..3).map(|_| task(IDS[rng.below(IDS.len())])).collect();
                assert_eq!(store.get_many(&ids).await.unwrap().len(), 3);
            }
            5..=6 => {
                store.children(&id).await.unwrap();
            }
            7..=8 => {
                let parent = [None, Some("r"), Some("r.1"), Some("x")][rng.below(4)];
                let mut r = parent_record(id.as_str(), parent, &["r.3", "r.1", "x.1"]);
                r.goal = format!("goal {}", rng.below(1000));
                // Conditional on what this task last read: losing a race is a Conflict, not
                // an error of the cache.
                let current = store.get(&id).await.unwrap().map_or(0, |r| r.revision);
                match store.put(r, Some(current)).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(other) => panic!("put failed: {other}"),
                }
            }
            _ => {
                store.delete(&id).await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mixed_use_leaves_the_cache_equal_to_the_store() {
    let memory = MemoryRecordStore::new();
    let store = Arc::new(CachedRecordStore::new(
        memory.clone(),
        CacheConfig::default().with_max_entries(8).with_ttl(None),
    ));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store: Arc<dyn RecordStore> = Arc::clone(&store) as Arc<dyn RecordStore>;
            tokio::spawn(mixed_load(store, 0x9E37_79B9_7F4A_7C15 ^ (i + 1), 400))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for id in IDS {
        let id = task(id);
        assert_eq!(
            store.get(&id).await.unwrap().as_deref(),
            memory.get(&id).await.unwrap().as_deref(),
            "record {id}"
        );
        assert_eq!(
            contents(&store.children(&id).await.unwrap()),
            contents(&memory.children(&id).await.unwrap()),
            "children of {id}"
        );
    }
    let stats = store.cache_stats();
    assert!(stats.entries <= 8, "{stats:?}");
    assert!(stats.hits > 0 && stats.misses > 0, "{stats:?}");
}

#[tokio::test]
async fn layers_stack_and_unwrap() {
    let memory = MemoryRecordStore::new();
    let stack = CacheLayer::new(CacheConfig::default()).layer(
        WriteBufferLayer::new(WriteBufferConfig::default().with_max_age(None))
            .layer(memory.clone()),
    );
    stack.put(record("a", None), None).await.unwrap();
    // Buffered below the cache: visible through the stack, not yet in memory.
    assert!(stack.get(&task("a")).await.unwrap().is_some());
    assert!(memory.get(&task("a")).await.unwrap().is_none());
    assert_eq!(stack.get_ref().pending(), 1);
    let debug = format!("{stack:?}");
    assert!(debug.contains("CachedRecordStore") && debug.contains("BufferedRecordStore"));
    let buffer = stack.into_inner();
    let memory_back = buffer.into_inner().await.unwrap();
    assert!(memory_back.get(&task("a")).await.unwrap().is_some());
}

#[test]
fn config_round_trips_through_serde_with_milliseconds() {
    let config = CacheConfig::default()
        .with_max_entries(5)
        .with_max_bytes(None)
        .with_ttl(Duration::from_millis(1500));
    let text = serde_json::to_string(&config).unwrap();
    assert_eq!(text, r#"{"max_entries":5,"max_bytes":null,"ttl_ms":1500}"#);
    assert_eq!(serde_json::from_str::<CacheConfig>(&text).unwrap(), config);
    // Missing fields take the defaults; unknown ones are refused.
    let partial: CacheConfig = serde_json::from_str(r#"{"max_entries": 7}"#).unwrap();
    assert_eq!(partial, CacheConfig::default().with_max_entries(7));
    assert!(serde_json::from_str::<CacheConfig>(r#"{"ttl": 5}"#).is_err());

    let buffer: WriteBufferConfig =
        serde_json::from_str(r#"{"max_pending": 3, "max_age_ms": null}"#).unwrap();
    assert_eq!(
        buffer,
        WriteBufferConfig::default()
            .with_max_pending(3)
            .with_max_age(None)
    );
}

#[tokio::test]
async fn a_very_long_ttl_and_a_zero_entry_cache_are_accepted() {
    let (_, store) = cached(
        CacheConfig::default()
            .with_max_entries(0)
            .with_ttl(Duration::from_secs(u64::MAX)),
    );
    store.put(record("a", None), None).await.unwrap();
    store.get(&task("a")).await.unwrap();
    store.get(&task("a")).await.unwrap();
    let s = store.cache_stats();
    assert_eq!((s.hits, s.misses, s.entries), (0, 2, 0));
}

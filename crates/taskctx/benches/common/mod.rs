//! Workload fixtures shared by the bench binaries: update payloads, task trees, stores per
//! backend, and the output file the xtask reads. `docs/benchmarks.md` defines every workload.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use taskctx::app::builder::{BuilderOptions, ContextBuilderService, ContextRequest, ContextType};
use taskctx::store::PutRecord;
use taskctx::{
    ChatId, ContextUpdate, HistoryStore, RecordStore, TaskId, TaskRecord, TaskStatus, TaskType,
    Timestamp, UpdateType, Value,
};

/// The size of the SPEC §8 workloads (updates in a history, records in a store).
pub const N: usize = 100_000;

/// Records per `put_many` batch when filling durable stores.
pub const BATCH: usize = 1_000;

/// Whether `cargo xtask bench --quick` asked for a short run.
pub fn quick() -> bool {
    std::env::var_os("TASKCTX_BENCH_QUICK").is_some()
}

/// Where the bench binaries write what criterion cannot hold (JSON, read by the xtask).
pub fn out_dir() -> PathBuf {
    let dir = std::env::var_os("TASKCTX_BENCH_OUT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/taskctx-bench"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("creating the bench output directory");
    dir
}

/// Scratch space for durable stores (under `target/`, on the same disk as the workspace).
pub fn scratch() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-scratch");
    std::fs::create_dir_all(&base).expect("creating the scratch directory");
    tempfile::tempdir_in(base).expect("creating a scratch directory")
}

/// The payload of update `i`: a chat message (the shape the SPEC's Python figures were taken
/// with); `distinct` folds it onto fewer distinct values.
pub fn data(i: usize, distinct: Option<usize>) -> Value {
    let k = distinct.map_or(i, |d| i % d);
    Value::String(format!("message number {k}"))
}

/// `n` message updates one microsecond apart; `distinct` as for [`data`].
pub fn updates(n: usize, distinct: Option<usize>) -> Vec<ContextUpdate> {
    let start = Timestamp::now().as_secs();
    (0..n)
        .map(|i| {
            ContextUpdate::new(UpdateType::MESSAGE, data(i, distinct))
                .at(Timestamp::from_secs(start + i as f64 * 1e-6).expect("finite"))
        })
        .collect()
}

pub fn chat(name: &str) -> ChatId {
    ChatId::new(name).expect("valid chat id")
}

/// The three backends every durable workload runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Fs,
    Sled,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Memory, Backend::Fs, Backend::Sled];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Fs => "fs",
            Backend::Sled => "sled",
        }
    }
}

/// An opened store and the directory that holds it (kept alive as long as the store).
pub struct Opened {
    pub history: Arc<dyn HistoryStore>,
    pub records: Arc<dyn RecordStore>,
    _dir: Option<tempfile::TempDir>,
}

/// Opens a fresh, empty store through the facade's `taskctx::open`.
pub async fn open(backend: Backend) -> Opened {
    let dir = (backend != Backend::Memory).then(scratch);
    let url = match (&dir, backend) {
        (Some(dir), Backend::Fs) => format!("fs:{}", dir.path().display()),
        (Some(dir), Backend::Sled) => format!("sled:{}", dir.path().join("db").display()),
        _ => "memory:".to_owned(),
    };
    let stores = taskctx::open(&url).await.expect("opening the store");
    Opened {
        history: stores.history,
        records: stores.records,
        _dir: dir,
    }
}

const WORDS: &[&str] = &[
    "battery",
    "vendor",
    "cost",
    "density",
    "market",
    "analysis",
    "report",
    "search",
    "compare",
    "supply",
    "chain",
    "lithium",
    "solid",
    "state",
    "cell",
    "energy",
    "price",
    "forecast",
    "risk",
    "policy",
    "patent",
    "factory",
    "yield",
    "safety",
    "charge",
    "cycle",
    "anode",
    "cathode",
    "electrolyte",
    "sulfide",
    "oxide",
    "polymer",
    "investor",
    "summary",
    "section",
    "write",
    "collect",
    "figures",
    "trend",
    "europe",
    "china",
    "japan",
    "korea",
    "america",
];

/// `n` pseudo-random words (deterministic in `seed`).
pub fn words(seed: u64, n: usize) -> String {
    let mut x = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        | 1;
    let mut out = String::new();
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    out
}

/// The task whose planning context R4 builds: a leaf at depth 5.
pub const R4_LEAF: &str = "root.3.4.5.6.5";
/// The parent whose children R3 lists (10 children, present at every store size).
pub const R3_PARENT: &str = "root.3.4.5.6";

/// The ids of a plan tree with 10 sub-tasks per task, in insertion order: first the path to
/// [`R4_LEAF`] with every sibling along it (so the leaf's neighbourhood is the same at every
/// size), then breadth-first order; the first `n` of them.
pub fn tree_ids(n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    let mut push = |id: String, ids: &mut Vec<String>| {
        if ids.len() < n && seen.insert(id.clone()) {
            ids.push(id);
        }
    };
    push("root".to_owned(), &mut ids);
    let mut prefix = "root".to_owned();
    for step in R4_LEAF.split('.').skip(1) {
        for i in 1..=10 {
            push(format!("{prefix}.{i}"), &mut ids);
        }
        prefix = format!("{prefix}.{step}");
    }
    let mut level = vec!["root".to_owned()];
    while ids.len() < n {
        let mut next = Vec::with_capacity(level.len() * 10);
        for parent in &level {
            for i in 1..=10 {
                let id = format!("{parent}.{i}");
                push(id.clone(), &mut ids);
                next.push(id);
            }
        }
        level = next;
    }
    ids
}

/// The record of `id` in a finished plan: every task DONE with an output and a summary (internal
/// tasks hold their aggregated result), except [`R4_LEAF`], which is PENDING. Every fifth task
/// depends on its first and third siblings.
pub fn record(id: &str, seed: u64) -> TaskRecord {
    let depth = id.matches('.').count() as u32;
    let task_type = if depth.is_multiple_of(2) {
        TaskType::Think
    } else {
        TaskType::Write
    };
    let mut r = TaskRecord::new(
        TaskId::new(id).expect("valid id"),
        words(seed, 8),
        task_type,
    );
    r.layer = Some(depth);
    r.parent_task_id = id
        .rfind('.')
        .map(|p| TaskId::new(&id[..p]).expect("valid id"));
    if depth < 6 {
        r.child_task_ids = (1..=10)
            .map(|i| TaskId::new(format!("{id}.{i}")).expect("valid id"))
            .collect();
    }
    r.overall_objective = Some("Write a market report on solid-state batteries".to_owned());
    if id.ends_with(".5") {
        r.aux_data
            .insert("depends_on_indices".to_owned(), json!([0, 2]));
    }
    if id == R4_LEAF {
        r.status = TaskStatus::Pending;
    } else {
        r.status = TaskStatus::Done;
        r.output_content = Some(Value::String(words(seed + 7, 60)));
        r.output_summary = Some(words(seed + 3, 12));
    }
    r
}

/// The first `n` records of the tree.
pub fn records(n: usize) -> Vec<TaskRecord> {
    tree_ids(n)
        .iter()
        .enumerate()
        .map(|(i, id)| record(id, i as u64))
        .collect()
}

/// Fills `store` with `records` in `put_many` batches of [`BATCH`].
pub async fn fill(store: &dyn RecordStore, records: &[TaskRecord]) {
    for chunk in records.chunks(BATCH) {
        store
            .put_many(chunk.iter().cloned().map(PutRecord::upsert).collect())
            .await
            .expect("filling the store");
    }
}

/// A context builder as R4 measures it: defaults (BPE o200k_base token counter, BM25 similarity
/// over every DONE record, redaction, formatting) with the built-context cache off, so every call
/// is a full build.
pub async fn builder(store: Arc<dyn RecordStore>) -> ContextBuilderService {
    builder_with(store, BuilderOptions::default().with_cache_entries(0)).await
}

/// A context builder with `options`, its similarity index built over the whole store.
pub async fn builder_with(
    store: Arc<dyn RecordStore>,
    options: BuilderOptions,
) -> ContextBuilderService {
    let service = ContextBuilderService::builder(store)
        .options(options)
        .build();
    service
        .rebuild_similarity_index()
        .await
        .expect("indexing the store");
    service
}

pub fn planning_request() -> ContextRequest {
    ContextRequest::new(
        TaskId::new(R4_LEAF).expect("valid id"),
        ContextType::Planning,
    )
}

/// Median of `samples` (sorted in place).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `f` until `budget` has passed and at least `min_runs` runs were made (at most
/// `max_runs`); returns the median seconds of one run. `f` returns the time it wants counted.
pub fn median_of(
    min_runs: usize,
    max_runs: usize,
    budget: Duration,
    mut f: impl FnMut() -> Duration,
) -> f64 {
    let started = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < max_runs && (samples.len() < min_runs || started.elapsed() < budget) {
        samples.push(f().as_secs_f64());
    }
    median(&mut samples)
}

//! R1–R4: the task-record workloads (SPEC §8): inserts, random gets on one and two threads,
//! children lists and planning contexts over a 100k-record tree.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::Criterion;
use taskctx::store::PutRecord;
use taskctx::{RecordStore, TaskId};

use crate::common::{self, BATCH, Backend, N, R3_PARENT, records};
use crate::{Weight, runtime, tune};

/// How long filling each backend's 100k-record store took (R1 on the durable backends: one
/// run of `put_many` batches of 1,000).
pub(crate) static FILL_SECONDS: Mutex<BTreeMap<&'static str, f64>> = Mutex::new(BTreeMap::new());

/// `count` ids drawn at random (xorshift, fixed seed) from the first `n` records of the tree.
pub(crate) fn random_ids(n: usize, count: usize) -> Vec<TaskId> {
    let ids: Vec<TaskId> = common::tree_ids(n)
        .into_iter()
        .map(|id| TaskId::new(id).unwrap())
        .collect();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ids[(x % ids.len() as u64) as usize].clone()
        })
        .collect()
}

/// `ids.len()` gets split over `threads` OS threads, each driving its share on the runtime;
/// the wall time of the whole.
pub(crate) fn gets_on_threads(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn RecordStore>,
    ids: &[TaskId],
    threads: usize,
) -> Duration {
    let chunk = ids.len().div_ceil(threads);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for share in ids.chunks(chunk) {
            let store = Arc::clone(store);
            scope.spawn(move || {
                rt.block_on(async {
                    for id in share {
                        black_box(store.get(id).await.unwrap());
                    }
                });
            });
        }
    });
    started.elapsed()
}

pub(crate) fn benches(c: &mut Criterion) {
    let rt = runtime();
    let all = records(N);

    // R1: insert 100k records into an empty memory store: one `put` per record, and the same
    // records in `put_many` batches of 1,000. The durable stores are timed once, when the stores
    // R2–R4 read are filled (below): fs writes and fsyncs one file per record, ~0.6 ms each
    // here, so ten criterion samples would take over ten minutes.
    let mut group = c.benchmark_group("R1_insert_100k");
    tune(&mut group, Weight::Medium);
    group.bench_function("memory_put", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let opened = common::open(Backend::Memory).await;
                    let batch = all.clone();
                    let started = Instant::now();
                    for record in batch {
                        opened.records.put(record, None).await.unwrap();
                    }
                    total += started.elapsed();
                    drop(black_box(opened));
                }
                total
            })
        });
    });
    group.bench_function("memory_put_many", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let opened = common::open(Backend::Memory).await;
                    let batches: Vec<Vec<PutRecord>> = all
                        .chunks(BATCH)
                        .map(|c| c.iter().cloned().map(PutRecord::upsert).collect())
                        .collect();
                    let started = Instant::now();
                    for batch in batches {
                        opened.records.put_many(batch).await.unwrap();
                    }
                    total += started.elapsed();
                    drop(black_box(opened));
                }
                total
            })
        });
    });
    group.finish();

    // The stores R2–R4 read: the 100k-record tree on each backend, filled on first use (so a
    // criterion filter that skips a backend skips its filling too).
    let stores: Vec<(Backend, OnceCell<common::Opened>)> = Backend::ALL
        .into_iter()
        .map(|backend| (backend, OnceCell::new()))
        .collect();
    let store = |backend: Backend| -> Arc<dyn RecordStore> {
        let (_, cell) = stores.iter().find(|(b, _)| *b == backend).unwrap();
        let opened = cell.get_or_init(|| {
            let opened = rt.block_on(common::open(backend));
            let started = Instant::now();
            rt.block_on(common::fill(&*opened.records, &all));
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "R1 {}: filled 100k records in {elapsed:.1} s",
                backend.name()
            );
            FILL_SECONDS.lock().unwrap().insert(backend.name(), elapsed);
            opened
        });
        Arc::clone(&opened.records)
    };

    // R2: 1M random gets on the memory store, on one thread and split over two.
    let mut group = c.benchmark_group("R2_1M_random_gets");
    tune(&mut group, Weight::Medium);
    let ids = random_ids(N, 1_000_000);
    for threads in [1, 2] {
        group.bench_function(format!("memory_{threads}_thread"), |b| {
            let memory = store(Backend::Memory);
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| gets_on_threads(&rt, &memory, &ids, threads))
                    .sum()
            });
        });
    }
    group.finish();

    // R3: the children of a parent (10 children) in a 100k-record store, per call.
    let mut group = c.benchmark_group("R3_children_100k");
    tune(&mut group, Weight::Light);
    let parent = TaskId::new(R3_PARENT).unwrap();
    for backend in Backend::ALL {
        group.bench_function(backend.name(), |b| {
            let store = store(backend);
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let children = store.children(&parent).await.unwrap();
                        assert_eq!(children.len(), 10);
                        black_box(children);
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();

    // R4: the planning context of a leaf of the 100k-record tree, a full build (cache off):
    // sources, BM25 similar tasks, redaction, budget, formatting, BPE token counting.
    let mut group = c.benchmark_group("R4_planning_context_100k");
    tune(&mut group, Weight::Light);
    let service = OnceCell::new();
    let request = common::planning_request();
    group.bench_function("memory", |b| {
        let service = service.get_or_init(|| rt.block_on(common::builder(store(Backend::Memory))));
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(service.build(request.clone()).await.unwrap());
                }
                started.elapsed()
            })
        });
    });
    group.finish();
}

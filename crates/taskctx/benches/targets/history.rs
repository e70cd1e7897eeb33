//! A1–A6: the task-context workloads (SPEC §8), on the memory, fs and sled history stores.

use std::cell::OnceCell;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use taskctx::{ContextInit, HistoryBudget, HistoryStore, Persistence, TaskContext, UpdateType};

use crate::common::{self, Backend, N, chat, data, updates};
use crate::{Weight, runtime, tune};

/// A fresh chat name for workloads that need an empty history per iteration.
pub(crate) fn fresh_chat(prefix: &str) -> taskctx::ChatId {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    chat(&format!(
        "{prefix}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Opens a context on `chat` of `store` with `persistence`.
pub(crate) async fn context(
    store: &Arc<dyn HistoryStore>,
    chat: taskctx::ChatId,
    persistence: Persistence,
) -> TaskContext {
    TaskContext::builder(ContextInit::for_chat(chat))
        .store(Arc::clone(store))
        .persistence(persistence)
        .open()
        .await
        .expect("opening a context")
}

/// A detached context (persistence off) holding `history`.
pub(crate) async fn detached_with(history: Vec<taskctx::ContextUpdate>) -> TaskContext {
    let ctx = TaskContext::detached(ContextInit::for_chat(chat("detached")));
    for update in history {
        ctx.push(update).await.expect("push");
    }
    ctx
}

pub(crate) fn benches(c: &mut Criterion) {
    let rt = runtime();

    // A1: 100k `add_context_update` on a context with persistence off; the payloads are built
    // before the clock starts (as in the Python run) and moved in.
    let mut group = c.benchmark_group("A1_add_context_update_100k");
    tune(&mut group, Weight::Medium);
    group.bench_function("memory", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let ctx = TaskContext::detached(ContextInit::for_chat(chat("a1")));
                    let payloads: Vec<_> = (0..N).map(|i| data(i, None)).collect();
                    let started = Instant::now();
                    for payload in payloads {
                        ctx.add_context_update(UpdateType::MESSAGE, payload, None)
                            .await
                            .unwrap();
                    }
                    total += started.elapsed();
                    drop(black_box(ctx));
                }
                total
            })
        });
    });
    group.finish();

    // A2: optimise 100k updates of which 50 % repeat an earlier one, with a budget no history
    // reaches (only deduplication removes entries), on a context with persistence off.
    let mut group = c.benchmark_group("A2_optimise_100k_half_duplicates");
    tune(&mut group, Weight::Medium);
    let base = updates(N, Some(N / 2));
    group.bench_function("memory", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let ctx = detached_with(base.clone()).await;
                    let started = Instant::now();
                    let report = ctx
                        .optimize_context(HistoryBudget::Chars(usize::MAX))
                        .await
                        .unwrap();
                    total += started.elapsed();
                    assert_eq!(report.removed_duplicates, N / 2);
                    drop(black_box(ctx));
                }
                total
            })
        });
    });
    group.finish();

    // A3: persist a 100k-update history. `replace` is the full rewrite (what AIECS's save does),
    // durable on return (fs: temp file, fsync, rename, fsync of the directory; sled: one
    // transaction and a flush); `save` is a buffered context's save of 100k new updates (one
    // append, fsync'd).
    let history = updates(N, None);
    let mut group = c.benchmark_group("A3_persist_100k_replace");
    tune(&mut group, Weight::Medium);
    for backend in Backend::ALL {
        let opened = OnceCell::new();
        let target = chat("a3");
        group.bench_function(backend.name(), |b| {
            let store = &opened
                .get_or_init(|| rt.block_on(common::open(backend)))
                .history;
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        store.replace(&target, &history).await.unwrap();
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("A3_persist_100k_save");
    tune(&mut group, Weight::Medium);
    for backend in Backend::ALL {
        let opened = OnceCell::new();
        group.bench_function(backend.name(), |b| {
            let store = &opened
                .get_or_init(|| rt.block_on(common::open(backend)))
                .history;
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let ctx = context(store, fresh_chat("a3s"), Persistence::Buffered).await;
                        for update in history.iter().cloned() {
                            ctx.push(update).await.unwrap();
                        }
                        let started = Instant::now();
                        ctx.save().await.unwrap();
                        total += started.elapsed();
                    }
                    total
                })
            });
        });
    }
    group.finish();

    // A4: load a 100k-update history: open a context on it (load, then rebuild the trackers).
    let mut group = c.benchmark_group("A4_load_100k");
    tune(&mut group, Weight::Medium);
    for backend in Backend::ALL {
        let opened = OnceCell::new();
        let target = chat("a4");
        group.bench_function(backend.name(), |b| {
            let store = &opened
                .get_or_init(|| {
                    let opened = rt.block_on(common::open(backend));
                    rt.block_on(opened.history.replace(&target, &history))
                        .unwrap();
                    opened
                })
                .history;
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let ctx = context(store, target.clone(), Persistence::Buffered).await;
                        assert_eq!(ctx.history_len(), N);
                        drop(black_box(ctx));
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();

    // A5: 2,000 × (add + save) with write-through, each add durable on return (fs and sled:
    // an fsync per save), on a fresh chat per iteration.
    let mut group = c.benchmark_group("A5_add_and_save_2000");
    for backend in Backend::ALL {
        tune(
            &mut group,
            if backend == Backend::Memory {
                Weight::Medium
            } else {
                Weight::Heavy
            },
        );
        let opened = OnceCell::new();
        group.bench_function(backend.name(), |b| {
            let store = &opened
                .get_or_init(|| rt.block_on(common::open(backend)))
                .history;
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (elapsed, _) = a5_run(store, 2_000).await;
                        total += elapsed;
                    }
                    total
                })
            });
        });
    }
    group.finish();

    // A6: 10k contexts × 10 updates: make 10k contexts with persistence off, add 10 updates
    // (payloads built in the loop) to each, keep them all alive.
    let mut group = c.benchmark_group("A6_10k_contexts_x10");
    tune(&mut group, Weight::Medium);
    group.bench_function("memory", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let kept = a6_run(10_000, 10).await;
                    total += started.elapsed();
                    drop(black_box(kept));
                }
                total
            })
        });
    });
    group.finish();
}

/// One A5 run: `n` × (add + save) on a fresh write-through context; the total time and each
/// operation's time.
pub(crate) async fn a5_run(store: &Arc<dyn HistoryStore>, n: usize) -> (Duration, Vec<Duration>) {
    let ctx = context(store, fresh_chat("a5"), Persistence::WriteThrough).await;
    let mut per_op = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let op = Instant::now();
        ctx.add_context_update(UpdateType::MESSAGE, data(i, None), None)
            .await
            .unwrap();
        per_op.push(op.elapsed());
    }
    (started.elapsed(), per_op)
}

/// One A6 run: `contexts` contexts with `updates` updates each, returned alive.
pub(crate) async fn a6_run(contexts: usize, updates: usize) -> Vec<TaskContext> {
    let mut kept = Vec::with_capacity(contexts);
    for c in 0..contexts {
        let ctx = TaskContext::detached(ContextInit::for_chat(chat(&format!("a6-{c}"))));
        for j in 0..updates {
            ctx.add_context_update(UpdateType::MESSAGE, data(c * updates + j, None), None)
                .await
                .unwrap();
        }
        kept.push(ctx);
    }
    kept
}

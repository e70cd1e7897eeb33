//! Timings criterion cannot express, written to `extras.json` for `cargo xtask bench`: A5's
//! first-tenth/last-tenth ratio, R4's p50/p90 over single builds, and the scaling curves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskctx::app::builder::{BuilderOptions, ContextBuilderService};
use taskctx::{ContextInit, HistoryBudget, Persistence, TaskContext, TaskId, UpdateType};

use crate::common::{self, Backend, N, R3_PARENT, chat, data, median, median_of, updates};
use crate::history::{a5_run, context, detached_with, fresh_chat};
use crate::records::random_ids;
use crate::runtime;

pub(crate) fn run() {
    let rt = runtime();
    let mut out = serde_json::Map::new();
    out.insert("floors".to_owned(), floors());
    out.insert("a5".to_owned(), a5_tenths(&rt));
    out.insert("r4".to_owned(), r4_percentiles(&rt));
    out.insert(
        "r1_fill_s".to_owned(),
        json!(*crate::records::FILL_SECONDS.lock().unwrap()),
    );
    if std::env::var_os("TASKCTX_BENCH_SKIP_SCALING").is_none() {
        out.insert("history_scaling".to_owned(), history_scaling(&rt));
        out.insert("store_scaling".to_owned(), store_scaling(&rt));
    }
    let path = common::out_dir().join("extras.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&Value::Object(out)).unwrap(),
    )
    .unwrap();
    println!("wrote {}", path.display());
}

/// What the hardware and OS charge for the steps the targets cannot avoid: reading the wall
/// clock (once per update, as AIECS does), a durable small append (`write` + `fdatasync`), and a
/// lookup in a plain `HashMap` of the 100k records with the same random ids as R2.
fn floors() -> Value {
    let calls = 1_000_000;
    let mut clock = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(std::time::SystemTime::now());
        }
        clock.push(started.elapsed().as_secs_f64() / calls as f64);
    }
    // A1's floor: what a bare `Vec` of updates costs per push with the same clock read.
    let mut pushes = Vec::new();
    for _ in 0..5 {
        let payloads: Vec<Value> = (0..N).map(|i| data(i, None)).collect();
        let mut history = Vec::new();
        let started = Instant::now();
        for payload in payloads {
            history.push(taskctx::ContextUpdate {
                timestamp: taskctx::Timestamp::now(),
                update_type: UpdateType::MESSAGE,
                data: payload,
                metadata: taskctx::Map::new(),
            });
        }
        pushes.push(started.elapsed().as_secs_f64() / N as f64);
        std::hint::black_box(history);
    }
    let dir = common::scratch();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("floor.jsonl"))
        .unwrap();
    let line = format!("{}\n", serde_json::to_string(&updates(1, None)[0]).unwrap());
    let mut fsync = Vec::new();
    for _ in 0..300 {
        let started = Instant::now();
        std::io::Write::write_all(&mut file, line.as_bytes()).unwrap();
        file.sync_data().unwrap();
        fsync.push(started.elapsed().as_secs_f64());
    }
    let records = common::records(N);
    let map: std::collections::HashMap<TaskId, Arc<taskctx::TaskRecord>> = records
        .into_iter()
        .map(|r| (r.task_id.clone(), Arc::new(r)))
        .collect();
    let ids = random_ids(N, 1_000_000);
    let mut lookups = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        for id in &ids {
            std::hint::black_box(map.get(id).cloned());
        }
        lookups.push(started.elapsed().as_secs_f64() / ids.len() as f64);
    }
    let floors = json!({
        "clock_s": median(&mut clock),
        "vec_push_s": median(&mut pushes),
        "fsync_s": median(&mut fsync),
        "hashmap_get_s": median(&mut lookups),
    });
    println!("floors: {floors}");
    floors
}

fn sizes() -> Vec<usize> {
    if common::quick() {
        vec![1_000, 10_000, 100_000]
    } else {
        vec![1_000, 10_000, 100_000, 1_000_000]
    }
}

/// A5 on each backend, three runs: total seconds and the ratio of the last tenth's time to the
/// first tenth's (medians of the runs).
fn a5_tenths(rt: &tokio::runtime::Runtime) -> Value {
    let mut out = serde_json::Map::new();
    for backend in Backend::ALL {
        let opened = rt.block_on(common::open(backend));
        let mut totals = Vec::new();
        let mut ratios = Vec::new();
        for _ in 0..3 {
            let (total, per_op) = rt.block_on(a5_run(&opened.history, 2_000));
            let tenth = per_op.len() / 10;
            let first: Duration = per_op[..tenth].iter().sum();
            let last: Duration = per_op[per_op.len() - tenth..].iter().sum();
            totals.push(total.as_secs_f64());
            ratios.push(last.as_secs_f64() / first.as_secs_f64());
        }
        println!(
            "A5 {}: {:.3} s, last/first tenth {:.2}",
            backend.name(),
            median(&mut totals.clone()),
            median(&mut ratios.clone())
        );
        out.insert(
            backend.name().to_owned(),
            json!({"s": median(&mut totals), "last_to_first_tenth": median(&mut ratios)}),
        );
    }
    Value::Object(out)
}

/// R4: single full builds on the memory store (100k records), p50 and p90; the same with the
/// per-record memos off (every text redacted, summarised and counted on every build, as if every
/// record were new); and with the built-context cache on (a hit).
fn r4_percentiles(rt: &tokio::runtime::Runtime) -> Value {
    let opened = rt.block_on(common::open(Backend::Memory));
    rt.block_on(common::fill(&*opened.records, &common::records(N)));
    let request = common::planning_request();
    let runs = if common::quick() { 500 } else { 3_000 };
    let single_builds = |service: &ContextBuilderService| {
        rt.block_on(async {
            let first = service.build(request.clone()).await.unwrap();
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                let started = Instant::now();
                let built = service.build(request.clone()).await.unwrap();
                times.push(started.elapsed().as_secs_f64());
                assert_eq!(built.formatted, first.formatted);
            }
            times.sort_by(f64::total_cmp);
            (times, first)
        })
    };
    let percentile =
        |times: &[f64], q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];

    let service = rt.block_on(common::builder(Arc::clone(&opened.records)));
    let (times, first) = single_builds(&service);
    let (p50, p90) = (percentile(&times, 0.5), percentile(&times, 0.9));
    println!(
        "R4: p50 {:.1} µs, p90 {:.1} µs ({} items, {} tokens)",
        p50 * 1e6,
        p90 * 1e6,
        first.items.len(),
        first.token_count
    );
    drop(service);

    let unmemoised = rt.block_on(common::builder_with(
        Arc::clone(&opened.records),
        BuilderOptions::default()
            .with_cache_entries(0)
            .with_memo_bytes(0),
    ));
    let (times, cold) = single_builds(&unmemoised);
    assert_eq!(
        cold.formatted, first.formatted,
        "memos must not change what is built"
    );
    let unmemoised_p50 = percentile(&times, 0.5);
    println!("R4 memos off: p50 {:.1} µs", unmemoised_p50 * 1e6);
    drop(unmemoised);

    // The default service: the built-context cache on. A hit still checks the revision of every
    // record the context was built from.
    let cached = rt.block_on(common::builder_with(
        Arc::clone(&opened.records),
        BuilderOptions::default(),
    ));
    let (times, _) = single_builds(&cached);
    let cache_hit_p50 = percentile(&times, 0.5);
    println!("R4 cache hit: p50 {:.1} µs", cache_hit_p50 * 1e6);
    json!({
        "cache_hit_p50_s": cache_hit_p50,
        "unmemoised_p50_s": unmemoised_p50,
        "p50_s": p50,
        "p90_s": p90,
        "items": first.items.len(),
        "tokens": first.token_count,
        "omitted": first.omitted.len(),
        "warnings": first.warnings.len(),
    })
}

fn budget() -> Duration {
    Duration::from_secs_f64(if common::quick() { 0.3 } else { 1.0 })
}

/// Cost per operation against history length, per backend.
fn history_scaling(rt: &tokio::runtime::Runtime) -> Value {
    let sizes = sizes();
    let largest = *sizes.last().unwrap();
    let all = updates(largest, None);
    let mut series: BTreeMap<String, BTreeMap<usize, f64>> = BTreeMap::new();
    let mut record = |name: String, n: usize, seconds: f64| {
        println!("history {name} n={n}: {:.3} ms", seconds * 1e3);
        series.entry(name).or_default().insert(n, seconds);
    };
    for backend in Backend::ALL {
        let opened = rt.block_on(common::open(backend));
        let store = &opened.history;
        for &n in &sizes {
            let slice = &all[..n];
            let runs = if n >= 1_000_000 { 1 } else { 3 };
            let append = median_of(runs, 10, budget(), || {
                rt.block_on(async {
                    let target = fresh_chat("scale-append");
                    let started = Instant::now();
                    store.append(&target, slice).await.unwrap();
                    started.elapsed()
                })
            });
            record(format!("append/{}", backend.name()), n, append);
            let target = chat(&format!("scale-{n}"));
            let replace = median_of(runs, 10, budget(), || {
                rt.block_on(async {
                    let started = Instant::now();
                    store.replace(&target, slice).await.unwrap();
                    started.elapsed()
                })
            });
            record(format!("replace/{}", backend.name()), n, replace);
            let load = median_of(runs, 10, budget(), || {
                rt.block_on(async {
                    let started = Instant::now();
                    let ctx = context(store, target.clone(), Persistence::Buffered).await;
                    let elapsed = started.elapsed();
                    assert_eq!(ctx.history_len(), n);
                    elapsed
                })
            });
            record(format!("load/{}", backend.name()), n, load);
            // A write-through save of one new update onto a history of n.
            let ctx = rt.block_on(context(store, target.clone(), Persistence::WriteThrough));
            let mut i = 0;
            let save = median_of(20, 200, budget(), || {
                i += 1;
                rt.block_on(async {
                    let started = Instant::now();
                    ctx.add_context_update(UpdateType::MESSAGE, data(i, None), None)
                        .await
                        .unwrap();
                    started.elapsed()
                })
            });
            record(format!("save_tail/{}", backend.name()), n, save);
        }
    }
    for &n in &sizes {
        let runs = if n >= 1_000_000 { 1 } else { 3 };
        let add = median_of(runs, 10, budget(), || {
            rt.block_on(async {
                let ctx = TaskContext::detached(ContextInit::for_chat(chat("scale-add")));
                let payloads: Vec<_> = (0..n).map(|i| data(i, None)).collect();
                let started = Instant::now();
                for payload in payloads {
                    ctx.add_context_update(UpdateType::MESSAGE, payload, None)
                        .await
                        .unwrap();
                }
                started.elapsed()
            })
        });
        record("add/memory".to_owned(), n, add);
        let base = updates(n, Some(n / 2));
        let runs = if n >= 1_000_000 { 1 } else { 3 };
        let optimise = median_of(runs, 10, budget(), || {
            rt.block_on(async {
                let ctx = detached_with(base.clone()).await;
                let started = Instant::now();
                ctx.optimize_context(HistoryBudget::Chars(usize::MAX))
                    .await
                    .unwrap();
                started.elapsed()
            })
        });
        record("optimise/memory".to_owned(), n, optimise);
    }
    json!(series)
}

/// Cost per operation against store size, per backend: a random `get`, `children` of a parent
/// with 10 children, and a full planning-context build of a leaf.
fn store_scaling(rt: &tokio::runtime::Runtime) -> Value {
    let sizes = sizes();
    let largest = *sizes.last().unwrap();
    let all = common::records(largest);
    let parent = TaskId::new(R3_PARENT).unwrap();
    let request = common::planning_request();
    let mut series: BTreeMap<String, BTreeMap<usize, f64>> = BTreeMap::new();
    let mut record = |name: String, n: usize, seconds: f64| {
        println!("store {name} n={n}: {:.3} µs", seconds * 1e6);
        series.entry(name).or_default().insert(n, seconds);
    };
    let mut skipped = Vec::new();
    for backend in Backend::ALL {
        let opened = rt.block_on(common::open(backend));
        let store = &opened.records;
        let mut filled = 0;
        for &n in &sizes {
            // fs writes and fsyncs one file per record (~0.6 ms each here): 1M would take
            // over ten minutes to fill, so it stops at 100k (10k with --quick).
            let fs_limit = if common::quick() { 10_000 } else { 100_000 };
            if backend == Backend::Fs && n > fs_limit {
                skipped.push(format!("fs n={n}: one file per record, ~0.6 ms each"));
                continue;
            }
            let started = Instant::now();
            rt.block_on(common::fill(&**store, &all[filled..n]));
            println!(
                "store {}: filled to {n} in {:.1} s",
                backend.name(),
                started.elapsed().as_secs_f64()
            );
            filled = n;
            let gets = if backend == Backend::Memory {
                200_000
            } else {
                20_000
            };
            let ids = random_ids(n, gets);
            let get = median_of(3, 5, budget(), || {
                rt.block_on(async {
                    let started = Instant::now();
                    for id in &ids {
                        std::hint::black_box(store.get(id).await.unwrap());
                    }
                    started.elapsed() / gets as u32
                })
            });
            record(format!("get/{}", backend.name()), n, get);
            let calls = if backend == Backend::Memory {
                10_000
            } else {
                1_000
            };
            let children = median_of(3, 5, budget(), || {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..calls {
                        std::hint::black_box(store.children(&parent).await.unwrap());
                    }
                    started.elapsed() / calls
                })
            });
            record(format!("children/{}", backend.name()), n, children);
            let service = rt.block_on(common::builder(Arc::clone(store)));
            let builds = if backend == Backend::Memory { 200 } else { 50 };
            let build = median_of(3, 5, budget(), || {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..builds {
                        std::hint::black_box(service.build(request.clone()).await.unwrap());
                    }
                    started.elapsed() / builds
                })
            });
            record(format!("context_build/{}", backend.name()), n, build);
        }
    }
    let mut out = json!(series);
    out["skipped"] = json!(skipped);
    out
}

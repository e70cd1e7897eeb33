//! The SPEC §8 benchmarks (A1–A6, R1–R4) as criterion benches, plus what criterion cannot
//! express: A5's first-tenth/last-tenth ratio, R4's p50 over single builds, and the scaling
//! curves (history length and store size, 1k → 1M, per backend), written as JSON for
//! `cargo xtask bench`. Memory per context and per record is measured by the `memory` bench.
//!
//! Run with `cargo bench -p taskctx --bench targets` (criterion's filter arguments work as
//! usual; `TASKCTX_BENCH_QUICK=1` shortens every measurement and drops the 1M sizes,
//! `TASKCTX_BENCH_SKIP_SCALING=1` skips the scaling curves). `docs/benchmarks.md` defines every
//! workload.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

#[path = "../common/mod.rs"]
mod common;
mod extras;
mod history;
mod records;

use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};

/// The runtime every async API is driven on: two workers (this machine's cores) and tokio's
/// blocking pool, which the fs and sled adapters use.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// How long a group measures, by the weight of one iteration.
#[derive(Clone, Copy)]
pub(crate) enum Weight {
    /// Micro-operations (ns–µs per iteration).
    Light,
    /// Workloads of 1–100 ms per iteration.
    Medium,
    /// Workloads of a second or more per iteration (10 samples of one iteration each).
    Heavy,
}

pub(crate) fn tune(group: &mut BenchmarkGroup<'_, WallTime>, weight: Weight) {
    let quick = common::quick();
    let (samples, warm_up, measure) = match (weight, quick) {
        (Weight::Light, false) => (50, 1.0, 3.0),
        (Weight::Light, true) => (20, 0.3, 1.0),
        (Weight::Medium, false) => (20, 1.0, 5.0),
        (Weight::Medium, true) => (10, 0.3, 1.5),
        (Weight::Heavy, false) => (10, 0.5, 5.0),
        (Weight::Heavy, true) => (10, 0.1, 1.0),
    };
    group.sample_size(samples);
    group.warm_up_time(Duration::from_secs_f64(warm_up));
    group.measurement_time(Duration::from_secs_f64(measure));
    group.sampling_mode(criterion::SamplingMode::Flat);
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    history::benches(&mut criterion);
    records::benches(&mut criterion);
    criterion.final_summary();
    if std::env::var_os("TASKCTX_BENCH_SKIP_EXTRAS").is_none() {
        extras::run();
    }
}

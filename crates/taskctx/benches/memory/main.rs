//! Memory per context (A6) and per task record (R1, memory store), measured with a counting
//! global allocator (`stats_alloc`) rather than estimated. A bench binary of its own, so the
//! allocator's counters never slow down the timed benches; writes `memory.json` for
//! `cargo xtask bench`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

#[path = "../common/mod.rs"]
mod common;

use std::alloc::System;

use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use taskctx::{ContextInit, TaskContext, UpdateType};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes still allocated since `region` started: allocated minus freed (stats_alloc already
/// adds a realloc's growth to the allocated bytes and its shrinking to the freed ones).
fn net_bytes(region: &Region<'_, System>) -> f64 {
    let change = region.change();
    change.bytes_allocated as f64 - change.bytes_deallocated as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");

    // A6: 10k contexts (persistence off) with 10 updates each, all alive; everything they hold
    // (the context, its history, each update's payload, the Vec that keeps them) is counted.
    // The same without updates gives the context's own share.
    let contexts = 10_000;
    let mut a6 = [0.0; 2];
    for (slot, updates) in a6.iter_mut().zip([10, 0]) {
        let region = Region::new(GLOBAL);
        let kept = rt.block_on(async {
            let mut kept = Vec::with_capacity(contexts);
            for c in 0..contexts {
                let chat = common::chat(&format!("a6-{c}"));
                let ctx = TaskContext::detached(ContextInit::for_chat(chat));
                for j in 0..updates {
                    let data = common::data(c * updates + j, None);
                    ctx.add_context_update(UpdateType::MESSAGE, data, None)
                        .await
                        .unwrap();
                }
                kept.push(ctx);
            }
            kept
        });
        *slot = net_bytes(&region) / contexts as f64;
        drop(kept);
    }
    let [per_context, empty_context] = a6;
    println!("A6: {per_context:.0} bytes per context with 10 updates, {empty_context:.0} without");

    // R1: 100k records put one by one into the memory store; what the store then holds (the
    // records and its maps and children index) per record.
    let region = Region::new(GLOBAL);
    let store = rt.block_on(async {
        let store = taskctx::open("memory:").await.unwrap().records;
        for record in common::records(common::N) {
            store.put(record, None).await.unwrap();
        }
        store
    });
    let per_record = net_bytes(&region) / common::N as f64;
    let stats = rt.block_on(store.stats()).unwrap();
    assert_eq!(stats.total, common::N as u64);
    drop(store);
    println!("R1: {per_record:.0} bytes per record in the memory store");

    let path = common::out_dir().join("memory.json");
    let out = json!({
        "a6_bytes_per_context": per_context,
        "a6_bytes_per_empty_context": empty_context,
        "r1_bytes_per_record": per_record,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&out).unwrap()).unwrap();
    println!("wrote {}", path.display());
}

//! Task contexts (SPEC §5): persistence, restore, optimisation, trackers, metadata, health,
//! retention — and a test for each AIECS defect (reference `aiecs-task-context-behaviour.md`)
//! showing it is fixed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod context_common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use context_common::{Instrumented, chat};
use serde_json::json;
use taskctx_app::context::{
    ContextError, ContextInit, Finding, HistoryBudget, Persistence, TaskContext, build_context,
    sweep_histories,
};
use taskctx_domain::{ContextUpdate, HeuristicTokenCounter, Timestamp, UpdateType, Value};
use taskctx_store::{HistoryStore, MockHistoryStore, StoreError};
use taskctx_store_memory::MemoryHistoryStore;

fn init(id: &str) -> ContextInit {
    ContextInit::for_chat(chat(id))
}

#[tokio::test]
async fn write_through_updates_are_stored_when_the_call_returns() {
    let store = Instrumented::new();
    let ctx = TaskContext::open(init("c"), store.clone()).await.unwrap();
    ctx.add_context_update(UpdateType::MESSAGE, json!("hello"), None)
        .await
        .unwrap();
    let stored = store.load(&chat("c")).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data, json!("hello"));
    assert_eq!(ctx.pending_updates(), 0);
}

#[tokio::test]
async fn reopening_restores_the_history_and_rebuilds_both_trackers() {
    let store: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::new());
    {
        let ctx = TaskContext::open(init("c"), store.clone()).await.unwrap();
        ctx.add_context_update(UpdateType::MESSAGE, json!("hi"), None)
            .await
            .unwrap();
        ctx.track_file_operation("report.md", "write", "writer")
            .await
            .unwrap();
        ctx.track_model_usage("gpt-4o", "openai", "chat")
            .await
            .unwrap();
    }
    let again = TaskContext::open(init("c"), store).await.unwrap();
    assert_eq!(again.history_len(), 3);
    let files = again.file_tracker();
    assert_eq!(files["report.md"].operation, "write");
    assert_eq!(files["report.md"].source, "writer");
    assert_eq!(files["report.md"].state, "active");
    let models = again.model_tracker();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].model_id, "gpt-4o");
}

/// AIECS defect: every context without a chat id shared `context_history_none.json`.
#[tokio::test]
async fn two_contexts_without_a_chat_id_never_share_a_history() {
    let store: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::new());
    let a = TaskContext::open(ContextInit::default(), store.clone())
        .await
        .unwrap();
    let b = TaskContext::open(ContextInit::default(), store.clone())
        .await
        .unwrap();
    assert_ne!(a.chat_id(), b.chat_id());
    assert_eq!(a.user_id().as_str(), "anonymous");
    a.add_context_update(UpdateType::MESSAGE, json!("a"), None)
        .await
        .unwrap();
    b.add_context_update(UpdateType::MESSAGE, json!("b"), None)
        .await
        .unwrap();
    assert_eq!(store.load(a.chat_id()).await.unwrap().len(), 1);
    assert_eq!(store.load(b.chat_id()).await.unwrap().len(), 1);
}

/// AIECS defect: the repeat check compared fresh timestamps, so it never matched.
#[tokio::test]
async fn a_repeat_of_the_last_model_usage_is_not_recorded() {
    let ctx = TaskContext::detached(init("c"));
    assert!(ctx.track_model_usage("m", "p", "chat").await.unwrap());
    assert!(!ctx.track_model_usage("m", "p", "chat").await.unwrap());
    assert!(ctx.track_model_usage("m", "p", "embed").await.unwrap());
    assert!(ctx.track_model_usage("m", "p", "chat").await.unwrap());
    assert_eq!(ctx.model_tracker().len(), 3);
    let usage_updates = ctx.with_history(|h| {
        h.iter()
            .filter(|u| u.update_type == UpdateType::MODEL_USAGE)
            .count()
    });
    assert_eq!(usage_updates, 3);
}

/// AIECS defect: `optimize_context` always returned `False`.
#[tokio::test]
async fn optimisation_reports_what_it_removed_and_replaces_the_stored_history() {
    let store = Instrumented::new();
    let ctx = TaskContext::open(init("c"), store.clone()).await.unwrap();
    for i in 0..6 {
        ctx.add_context_update(UpdateType::MESSAGE, json!({"n": i % 3, "k": "v"}), None)
            .await
            .unwrap();
    }
    let report = ctx
        .optimize_context(HistoryBudget::Chars(1000))
        .await
        .unwrap();
    assert!(report.optimized());
    assert_eq!((report.kept, report.removed_duplicates), (3, 3));
    assert_eq!(store.replaces.load(Ordering::SeqCst), 1);
    assert_eq!(store.load(&chat("c")).await.unwrap(), ctx.history());
    // Nothing to remove: a truthful `false`, and no rewrite.
    let again = ctx
        .optimize_context(HistoryBudget::Chars(1000))
        .await
        .unwrap();
    assert!(!again.optimized());
    assert_eq!(store.replaces.load(Ordering::SeqCst), 1);
    // A token budget drops the oldest entries that no longer fit.
    let ctx_tokens = TaskContext::builder(init("t"))
        .store(store.clone())
        .token_counter(Arc::new(HeuristicTokenCounter))
        .open()
        .await
        .unwrap();
    for word in ["alpha", "beta", "gamma"] {
        ctx_tokens
            .add_context_update(UpdateType::MESSAGE, json!(word), None)
            .await
            .unwrap();
    }
    let report = ctx_tokens
        .optimize_context(HistoryBudget::Tokens(7))
        .await
        .unwrap();
    assert_eq!(report.removed_for_budget, 1);
    assert_eq!(ctx_tokens.history()[0].data, json!("beta"));
}

#[tokio::test]
async fn truncation_keeps_entries_up_to_the_time_and_rewrites_only_when_needed() {
    let store = Instrumented::new();
    let ctx = TaskContext::open(init("c"), store.clone()).await.unwrap();
    for t in [1.0, 2.0, 3.0] {
        ctx.push(
            ContextUpdate::new(UpdateType::MESSAGE, json!(t)).at(Timestamp::from_secs(t).unwrap()),
        )
        .await
        .unwrap();
    }
    let removed = ctx
        .truncate_context_history(Timestamp::from_secs(2.0).unwrap())
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(store.load(&chat("c")).await.unwrap().len(), 2);
    assert_eq!(
        ctx.truncate_context_history(Timestamp::from_secs(9.0).unwrap())
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.replaces.load(Ordering::SeqCst), 1);
}

/// AIECS defect: every save rewrote the whole file (O(n) per save, O(n²) per session).
#[tokio::test]
async fn a_buffered_save_appends_only_what_is_not_stored_yet() {
    let store = Instrumented::new();
    let ctx = TaskContext::builder(init("c"))
        .store(store.clone())
        .persistence(Persistence::Buffered)
        .open()
        .await
        .unwrap();
    for i in 0..500 {
        ctx.add_context_update(UpdateType::MESSAGE, json!(i), None)
            .await
            .unwrap();
    }
    assert_eq!(store.appends.load(Ordering::SeqCst), 0);
    assert_eq!(ctx.pending_updates(), 500);
    ctx.save().await.unwrap();
    assert_eq!(store.appended_entries.load(Ordering::SeqCst), 500);
    ctx.add_context_update(UpdateType::MESSAGE, json!("one more"), None)
        .await
        .unwrap();
    ctx.save().await.unwrap();
    ctx.save().await.unwrap();
    assert_eq!(store.appends.load(Ordering::SeqCst), 2);
    assert_eq!(store.appended_entries.load(Ordering::SeqCst), 501);
    assert_eq!(store.load(&chat("c")).await.unwrap(), ctx.history());
}

/// AIECS defect: save errors were only logged.
#[tokio::test]
async fn a_failed_save_is_an_error_and_the_update_is_kept_for_the_next_save() {
    let store = Instrumented::new();
    let ctx = TaskContext::open(init("c"), store.clone()).await.unwrap();
    store.fail_writes(true);
    let err = ctx
        .add_context_update(UpdateType::MESSAGE, json!("not yet"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::Save { .. }), "{err:?}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(ctx.pending_updates(), 1);
    // A failed rewrite changes nothing either.
    assert!(ctx.optimize_context(HistoryBudget::Chars(0)).await.is_err());
    assert_eq!(ctx.history_len(), 1);
    store.fail_writes(false);
    ctx.save().await.unwrap();
    assert_eq!(ctx.pending_updates(), 0);
    assert_eq!(
        store.load(&chat("c")).await.unwrap()[0].data,
        json!("not yet")
    );
}

/// AIECS defect: a history that failed to load was logged, and the next save overwrote it.
#[tokio::test]
async fn a_load_error_is_returned_and_nothing_is_written() {
    let mut mock = MockHistoryStore::new();
    mock.expect_load().returning(|_| {
        Err(StoreError::corrupt(
            "history/c.jsonl:3",
            "expected value at column 1",
        ))
    });
    // No append, replace or delete expectation: any write would fail the test.
    let err = TaskContext::open(init("c"), Arc::new(mock))
        .await
        .unwrap_err();
    assert!(matches!(err, ContextError::Load { .. }), "{err:?}");
    assert!(err.to_string().contains("history/c.jsonl:3"), "{err}");
}

#[tokio::test]
async fn persistence_off_never_touches_the_store() {
    let mock = MockHistoryStore::new(); // no expectations: any call panics
    let ctx = TaskContext::builder(init("c"))
        .store(Arc::new(mock))
        .persistence(Persistence::Off)
        .open()
        .await
        .unwrap();
    ctx.add_context_update(UpdateType::MESSAGE, json!(1), None)
        .await
        .unwrap();
    ctx.optimize_context(HistoryBudget::Chars(0)).await.unwrap();
    ctx.save().await.unwrap();
    ctx.close().await.unwrap();
    assert_eq!(ctx.pending_updates(), 0);
}

#[tokio::test]
async fn a_persisting_mode_without_a_store_is_refused() {
    let err = TaskContext::builder(init("c"))
        .persistence(Persistence::Buffered)
        .open()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs a history store"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tasks_sharing_a_context_lose_nothing_and_the_store_keeps_local_order() {
    let store: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::new());
    let ctx = TaskContext::open(init("shared"), store.clone())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                ctx.add_context_update(UpdateType::MESSAGE, json!({"w": writer, "i": i}), None)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(ctx.history_len(), 200);
    assert_eq!(store.load(&chat("shared")).await.unwrap(), ctx.history());
}

#[tokio::test]
async fn active_metadata_and_to_json_have_the_aiecs_shape() {
    let init = ContextInit::from_aiecs(&json!({
        "user_id": "u",
        "chat_id": "c",
        "metadata": {"visible": 1, "hidden": 2},
        "metadata_toggles": {"hidden": false, "visible": true}
    }))
    .unwrap();
    let ctx = TaskContext::detached(init);
    ctx.track_file_operation("a.txt", "read", "task")
        .await
        .unwrap();
    let json = ctx.to_json();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        vec![
            "chat_id",
            "context_history",
            "file_tracker",
            "metadata",
            "model_tracker",
            "user_id"
        ]
    );
    assert_eq!(json["metadata"], json!({"visible": 1}));
    assert_eq!(json["context_history"][0]["update_type"], "file_operation");
    assert_eq!(json["file_tracker"]["a.txt"]["operation"], "read");
    assert_eq!(ctx.metadata().len(), 2);
}

#[tokio::test]
async fn build_context_matches_aiecs_to_dict() {
    let built =
        build_context(&json!({"user_id": "u", "chat_id": "c", "aiPreference": "fast"})).unwrap();
    assert_eq!(built["user_id"], "u");
    assert_eq!(built["chat_id"], "c");
    assert_eq!(built["metadata"], json!({"aiPreference": "fast"}));
    assert_eq!(built["context_history"], json!([]));
    assert!(build_context(&json!({"chat_id": ""})).is_err());
}

#[tokio::test]
async fn stats_and_health_apply_the_seed_thresholds() {
    let store = Instrumented::new();
    let ctx = TaskContext::builder(init("c"))
        .store(store.clone())
        .persistence(Persistence::Buffered)
        .token_counter(Arc::new(HeuristicTokenCounter))
        .open()
        .await
        .unwrap();
    ctx.add_context_update(UpdateType::MESSAGE, json!("small"), None)
        .await
        .unwrap();
    let stats = ctx.stats();
    assert_eq!((stats.entries, stats.pending), (1, 1));
    assert!(stats.size_chars > 0 && stats.size_tokens > 0);
    assert!(stats.suggestions.is_empty());
    let health = ctx.health().await;
    assert!(health.is_healthy());
    assert!(
        health
            .findings
            .contains(&Finding::UnsavedUpdates { count: 1 })
    );
    for i in 0..120 {
        ctx.add_context_update(
            UpdateType::MESSAGE,
            json!(format!("entry number {i}")),
            None,
        )
        .await
        .unwrap();
    }
    let stats = ctx.stats();
    assert_eq!(stats.suggestions.len(), 2, "{:?}", stats.suggestions);
    let health = ctx.health().await;
    assert!(
        health
            .findings
            .iter()
            .any(|f| matches!(f, Finding::ManyEntries { entries: 121, .. }))
    );
    assert!(
        health
            .findings
            .iter()
            .any(|f| matches!(f, Finding::LargeContext { .. }))
    );
}

#[tokio::test]
async fn health_notices_another_writer_on_the_same_chat() {
    let store: Arc<dyn HistoryStore> = Arc::new(MemoryHistoryStore::new());
    let ctx = TaskContext::open(init("c"), store.clone()).await.unwrap();
    ctx.add_context_update(UpdateType::MESSAGE, json!(1), None)
        .await
        .unwrap();
    store
        .append(
            &chat("c"),
            &[ContextUpdate::new(UpdateType::MESSAGE, json!("elsewhere"))],
        )
        .await
        .unwrap();
    let health = ctx.health().await;
    assert!(!health.is_healthy());
    assert_eq!(
        health.findings[0],
        Finding::StoreAhead {
            stored: 2,
            saved: 1
        }
    );
}

/// AIECS named `max_history_files` and `cleanup_interval` but implemented neither.
#[tokio::test]
async fn the_retention_sweep_deletes_the_oldest_histories_beyond_the_limit() {
    let store = MemoryHistoryStore::new();
    for (id, t) in [
        ("old", 1.0),
        ("newest", 9.0),
        ("middle", 5.0),
        ("older", 2.0),
    ] {
        store
            .append(
                &chat(id),
                &[ContextUpdate::new(UpdateType::MESSAGE, Value::Null)
                    .at(Timestamp::from_secs(t).unwrap())],
            )
            .await
            .unwrap();
    }
    let report = sweep_histories(&store, 2).await.unwrap();
    assert_eq!(report.deleted, vec![chat("old"), chat("older")]);
    let left: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.chat_id.into_string())
        .collect();
    assert_eq!(left, vec!["middle", "newest"]);
    assert!(sweep_histories(&store, 5).await.unwrap().deleted.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_retention_task_sweeps_on_its_interval() {
    let store = Arc::new(MemoryHistoryStore::new());
    let task =
        taskctx_app::context::spawn_retention(store.clone(), 1, std::time::Duration::from_secs(60));
    // The first sweep runs at once, on an empty store.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    for id in ["a", "b", "c"] {
        store
            .append(
                &chat(id),
                &[ContextUpdate::new(UpdateType::MESSAGE, json!(id))],
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    assert_eq!(
        store.list().await.unwrap().len(),
        3,
        "swept before the interval"
    );
    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    assert_eq!(
        store.list().await.unwrap().len(),
        1,
        "not swept after the interval"
    );
    drop(task);
    for id in ["d", "e"] {
        store
            .append(
                &chat(id),
                &[ContextUpdate::new(UpdateType::MESSAGE, json!(id))],
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    assert_eq!(
        store.list().await.unwrap().len(),
        3,
        "a dropped task kept sweeping"
    );
}

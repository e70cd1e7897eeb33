//! The built-context cache never serves stale data, failures degrade to the minimal context, and
//! the metrics count what happened (SPEC R6.7, R6.8).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod builder_common;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use async_trait::async_trait;
use builder_common::*;
use serde_json::json;
use taskctx_app::builder::{
    BuilderOptions, ContextBuilderService, ContextType, Layout, Redactor, SourceKind,
    SummarizeError, Summarizer, SummaryRequest, WarningKind, format_input,
};
use taskctx_domain::{
    HeuristicTokenCounter, TaskId, TaskRecord, TaskStatus, TaskType, TokenCounter, Value,
};
use taskctx_store::{PutRecord, RecordStats, RecordStore, RecordStoreExt, StoreError, StoreResult};
use taskctx_store_memory::MemoryRecordStore;

// ---------------------------------------------------------------------------------------------
// Staleness

async fn cached_then_changed(
    target: &str,
    context_type: ContextType,
    change: impl AsyncFnOnce(&Arc<dyn RecordStore>),
    expect: impl Fn(&taskctx_app::builder::AgentTaskInput) -> bool,
) {
    let store = research_store().await;
    let service = service(&store).await;
    let req = request(target, context_type);
    let first = service.build(req.clone()).await.unwrap();
    assert_eq!(service.build(req.clone()).await.unwrap(), first);
    let hits = service.metrics().cache_hits;
    assert_eq!(hits, 1, "the second build is a hit");
    change(&store).await;
    let after = service.build(req.clone()).await.unwrap();
    assert!(expect(&after), "stale context served:\n{}", after.formatted);
    assert_eq!(
        service.metrics().cache_hits,
        hits,
        "a changed source is a miss"
    );
    // And the rebuilt one is cached again.
    assert_eq!(service.build(req).await.unwrap(), after);
    assert_eq!(service.metrics().cache_hits, hits + 1);
}

#[tokio::test]
async fn a_dependency_output_change_invalidates() {
    cached_then_changed(
        "root.2.3",
        ContextType::Execution,
        async |store| {
            edit(store, "root.2.2", |r| {
                r.output_content = Some(json!("NEW COSTS"));
            })
            .await;
        },
        |ctx| ctx.formatted.contains("NEW COSTS"),
    )
    .await;
}

#[tokio::test]
async fn a_later_sibling_finishing_invalidates() {
    cached_then_changed(
        "root.2.1",
        ContextType::Execution,
        async |store| {
            edit(store, "root.2.3", |r| {
                r.status = TaskStatus::Done;
                r.output_content = Some(json!("THE SECTION"));
            })
            .await;
        },
        |ctx| !ctx.formatted.contains("THE SECTION"), // SEARCH task: no later siblings
    )
    .await;
    cached_then_changed(
        "root.2.2",
        ContextType::Execution,
        async |store| {
            edit(store, "root.2.3", |r| {
                r.status = TaskStatus::Done;
                r.output_content = Some(json!("THE SECTION"));
            })
            .await;
        },
        |ctx| ctx.formatted.contains("THE SECTION"), // THINK task: later siblings count
    )
    .await;
}

#[tokio::test]
async fn an_ancestor_change_invalidates() {
    cached_then_changed(
        "root.2.3",
        ContextType::Execution,
        async |store| {
            edit(store, "root", |r| r.goal = "A NEW ROOT GOAL".into()).await;
        },
        |ctx| ctx.formatted.contains("[L0] root: A NEW ROOT GOAL"),
    )
    .await;
}

#[tokio::test]
async fn a_child_added_outside_the_plan_invalidates_aggregation() {
    cached_then_changed(
        "root.2",
        ContextType::Aggregation,
        async |store| {
            // The parent's record is untouched: only the children index changes.
            let mut extra = task(
                "root.2.9",
                Some("root.2"),
                "An unplanned child",
                TaskType::Think,
                TaskStatus::Done,
            );
            extra.output_content = Some(json!("UNPLANNED RESULT"));
            store.create(extra).await.unwrap();
        },
        |ctx| ctx.formatted.contains("UNPLANNED RESULT"),
    )
    .await;
}

#[tokio::test]
async fn a_referenced_task_created_later_invalidates() {
    let store = research_store().await;
    edit(&store, "root.2.3", |r| {
        r.goal = "Write it, see `root.2.7`".into();
    })
    .await;
    let service = service(&store).await;
    let req = request("root.2.3", ContextType::Execution);
    let first = service.build(req.clone()).await.unwrap();
    assert!(!first.formatted.contains("LATE REFERENCE"));
    let mut late = task(
        "root.2.7",
        Some("root.2"),
        "A late task",
        TaskType::Think,
        TaskStatus::Done,
    );
    late.output_content = Some(json!("LATE REFERENCE"));
    store.create(late).await.unwrap();
    let after = service.build(req).await.unwrap();
    assert!(after.formatted.contains("LATE REFERENCE"));
}

#[tokio::test]
async fn a_newly_indexed_similar_task_invalidates() {
    let store = research_store().await;
    let service = service(&store).await;
    let req = request("root.2.3", ContextType::Execution);
    service.build(req.clone()).await.unwrap();
    let mut fresh = task(
        "new",
        None,
        "Write a vendor comparison section for solid-state batteries",
        TaskType::Write,
        TaskStatus::Done,
    );
    fresh.output_content = Some(json!("A SIMILAR SECTION"));
    store.create(fresh.clone()).await.unwrap();
    service.index_record(&store.require(&id("new")).await.unwrap());
    let after = service.build(req).await.unwrap();
    assert!(after.formatted.contains("A SIMILAR SECTION"));
    assert!(
        after
            .items
            .iter()
            .any(|i| i.kind == SourceKind::Similar && i.source_task_id == "new")
    );
}

#[tokio::test]
async fn a_record_deleted_and_recreated_at_the_same_revision_invalidates() {
    let store = research_store().await;
    let service = service(&store).await;
    let req = request("root.2.3", ContextType::Execution);
    service.build(req.clone()).await.unwrap();
    let old = store.require(&id("root.2.4")).await.unwrap();
    store.delete(&id("root.2.4")).await.unwrap();
    let mut again = Arc::unwrap_or_clone(old.clone());
    again.output_content = Some(json!("RECREATED"));
    for _ in 0..old.revision {
        store.upsert(again.clone()).await.unwrap();
    }
    assert_eq!(
        store.require(&id("root.2.4")).await.unwrap().revision,
        old.revision
    );
    let after = service.build(req).await.unwrap();
    assert!(after.formatted.contains("RECREATED"));
}

#[tokio::test]
async fn the_cache_can_be_turned_off() {
    let store = research_store().await;
    let service = service_with(&store, BuilderOptions::default().with_cache_entries(0));
    let req = request("root.2.3", ContextType::Execution);
    let a = service.build(req.clone()).await.unwrap();
    let b = service.build(req).await.unwrap();
    assert_eq!(a, b);
    let metrics = service.metrics();
    assert_eq!((metrics.cache_hits, metrics.cache_misses), (0, 0));
    assert_eq!(metrics.contexts_built[&ContextType::Execution], 2);
}

// ---------------------------------------------------------------------------------------------
// Failures

/// What the faulty store does on `get_many` and `children`.
const OK: u8 = 0;
const FAIL: u8 = 1;
const PANIC: u8 = 2;

#[derive(Debug)]
struct FaultyStore {
    inner: MemoryRecordStore,
    batch: AtomicU8,
}

impl FaultyStore {
    fn behave(&self) -> StoreResult<()> {
        match self.batch.load(Ordering::SeqCst) {
            FAIL => Err(StoreError::Backend {
                detail: "disk on fire".into(),
                retryable: true,
            }),
            PANIC => panic!("the store exploded"),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl RecordStore for FaultyStore {
    async fn put(&self, record: TaskRecord, expected: Option<u64>) -> StoreResult<u64> {
        self.inner.put(record, expected).await
    }
    async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>> {
        self.inner.put_many(batch).await
    }
    async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>> {
        self.inner.get(id).await
    }
    async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
        self.behave()?;
        self.inner.get_many(ids).await
    }
    async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.behave()?;
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

async fn faulty() -> (Arc<FaultyStore>, Arc<dyn RecordStore>) {
    let faulty = Arc::new(FaultyStore {
        inner: MemoryRecordStore::new(),
        batch: AtomicU8::new(OK),
    });
    for record in research_tree() {
        faulty.upsert(record).await.unwrap();
    }
    let store: Arc<dyn RecordStore> = faulty.clone();
    (faulty, store)
}

fn assert_minimal(ctx: &taskctx_app::builder::AgentTaskInput, cause: &str) {
    assert!(ctx.degraded);
    assert_eq!(ctx.layout, Layout::Minimal);
    assert!(ctx.items.is_empty());
    assert_eq!(ctx.warnings[0].kind, WarningKind::Degraded);
    assert!(
        ctx.warnings[0].message.contains(cause),
        "{}",
        ctx.warnings[0].message
    );
    assert_eq!(
        ctx.formatted,
        format!(
            "Current Task: Write the vendor comparison section based on `root.2.2`\nTask Type: \
             WRITE\nLayer: 2\nOverall Objective: {OBJECTIVE}"
        )
    );
    assert_eq!(format_input(ctx), ctx.formatted);
}

#[tokio::test]
async fn a_store_error_mid_build_gives_the_minimal_context() {
    let (faulty, store) = faulty().await;
    let service = service_with(&store, BuilderOptions::default());
    faulty.batch.store(FAIL, Ordering::SeqCst);
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert_minimal(&ctx, "disk on fire");
    let metrics = service.metrics();
    assert_eq!(metrics.degraded, 1);
    assert_eq!(metrics.contexts_built[&ContextType::Execution], 1);
    // Degraded contexts are not cached: once the store recovers, the full context is built.
    faulty.batch.store(OK, Ordering::SeqCst);
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert!(!ctx.degraded);
    assert!(!ctx.items.is_empty());
}

#[tokio::test]
async fn a_panicking_store_gives_the_minimal_context() {
    let (faulty, store) = faulty().await;
    let service = service_with(&store, BuilderOptions::default());
    faulty.batch.store(PANIC, Ordering::SeqCst);
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert_minimal(&ctx, "the store exploded");
}

#[derive(Debug)]
struct PanickingSummarizer;

#[async_trait]
impl Summarizer for PanickingSummarizer {
    async fn summarize(&self, _: SummaryRequest<'_>) -> Result<String, SummarizeError> {
        panic!("summariser bug")
    }
    fn name(&self) -> &str {
        "panicking"
    }
}

#[tokio::test]
async fn a_panicking_collaborator_gives_the_minimal_context() {
    let store = research_store().await;
    edit(&store, "root.2.1", |r| {
        r.output_content = Some(json!("word ".repeat(10_000)));
    })
    .await;
    let service = ContextBuilderService::builder(Arc::clone(&store))
        .token_counter(Arc::new(HeuristicTokenCounter))
        .summarizer(Arc::new(PanickingSummarizer))
        .build();
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert_minimal(&ctx, "summariser bug");
}

#[derive(Debug)]
struct FailingSummarizer;

#[async_trait]
impl Summarizer for FailingSummarizer {
    async fn summarize(&self, request: SummaryRequest<'_>) -> Result<String, SummarizeError> {
        if request.budget_tokens > 1 {
            Err(SummarizeError("model unavailable".into()))
        } else {
            Ok(String::new())
        }
    }
    fn name(&self) -> &str {
        "failing"
    }
}

#[tokio::test]
async fn a_failing_summariser_falls_back_to_the_extractive_reduction() {
    let store = research_store().await;
    edit(&store, "root.2.1", |r| {
        r.output_content = Some(json!("word ".repeat(10_000)));
    })
    .await;
    let service = ContextBuilderService::builder(Arc::clone(&store))
        .token_counter(Arc::new(HeuristicTokenCounter))
        .summarizer(Arc::new(FailingSummarizer))
        .build();
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert!(!ctx.degraded);
    let item = ctx
        .items
        .iter()
        .find(|i| i.source_task_id == "root.2.1")
        .unwrap();
    assert!(item.content.contains("tokens omitted"));
    assert!(item.tokens <= 2000);
    assert!(
        ctx.warnings
            .iter()
            .any(|w| w.kind == WarningKind::Collaborator)
    );
    assert_eq!(service.metrics().summarizer_fallbacks, 1);
}

#[derive(Debug)]
struct PanickingRedactor;

impl Redactor for PanickingRedactor {
    fn redact_text<'a>(&self, _: &'a str) -> Cow<'a, str> {
        panic!("redactor bug")
    }
    fn redact_json<'a>(&self, _: &'a Value) -> Cow<'a, Value> {
        panic!("redactor bug")
    }
}

#[tokio::test]
async fn a_panicking_redactor_returns_nothing_rather_than_unredacted_text() {
    let store = research_store().await;
    let service = ContextBuilderService::builder(Arc::clone(&store))
        .token_counter(Arc::new(HeuristicTokenCounter))
        .redactor(Arc::new(PanickingRedactor))
        .build();
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert!(ctx.degraded);
    assert_eq!(ctx.formatted, "");
    assert_eq!(ctx.current_goal, "");
    assert_eq!(ctx.token_count, 0);
    assert_eq!(format_input(&ctx), "");
}

#[tokio::test]
async fn bad_records_never_panic() {
    // A record whose aux_data is full of wrong types, a parent that does not list it, a
    // self-parent, a missing parent, empty goals.
    let mut weird = task("w", Some("w"), "", TaskType::Write, TaskStatus::Done);
    weird
        .aux_data
        .insert("depends_on_indices".into(), json!({"not": "a list"}));
    weird
        .aux_data
        .insert("dependency_ids".into(), json!("nope"));
    weird.output_content = Some(json!({"result": null}));
    let mut orphan = task(
        "o",
        Some("missing"),
        "`w` `o` `root`",
        TaskType::Think,
        TaskStatus::Pending,
    );
    orphan
        .aux_data
        .insert("depends_on_indices".into(), json!([0, 1e300, -0.5, null]));
    let store = store_with(vec![weird, orphan]).await;
    let service = service(&store).await;
    for target in ["w", "o"] {
        for t in ContextType::ALL {
            for budget in [0, 1, 5, 40, 8000] {
                let ctx = service
                    .build(request(target, t).with_budget_tokens(budget))
                    .await
                    .unwrap();
                assert!(ctx.token_count <= budget);
                assert_eq!(format_input(&ctx), ctx.formatted);
                assert_eq!(HeuristicTokenCounter.count(&ctx.formatted), ctx.token_count);
            }
        }
    }
}

#[tokio::test]
async fn metrics_count_builds_per_type_tokens_and_hits() {
    let store = research_store().await;
    let service = service(&store).await;
    let a = service
        .build(request("root.2.3", ContextType::Planning))
        .await
        .unwrap();
    service
        .build(request("root.2.3", ContextType::Planning))
        .await
        .unwrap();
    service
        .build(request("root.2", ContextType::Aggregation))
        .await
        .unwrap();
    let m = service.metrics();
    assert_eq!(m.contexts_built[&ContextType::Planning], 2);
    assert_eq!(m.contexts_built[&ContextType::Aggregation], 1);
    assert_eq!(m.contexts_built[&ContextType::Execution], 0);
    assert_eq!(m.total_built(), 3);
    assert_eq!((m.cache_hits, m.cache_misses), (1, 2));
    assert!(m.tokens >= 2 * a.token_count as u64);
    assert_eq!(m.degraded, 0);
    serde_json::to_string(&m).unwrap();
}

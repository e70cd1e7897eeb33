//! Shared fixtures of the context-builder integration tests: a realistic research plan in the
//! memory store, and services over it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use serde_json::json;
use taskctx_app::builder::{BuilderOptions, ContextBuilderService, ContextRequest, ContextType};
use taskctx_domain::{
    HeuristicTokenCounter, NodeType, TaskId, TaskRecord, TaskStatus, TaskType, Timestamp,
};
use taskctx_store::{RecordStore, RecordStoreExt};
use taskctx_store_memory::MemoryRecordStore;

pub(crate) const OBJECTIVE: &str = "Write a market report on solid-state batteries for an investor";

pub(crate) fn id(s: &str) -> TaskId {
    TaskId::new(s).unwrap()
}

/// A record with fixed timestamps (so snapshots do not depend on the clock).
pub(crate) fn task(
    task_id: &str,
    parent: Option<&str>,
    goal: &str,
    task_type: TaskType,
    status: TaskStatus,
) -> TaskRecord {
    let mut r = TaskRecord::new(id(task_id), goal, task_type);
    r.parent_task_id = parent.map(id);
    r.status = status;
    r.layer = Some(task_id.matches('.').count() as u32);
    r.created_at = Timestamp::from_secs(1_700_000_000.0).unwrap();
    r.updated_at = r.created_at;
    r.overall_objective = Some(OBJECTIVE.to_string());
    r
}

/// The research plan:
///
/// ```text
/// root            PLAN  PLAN_DONE  Write a market report …
/// ├── root.1      SEARCH DONE      Find the main vendors (search results)
/// ├── root.2      THINK  PLAN_DONE Analyse the vendors           depends on [0]
/// │   ├── root.2.1 SEARCH DONE     Collect energy density figures
/// │   ├── root.2.2 THINK  DONE     Compare costs … using `root.1`
/// │   ├── root.2.3 WRITE  PENDING  Write the comparison … `root.2.2` depends on [0, 1]
/// │   └── root.2.4 THINK  DONE     Check the figures for consistency
/// └── root.3      WRITE  PENDING   Write the executive summary   depends on [1]
/// old             THINK  DONE      (a previous run) Compare battery vendors' costs
/// └── old.1       THINK  DONE      Compare solid-state battery vendors on cost
/// ```
pub(crate) fn research_tree() -> Vec<TaskRecord> {
    let mut root = task(
        "root",
        None,
        OBJECTIVE,
        TaskType::Think,
        TaskStatus::PlanDone,
    );
    root.node_type = Some(NodeType::Plan);
    root.child_task_ids = vec![id("root.1"), id("root.2"), id("root.3")];
    root.output_summary = Some("Generated 3 sub-tasks".into());

    let mut r1 = task(
        "root.1",
        Some("root"),
        "Find the main solid-state battery vendors",
        TaskType::Search,
        TaskStatus::Done,
    );
    r1.node_type = Some(NodeType::Execute);
    r1.output_type_description = Some("search_results".into());
    r1.output_content = Some(json!({
        "query_used": "solid-state battery vendors 2025",
        "results": [
            {"title": "QuantumScape ships B-samples", "snippet": "QuantumScape delivered B0 samples to VW."},
            {"title": "Solid Power pilot line", "snippet": "Solid Power runs a 0.3 GWh pilot line."},
            {"title": "Toyota targets 2027", "snippet": "Toyota plans sulfide cells for 2027."}
        ]
    }));
    r1.output_summary =
        Some("Search completed: three vendors lead: QuantumScape, Solid Power, Toyota".into());

    let mut r2 = task(
        "root.2",
        Some("root"),
        "Analyse the vendors",
        TaskType::Think,
        TaskStatus::PlanDone,
    );
    r2.node_type = Some(NodeType::Plan);
    r2.child_task_ids = vec![
        id("root.2.1"),
        id("root.2.2"),
        id("root.2.3"),
        id("root.2.4"),
    ];
    r2.output_summary = Some("Generated 4 sub-tasks".into());
    r2.aux_data.insert("depends_on_indices".into(), json!([0]));

    let mut r21 = task(
        "root.2.1",
        Some("root.2"),
        "Collect energy density figures for each vendor",
        TaskType::Search,
        TaskStatus::Done,
    );
    r21.output_type_description = Some("text_output".into());
    r21.output_content = Some(json!(
        "QuantumScape: 844 Wh/L (claimed). Solid Power: 390 Wh/kg target. Toyota: not disclosed."
    ));
    r21.aux_data.insert("depends_on_indices".into(), json!([]));

    let mut r22 = task(
        "root.2.2",
        Some("root.2"),
        "Compare costs per kWh across vendors using `root.1`",
        TaskType::Think,
        TaskStatus::Done,
    );
    r22.output_type_description = Some("reasoning_output".into());
    r22.output_content = Some(
        json!({"output_text": "Costs: QuantumScape ~$120/kWh at scale; Solid Power ~$100/kWh licensing model; Toyota unknown."}),
    );
    r22.output_summary = Some("Solid Power is cheapest per kWh; QuantumScape close behind".into());
    r22.aux_data.insert("depends_on_indices".into(), json!([]));

    let mut r23 = task(
        "root.2.3",
        Some("root.2"),
        "Write the vendor comparison section based on `root.2.2`",
        TaskType::Write,
        TaskStatus::Pending,
    );
    r23.aux_data
        .insert("depends_on_indices".into(), json!([0, 1]));

    let mut r24 = task(
        "root.2.4",
        Some("root.2"),
        "Check the figures for consistency",
        TaskType::Think,
        TaskStatus::Done,
    );
    r24.output_content = Some(json!("All figures are consistent with the sources."));

    let mut r3 = task(
        "root.3",
        Some("root"),
        "Write the executive summary",
        TaskType::Write,
        TaskStatus::Pending,
    );
    r3.aux_data.insert("depends_on_indices".into(), json!([1]));

    let mut old = task(
        "old",
        None,
        "Compare battery vendors' costs (previous run)",
        TaskType::Think,
        TaskStatus::Done,
    );
    old.overall_objective = Some("An older report".into());
    old.child_task_ids = vec![id("old.1")];
    old.output_content = Some(json!("Old run finished."));
    let mut old1 = task(
        "old.1",
        Some("old"),
        "Compare solid-state battery vendors on cost per kWh",
        TaskType::Think,
        TaskStatus::Done,
    );
    old1.overall_objective = Some("An older report".into());
    old1.output_content = Some(json!(
        "Last year: QuantumScape $150/kWh, Solid Power $130/kWh."
    ));
    old1.output_summary = Some("Last year's cost comparison of the solid-state vendors".into());

    vec![root, r1, r2, r21, r22, r23, r24, r3, old, old1]
}

/// A memory store holding `records`.
pub(crate) async fn store_with(records: Vec<TaskRecord>) -> Arc<dyn RecordStore> {
    let store: Arc<dyn RecordStore> = Arc::new(MemoryRecordStore::new());
    for record in records {
        store.upsert(record).await.unwrap();
    }
    store
}

/// The research tree in a fresh memory store.
pub(crate) async fn research_store() -> Arc<dyn RecordStore> {
    store_with(research_tree()).await
}

/// A service with the heuristic counter (fast, deterministic) and `options`.
pub(crate) fn service_with(
    store: &Arc<dyn RecordStore>,
    options: BuilderOptions,
) -> ContextBuilderService {
    ContextBuilderService::builder(Arc::clone(store))
        .token_counter(Arc::new(HeuristicTokenCounter))
        .options(options)
        .build()
}

/// A service with the heuristic counter and default options, its similarity index built.
pub(crate) async fn service(store: &Arc<dyn RecordStore>) -> ContextBuilderService {
    let service = service_with(store, BuilderOptions::default());
    service.rebuild_similarity_index().await.unwrap();
    service
}

pub(crate) fn request(task_id: &str, context_type: ContextType) -> ContextRequest {
    ContextRequest::new(id(task_id), context_type)
}

/// Reads a record, applies `change`, and writes it back.
pub(crate) async fn edit(
    store: &Arc<dyn RecordStore>,
    task_id: &str,
    change: impl FnOnce(&mut TaskRecord),
) {
    let mut record = Arc::unwrap_or_clone(store.require(&id(task_id)).await.unwrap());
    change(&mut record);
    store.update(record).await.unwrap();
}

//! One integration test per context type, on the research plan in the memory store, plus the
//! public API details the CLI relies on (parsing, JSON, overrides, the default BPE counter).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod builder_common;

use std::sync::Arc;

use builder_common::*;
use serde_json::json;
use taskctx_app::builder::{
    BuilderOptions, ContentSelection, ContextBuilderService, ContextItem, ContextRequest,
    ContextType, Layout, ReplanDetails, SourceKind, WarningKind, format_input,
};
use taskctx_domain::{TaskStatus, TaskType};

fn kinds(items: &[ContextItem]) -> Vec<(SourceKind, &str)> {
    items
        .iter()
        .map(|i| (i.kind, i.source_task_id.as_str()))
        .collect()
}

#[tokio::test]
async fn execution_has_hierarchy_dependencies_later_siblings_and_similar_tasks() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert_eq!(ctx.layout, Layout::Execution);
    assert_eq!(ctx.current_task_type, TaskType::Write);
    assert_eq!(ctx.overall_project_goal.as_deref(), Some(OBJECTIVE));
    let ancestors: Vec<&str> = ctx
        .parent_hierarchy
        .iter()
        .map(|e| e.task_id.as_str())
        .collect();
    assert_eq!(ancestors, ["root", "root.2"], "root-most first");
    assert_eq!(
        kinds(&ctx.items),
        [
            (SourceKind::Dependency, "root.2.1"),
            (SourceKind::Dependency, "root.2.2"),
            (SourceKind::LaterSibling, "root.2.4"),
            (SourceKind::Similar, "old.1"),
        ]
    );
    let deps = &ctx.items[..2];
    assert!(deps.iter().all(|i| i.pinned && i.relevance == 1.0));
    assert_eq!(ctx.items[2].relevance, 0.5);
    assert!(ctx.items[3].relevance > 0.0 && ctx.items[3].relevance <= 0.6);
    assert!(ctx.warnings.is_empty(), "{:?}", ctx.warnings);
    assert!(ctx.omitted.is_empty(), "{:?}", ctx.omitted);
    assert!(!ctx.degraded);
    assert_eq!(format_input(&ctx), ctx.formatted);
    assert!(ctx.token_count <= ctx.budget_tokens);
    for item in &ctx.items {
        assert!(ctx.formatted.contains(&item.content));
    }
}

#[tokio::test]
async fn execution_respects_max_items() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Execution).with_max_items(2))
        .await
        .unwrap();
    assert_eq!(ctx.items.len(), 2);
    assert!(ctx.items.iter().all(|i| i.kind == SourceKind::Dependency));
    assert_eq!(ctx.omitted.len(), 2);
    assert!(
        ctx.omitted
            .iter()
            .all(|o| o.reason == taskctx_app::builder::OmitReason::MaxItems)
    );
    assert!(!ctx.formatted.contains("root.2.4"));
}

#[tokio::test]
async fn search_tasks_see_prior_siblings_but_not_later_ones() {
    let mut tree = research_tree();
    // root.2.3 becomes a SEARCH task without declared dependencies.
    for r in &mut tree {
        if r.task_id.as_str() == "root.2.3" {
            r.task_type = TaskType::Search;
            r.aux_data.clear();
            r.goal = "Search for recent price announcements".into();
        }
    }
    let store = store_with(tree).await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    let ids: Vec<&str> = ctx
        .items
        .iter()
        .filter(|i| i.kind == SourceKind::PriorSibling)
        .map(|i| i.source_task_id.as_str())
        .collect();
    assert_eq!(ids, ["root.2.1", "root.2.2"], "plan order");
    assert!(ctx.items.iter().all(|i| i.kind != SourceKind::LaterSibling));
    assert!(ctx.items.iter().all(|i| i.relevance <= 0.8));
}

#[tokio::test]
async fn default_uses_every_source_without_an_item_limit() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Default))
        .await
        .unwrap();
    assert_eq!(ctx.layout, Layout::Execution);
    assert_eq!(ctx.items.len(), 4);
    let ctx = service
        .build(request("root.2.3", ContextType::Default).with_max_items(1))
        .await
        .unwrap();
    assert_eq!(
        ctx.items.len(),
        1,
        "a request's max_items applies to every type"
    );
}

#[tokio::test]
async fn planning_has_replan_details_constraints_goal_references_and_parent_output() {
    let store = research_store().await;
    let service = service(&store).await;
    // root.2 is planned: its goal references root.1 explicitly.
    edit(&store, "root.2", |r| {
        r.goal = "Analyse the vendors found in `root.1`".into();
    })
    .await;
    edit(&store, "root", |r| {
        r.output_content = Some(json!({"sub_tasks": [{}, {}, {}]}));
    })
    .await;
    let request = request("root.2", ContextType::Planning)
        .with_replan(
            ReplanDetails::new("Compare costs", "the cost source was paywalled")
                .with_previous_attempt_summary("Only Toyota figures were found")
                .with_guidance("Use public filings"),
        )
        .with_constraint("Cite every figure")
        .with_constraint("No more than five sub-tasks");
    let ctx = service.build(request).await.unwrap();
    assert_eq!(ctx.layout, Layout::Planning);
    let ids = kinds(&ctx.items);
    assert_eq!(ids[0], (SourceKind::ReplanDetails, "replan_details"));
    assert_eq!(
        ids[1],
        (SourceKind::GlobalConstraints, "global_constraints")
    );
    assert!(ids.contains(&(SourceKind::Dependency, "root.1")));
    assert!(ids.contains(&(SourceKind::ParentOutput, "root")));
    let text = &ctx.formatted;
    assert!(text.contains("Task To Plan:"));
    assert!(text.contains("Failed sub-goal: Compare costs\nReason: the cost source was paywalled"));
    assert!(text.contains("Previous attempt: Only Toyota figures were found"));
    assert!(text.contains("Guidance: Use public filings"));
    assert!(text.contains("- Cite every figure\n- No more than five sub-tasks"));
    assert!(text.contains("[Plan with 3 sub-tasks]"));
    let parent = ctx
        .items
        .iter()
        .find(|i| i.kind == SourceKind::ParentOutput)
        .unwrap();
    assert_eq!(parent.content_type, "parental_plan_or_outline");
    assert!(ctx.items.iter().all(|i| i.kind != SourceKind::LaterSibling));
}

#[tokio::test]
async fn planning_follows_goal_references() {
    let store = research_store().await;
    let service = service(&store).await;
    // root.3 references root.2.2 in its goal; its declared dependency is root.2 (not DONE).
    edit(&store, "root.3", |r| {
        r.goal = "Write the executive summary from `root.2.2` and `root.2.4`".into();
    })
    .await;
    let ctx = service
        .build(request("root.3", ContextType::Planning))
        .await
        .unwrap();
    let refs: Vec<&str> = ctx
        .items
        .iter()
        .filter(|i| i.kind == SourceKind::GoalReference)
        .map(|i| i.source_task_id.as_str())
        .collect();
    assert_eq!(refs, ["root.2.2", "root.2.4"]);
    assert!(
        ctx.items
            .iter()
            .all(|i| i.kind != SourceKind::GoalReference || i.relevance == 0.9)
    );
    assert!(
        ctx.warnings
            .iter()
            .any(|w| w.kind == WarningKind::PendingDependency
                && w.message == "pending dependency `root.2` is PLAN_DONE")
    );
    assert!(ctx.formatted.contains("=== Referenced Tasks ==="));
}

#[tokio::test]
async fn modification_adds_the_plan_and_instructions_once() {
    let store = research_store().await;
    let service = service(&store).await;
    let plan = json!({"sub_tasks": [
        {"goal": "Collect figures", "task_type": "SEARCH", "node_type": "EXECUTE", "depends_on_indices": []},
        {"goal": "Compare costs", "task_type": "THINK", "node_type": "EXECUTE", "depends_on_indices": [0]}
    ]});
    let request = request("root.2", ContextType::Modification)
        .with_original_plan(plan)
        .with_modification_instructions("Add a step on safety certifications");
    let ctx = service.build(request).await.unwrap();
    assert_eq!(ctx.layout, Layout::Planning);
    let plan_items: Vec<&ContextItem> = ctx
        .items
        .iter()
        .filter(|i| i.kind == SourceKind::OriginalPlan)
        .collect();
    assert_eq!(plan_items.len(), 1);
    assert_eq!(
        plan_items[0].content,
        "[0] SEARCH/EXECUTE: Collect figures\n[1] THINK/EXECUTE: Compare costs (depends on 0)"
    );
    assert_eq!(
        ctx.formatted
            .matches("Add a step on safety certifications")
            .count(),
        1
    );
    assert_eq!(ctx.formatted.matches("=== Original Plan ===").count(), 1);
    assert!(
        ctx.formatted.find("=== Original Plan ===")
            < ctx.formatted.find("=== Modification Instructions ===")
    );
}

#[tokio::test]
async fn aggregation_lists_children_in_plan_order_with_their_status() {
    let store = research_store().await;
    edit(&store, "root.2.3", |r| {
        r.status = TaskStatus::Failed;
        r.error_message = Some("the writer model timed out".into());
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2", ContextType::Aggregation))
        .await
        .unwrap();
    assert_eq!(ctx.layout, Layout::Aggregation);
    assert_eq!(ctx.current_task_type, TaskType::Aggregate);
    let children: Vec<(&str, Option<TaskStatus>, ContentSelection)> = ctx
        .items
        .iter()
        .map(|i| (i.source_task_id.as_str(), i.status, i.selection))
        .collect();
    assert_eq!(
        children,
        [
            ("root.2.1", Some(TaskStatus::Done), ContentSelection::Output),
            ("root.2.2", Some(TaskStatus::Done), ContentSelection::Output),
            (
                "root.2.3",
                Some(TaskStatus::Failed),
                ContentSelection::Error
            ),
            ("root.2.4", Some(TaskStatus::Done), ContentSelection::Output),
        ]
    );
    assert!(
        ctx.items
            .iter()
            .all(|i| i.kind == SourceKind::Child && i.pinned)
    );
    assert!(
        ctx.formatted
            .contains("Status: FAILED\nError (child_failed_output):\nthe writer model timed out")
    );
    assert_eq!(ctx.parent_hierarchy.len(), 1);
}

#[tokio::test]
async fn atomization_has_the_parent_goal_only() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Atomization))
        .await
        .unwrap();
    assert_eq!(ctx.layout, Layout::Minimal);
    assert!(ctx.items.is_empty());
    assert_eq!(ctx.parent_hierarchy.len(), 1);
    assert_eq!(ctx.parent_hierarchy[0].goal, "Analyse the vendors");
    assert_eq!(
        ctx.formatted,
        format!(
            "Current Task: Write the vendor comparison section based on `root.2.2`\nTask Type: \
             WRITE\nLayer: 2\nParent Task: Analyse the vendors\nOverall Objective: {OBJECTIVE}"
        )
    );
}

#[tokio::test]
async fn inputs_a_context_type_does_not_use_are_warned_about() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(
            request("root.2.3", ContextType::Execution)
                .with_replan(ReplanDetails::new("a", "b"))
                .with_original_plan(json!([])),
        )
        .await
        .unwrap();
    let ignored: Vec<&str> = ctx
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::IgnoredInput)
        .map(|w| w.message.as_str())
        .collect();
    assert_eq!(
        ignored,
        [
            "replan details: not used by execution contexts; ignored",
            "the original plan: not used by execution contexts; ignored"
        ]
    );
}

#[tokio::test]
async fn additional_context_keeps_the_callers_order() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(
            request("root.2.3", ContextType::Execution)
                .with_additional("zeta", "last key first")
                .with_additional("alpha", json!({"output_text": "structured"})),
        )
        .await
        .unwrap();
    let extra: Vec<(&str, &str)> = ctx
        .items
        .iter()
        .filter(|i| i.kind == SourceKind::Additional)
        .map(|i| (i.source_task_id.as_str(), i.content.as_str()))
        .collect();
    assert_eq!(
        extra,
        [
            ("additional:zeta", "last key first"),
            ("additional:alpha", "structured")
        ]
    );
    assert!(
        ctx.formatted
            .contains("Source: zeta\nContent:\nlast key first")
    );
}

#[tokio::test]
async fn aux_data_is_rendered_only_for_allow_listed_keys() {
    let store = research_store().await;
    edit(&store, "root.2.3", |r| {
        r.aux_data
            .insert("style_guide".into(), json!("Use short sentences."));
        r.aux_data.insert(
            "execution_details".into(),
            json!({"final_llm_input": "SECRET PROMPT"}),
        );
    })
    .await;
    let plain = service(&store).await;
    let ctx = plain
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert!(!ctx.formatted.contains("short sentences"));
    assert!(!ctx.formatted.contains("SECRET PROMPT"));
    let allowing = service_with(
        &store,
        BuilderOptions::default().allow_aux_data_key("style_guide"),
    );
    let ctx = allowing
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    let aux: Vec<&str> = ctx
        .items
        .iter()
        .filter(|i| i.kind == SourceKind::AuxData)
        .map(|i| i.content.as_str())
        .collect();
    assert_eq!(aux, ["Use short sentences."]);
    assert!(!ctx.formatted.contains("SECRET PROMPT"));
}

#[tokio::test]
async fn context_types_parse_strictly_and_leniently() {
    assert_eq!(
        "Planning".parse::<ContextType>().unwrap(),
        ContextType::Planning
    );
    let err = "plan".parse::<ContextType>().unwrap_err();
    assert!(err.to_string().contains("\"plan\""), "{err}");
    let (t, warning) = ContextType::parse_lenient("plan");
    assert_eq!(t, ContextType::Default);
    assert_eq!(warning.unwrap().kind, WarningKind::UnknownContextType);
    assert_eq!(
        ContextType::parse_lenient("execution"),
        (ContextType::Execution, None)
    );
    assert_eq!(
        serde_json::to_value(ContextType::Aggregation).unwrap(),
        json!("aggregation")
    );
}

#[tokio::test]
async fn a_missing_task_is_an_error_naming_it() {
    let store = research_store().await;
    let service = service(&store).await;
    let err = service
        .build(request("nope", ContextType::Execution))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "task `nope` not found");
    assert!(!err.is_retryable());
    assert_eq!(service.metrics().errors, 1);
}

#[tokio::test]
async fn the_result_serialises_to_json_for_the_cli() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Execution).with_budget_tokens(5000))
        .await
        .unwrap();
    let value = serde_json::to_value(&ctx).unwrap();
    for key in [
        "current_task_id",
        "current_goal",
        "current_task_type",
        "overall_project_goal",
        "parent_hierarchy",
        "items",
        "formatted",
        "omitted",
        "warnings",
        "degraded",
        "token_count",
    ] {
        assert!(value.get(key).is_some(), "missing {key}");
    }
    assert_eq!(value["items"][0]["kind"], "dependency");
    assert_eq!(value["budget_tokens"], 5000);
    let back: taskctx_app::builder::AgentTaskInput = serde_json::from_value(value).unwrap();
    assert_eq!(back, ctx);
    let request: ContextRequest = serde_json::from_value(json!({
        "task_id": "root.2.3", "context_type": "EXECUTION", "budget_tokens": 100
    }))
    .unwrap();
    assert_eq!(request.budget_tokens, Some(100));
}

#[tokio::test]
async fn the_default_service_counts_real_bpe_tokens() {
    let store = research_store().await;
    let service = ContextBuilderService::new(Arc::clone(&store));
    service.rebuild_similarity_index().await.unwrap();
    let bpe = taskctx_app::tokens::BpeTokenCounter::o200k_base();
    for budget in [60, 200, 8000] {
        let ctx = service
            .build(request("root.2.3", ContextType::Execution).with_budget_tokens(budget))
            .await
            .unwrap();
        use taskctx_domain::TokenCounter as _;
        assert_eq!(ctx.token_count, bpe.count(&ctx.formatted));
        assert!(ctx.token_count <= budget, "{} > {budget}", ctx.token_count);
        assert_eq!(format_input(&ctx), ctx.formatted);
    }
}

#[tokio::test]
async fn the_service_is_shareable_and_its_futures_can_be_spawned() {
    fn send_sync<T: Send + Sync + 'static>(_: &T) {}
    let store = research_store().await;
    let service = Arc::new(service(&store).await);
    send_sync(&service);
    let shared = Arc::clone(&service);
    let handle = tokio::spawn(async move {
        shared
            .build(request("root.2.3", ContextType::Execution))
            .await
            .unwrap()
    });
    let spawned = handle.await.unwrap();
    let local = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert_eq!(spawned, local);
}

//! One test per defect of ROMA's context system (reference §19) that applies to the builder,
//! named after it. `docs/context-building.md` lists the ones that do not apply and why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod builder_common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use builder_common::*;
use serde_json::json;
use taskctx_app::builder::{
    BuilderOptions, ContentSelection, ContextBuilderService, ContextType, OmitAction, OmitReason,
    ReplanDetails, SourceKind, SummarizeError, Summarizer, SummaryRequest, WarningKind,
    format_input,
};
use taskctx_domain::{HeuristicTokenCounter, NodeType, TaskStatus, TaskType, TokenCounter};

/// A summariser that records the budgets it is asked for and answers with the first words.
#[derive(Debug, Default)]
struct RecordingSummarizer {
    budgets: Mutex<Vec<usize>>,
}

#[async_trait]
impl Summarizer for RecordingSummarizer {
    async fn summarize(&self, request: SummaryRequest<'_>) -> Result<String, SummarizeError> {
        self.budgets.lock().unwrap().push(request.budget_tokens);
        let words: Vec<&str> = request
            .text
            .split_whitespace()
            .take(request.budget_tokens / 4)
            .collect();
        Ok(format!("SUMMARY {}", words.join(" ")))
    }

    fn name(&self) -> &str {
        "recording"
    }
}

fn big_text(words: usize) -> String {
    (0..words).map(|i| format!("fact{i} ")).collect()
}

#[tokio::test]
async fn b1_plan_detection_uses_the_node_type() {
    let store = research_store().await;
    edit(&store, "root.2", |r| {
        r.status = TaskStatus::Done;
        r.output_content = Some(json!("Vendor analysis outline: density, cost, timeline."));
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Planning))
        .await
        .unwrap();
    let parent = ctx
        .items
        .iter()
        .find(|i| i.kind == SourceKind::ParentOutput)
        .unwrap();
    assert_eq!(
        parent.content_type, "parental_plan_or_outline",
        "node type PLAN"
    );
    assert_eq!(ctx.parent_hierarchy[1].node_type, Some(NodeType::Plan));
    edit(&store, "root.2", |r| r.node_type = Some(NodeType::Execute)).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Planning))
        .await
        .unwrap();
    let parent = ctx
        .items
        .iter()
        .find(|i| i.kind == SourceKind::ParentOutput)
        .unwrap();
    assert_eq!(parent.content_type, "parent_output");
}

#[tokio::test]
async fn b2_an_existing_summary_is_used_when_the_output_is_too_big() {
    let store = research_store().await;
    edit(&store, "root.2.1", |r| {
        r.output_content = Some(json!(big_text(5000)));
        r.output_summary = Some("Energy densities: QuantumScape leads at 844 Wh/L".into());
    })
    .await;
    let summarizer = Arc::new(RecordingSummarizer::default());
    let service = ContextBuilderService::builder(Arc::clone(&store))
        .token_counter(Arc::new(HeuristicTokenCounter))
        .summarizer(summarizer.clone())
        .build();
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    let item = ctx
        .items
        .iter()
        .find(|i| i.source_task_id == "root.2.1")
        .unwrap();
    assert_eq!(item.selection, ContentSelection::Summary);
    assert_eq!(
        item.content,
        "Energy densities: QuantumScape leads at 844 Wh/L"
    );
    assert!(
        summarizer.budgets.lock().unwrap().is_empty(),
        "no summariser call"
    );
    let omitted = ctx
        .omitted
        .iter()
        .find(|o| o.source_task_id == "root.2.1")
        .unwrap();
    assert_eq!(
        (omitted.action, omitted.reason),
        (OmitAction::Shortened, OmitReason::ItemCap)
    );
}

#[tokio::test]
async fn b3_summaries_are_asked_for_the_real_budget_and_fit_it() {
    let store = research_store().await;
    edit(&store, "root.2.1", |r| {
        r.output_content = Some(json!(big_text(5000)));
    })
    .await;
    let summarizer = Arc::new(RecordingSummarizer::default());
    let service = ContextBuilderService::builder(Arc::clone(&store))
        .token_counter(Arc::new(HeuristicTokenCounter))
        .summarizer(summarizer.clone())
        .options(BuilderOptions::default().with_per_item_tokens(300))
        .build();
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert_eq!(*summarizer.budgets.lock().unwrap(), [300]);
    let item = ctx
        .items
        .iter()
        .find(|i| i.source_task_id == "root.2.1")
        .unwrap();
    assert_eq!(item.selection, ContentSelection::Summarized);
    assert!(item.content.starts_with("SUMMARY fact0"));
    assert!(item.tokens <= 300);
    // The default summariser keeps head and tail with an explicit marker.
    let default = service_with(&store, BuilderOptions::default().with_per_item_tokens(300));
    let ctx = default
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    let item = ctx
        .items
        .iter()
        .find(|i| i.source_task_id == "root.2.1")
        .unwrap();
    assert!(item.tokens <= 300);
    assert!(item.content.starts_with("fact0 "));
    assert!(item.content.trim_end().ends_with("fact4999"));
    assert!(item.content.contains(" tokens omitted …]"));
}

#[tokio::test]
async fn b4_negative_dependency_indices_are_warnings_not_wrapped() {
    let store = research_store().await;
    edit(&store, "root.2.3", |r| {
        r.aux_data
            .insert("depends_on_indices".into(), json!([-1, 9, "1"]));
        r.task_type = TaskType::Search;
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert!(ctx.items.iter().all(|i| i.kind != SourceKind::Dependency));
    // -1 would wrap to root.2.4 in Python; here it is only a warning.
    assert!(ctx.items.iter().all(|i| i.source_task_id != "root.2.4"));
    let invalid: Vec<&str> = ctx
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::InvalidDependency)
        .map(|w| w.message.as_str())
        .collect();
    assert_eq!(invalid.len(), 3, "{invalid:?}");
    assert!(invalid[0].contains("-1 is negative"));
    assert!(invalid[1].contains("9 is out of range"));
    assert!(invalid[2].contains("not an integer"));
}

#[tokio::test]
async fn b5_dependency_indices_pointing_forward_are_flagged() {
    let store = research_store().await;
    edit(&store, "root.2.1", |r| {
        r.aux_data.insert("depends_on_indices".into(), json!([3]));
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.1", ContextType::Execution))
        .await
        .unwrap();
    assert!(
        ctx.warnings.iter().any(
            |w| w.kind == WarningKind::InvalidDependency && w.message.contains("later sibling")
        )
    );
}

#[tokio::test]
async fn b6_replan_details_reach_the_planner() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(
            request("root.2", ContextType::Planning).with_replan(
                ReplanDetails::new("Compare costs", "no public cost data")
                    .with_guidance("Use analyst estimates"),
            ),
        )
        .await
        .unwrap();
    assert!(ctx.formatted.contains(
        "=== Re-plan Details (CRITICAL: the previous attempt failed; plan to avoid it) ===\n\n\
         Failed sub-goal: Compare costs\nReason: no public cost data\nGuidance: Use analyst \
         estimates"
    ));
    assert_eq!(ctx.items[0].kind, SourceKind::ReplanDetails);
}

#[tokio::test]
async fn b7_the_overall_objective_is_rendered() {
    let store = research_store().await;
    // Only the root carries the objective: it is inherited.
    for id in ["root.2", "root.2.3"] {
        edit(&store, id, |r| r.overall_objective = None).await;
    }
    let service = service(&store).await;
    for t in [
        ContextType::Execution,
        ContextType::Planning,
        ContextType::Atomization,
    ] {
        let ctx = service.build(request("root.2.3", t)).await.unwrap();
        assert_eq!(ctx.overall_project_goal.as_deref(), Some(OBJECTIVE));
        assert!(
            ctx.formatted
                .contains(&format!("Overall Objective: {OBJECTIVE}")),
            "{t}"
        );
    }
}

#[tokio::test]
async fn b8_the_parent_hierarchy_is_rendered() {
    let store = research_store().await;
    edit(&store, "root.2", |r| {
        r.output_summary = Some("Vendors compared on density, cost and timeline".into());
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert!(ctx.formatted.contains(
        "Parent Tasks (root-most first):\n[L0] root: Write a market report on solid-state \
         batteries for an investor\n[L1] root.2: Analyse the vendors (immediate parent)\n  \
         Outcome: Vendors compared on density, cost and timeline"
    ));
    assert_eq!(ctx.parent_hierarchy.len(), 2);
}

#[tokio::test]
async fn b9_items_and_text_agree_after_the_item_limit() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(
            request("root.2.3", ContextType::Execution)
                .with_max_items(3)
                .with_additional("notes", "extra"),
        )
        .await
        .unwrap();
    assert_eq!(ctx.items.len(), 3);
    assert_eq!(format_input(&ctx), ctx.formatted);
    for o in &ctx.omitted {
        assert!(
            !ctx.formatted
                .contains(&format!("Task ID: {}\n", o.source_task_id)),
            "{} is omitted but rendered",
            o.source_task_id
        );
    }
    // Modification items appear once, not again as additional context.
    let ctx = service
        .build(
            request("root.2", ContextType::Modification)
                .with_original_plan(json!({"sub_tasks": []}))
                .with_modification_instructions("merge steps 1 and 2"),
        )
        .await
        .unwrap();
    assert_eq!(ctx.formatted.matches("merge steps 1 and 2").count(), 1);
    assert_eq!(
        ctx.items
            .iter()
            .filter(|i| i.kind == SourceKind::ModificationInstructions)
            .count(),
        1
    );
    assert!(ctx.items.iter().all(|i| i.kind != SourceKind::Additional));
}

#[tokio::test]
async fn b10_no_keyword_heuristic_and_a_stable_order() {
    let store = research_store().await;
    edit(&store, "root.2.3", |r| {
        r.task_type = TaskType::Search;
        r.goal = "Synthesize findings based on prior work using data from the web".into();
        r.aux_data.clear();
    })
    .await;
    let service = service(&store).await;
    let first = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert!(
        first.items.iter().all(|i| i.source_task_id != "root.2.4"),
        "no later siblings for SEARCH, whatever the goal says"
    );
    let fresh = service_with(&store, BuilderOptions::default());
    fresh.rebuild_similarity_index().await.unwrap();
    let second = fresh
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert_eq!(first.formatted, second.formatted);
}

#[tokio::test]
async fn b11_pending_dependencies_are_reported() {
    let store = research_store().await;
    edit(&store, "root.2.1", |r| r.status = TaskStatus::Running).await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    let pending: Vec<&str> = ctx
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::PendingDependency)
        .map(|w| w.message.as_str())
        .collect();
    assert_eq!(pending, ["pending dependency `root.2.1` is RUNNING"]);
    assert!(ctx.items.iter().all(|i| i.source_task_id != "root.2.1"));
}

#[tokio::test]
async fn b12_aggregation_labels_failures_as_failed() {
    let store = research_store().await;
    edit(&store, "root.2.2", |r| {
        r.status = TaskStatus::Failed;
        r.error_message = Some("rate limited by the search API".into());
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2", ContextType::Aggregation))
        .await
        .unwrap();
    let failed = ctx
        .items
        .iter()
        .find(|i| i.source_task_id == "root.2.2")
        .unwrap();
    assert_eq!(failed.status, Some(TaskStatus::Failed));
    assert_eq!(failed.selection, ContentSelection::Error);
    assert_eq!(failed.content_type, "child_failed_output");
    assert!(ctx.formatted.contains(
        "Task ID: root.2.2\nGoal: Compare costs per kWh across vendors using `root.1`\nStatus: \
         FAILED\nError (child_failed_output):\nrate limited by the search API"
    ));
    assert!(!ctx.formatted.contains("Status: DONE\nError"));
    // No pseudo item is rendered as a child.
    assert!(ctx.items.iter().all(|i| i.kind == SourceKind::Child));
}

#[tokio::test]
async fn b13_the_context_type_changes_the_context() {
    let store = research_store().await;
    let service = service(&store).await;
    let mut texts = Vec::new();
    for t in ContextType::ALL {
        let ctx = service.build(request("root.2.3", t)).await.unwrap();
        texts.push(ctx.formatted);
    }
    // default and execution may coincide on a small plan; the others differ.
    let distinct: std::collections::BTreeSet<&String> = texts.iter().collect();
    assert!(distinct.len() >= 4, "{distinct:#?}");
}

#[tokio::test]
async fn b13_the_cache_sees_updates_to_any_source_record() {
    let store = research_store().await;
    let service = service(&store).await;
    let req = request("root.2.3", ContextType::Execution);
    let before = service.build(req.clone()).await.unwrap();
    let again = service.build(req.clone()).await.unwrap();
    assert_eq!(before, again);
    assert_eq!(service.metrics().cache_hits, 1);
    // An early sibling (not among the last records written) changes.
    edit(&store, "root.2.1", |r| {
        r.output_content = Some(json!("Revised: QuantumScape 900 Wh/L."));
    })
    .await;
    let after = service.build(req).await.unwrap();
    assert!(after.formatted.contains("Revised: QuantumScape 900 Wh/L."));
    assert_eq!(service.metrics().cache_hits, 1);
}

#[tokio::test]
async fn b15_goal_references_to_another_plan_tree_are_ignored() {
    let store = research_store().await;
    edit(&store, "root.2.3", |r| {
        r.goal = "Compare with last year's `old.1` and with `root.1`".into();
    })
    .await;
    let service = service_with(&store, BuilderOptions::default().with_max_similar(0));
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    let refs: Vec<&str> = ctx
        .items
        .iter()
        .filter(|i| i.kind == SourceKind::GoalReference)
        .map(|i| i.source_task_id.as_str())
        .collect();
    assert_eq!(refs, ["root.1"]);
    assert!(
        ctx.warnings
            .iter()
            .any(|w| w.kind == WarningKind::GoalReference
                && w.message == "referenced task `old.1` belongs to another plan tree; ignored")
    );
    assert!(!ctx.formatted.contains("Last year"));
}

fn chain(length: usize) -> Vec<taskctx_domain::TaskRecord> {
    (0..length)
        .map(|i| {
            let parent = (i > 0).then(|| format!("n{}", i - 1));
            let mut r = task(
                &format!("n{i}"),
                parent.as_deref(),
                &format!("level {i}"),
                TaskType::Think,
                TaskStatus::PlanDone,
            );
            r.overall_objective = None;
            r
        })
        .collect()
}

#[tokio::test]
async fn b16_parent_cycles_are_detected() {
    let mut records = chain(3);
    records[0].parent_task_id = Some(id("n2"));
    let store = store_with(records).await;
    let service = service(&store).await;
    let ctx = service
        .build(request("n2", ContextType::Execution))
        .await
        .unwrap();
    assert!(
        ctx.warnings
            .iter()
            .any(|w| w.kind == WarningKind::ParentCycle)
    );
    let ids: Vec<&str> = ctx
        .parent_hierarchy
        .iter()
        .map(|e| e.task_id.as_str())
        .collect();
    assert_eq!(ids, ["n0", "n1"], "no repeats");
}

#[tokio::test]
async fn b16_no_false_depth_warning_at_exactly_twenty_hops() {
    // n20's chain has exactly 20 ancestors, the last being a root.
    let store = store_with(chain(21)).await;
    let twenty = service(&store).await;
    let ctx = twenty
        .build(request("n20", ContextType::Execution))
        .await
        .unwrap();
    assert!(
        ctx.warnings
            .iter()
            .all(|w| w.kind != WarningKind::DepthLimit),
        "{:?}",
        ctx.warnings
    );
    assert_eq!(
        ctx.overall_project_goal.as_deref(),
        Some("level 0"),
        "reached the root"
    );
    assert_eq!(ctx.ancestors_not_shown, 17);
    // One more level: the walk stops at 20 hops and says so.
    let store = store_with(chain(22)).await;
    let deeper = service(&store).await;
    let ctx = deeper
        .build(request("n21", ContextType::Execution))
        .await
        .unwrap();
    assert!(
        ctx.warnings
            .iter()
            .any(|w| w.kind == WarningKind::DepthLimit)
    );
}

#[tokio::test]
async fn b17_summaries_roma_generates_are_treated_as_generic() {
    let store = research_store().await;
    edit(&store, "root.2.4", |r| {
        r.output_content = None;
        r.output_summary = Some("Completed with CheckResult".into());
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert!(!ctx.formatted.contains("Generated 4 sub-tasks"));
    assert!(!ctx.formatted.contains("Completed with CheckResult"));
    assert!(ctx.parent_hierarchy.iter().all(|e| e.summary.is_none()));
    assert!(ctx.items.iter().all(|i| i.source_task_id != "root.2.4"));
}

#[tokio::test]
async fn b18_a_single_huge_line_keeps_its_head_and_tail() {
    let store = research_store().await;
    edit(&store, "root.2.1", |r| {
        r.output_content = Some(json!(format!("HEAD{}TAIL", "x".repeat(200_000))));
    })
    .await;
    let service = service_with(&store, BuilderOptions::default().with_per_item_tokens(100));
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    let item = ctx
        .items
        .iter()
        .find(|i| i.source_task_id == "root.2.1")
        .unwrap();
    assert!(item.content.starts_with("HEADxxx"), "{}", item.content);
    assert!(item.content.ends_with("xxxTAIL"), "{}", item.content);
    assert!(item.content.contains("tokens omitted"));
    assert!(item.tokens <= 100);
}

#[tokio::test]
async fn b19_compressed_outputs_are_not_copied_into_prompts() {
    let store = research_store().await;
    let blob = format!("H4sIAAAAAAAA/{}", "q83ITM7JBwA".repeat(40));
    edit(&store, "root.2.1", |r| {
        r.output_content = Some(json!({"data": blob, "encoding": "gzip+base64"}));
        r.aux_data.insert("compressed".into(), json!(true));
    })
    .await;
    edit(&store, "root.2.2", |r| {
        r.output_content = Some(json!(blob));
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert!(!ctx.formatted.contains("H4sI"), "{}", ctx.formatted);
    assert!(ctx.formatted.contains("[compressed output not shown"));
    assert!(
        ctx.warnings
            .iter()
            .any(|w| w.kind == WarningKind::CompressedOutput)
    );
}

#[tokio::test]
async fn b20_relevance_and_the_summary_budget_are_kept() {
    let store = research_store().await;
    edit(&store, "root.2.3", |r| {
        r.goal = "Write the comparison, see `root.1`".into();
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Execution).with_additional("k", "v"))
        .await
        .unwrap();
    for item in &ctx.items {
        let expected = match item.kind {
            SourceKind::Dependency => 1.0,
            SourceKind::GoalReference => 0.9,
            SourceKind::Additional => 0.6,
            SourceKind::LaterSibling => 0.5,
            SourceKind::Similar => item.relevance,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(item.relevance, expected, "{:?}", item.kind);
    }
    let json = serde_json::to_value(&ctx).unwrap();
    assert_eq!(json["items"][0]["relevance"], 1.0);
}

#[tokio::test]
async fn u1_the_total_budget_bounds_wide_plans() {
    let mut records = vec![{
        let mut r = task(
            "wide",
            None,
            "Aggregate fifty findings",
            TaskType::Think,
            TaskStatus::Aggregating,
        );
        r.child_task_ids = (0..50).map(|i| id(&format!("wide.{i}"))).collect();
        r
    }];
    for i in 0..50 {
        let mut r = task(
            &format!("wide.{i}"),
            Some("wide"),
            &format!("finding {i}"),
            TaskType::Search,
            TaskStatus::Done,
        );
        r.output_content = Some(json!(big_text(1500)));
        records.push(r);
    }
    let store = store_with(records).await;
    let service = service(&store).await;
    let ctx = service
        .build(request("wide", ContextType::Aggregation).with_budget_tokens(6000))
        .await
        .unwrap();
    assert!(ctx.token_count <= 6000, "{}", ctx.token_count);
    assert_eq!(HeuristicTokenCounter.count(&ctx.formatted), ctx.token_count);
    // Every child is accounted for: in the context (shortened fairly) or omitted.
    let shown = ctx.items.len();
    let dropped = ctx
        .omitted
        .iter()
        .filter(|o| o.action == OmitAction::Dropped)
        .count();
    assert_eq!(shown + dropped, 50);
    assert!(shown >= 40, "fair shares keep most children: {shown}");
    let sizes: Vec<usize> = ctx.items.iter().map(|i| i.tokens).collect();
    let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(max - min <= max / 4 + 8, "shares are even: {sizes:?}");
}

#[tokio::test]
async fn p2_summaries_are_memoised_per_revision() {
    let store = research_store().await;
    edit(&store, "root.2.1", |r| {
        r.output_content = Some(json!(big_text(5000)));
    })
    .await;
    let summarizer = Arc::new(RecordingSummarizer::default());
    let service = ContextBuilderService::builder(Arc::clone(&store))
        .token_counter(Arc::new(HeuristicTokenCounter))
        .summarizer(summarizer.clone())
        .options(BuilderOptions::default().with_cache_entries(0))
        .build();
    // Two consumers of root.2.1 (root.2.3 and root.2.2 via a declared dependency).
    edit(&store, "root.2.2", |r| {
        r.aux_data.insert("depends_on_indices".into(), json!([0]));
        r.status = TaskStatus::Pending;
    })
    .await;
    for target in ["root.2.3", "root.2.2", "root.2.3"] {
        service
            .build(request(target, ContextType::Execution))
            .await
            .unwrap();
    }
    assert_eq!(summarizer.budgets.lock().unwrap().len(), 1);
    assert_eq!(service.metrics().summaries, 1);
    // A new revision is summarised again.
    edit(&store, "root.2.1", |r| {
        r.output_content = Some(json!(big_text(6000)));
    })
    .await;
    service
        .build(request("root.2.3", ContextType::Execution))
        .await
        .unwrap();
    assert_eq!(summarizer.budgets.lock().unwrap().len(), 2);
}

//! Snapshot tests of the layouts (SPEC R6.5): the exact text agents receive. A change here is a
//! change of the prompt format; review the `.snap` diff like an API change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod builder_common;

use builder_common::*;
use serde_json::json;
use taskctx_app::builder::{AgentTaskInput, BuilderOptions, ContextType, ReplanDetails};
use taskctx_domain::TaskStatus;

async fn build(target: &str, t: ContextType) -> AgentTaskInput {
    let store = research_store().await;
    let service = service(&store).await;
    service.build(request(target, t)).await.unwrap()
}

#[tokio::test]
async fn execution_layout() {
    let ctx = build("root.2.3", ContextType::Execution).await;
    insta::assert_snapshot!("execution", ctx.formatted);
}

#[tokio::test]
async fn default_layout_with_additional_context() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(
            request("root.2.3", ContextType::Default)
                .with_additional("audience", "institutional investors")
                .with_additional("style", json!({"output_text": "short paragraphs"})),
        )
        .await
        .unwrap();
    insta::assert_snapshot!("default", ctx.formatted);
}

#[tokio::test]
async fn planning_layout() {
    let store = research_store().await;
    edit(&store, "root.2", |r| {
        r.goal = "Analyse the vendors found in `root.1`".into();
    })
    .await;
    edit(&store, "root", |r| {
        r.output_summary = Some("Report outline: market, vendors, risks, outlook".into());
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(
            request("root.2", ContextType::Planning)
                .with_replan(
                    ReplanDetails::new("Compare costs", "the cost source was paywalled")
                        .with_previous_attempt_summary("Only Toyota figures were found")
                        .with_guidance("Use public filings"),
                )
                .with_constraint("Cite every figure")
                .with_constraint("At most five sub-tasks"),
        )
        .await
        .unwrap();
    insta::assert_snapshot!("planning", ctx.formatted);
}

#[tokio::test]
async fn modification_layout() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(
            request("root.2", ContextType::Modification)
                .with_original_plan(json!({"sub_tasks": [
                    {"goal": "Collect energy density figures", "task_type": "SEARCH", "node_type": "EXECUTE", "depends_on_indices": []},
                    {"goal": "Compare costs per kWh", "task_type": "THINK", "node_type": "EXECUTE", "depends_on_indices": []},
                    {"goal": "Write the comparison", "task_type": "WRITE", "node_type": "EXECUTE", "depends_on_indices": [0, 1]}
                ]}))
                .with_modification_instructions("Add a step on safety certifications before writing."),
        )
        .await
        .unwrap();
    insta::assert_snapshot!("modification", ctx.formatted);
}

#[tokio::test]
async fn aggregation_layout() {
    let store = research_store().await;
    edit(&store, "root.2.3", |r| {
        r.status = TaskStatus::Failed;
        r.error_message = Some("the writer model timed out after 3 retries".into());
    })
    .await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2", ContextType::Aggregation))
        .await
        .unwrap();
    insta::assert_snapshot!("aggregation", ctx.formatted);
}

#[tokio::test]
async fn minimal_layout_for_atomization() {
    let ctx = build("root.2.3", ContextType::Atomization).await;
    insta::assert_snapshot!("atomization", ctx.formatted);
}

#[tokio::test]
async fn tight_budget_shortens_and_reports() {
    let store = research_store().await;
    edit(&store, "root.2.1", |r| {
        r.output_content = Some(json!(
            (0..400)
                .map(|i| format!("Vendor fact number {i}."))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    })
    .await;
    let service = service_with(&store, BuilderOptions::default().with_per_item_tokens(120));
    service.rebuild_similarity_index().await.unwrap();
    let ctx = service
        .build(request("root.2.3", ContextType::Execution).with_budget_tokens(420))
        .await
        .unwrap();
    let omitted = serde_json::to_string_pretty(&ctx.omitted).unwrap();
    insta::assert_snapshot!(
        "tight_budget",
        format!("{}\n\n----- omitted -----\n{omitted}", ctx.formatted)
    );
}

#[tokio::test]
async fn json_of_a_context() {
    let store = research_store().await;
    let service = service(&store).await;
    let ctx = service
        .build(request("root.2.3", ContextType::Planning).with_budget_tokens(2000))
        .await
        .unwrap();
    insta::assert_snapshot!("planning_json", serde_json::to_string_pretty(&ctx).unwrap());
}

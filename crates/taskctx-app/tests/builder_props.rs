//! Property tests of the context builder: the budget is never exceeded and `formatted` agrees
//! with `items`; no planted secret ever reaches a context; builds are deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod builder_common;

use std::sync::Arc;

use builder_common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use taskctx_app::builder::{
    AgentTaskInput, BuilderOptions, ContextBuilderService, ContextRequest, ContextType, OmitAction,
    ReplanDetails, format_input,
};
use taskctx_domain::{HeuristicTokenCounter, TaskRecord, TaskStatus, TokenCounter};
use taskctx_store::RecordStore;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn context_type() -> impl Strategy<Value = ContextType> {
    prop::sample::select(ContextType::ALL.to_vec())
}

fn target() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "root", "root.1", "root.2", "root.2.1", "root.2.3", "root.3",
    ])
}

/// Text of `n` words, some of them long, with line breaks.
fn words(n: usize, seed: usize) -> String {
    (0..n)
        .map(|i| match (i + seed) % 7 {
            0 => "\n".to_string(),
            1 => format!("measurement{i}-{seed}"),
            _ => format!("w{}", (i * 31 + seed) % 997),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The research tree with outputs, summaries and goals of random sizes.
fn sized_tree(sizes: &[usize]) -> Vec<TaskRecord> {
    let mut tree = research_tree();
    for (k, record) in tree.iter_mut().enumerate() {
        let size = sizes[k % sizes.len()];
        if record.status == TaskStatus::Done {
            record.output_content = Some(json!(words(size, k)));
            if size.is_multiple_of(3) {
                record.output_summary =
                    Some(format!("Specific summary {}", words(size / 10 + 5, k)));
            }
        }
        if size.is_multiple_of(5) {
            record.goal = format!("{} {}", record.goal, words(size / 4, k + 1));
        }
    }
    tree
}

fn check_consistent(ctx: &AgentTaskInput, budget: usize) {
    let counter = HeuristicTokenCounter;
    assert!(ctx.token_count <= budget, "{} > {budget}", ctx.token_count);
    assert_eq!(ctx.token_count, counter.count(&ctx.formatted));
    assert_eq!(
        format_input(ctx),
        ctx.formatted,
        "formatted is a function of the fields"
    );
    for item in &ctx.items {
        assert!(ctx.formatted.contains(&item.content));
        assert_eq!(item.tokens, counter.count(&item.content));
        assert!(!item.content.is_empty());
    }
    for omitted in ctx
        .omitted
        .iter()
        .filter(|o| o.action == OmitAction::Dropped)
    {
        assert!(
            !ctx.items
                .iter()
                .any(|i| i.source_task_id == omitted.source_task_id && i.kind == omitted.kind),
            "{} is both dropped and present",
            omitted.source_task_id
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn the_budget_is_never_exceeded_and_text_and_items_agree(
        sizes in prop::collection::vec(0usize..2500, 1..8),
        budget in 0usize..3000,
        per_item in 1usize..1500,
        max_items in prop::option::of(0usize..6),
        context_type in context_type(),
        target in target(),
    ) {
        runtime().block_on(async {
            let store = store_with(sized_tree(&sizes)).await;
            let service = service_with(
                &store,
                BuilderOptions::default().with_per_item_tokens(per_item).with_max_depth(2),
            );
            service.rebuild_similarity_index().await.unwrap();
            let mut request = request(target, context_type)
                .with_budget_tokens(budget)
                .with_additional("notes", words(sizes[0] / 2, 3))
                .with_replan(ReplanDetails::new("goal", words(sizes[0] / 3, 4)))
                .with_original_plan(json!({"sub_tasks": [{"goal": words(40, 1), "task_type": "THINK"}]}))
                .with_modification_instructions(words(30, 5))
                .with_constraint("be brief");
            if let Some(max) = max_items {
                request = request.with_max_items(max);
            }
            let ctx = service.build(request).await.unwrap();
            check_consistent(&ctx, budget);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// A planted secret: the text to plant and the part that must never appear.
#[derive(Debug, Clone)]
struct Secret {
    text: String,
    needle: String,
}

fn core(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                .chars()
                .collect::<Vec<_>>(),
        ),
        len,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn secret() -> impl Strategy<Value = Secret> {
    let s = |text: String, needle: String| Secret { text, needle };
    prop_oneof![
        core(24..40).prop_map(move |c| s(format!("sk-{c}"), c)),
        core(24..40).prop_map(move |c| s(format!("sk-proj-{c}"), c)),
        core(16..17).prop_map(move |c| {
            let c = c.to_uppercase();
            s(format!("AKIA{c}"), format!("AKIA{c}"))
        }),
        core(36..40).prop_map(move |c| s(format!("ghp_{c}"), c)),
        core(30..60).prop_map(move |c| s(format!("github_pat_11{c}"), c)),
        core(16..30).prop_map(move |c| s(format!("xoxb-1234-{c}"), c)),
        (core(16..24), core(16..24), core(16..30)).prop_map(move |(a, b, c)| s(
            format!("eyJ{a}.eyJ{b}.{c}"),
            format!("{b}.{c}")
        )),
        core(20..40).prop_map(move |c| s(format!("Authorization: Bearer {c}"), c)),
        core(20..40).prop_map(move |c| s(format!("curl -H 'Authorization: Basic {c}'"), c)),
        core(24..48).prop_map(move |c| s(
            format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{c}\nAAAA{c}\n-----END OPENSSH PRIVATE KEY-----"),
            c
        )),
        core(12..24).prop_map(move |c| s(format!("postgres://admin:{c}@db.internal:5432/app"), c)),
        core(12..24).prop_map(move |c| s(format!("password={c}"), c)),
        core(12..24).prop_map(move |c| s(format!("DB_PASSWORD: \"{c}\""), c)),
        core(12..24).prop_map(move |c| s(format!("{{\"client_secret\": \"{c}\"}}"), c)),
        core(12..24).prop_map(move |c| s(format!("X-Api-Key: {c}"), c)),
        core(12..24).prop_map(move |c| s(format!("Cookie: session={c}; theme=dark"), c)),
        core(12..24).prop_map(move |c| s(format!("apiKey={c}"), c)),
        core(12..24).prop_map(move |c| s(format!("access_token: {c}"), c)),
    ]
}

/// Structured places: the secret core under a sensitive key.
fn keyed(c: &str, k: usize) -> Value {
    let key = [
        "password",
        "Token",
        "x-api-key",
        "client_secret",
        "privateKey",
        "AWS_ACCESS_KEY_ID",
        "cookie",
        "credentials",
    ][k % 8];
    json!({"result_meta": {"list": [1, {key: c}]}, "output_text_with_citations": null})
}

/// Plants `secrets` everywhere the builder reads text from.
fn plant(tree: &mut [TaskRecord], secrets: &[Secret]) {
    let pick = |i: usize| &secrets[i % secrets.len()];
    for (k, record) in tree.iter_mut().enumerate() {
        let a = pick(k);
        let b = pick(k + 1);
        let c = pick(k + 2);
        record.goal = format!("{} ({})", record.goal, a.text);
        if record.status == TaskStatus::Done {
            record.output_content = Some(if k % 2 == 0 {
                json!(format!("Result line one.\nconfig: {}\nmore text", b.text))
            } else {
                json!({"output_text": format!("see {}", b.text), "meta": keyed(&c.needle, k)})
            });
            record.output_summary = Some(format!("Specific summary mentioning {}", c.text));
        }
        record.output_type_description = Some(format!("label {}", pick(k + 3).text));
        record.error_message = Some(format!("failed with {}", pick(k + 4).text));
        record.overall_objective = Some(format!("Objective with {}", pick(k + 5).text));
        record
            .aux_data
            .insert("style".into(), json!(format!("style {}", pick(k + 6).text)));
        record.aux_data.insert(
            "execution_details".into(),
            json!({"final_llm_input": pick(k + 7).text.clone()}),
        );
        record
            .aux_data
            .insert("deps".into(), keyed(&pick(k + 8).needle, k));
    }
    // A failed child, so error messages are rendered too.
    if let Some(r) = tree.iter_mut().find(|r| r.task_id.as_str() == "root.2.4") {
        r.status = TaskStatus::Failed;
    }
    // A DONE dependency of root.2.3 without any output: shown as a note with its id and goal.
    if let Some(r) = tree.iter_mut().find(|r| r.task_id.as_str() == "root.2.2") {
        r.output_content = None;
        r.output_summary = Some("Completed with Nothing".into());
    }
}

fn secret_request(target: &str, t: ContextType, secrets: &[Secret]) -> ContextRequest {
    let s = |i: usize| secrets[i % secrets.len()].text.clone();
    request(target, t)
        .with_additional(format!("key {}", s(0)), s(1))
        .with_additional("structured", keyed(&secrets[2 % secrets.len()].needle, 3))
        .with_replan(
            ReplanDetails::new(s(3), s(4))
                .with_previous_attempt_summary(s(5))
                .with_guidance(s(6)),
        )
        .with_constraint(s(7))
        .with_original_plan(json!({"sub_tasks": [{"goal": s(8), "task_type": "THINK"}]}))
        .with_modification_instructions(s(9))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    #[test]
    fn no_planted_secret_reaches_a_context(
        secrets in prop::collection::vec(secret(), 1..10),
        budget in prop::sample::select(vec![60usize, 300, 8000]),
    ) {
        runtime().block_on(async {
            let mut tree = research_tree();
            plant(&mut tree, &secrets);
            let store = store_with(tree).await;
            let service = ContextBuilderService::builder(Arc::clone(&store))
                .token_counter(Arc::new(HeuristicTokenCounter))
                .options(BuilderOptions::default().allow_aux_data_key("style").with_per_item_tokens(60))
                .build();
            service.rebuild_similarity_index().await.unwrap();
            for t in ContextType::ALL {
                for target in ["root.2.3", "root.2", "root"] {
                    let ctx = service
                        .build(secret_request(target, t, &secrets).with_budget_tokens(budget))
                        .await
                        .unwrap();
                    let mut everything = serde_json::to_value(&ctx).unwrap();
                    // The requested id is the caller's own key, not data.
                    everything["current_task_id"] = Value::Null;
                    let json = everything.to_string();
                    for secret in &secrets {
                        prop_assert!(
                            !ctx.formatted.contains(&secret.needle),
                            "{t} {target}: {:?} leaked into:\n{}", secret.text, ctx.formatted
                        );
                        prop_assert!(
                            !json.contains(&secret.needle),
                            "{t} {target}: {:?} leaked into the JSON", secret.text
                        );
                    }
                }
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism

async fn build_all(
    service: &ContextBuilderService,
    requests: &[ContextRequest],
) -> Vec<AgentTaskInput> {
    let mut out = Vec::new();
    for request in requests {
        out.push(service.build(request.clone()).await.unwrap());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn the_same_input_gives_byte_identical_contexts(
        sizes in prop::collection::vec(0usize..800, 1..6),
        budget in 50usize..3000,
        picks in prop::collection::vec((context_type(), target()), 1..6),
    ) {
        runtime().block_on(async {
            let tree = sized_tree(&sizes);
            let requests: Vec<ContextRequest> = picks
                .iter()
                .map(|(t, target)| request(target, *t).with_budget_tokens(budget).with_additional("k", "v"))
                .collect();
            // Service A builds everything twice (the second time from its cache and memos).
            let store_a: Arc<dyn RecordStore> = store_with(tree.clone()).await;
            let a = service(&store_a).await;
            let first = build_all(&a, &requests).await;
            let second = build_all(&a, &requests).await;
            // Service B is fresh, over a fresh store, without a cache, in reverse order.
            let store_b: Arc<dyn RecordStore> = store_with(tree).await;
            let b = service_with(&store_b, BuilderOptions::default().with_cache_entries(0));
            b.rebuild_similarity_index().await.unwrap();
            let mut reversed = requests.clone();
            reversed.reverse();
            let mut third = build_all(&b, &reversed).await;
            third.reverse();
            for ((x, y), z) in first.iter().zip(&second).zip(&third) {
                prop_assert_eq!(&x.formatted, &y.formatted);
                prop_assert_eq!(&x.formatted, &z.formatted);
                prop_assert_eq!(x, z);
            }
            Ok(())
        })?;
    }
}

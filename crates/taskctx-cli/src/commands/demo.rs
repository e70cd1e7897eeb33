//! `taskctx demo`: a realistic agent session against the store, and what taskctx kept of it —
//! then a research plan in the task store and the contexts its planner, executor and aggregator
//! would see.
//!
//! The session always uses the chat `demo-research`, so a second run continues the first run's
//! history (on a durable store) and its optimisation folds the repeated entries back together.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use serde_json::{Value, json};
use taskctx::{
    AgentTaskInput, ChatId, ContextBuilderService, ContextInit, ContextRequest, ContextType,
    HistoryBudget, OptimizeReport, Persistence, PutRecord, TaskContext, TaskId, UpdateType, UserId,
    on_close_async,
};

use super::Env;
use crate::output::{outln, print_json, shorten, table};
use taskctx::RecordStoreExt as _;

/// The chat the demo writes to.
const DEMO_CHAT: &str = "demo-research";
/// The token budget of the demo's contexts: small enough that the long search output must be
/// shortened, so the budget rules are visible.
const DEMO_CONTEXT_BUDGET: usize = 1200;
/// The optimisation budget, in characters of canonical JSON data: large enough to keep one
/// session, small enough that repeated runs are trimmed.
const DEMO_BUDGET_CHARS: usize = 4000;

pub(crate) async fn run(env: &Env) -> anyhow::Result<()> {
    let stores = env.open().await?;
    let init = ContextInit::for_chat(ChatId::new(DEMO_CHAT)?)
        .user(UserId::new("demo-user")?)
        .with_metadata("project", json!("EV battery market report"))
        .with_metadata(
            "aiPreference",
            json!({"model": "gpt-4o", "temperature": 0.2}),
        )
        .with_metadata("internal_notes", json!("not for the model"));
    let mut init = init;
    init.metadata_toggles
        .insert("internal_notes".to_owned(), false);

    let client_closed = Arc::new(AtomicBool::new(false));
    let closed = Arc::clone(&client_closed);
    let outcome = TaskContext::builder(init)
        .store(Arc::clone(&stores.history))
        .persistence(Persistence::WriteThrough)
        .scope(|ctx| async move {
            let earlier = ctx.history_len();
            session(&ctx, closed).await?;
            let before = ctx.history_len();
            let report = ctx
                .optimize_context(HistoryBudget::Chars(DEMO_BUDGET_CHARS))
                .await?;
            Ok::<_, anyhow::Error>(Summary {
                earlier,
                before_optimise: before,
                report,
                ctx,
            })
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("running the demo session")?;
    let closed = client_closed.load(Ordering::SeqCst);
    let plan = super::demo_plan::research_plan()?;
    let records = plan.len();
    stores
        .records
        .put_many(plan.into_iter().map(PutRecord::upsert).collect())
        .await
        .context("storing the demo's research plan")?;
    let service = ContextBuilderService::new(Arc::clone(&stores.records));
    service.rebuild_similarity_index().await?;
    let mut contexts = Vec::new();
    for (kind, id) in [
        (ContextType::Planning, "root.2"),
        (ContextType::Execution, "root.3"),
        (ContextType::Aggregation, "root.2"),
    ] {
        let request =
            ContextRequest::new(TaskId::new(id)?, kind).with_budget_tokens(DEMO_CONTEXT_BUDGET);
        contexts.push(service.build(request).await?);
    }
    if env.json {
        let mut report = summary_json(env, &outcome, closed);
        report["plan_records"] = json!(records);
        report["contexts"] = json!(contexts);
        return print_json(&report);
    }
    print_summary(env, &outcome, closed)?;
    print_plan(env, &stores, records, &contexts).await
}

async fn print_plan(
    env: &Env,
    stores: &taskctx::Stores,
    records: usize,
    contexts: &[AgentTaskInput],
) -> anyhow::Result<()> {
    outln!();
    outln!("Task plan ({records} records in {}):", env.store_url);
    let root = stores.records.require(&TaskId::new("root")?).await?;
    let nodes = super::tasks::walk(&*stores.records, vec![root]).await?;
    outln!("{}", super::tasks::render_text(&nodes).trim_end());
    for context in contexts {
        outln!();
        super::context::print_human(context)?;
    }
    let leaked: Vec<&str> = super::demo_plan::PLANTED_SECRETS
        .iter()
        .copied()
        .filter(|secret| {
            contexts.iter().any(|c| {
                c.formatted.contains(secret) || c.items.iter().any(|i| i.content.contains(secret))
            })
        })
        .collect();
    outln!();
    outln!(
        "Each context fits {DEMO_CONTEXT_BUDGET} tokens (o200k_base); what did not fit is listed as omitted."
    );
    if leaked.is_empty() {
        outln!(
            "Checked: none of the {} credentials planted in the plan appears in any context.",
            super::demo_plan::PLANTED_SECRETS.len()
        );
        Ok(())
    } else {
        anyhow::bail!("{} planted credentials reached a context", leaked.len())
    }
}

/// One agent turn: the user asks, the agent plans, searches, reads and writes files, calls models.
async fn session(ctx: &TaskContext, client_closed: Arc<AtomicBool>) -> anyhow::Result<()> {
    ctx.add_resource(
        "search-client",
        on_close_async("HttpClient", move || async move {
            // A real client would drain its connection pool here.
            tokio::task::yield_now().await;
            client_closed.store(true, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        }),
    )
    .await?;
    let message = |role: &str, text: &str| json!({"role": role, "content": text});
    ctx.add_context_update(
        UpdateType::MESSAGE,
        message(
            "user",
            "How large will the European EV battery market be in 2030?",
        ),
        None,
    )
    .await?;
    ctx.track_model_usage("gpt-4o", "openai", "chat").await?;
    ctx.add_context_update(
        UpdateType::MESSAGE,
        message(
            "assistant",
            "Plan: 1) collect 2024 capacity figures, 2) find 2030 projections, 3) reconcile sources.",
        ),
        None,
    )
    .await?;
    ctx.add_context_update(
        UpdateType::new("tool_call")?,
        json!({"tool": "web_search", "query": "EU battery gigafactory capacity 2030 GWh"}),
        None,
    )
    .await?;
    ctx.track_file_operation("sources/eu-gigafactories-2024.csv", "read", "web_search")
        .await?;
    // The same model, provider and mode again: not recorded a second time.
    ctx.track_model_usage("gpt-4o", "openai", "chat").await?;
    ctx.track_model_usage("text-embedding-3-small", "openai", "embedding")
        .await?;
    for _ in 0..3 {
        // A status line the agent repeats; optimisation keeps only the newest.
        ctx.add_context_update(
            UpdateType::new("status")?,
            json!("drafting section 2"),
            None,
        )
        .await?;
    }
    ctx.track_file_operation("drafts/report.md", "write", "writer")
        .await?;
    ctx.add_context_update(
        UpdateType::MESSAGE,
        message(
            "assistant",
            "Draft ready: projected 1.2 TWh of annual cell capacity by 2030 across 30 plants.",
        ),
        None,
    )
    .await?;
    Ok(())
}

struct Summary {
    earlier: usize,
    before_optimise: usize,
    report: OptimizeReport,
    ctx: TaskContext,
}

/// The session part of the demo's `--json` report.
fn summary_json(env: &Env, summary: &Summary, client_closed: bool) -> Value {
    let ctx = &summary.ctx;
    json!({
        "store": env.store_url,
        "chat_id": ctx.chat_id(),
        "earlier_entries": summary.earlier,
        "entries_before_optimisation": summary.before_optimise,
        "optimisation": summary.report,
        "context": ctx.to_json(),
        "stats": ctx.stats(),
        "resource_closed": client_closed,
    })
}

fn print_summary(env: &Env, summary: &Summary, client_closed: bool) -> anyhow::Result<()> {
    let ctx = &summary.ctx;
    let stats = ctx.stats();
    outln!("taskctx demo — store {}", env.store_url);
    if summary.earlier == 0 {
        outln!(
            "Session `{}` (user {}): new history.",
            ctx.chat_id(),
            ctx.user_id()
        );
    } else {
        outln!(
            "Session `{}` (user {}): continued {} entries from earlier runs.",
            ctx.chat_id(),
            ctx.user_id(),
            summary.earlier
        );
    }
    outln!();
    outln!("History after optimisation (newest last):");
    let history = ctx.history();
    let mut t = table(["#", "type", "data"]);
    let skip = history.len().saturating_sub(12);
    for (seq, update) in history.iter().enumerate().skip(skip) {
        t.add_row(vec![
            seq.to_string(),
            update.update_type.to_string(),
            shorten(&data_text(&update.data), 90),
        ]);
    }
    outln!("{t}");
    outln!();
    let mut files = table(["tracked file", "last operation", "by"]);
    for (path, entry) in ctx.file_tracker() {
        files.add_row(vec![path, entry.operation, entry.source]);
    }
    outln!("{files}");
    let mut models = table(["model", "provider", "mode"]);
    for usage in ctx.model_tracker() {
        models.add_row(vec![usage.model_id, usage.provider_id, usage.mode]);
    }
    outln!("{models}");
    outln!();
    let r = &summary.report;
    outln!(
        "Optimisation to {DEMO_BUDGET_CHARS} characters: {} entries → {} kept; {} duplicates and {} over the budget removed.",
        summary.before_optimise,
        r.kept,
        r.removed_duplicates,
        r.removed_for_budget
    );
    outln!(
        "Active metadata (internal_notes is toggled off): {}",
        Value::Object(ctx.get_active_metadata())
    );
    outln!(
        "Stats: {} entries, {} characters, {} tokens (o200k_base), {} files, {} models.",
        stats.entries,
        stats.size_chars,
        stats.size_tokens,
        stats.files,
        stats.models
    );
    for suggestion in &stats.suggestions {
        outln!("  suggestion: {suggestion}");
    }
    outln!(
        "Resource `search-client` closed at scope exit: {}.",
        if client_closed { "yes" } else { "NO" }
    );
    if stores_persist(&env.store_url) {
        outln!();
        outln!("Run `taskctx demo` again: the session continues from this history.");
    }
    Ok(())
}

/// A message's text, or the compact JSON of other data.
fn data_text(data: &Value) -> String {
    match data.get("content").and_then(Value::as_str) {
        Some(text) => format!(
            "{}: {text}",
            data.get("role").and_then(Value::as_str).unwrap_or("?")
        ),
        None => data.to_string(),
    }
}

/// Whether a second run will see this run's history.
fn stores_persist(url: &str) -> bool {
    !url.trim_start().to_ascii_lowercase().starts_with("mem")
}

//! `taskctx context build`: the context an agent should see for a task.

use std::sync::Arc;

use taskctx::{
    AgentTaskInput, ContextBuilderService, ContextRequest, ContextType, OmitAction, OmitReason,
    OmittedItem, RecordStore,
};

use super::Env;
use super::tasks::parse_task;
use crate::cli::ContextCommand;
use crate::failure::usage;
use crate::output::{outln, print_json};

pub(crate) async fn run(env: &Env, command: ContextCommand) -> anyhow::Result<()> {
    match command {
        ContextCommand::Build {
            task_id,
            context_type,
            budget_tokens,
            max_items,
        } => {
            let task_id = parse_task(&task_id)?;
            let context_type: ContextType = context_type
                .parse()
                .map_err(|e| usage(format!("--type: {e}")))?;
            if budget_tokens == Some(0) {
                return Err(usage("--budget-tokens must be positive"));
            }
            let mut request = ContextRequest::new(task_id, context_type);
            if let Some(tokens) = budget_tokens {
                request = request.with_budget_tokens(tokens);
            }
            if let Some(items) = max_items {
                request = request.with_max_items(items);
            }
            let stores = env.open().await?;
            let input = build(Arc::clone(&stores.records), request).await?;
            if env.json {
                print_json(&input)
            } else {
                print_human(&input)
            }
        }
    }
}

/// A one-shot service: its similarity index is built from the store's DONE records first.
pub(crate) async fn build(
    records: Arc<dyn RecordStore>,
    request: ContextRequest,
) -> anyhow::Result<AgentTaskInput> {
    let service = ContextBuilderService::new(records);
    service.rebuild_similarity_index().await?;
    Ok(service.build(request).await?)
}

/// A header of counts, the warnings and omissions, then the formatted text itself.
pub(crate) fn print_human(input: &AgentTaskInput) -> anyhow::Result<()> {
    outln!(
        "── {} context for `{}` · {} tokens · {} items · {} omitted{} ──",
        input.context_type,
        input.current_task_id,
        input.token_count,
        input.items.len(),
        input.omitted.len(),
        if input.degraded { " · DEGRADED" } else { "" }
    );
    for warning in &input.warnings {
        outln!("warning: {warning}");
    }
    for omitted in &input.omitted {
        outln!("{}", describe_omission(omitted));
    }
    outln!();
    outln!("{}", input.formatted);
    Ok(())
}

/// One line per omission: what, how, why, how much.
fn describe_omission(omitted: &OmittedItem) -> String {
    let action = match omitted.action {
        OmitAction::Dropped => "dropped",
        OmitAction::Shortened => "shortened",
    };
    let reason = match omitted.reason {
        OmitReason::ItemCap => "larger than the per-item cap",
        OmitReason::Budget => "no room left in the budget",
        OmitReason::MaxItems => "over the item limit",
    };
    format!(
        "{action}: `{}` ({reason}; {} → {} tokens)",
        omitted.source_task_id, omitted.original_tokens, omitted.kept_tokens
    )
}

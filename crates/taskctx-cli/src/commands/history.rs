//! `taskctx history …`: list, show, append (also from stdin), optimize, truncate, delete.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use taskctx::{
    ChatId, ContextInit, ContextUpdate, HistoryBudget, HistoryStoreExt, TaskContext, Timestamp,
    UpdateType, aiecs,
};
use tokio::io::AsyncBufReadExt;

use super::Env;
use crate::cli::{AppendArgs, ExportFormat, HistoryCommand};
use crate::failure::usage;
use crate::output::{outln, print_json, shorten, table};

pub(crate) async fn run(env: &Env, command: HistoryCommand) -> anyhow::Result<()> {
    match command {
        HistoryCommand::List => list(env).await,
        HistoryCommand::Show { chat, last } => show(env, &parse_chat(&chat)?, last).await,
        HistoryCommand::Append(args) => append(env, args).await,
        HistoryCommand::Optimize {
            chat,
            max_size,
            tokens,
        } => {
            let budget = if tokens {
                HistoryBudget::Tokens(max_size)
            } else {
                HistoryBudget::Chars(max_size)
            };
            optimize(env, &parse_chat(&chat)?, budget).await
        }
        HistoryCommand::Truncate { chat, after } => {
            truncate(env, &parse_chat(&chat)?, parse_time(&after)?).await
        }
        HistoryCommand::Delete { chat } => delete(env, &parse_chat(&chat)?).await,
        HistoryCommand::Import { paths, replace } => import(env, &paths, replace).await,
        HistoryCommand::Export {
            chat,
            format,
            output,
        } => export(env, &parse_chat(&chat)?, format, output.as_deref()).await,
    }
}

pub(crate) fn parse_chat(chat: &str) -> anyhow::Result<ChatId> {
    Ok(ChatId::new(chat)?)
}

/// Seconds since the epoch, or an ISO-8601 date-time.
fn parse_time(text: &str) -> anyhow::Result<Timestamp> {
    if let Ok(secs) = text.trim().parse::<f64>() {
        return Timestamp::from_secs(secs)
            .ok_or_else(|| usage(format!("--after {text:?} is not a finite number")));
    }
    Timestamp::parse_iso8601(text).map_err(|e| {
        usage(format!(
            "--after expects seconds since the epoch or ISO-8601: {e}"
        ))
    })
}

fn parse_json(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).map_err(|e| usage(format!("{flag} is not valid JSON: {e}")))
}

async fn list(env: &Env) -> anyhow::Result<()> {
    let stores = env.open().await?;
    let chats = stores.history.list().await?;
    if env.json {
        return print_json(&chats);
    }
    if chats.is_empty() {
        outln!("No histories in {}.", env.store_url);
        return Ok(());
    }
    let mut t = table(["chat", "entries", "last update"]);
    for chat in &chats {
        t.add_row(vec![
            chat.chat_id.to_string(),
            chat.entries.to_string(),
            chat.last_timestamp
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
        ]);
    }
    outln!("{t}");
    Ok(())
}

/// The JSON form of one stored update: AIECS's field names plus its sequence number.
pub(crate) fn update_json(seq: usize, update: &ContextUpdate) -> Value {
    json!({
        "seq": seq,
        "timestamp": update.timestamp,
        "update_type": update.update_type,
        "data": update.data,
        "metadata": update.metadata,
    })
}

async fn show(env: &Env, chat: &ChatId, last: Option<usize>) -> anyhow::Result<()> {
    let stores = env.open().await?;
    let history = stores.history.load(chat).await?;
    let skip = last.map_or(0, |n| history.len().saturating_sub(n));
    if env.json {
        let entries: Vec<Value> = history
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(seq, u)| update_json(seq, u))
            .collect();
        return print_json(&entries);
    }
    if history.is_empty() {
        bail!("chat `{chat}` has no history in {}", env.store_url);
    }
    let mut t = table(["seq", "time", "type", "data", "metadata"]);
    for (seq, update) in history.iter().enumerate().skip(skip) {
        t.add_row(vec![
            seq.to_string(),
            update.timestamp.to_rfc3339(),
            update.update_type.to_string(),
            shorten(&update.data.to_string(), 70),
            if update.metadata.is_empty() {
                String::new()
            } else {
                shorten(&Value::Object(update.metadata.clone()).to_string(), 40)
            },
        ]);
    }
    outln!("{t}");
    Ok(())
}

/// One line of `history append --stdin`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StdinUpdate {
    update_type: UpdateType,
    data: Value,
    #[serde(default)]
    metadata: Map<String, Value>,
    timestamp: Option<Timestamp>,
}

async fn append(env: &Env, args: AppendArgs) -> anyhow::Result<()> {
    let chat = parse_chat(&args.chat)?;
    if args.stdin {
        return append_stdin(env, &chat).await;
    }
    // Everything is validated before the store is opened, so a typo never touches it.
    let (Some(kind), Some(data)) = (args.update_type, args.data) else {
        return Err(usage("--type and --data are required without --stdin"));
    };
    let update_type = UpdateType::new(kind).map_err(|e| usage(format!("--type: {e}")))?;
    let data = parse_json("--data", &data)?;
    let metadata = match args.metadata {
        None => Map::new(),
        Some(text) => match parse_json("--metadata", &text)? {
            Value::Object(map) => map,
            _ => return Err(usage("--metadata must be a JSON object")),
        },
    };
    let update = ContextUpdate::new(update_type, data).with_metadata(metadata);
    let stores = env.open().await?;
    let seq = stores.history.append_one(&chat, update).await?;
    if env.json {
        print_json(&json!({"chat_id": chat, "seq": seq}))
    } else {
        outln!("appended to `{chat}` as entry {seq}");
        Ok(())
    }
}

/// Appends one update per JSON line of stdin, printing each sequence number (and flushing)
/// only after the store acknowledged that update. A bad line stops the command with its line
/// number; the lines before it stay appended.
async fn append_stdin(env: &Env, chat: &ChatId) -> anyhow::Result<()> {
    let stores = env.open().await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut number = 0usize;
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: StdinUpdate =
            serde_json::from_str(&line).map_err(|e| usage(format!("stdin line {number}: {e}")))?;
        let update = ContextUpdate {
            timestamp: parsed.timestamp.unwrap_or_else(Timestamp::now),
            update_type: parsed.update_type,
            data: parsed.data,
            metadata: parsed.metadata,
        };
        let seq = stores.history.append_one(chat, update).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{seq}")?;
        out.flush()?;
    }
    Ok(())
}

async fn open_context(env: &Env, chat: &ChatId) -> anyhow::Result<TaskContext> {
    let stores = env.open().await?;
    let ctx = TaskContext::open(ContextInit::for_chat(chat.clone()), stores.history).await?;
    if ctx.history_len() == 0 {
        bail!("chat `{chat}` has no history in {}", env.store_url);
    }
    Ok(ctx)
}

async fn optimize(env: &Env, chat: &ChatId, budget: HistoryBudget) -> anyhow::Result<()> {
    let ctx = open_context(env, chat).await?;
    let before = ctx.history_len();
    let report = ctx.optimize_context(budget).await?;
    if env.json {
        return print_json(&json!({"chat_id": chat, "before": before, "report": report}));
    }
    let unit = match budget {
        HistoryBudget::Chars(_) => "characters",
        HistoryBudget::Tokens(_) => "tokens",
    };
    if report.optimized() {
        outln!(
            "optimised `{chat}`: kept {} of {before} entries ({} {unit}); removed {} duplicates and {} over the budget",
            report.kept,
            report.kept_size,
            report.removed_duplicates,
            report.removed_for_budget
        );
    } else {
        outln!(
            "`{chat}` is already within the budget: nothing removed ({before} entries, {} {unit})",
            report.kept_size
        );
    }
    Ok(())
}

async fn truncate(env: &Env, chat: &ChatId, until: Timestamp) -> anyhow::Result<()> {
    let ctx = open_context(env, chat).await?;
    let removed = ctx.truncate_context_history(until).await?;
    if env.json {
        return print_json(
            &json!({"chat_id": chat, "removed": removed, "kept": ctx.history_len()}),
        );
    }
    outln!(
        "truncated `{chat}` after {}: removed {removed}, kept {}",
        until.to_rfc3339(),
        ctx.history_len()
    );
    Ok(())
}

async fn delete(env: &Env, chat: &ChatId) -> anyhow::Result<()> {
    let stores = env.open().await?;
    if !stores.history.delete(chat).await? {
        bail!("chat `{chat}` has no history in {}", env.store_url);
    }
    if env.json {
        print_json(&json!({"chat_id": chat, "deleted": true}))
    } else {
        outln!("deleted the history of `{chat}`");
        Ok(())
    }
}

/// The AIECS files named by `paths`: files as given, directories expanded to the
/// `context_history_*.json` files they hold.
fn expand_import_paths(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path)
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        if metadata.is_dir() {
            let found = aiecs::find_history_files(path)?;
            if found.is_empty() {
                return Err(usage(format!(
                    "{} holds no context_history_*.json files",
                    path.display()
                )));
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

async fn import(env: &Env, paths: &[std::path::PathBuf], replace: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    // Listing directories is blocking I/O: keep it off the runtime's threads.
    let owned = paths.to_vec();
    let files = tokio::task::spawn_blocking(move || expand_import_paths(&owned)).await??;
    let stores = env.open().await?;
    let mode = if replace {
        aiecs::ImportMode::Replace
    } else {
        aiecs::ImportMode::Create
    };
    // A progress bar only for people watching a terminal; pipes and CI get plain lines.
    let progress = if std::io::stderr().is_terminal() && !env.json {
        indicatif::ProgressBar::new(files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut imported = Vec::new();
    let mut failures = Vec::new();
    for file in &files {
        progress.set_message(file.display().to_string());
        match aiecs::import_file(&*stores.history, file, mode).await {
            Ok(report) => imported.push((file.clone(), report)),
            Err(error) => failures.push(format!("{error}")),
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    if env.json {
        let done: Vec<Value> = imported
            .iter()
            .map(|(file, r)| {
                json!({"file": file, "chat_id": r.chat_id, "updates": r.updates, "replaced": r.replaced})
            })
            .collect();
        print_json(&json!({"imported": done, "failed": failures}))?;
    } else {
        for (file, report) in &imported {
            outln!(
                "imported {} → chat `{}` ({} updates{})",
                file.display(),
                report.chat_id,
                report.updates,
                if report.replaced {
                    ", replaced the old history"
                } else {
                    ""
                }
            );
        }
        for failure in &failures {
            outln!("failed: {failure}");
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} files could not be imported (see above); the others were imported",
            failures.len(),
            files.len()
        );
    }
    Ok(())
}

async fn export(
    env: &Env,
    chat: &ChatId,
    format: ExportFormat,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let format = match format {
        ExportFormat::Aiecs => aiecs::ExportFormat::Aiecs,
        ExportFormat::Jsonl => aiecs::ExportFormat::JsonLines,
    };
    let stores = env.open().await?;
    match output {
        Some(path) => {
            let count = aiecs::export_file(&*stores.history, chat, path, format).await?;
            if env.json {
                print_json(&json!({"chat_id": chat, "file": path, "updates": count}))
            } else {
                outln!("exported {count} updates of `{chat}` to {}", path.display());
                Ok(())
            }
        }
        None => {
            let history = stores.history.load(chat).await?;
            if history.is_empty() {
                bail!("chat `{chat}` has no history in {}", env.store_url);
            }
            let mut out = std::io::stdout().lock();
            out.write_all(format.render(&history).as_bytes())?;
            out.flush()?;
            Ok(())
        }
    }
}

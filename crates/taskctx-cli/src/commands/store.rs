//! `taskctx stats` and `taskctx health`: totals, and a full read-back of the store.

use anyhow::bail;
use serde_json::json;

use super::Env;
use crate::output::{outln, print_json, table};

pub(crate) async fn stats(env: &Env) -> anyhow::Result<()> {
    let stores = env.open().await?;
    let history = stores.history.stats().await?;
    let records = stores.records.stats().await?;
    if env.json {
        return print_json(&json!({
            "store": env.store_url,
            "history": history,
            "records": records,
        }));
    }
    let mut t = table(["", "value"]);
    t.add_row(vec!["store".to_owned(), env.store_url.clone()]);
    t.add_row(vec!["chats".to_owned(), history.chats.to_string()]);
    t.add_row(vec![
        "history entries".to_owned(),
        history.updates.to_string(),
    ]);
    if let Some(bytes) = history.bytes_on_disk {
        t.add_row(vec!["history bytes on disk".to_owned(), bytes.to_string()]);
    }
    t.add_row(vec!["task records".to_owned(), records.total.to_string()]);
    for (status, count) in &records.per_status {
        t.add_row(vec![format!("  {status}"), count.to_string()]);
    }
    let layers: Vec<String> = records.layers.iter().map(u32::to_string).collect();
    t.add_row(vec!["layers".to_owned(), layers.join(", ")]);
    outln!("{t}");
    Ok(())
}

/// Opens the store and reads back every history and every record, reporting each problem with
/// its location. Exit code 1 if anything is wrong.
pub(crate) async fn health(env: &Env) -> anyhow::Result<()> {
    let stores = env.open().await?;
    let mut problems: Vec<String> = Vec::new();
    let chats = stores.history.list().await?;
    let mut entries = 0u64;
    for chat in &chats {
        match stores.history.load(&chat.chat_id).await {
            Ok(history) => entries += history.len() as u64,
            Err(error) => problems.push(format!("history `{}`: {error}", chat.chat_id)),
        }
    }
    let records = match stores.records.stats().await {
        Ok(stats) => stats.total,
        Err(error) => {
            problems.push(format!("task records: {error}"));
            0
        }
    };
    if env.json {
        print_json(&json!({
            "store": env.store_url,
            "healthy": problems.is_empty(),
            "chats": chats.len(),
            "history_entries": entries,
            "task_records": records,
            "problems": problems,
        }))?;
    } else {
        outln!(
            "{}: {} chats, {entries} history entries, {records} task records",
            env.store_url,
            chats.len()
        );
        for problem in &problems {
            outln!("  problem: {problem}");
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} problem(s) found; corrupt data is left untouched — move the named file or key aside, or restore it from a backup",
            problems.len()
        );
    }
    if !env.json {
        outln!("healthy");
    }
    Ok(())
}

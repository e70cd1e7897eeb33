//! The child process of `cargo xtask crash`: `write` appends and puts as fast as it can, printing
//! each acknowledged write, until it is killed; `verify` reopens the store and checks that every
//! acknowledged write is present exactly once and in order.
//!
//! Protocol (one line per acknowledged write, printed only after the store returned `Ok`):
//! `A <chat> <seq> <tag>` for an append, `P <task> <revision> <tag>` for a put, `B <revision>
//! <tag>` for a `put_many` of the same [`BATCH_SIZE`] records (all or nothing across the kill: the
//! verifier finds them all at one revision with one goal).
// A process whose whole job is to print acknowledgements.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde_json::json;
use taskctx::{
    ChatId, ContextInit, ContextUpdate, HistoryStoreExt, Persistence, PutRecord, TaskContext,
    TaskId, TaskRecord, TaskType, UpdateType,
};

const CHATS: [&str; 2] = ["crash-a", "crash-b/with slash"];
const APPEND_WRITERS_PER_CHAT: usize = 2;
const RECORD_WRITERS: usize = 2;
const RECORDS_PER_WRITER: usize = 5;
/// Records written together by every `put_many` of the batch writer.
const BATCH_SIZE: usize = 8;
/// The chat a write-through `TaskContext` writes to: an update acknowledged by
/// `add_context_update` must survive the kill like a raw append.
const CONTEXT_CHAT: &str = "crash-context";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crash-child: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["write", url, cycle] => runtime.block_on(write(url, cycle)),
        ["verify", url, acks] => runtime.block_on(verify(url, acks)),
        _ => {
            eprintln!("usage: taskctx-crash-child write URL CYCLE | verify URL ACK_FILE");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash-child: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_ack(line: String) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

async fn write(url: &str, cycle: &str) -> anyhow::Result<()> {
    let stores = taskctx::open(url).await?;
    print_ack("READY".to_owned())?;
    let mut tasks = Vec::new();
    for chat in CHATS {
        for writer in 0..APPEND_WRITERS_PER_CHAT {
            let history = Arc::clone(&stores.history);
            let chat = ChatId::new(chat)?;
            let cycle = cycle.to_owned();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let tag = format!("c{cycle}-{}-w{writer}-{i}", chat.as_str().len());
                    let update = ContextUpdate::new(UpdateType::MESSAGE, json!({"tag": tag}));
                    let seq = history.append_one(&chat, update).await?;
                    print_ack(format!("A {} {seq} {tag}", encode(chat.as_str())))?;
                }
                anyhow::Ok(())
            }));
        }
    }
    {
        let history = Arc::clone(&stores.history);
        let cycle = cycle.to_owned();
        tasks.push(tokio::spawn(async move {
            let ctx = TaskContext::builder(ContextInit::for_chat(ChatId::new(CONTEXT_CHAT)?))
                .store(history)
                .persistence(Persistence::WriteThrough)
                .open()
                .await?;
            for i in 0u64.. {
                let tag = format!("c{cycle}-ctx-{i}");
                ctx.add_context_update(UpdateType::MESSAGE, json!({"tag": tag}), None)
                    .await?;
                // This context is the chat's only writer, so its position is the stored one.
                let seq = ctx.history_len() - 1;
                print_ack(format!("A {CONTEXT_CHAT} {seq} {tag}"))?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in 0..RECORD_WRITERS {
        let records = Arc::clone(&stores.records);
        let cycle = cycle.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in 0usize.. {
                let id = TaskId::new(format!("w{writer}-r{}", i % RECORDS_PER_WRITER))?;
                let tag = format!("c{cycle}-w{writer}-{i}");
                let mut record = TaskRecord::new(id.clone(), tag.clone(), TaskType::Write);
                record.output_summary = Some(tag.clone());
                let revision = records.put(record, None).await?;
                print_ack(format!("P {id} {revision} {tag}"))?;
            }
            anyhow::Ok(())
        }));
    }
    {
        let records = Arc::clone(&stores.records);
        let cycle = cycle.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in 0usize.. {
                let tag = format!("c{cycle}-batch-{i}");
                let batch = batch_ids()?
                    .into_iter()
                    .map(|id| PutRecord::upsert(TaskRecord::new(id, tag.clone(), TaskType::Write)))
                    .collect();
                let revisions = records.put_many(batch).await?;
                let revision = revisions.first().copied().unwrap_or_default();
                if revisions.iter().any(|r| *r != revision) {
                    bail!("one batch got different revisions: {revisions:?}");
                }
                print_ack(format!("B {revision} {tag}"))?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The records every batch writes.
fn batch_ids() -> anyhow::Result<Vec<TaskId>> {
    (0..BATCH_SIZE)
        .map(|k| Ok(TaskId::new(format!("batch-r{k}"))?))
        .collect()
}

/// Chat ids may contain spaces; the ack line is space-separated.
fn encode(chat: &str) -> String {
    chat.replace(' ', "%20")
}

fn decode(chat: &str) -> String {
    chat.replace("%20", " ")
}

async fn verify(url: &str, acks_path: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(acks_path).with_context(|| format!("reading {acks_path}"))?;
    let stores = taskctx::open(url)
        .await
        .context("reopening the store after the kill")?;
    let mut appends: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let mut puts: HashMap<String, (u64, String)> = HashMap::new();
    let mut append_count = 0usize;
    let mut put_count = 0usize;
    let mut batch_count = 0usize;
    let mut last_batch: (u64, String) = (0, String::new());
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["A", chat, seq, tag] => {
                appends
                    .entry(decode(chat))
                    .or_default()
                    .push((seq.parse()?, (*tag).to_owned()));
                append_count += 1;
            }
            ["P", id, revision, tag] => {
                let revision: u64 = revision.parse()?;
                let entry = puts.entry((*id).to_owned()).or_insert((0, String::new()));
                if revision > entry.0 {
                    *entry = (revision, (*tag).to_owned());
                }
                put_count += 1;
            }
            ["B", revision, tag] => {
                let revision: u64 = revision.parse()?;
                if revision > last_batch.0 {
                    last_batch = (revision, (*tag).to_owned());
                }
                batch_count += 1;
            }
            ["READY"] | [""] => {}
            // A line torn by the kill itself was never a complete acknowledgement.
            _ => {}
        }
    }
    for (chat, acked) in &appends {
        let history = stores.history.load(&ChatId::new(chat.as_str())?).await?;
        let tags: Vec<Option<&str>> = history
            .iter()
            .map(|u| u.data.get("tag").and_then(|t| t.as_str()))
            .collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for tag in tags.iter().flatten() {
            *seen.entry(tag).or_default() += 1;
        }
        if let Some((tag, n)) = seen.iter().find(|(_, n)| **n > 1) {
            bail!("chat `{chat}`: update {tag} is stored {n} times");
        }
        for (seq, tag) in acked {
            match tags.get(*seq as usize) {
                Some(Some(found)) if found == tag => {}
                Some(other) => bail!(
                    "chat `{chat}`: acknowledged {tag} at position {seq}, found {other:?} there"
                ),
                None => bail!(
                    "chat `{chat}`: acknowledged {tag} at position {seq} is lost (history has {} entries)",
                    history.len()
                ),
            }
        }
    }
    for (id, (revision, tag)) in &puts {
        let record = stores
            .records
            .get(&TaskId::new(id.as_str())?)
            .await?
            .with_context(|| format!("record {id} acknowledged at revision {revision} is lost"))?;
        if record.revision < *revision {
            bail!(
                "record {id}: acknowledged revision {revision}, store has {}",
                record.revision
            );
        }
        if record.revision == *revision && record.goal != *tag {
            bail!(
                "record {id} revision {revision}: acknowledged {tag}, store has {}",
                record.goal
            );
        }
    }
    // Every batch wrote the same records: after any kill they are all at one revision with one
    // goal, at or past the last acknowledged batch.
    let ids = batch_ids()?;
    let found = stores.records.get_many(&ids).await?;
    let present: Vec<(u64, &str)> = found
        .iter()
        .flatten()
        .map(|r| (r.revision, r.goal.as_str()))
        .collect();
    if let Some(first) = present.first() {
        if present.len() != ids.len() || present.iter().any(|p| p != first) {
            bail!("a batch is stored in part: (revision, goal) per record {present:?}");
        }
        let (revision, tag) = &last_batch;
        if first.0 < *revision {
            bail!(
                "batch acknowledged at revision {revision}, store has revision {}",
                first.0
            );
        }
        if first.0 == *revision && first.1 != tag {
            bail!(
                "batch revision {revision}: acknowledged {tag}, store has {}",
                first.1
            );
        }
    } else if last_batch.0 > 0 {
        bail!("batch acknowledged at revision {} is lost", last_batch.0);
    }
    println!("verified {append_count} appends, {put_count} puts and {batch_count} batches");
    Ok(())
}

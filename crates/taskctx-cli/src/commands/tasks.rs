//! `taskctx tasks …`: import, show, tree and delete task records.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde_json::json;
use taskctx::{PutRecord, RecordStore, RecordStoreExt, TaskId, TaskRecord};

use super::Env;
use crate::cli::{TasksCommand, TreeFormat};
use crate::failure::usage;
use crate::output::{outln, print_json, shorten, table};

/// Records are written in batches of this many; each batch is one atomic `put_many`.
const IMPORT_BATCH: usize = 1000;

pub(crate) async fn run(env: &Env, command: TasksCommand) -> anyhow::Result<()> {
    match command {
        TasksCommand::Import { file } => import(env, &file).await,
        TasksCommand::Show { id } => show(env, &parse_task(&id)?).await,
        TasksCommand::Tree { root, format } => {
            let root = root.as_deref().map(parse_task).transpose()?;
            tree(env, root, format).await
        }
        TasksCommand::Delete { id, subtree } => delete(env, &parse_task(&id)?, subtree).await,
    }
}

pub(crate) fn parse_task(id: &str) -> anyhow::Result<TaskId> {
    Ok(TaskId::new(id)?)
}

/// Reads task records from a JSON array or JSON lines; errors name the record and its line.
pub(crate) fn parse_records(path: &Path, text: &str) -> anyhow::Result<Vec<TaskRecord>> {
    let place = path.display();
    if text.trim_start().starts_with('[') {
        return serde_json::from_str::<Vec<TaskRecord>>(text)
            .map_err(|e| anyhow::anyhow!("{place}: not a JSON array of task records: {e}"));
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str::<TaskRecord>(line)
                .map_err(|e| anyhow::anyhow!("{place}:{}: not a task record: {e}", index + 1))
        })
        .collect()
}

async fn import(env: &Env, file: &Path) -> anyhow::Result<()> {
    let text = tokio::fs::read_to_string(file)
        .await
        .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let records = parse_records(file, &text)?;
    if records.is_empty() {
        bail!("{} holds no task records", file.display());
    }
    let mut first_seen: HashMap<&TaskId, usize> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        if let Some(earlier) = first_seen.insert(&record.task_id, index) {
            bail!(
                "{}: task `{}` appears twice (records {} and {}); nothing was imported",
                file.display(),
                record.task_id,
                earlier + 1,
                index + 1
            );
        }
    }
    let roots = records.iter().filter(|r| r.is_root()).count();
    let total = records.len();
    let stores = env.open().await?;
    let mut written = 0usize;
    let mut batch = Vec::with_capacity(IMPORT_BATCH.min(total));
    for record in records {
        batch.push(PutRecord::upsert(record));
        if batch.len() == IMPORT_BATCH {
            written += stores
                .records
                .put_many(std::mem::take(&mut batch))
                .await
                .with_context(|| format!("after {written} of {total} records were imported"))?
                .len();
        }
    }
    if !batch.is_empty() {
        written += stores
            .records
            .put_many(batch)
            .await
            .with_context(|| format!("after {written} of {total} records were imported"))?
            .len();
    }
    if env.json {
        print_json(&json!({"file": file, "imported": written, "roots": roots}))
    } else {
        outln!(
            "imported {written} task records ({roots} roots) from {}",
            file.display()
        );
        Ok(())
    }
}

async fn show(env: &Env, id: &TaskId) -> anyhow::Result<()> {
    let stores = env.open().await?;
    let record = stores.records.require(id).await?;
    if env.json {
        return print_json(&*record);
    }
    let mut t = table(["field", "value"]);
    let mut row = |field: &str, value: String| {
        t.add_row(vec![field.to_owned(), value]);
    };
    row("task_id", record.task_id.to_string());
    row("goal", record.goal.clone());
    row("task_type", record.task_type.to_string());
    row(
        "node_type",
        record.node_type.map(|n| n.to_string()).unwrap_or_default(),
    );
    row("status", record.status.to_string());
    row(
        "layer",
        record.layer.map(|l| l.to_string()).unwrap_or_default(),
    );
    row(
        "parent",
        record
            .parent_task_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    );
    let children: Vec<&str> = record.child_task_ids.iter().map(TaskId::as_str).collect();
    row("children (plan)", children.join(", "));
    row(
        "output",
        record
            .output_content
            .as_ref()
            .map(|o| shorten(&o.to_string(), 200))
            .unwrap_or_default(),
    );
    row(
        "output_summary",
        record.output_summary.clone().unwrap_or_default(),
    );
    row("error", record.error_message.clone().unwrap_or_default());
    row("updated", record.updated_at.to_rfc3339());
    row("revision", record.revision.to_string());
    outln!("{t}");
    Ok(())
}

/// One node of a drawn tree: its depth and record, in drawing order.
pub(crate) struct Node {
    depth: usize,
    record: Arc<TaskRecord>,
    /// Whether it is the last child of its parent (for the text connectors).
    last: bool,
}

/// Walks the tree depth-first in plan order; a record reached twice (a cycle in bad data) is
/// drawn once.
pub(crate) async fn walk(
    records: &dyn RecordStore,
    roots: Vec<Arc<TaskRecord>>,
) -> anyhow::Result<Vec<Node>> {
    let mut seen = BTreeSet::new();
    let mut nodes = Vec::new();
    let count = roots.len();
    let mut stack: Vec<(usize, Arc<TaskRecord>, bool)> = roots
        .into_iter()
        .enumerate()
        .rev()
        .map(|(i, r)| (0, r, i + 1 == count))
        .collect();
    while let Some((depth, record, last)) = stack.pop() {
        if !seen.insert(record.task_id.clone()) {
            continue;
        }
        let children = records.children(&record.task_id).await?;
        let n = children.len();
        for (i, child) in children.into_iter().enumerate().rev() {
            stack.push((depth + 1, child, i + 1 == n));
        }
        nodes.push(Node {
            depth,
            record,
            last,
        });
    }
    Ok(nodes)
}

async fn tree(env: &Env, root: Option<TaskId>, format: TreeFormat) -> anyhow::Result<()> {
    let stores = env.open().await?;
    let roots = match &root {
        Some(id) => vec![stores.records.require(id).await?],
        None => stores.records.roots().await?,
    };
    if roots.is_empty() {
        bail!("no task records in {}", env.store_url);
    }
    let nodes = walk(&*stores.records, roots).await?;
    if env.json {
        let out: Vec<_> = nodes
            .iter()
            .map(|n| {
                json!({
                    "depth": n.depth,
                    "task_id": n.record.task_id,
                    "parent_task_id": n.record.parent_task_id,
                    "status": n.record.status,
                    "task_type": n.record.task_type,
                    "goal": n.record.goal,
                })
            })
            .collect();
        return print_json(&out);
    }
    let text = match format {
        TreeFormat::Text => render_text(&nodes),
        TreeFormat::Mermaid => render_mermaid(&nodes),
        TreeFormat::Dot => render_dot(&nodes),
    };
    outln!("{}", text.trim_end());
    Ok(())
}

pub(crate) fn render_text(nodes: &[Node]) -> String {
    let mut out = String::new();
    // Whether the ancestor at each depth still has siblings below, to draw the rails.
    let mut open: Vec<bool> = Vec::new();
    for node in nodes {
        open.truncate(node.depth);
        let mut prefix = String::new();
        for (depth, more) in open.iter().enumerate() {
            if depth == 0 {
                continue;
            }
            prefix.push_str(if *more { "│   " } else { "    " });
        }
        if node.depth > 0 {
            prefix.push_str(if node.last {
                "└── "
            } else {
                "├── "
            });
        }
        let r = &node.record;
        let _ = writeln!(
            out,
            "{prefix}{}  [{}] {}  {}",
            r.task_id,
            r.status,
            r.task_type,
            shorten(&r.goal, 70)
        );
        open.push(!node.last);
    }
    out
}

fn mermaid_label(text: &str) -> String {
    text.replace('"', "#quot;")
}

fn render_mermaid(nodes: &[Node]) -> String {
    let index: HashMap<&TaskId, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (&n.record.task_id, i))
        .collect();
    let mut out = String::from("graph TD\n");
    for (i, node) in nodes.iter().enumerate() {
        let r = &node.record;
        let _ = writeln!(
            out,
            "    n{i}[\"{}<br/>{} · {}\"]",
            mermaid_label(r.task_id.as_str()),
            r.status,
            mermaid_label(&shorten(&r.goal, 60))
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        if let Some(parent) = node
            .record
            .parent_task_id
            .as_ref()
            .and_then(|p| index.get(p))
        {
            let _ = writeln!(out, "    n{parent} --> n{i}");
        }
    }
    out
}

fn dot_label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn render_dot(nodes: &[Node]) -> String {
    let mut out = String::from("digraph tasks {\n    rankdir=TB;\n    node [shape=box];\n");
    for node in nodes {
        let r = &node.record;
        let _ = writeln!(
            out,
            "    \"{}\" [label=\"{}\\n{} · {}\"];",
            dot_label(r.task_id.as_str()),
            dot_label(r.task_id.as_str()),
            r.status,
            dot_label(&shorten(&r.goal, 60))
        );
    }
    let drawn: BTreeSet<&TaskId> = nodes.iter().map(|n| &n.record.task_id).collect();
    for node in nodes {
        if let Some(parent) = node
            .record
            .parent_task_id
            .as_ref()
            .filter(|p| drawn.contains(p))
        {
            let _ = writeln!(
                out,
                "    \"{}\" -> \"{}\";",
                dot_label(parent.as_str()),
                dot_label(node.record.task_id.as_str())
            );
        }
    }
    out.push_str("}\n");
    out
}

async fn delete(env: &Env, id: &TaskId, subtree: bool) -> anyhow::Result<()> {
    let stores = env.open().await?;
    let removed = if subtree {
        stores.records.delete_subtree(id).await?
    } else {
        u64::from(stores.records.delete(id).await?)
    };
    if removed == 0 {
        bail!("task `{id}` not found in {}", env.store_url);
    }
    if env.json {
        print_json(&json!({"task_id": id, "deleted": removed}))
    } else {
        outln!("deleted {removed} task record(s)");
        Ok(())
    }
}

//! Reading the sources of R6.1 from the store: the only place the builder does I/O.
//!
//! Every read goes through a [`ReadLog`], which keeps the first answer for each record (a build
//! sees one version of each) and remembers it, so the built-context cache can later re-check
//! exactly those records.

use std::borrow::Borrow;
use std::future::{Future, poll_fn};
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::{Arc, LazyLock};
use std::task::Poll;

use regex::Regex;
use taskctx_domain::{
    DEPENDENCY_IDS, DEPENDS_ON_INDICES, NodeType, TaskId, TaskRecord, TaskStatus, Value,
    is_generic_summary, json_kind,
};
use taskctx_store::{RecordStore, StoreResult};

use super::memo::{FastMap, FastSet};
use super::types::{BuildWarning, ContentSelection, SourceKind, WarningKind};

/// The parent walk stops after this many hops (SPEC R6.1.1).
pub(crate) const MAX_ANCESTOR_HOPS: usize = 20;

/// A record, hashed and compared by its id, so that a set of records can be searched by id
/// (`set.contains(id.as_str())`) without copying any id into the set.
#[derive(Debug, Clone)]
pub(crate) struct ById(pub(crate) Arc<TaskRecord>);

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, which `Borrow<str>` requires.
        self.0.task_id.as_str().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.task_id == other.0.task_id
    }
}

impl Eq for ById {}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.0.task_id.as_str()
    }
}

/// Records by id (see [`ById`]).
pub(crate) type RecordSet = FastSet<ById>;

/// Every record and children list one build read.
#[derive(Debug, Default)]
pub(crate) struct ReadLog {
    /// Records read under their own id (every read, from a store that keeps its contract).
    found: RecordSet,
    /// Ids read without a record (or, from a store that breaks its contract, with a record of
    /// another id).
    others: FastMap<TaskId, Option<Arc<TaskRecord>>>,
    pub(crate) children: Vec<(TaskId, Vec<Arc<TaskRecord>>)>,
    /// `None`: the similarity index was not used; `Some(g)`: used at generation `g`.
    pub(crate) similarity: Option<Option<u64>>,
}

impl ReadLog {
    /// A log with room for `reads` records (a typical build reads 10–30).
    pub(crate) fn with_capacity(reads: usize) -> Self {
        Self {
            found: RecordSet::with_capacity_and_hasher(reads, Default::default()),
            ..Self::default()
        }
    }

    /// Remembers what reading `id` gave, unless `id` was read before (the first read wins).
    pub(crate) fn remember(&mut self, id: &TaskId, record: Option<Arc<TaskRecord>>) {
        match record {
            Some(record) if record.task_id == *id => {
                if self.others.is_empty() || !self.others.contains_key(id) {
                    self.found.insert(ById(record));
                }
            }
            record => {
                if !self.found.contains(id.as_str()) && !self.others.contains_key(id) {
                    self.others.insert(id.clone(), record);
                }
            }
        }
    }

    fn is_known(&self, id: &TaskId) -> bool {
        self.found.contains(id.as_str()) || self.others.contains_key(id)
    }

    fn known(&self, id: &TaskId) -> Option<Option<Arc<TaskRecord>>> {
        if let Some(found) = self.found.get(id.as_str()) {
            return Some(Some(Arc::clone(&found.0)));
        }
        self.others.get(id).cloned()
    }

    /// How many reads the log holds.
    pub(crate) fn len(&self) -> usize {
        self.found.len() + self.others.len()
    }

    /// Every read: the id and what it gave.
    pub(crate) fn reads(self) -> impl Iterator<Item = (TaskId, Option<Arc<TaskRecord>>)> {
        self.found
            .into_iter()
            .map(|r| (r.0.task_id.clone(), Some(r.0)))
            .chain(self.others)
    }

    pub(crate) async fn get(
        &mut self,
        store: &dyn RecordStore,
        id: &TaskId,
    ) -> StoreResult<Option<Arc<TaskRecord>>> {
        if let Some(known) = self.known(id) {
            return Ok(known);
        }
        let record = store.get(id).await?;
        self.remember(id, record.clone());
        Ok(record)
    }

    /// The records of `ids`, reading the unknown ones in one batch.
    pub(crate) async fn get_many(
        &mut self,
        store: &dyn RecordStore,
        ids: &[TaskId],
    ) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
        // The usual cases: none or few of them read yet (a plan that lists the current task),
        // no id twice. The store reads `ids` as they are: reading a few known records again
        // costs less than copying every other id. The first answer for each id is kept.
        let known = ids.iter().filter(|id| self.is_known(id)).count();
        if known * 4 <= ids.len() && !has_duplicates(ids) {
            let found = store.get_many(ids).await?;
            if known == 0 && found.len() == ids.len() {
                for (id, record) in ids.iter().zip(&found) {
                    self.remember(id, record.clone());
                }
                return Ok(found);
            }
            for (id, record) in ids.iter().zip(found) {
                self.remember(id, record);
            }
            return Ok(ids.iter().map(|id| self.known(id).flatten()).collect());
        }
        let mut missing: Vec<TaskId> = Vec::new();
        let mut seen: FastSet<&TaskId> = FastSet::default();
        for id in ids {
            if !self.is_known(id) && seen.insert(id) {
                missing.push(id.clone());
            }
        }
        if !missing.is_empty() {
            let found = store.get_many(&missing).await?;
            for (id, record) in missing.iter().zip(found) {
                self.remember(id, record);
            }
        }
        Ok(ids.iter().map(|id| self.known(id).flatten()).collect())
    }

    pub(crate) async fn children(
        &mut self,
        store: &dyn RecordStore,
        parent: &TaskId,
    ) -> StoreResult<Vec<Arc<TaskRecord>>> {
        let children = store.children(parent).await?;
        for child in &children {
            self.remember(&child.task_id, Some(Arc::clone(child)));
        }
        self.children.push((parent.clone(), children.clone()));
        Ok(children)
    }
}

/// Whether an id occurs twice in `ids` (a plan that lists a sub-task twice).
fn has_duplicates(ids: &[TaskId]) -> bool {
    // Comparing pairs beats hashing for the short lists of a plan.
    if ids.len() <= 16 {
        return ids.iter().enumerate().any(|(i, id)| ids[..i].contains(id));
    }
    let mut seen: FastSet<&TaskId> = FastSet::default();
    !ids.iter().all(|id| seen.insert(id))
}

/// Whether two reads saw the same record: the same allocation, or the same revision and content
/// (revisions alone restart at 1 when a record is deleted and created again).
pub(crate) fn same_record(a: Option<&Arc<TaskRecord>>, b: Option<&Arc<TaskRecord>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || (a.revision == b.revision && **a == **b),
        _ => false,
    }
}

/// The ancestors of a task, nearest first, and what went wrong on the way.
pub(crate) struct Ancestry {
    pub(crate) chain: Vec<Arc<TaskRecord>>,
    /// The walk reached a record without a parent.
    pub(crate) reached_root: bool,
}

/// Walks up from `task` at most `limit` hops, with cycle detection (reference B16).
pub(crate) async fn ancestors(
    store: &dyn RecordStore,
    log: &mut ReadLog,
    task: &TaskRecord,
    limit: usize,
    warnings: &mut Vec<BuildWarning>,
    redact: &(dyn Fn(&str) -> String + Sync),
) -> StoreResult<Ancestry> {
    let mut chain: Vec<Arc<TaskRecord>> = Vec::new();
    // The record whose parent is read next (the ids are borrowed from it, not copied).
    let mut last: Option<Arc<TaskRecord>> = None;
    loop {
        let next = match &last {
            Some(record) => record.parent_task_id.as_ref(),
            None => task.parent_task_id.as_ref(),
        };
        let Some(id) = next else {
            break;
        };
        if chain.len() == limit {
            if limit == MAX_ANCESTOR_HOPS {
                warnings.push(BuildWarning::new(
                    WarningKind::DepthLimit,
                    Some(redact(id.as_str())),
                    format!(
                        "the parent chain is longer than {MAX_ANCESTOR_HOPS} hops; ancestors above \
                         `{}` are not read",
                        redact(chain.last().map_or("", |r| r.task_id.as_str()))
                    ),
                ));
            }
            return Ok(Ancestry {
                chain,
                reached_root: false,
            });
        }
        // A chain is at most 20 long: a scan beats a hash set here.
        if *id == task.task_id || chain.iter().any(|r| r.task_id == *id) {
            warnings.push(BuildWarning::new(
                WarningKind::ParentCycle,
                Some(redact(id.as_str())),
                format!(
                    "the parent chain loops back to `{}`; the walk stops there",
                    redact(id.as_str())
                ),
            ));
            return Ok(Ancestry {
                chain,
                reached_root: false,
            });
        }
        match log.get(store, id).await? {
            None => {
                warnings.push(BuildWarning::new(
                    WarningKind::MissingRecord,
                    Some(redact(id.as_str())),
                    format!("ancestor `{}` is not in the store", redact(id.as_str())),
                ));
                return Ok(Ancestry {
                    chain,
                    reached_root: false,
                });
            }
            Some(record) => {
                chain.push(Arc::clone(&record));
                last = Some(record);
            }
        }
    }
    Ok(Ancestry {
        chain,
        reached_root: true,
    })
}

/// What an item's content is made from.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// A text of a record, prepared (redacted, counted) and memoised per revision.
    Record {
        record: Arc<TaskRecord>,
        primary: Primary,
    },
    /// Text from the caller or a fixed note, already redacted.
    Text {
        text: String,
        selection: ContentSelection,
    },
}

/// Which text of a record an item shows first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Primary {
    Output,
    Summary,
    Error,
}

/// One possible item, before the budget.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) kind: SourceKind,
    /// The id shown for a text body (a pseudo id, or a record's redacted id); empty for a record
    /// body, which shows its record's redacted id.
    pub(crate) source_id: String,
    /// For non-record bodies: the label shown as `source_task_goal`.
    pub(crate) label_goal: Option<String>,
    /// The default content type when the record has no `output_type_description`.
    pub(crate) default_label: &'static str,
    /// A label that wins over the record's own (aggregation statuses).
    pub(crate) forced_label: Option<String>,
    pub(crate) status: Option<TaskStatus>,
    pub(crate) relevance: f64,
    pub(crate) pinned: bool,
    /// Gathering order: ties in relevance are broken by it; it is also the order in a section.
    pub(crate) order: usize,
    pub(crate) body: Body,
}

/// The primary text of a DONE record: its output, else its specific summary.
pub(crate) fn primary_of(record: &TaskRecord) -> Option<Primary> {
    if record.output_content.as_ref().is_some_and(|v| !v.is_null()) {
        Some(Primary::Output)
    } else if record
        .output_summary
        .as_deref()
        .is_some_and(|s| !is_generic_summary(s))
    {
        Some(Primary::Summary)
    } else {
        None
    }
}

/// A candidate for a DONE record.
pub(crate) fn record_candidate(
    kind: SourceKind,
    record: &Arc<TaskRecord>,
    relevance: f64,
    pinned: bool,
    default_label: &'static str,
    order: usize,
) -> Option<Candidate> {
    let primary = primary_of(record)?;
    Some(Candidate {
        kind,
        source_id: String::new(),
        label_goal: None,
        default_label,
        forced_label: None,
        status: Some(record.status),
        relevance,
        pinned,
        order,
        body: Body::Record {
            record: Arc::clone(record),
            primary,
        },
    })
}

/// The label of a parent's output: ROMA's `parental_plan_or_outline` for planned parents, judged
/// by the node type (reference B1: ROMA tested the task type, which is never PLAN).
pub(crate) fn parent_output_label(parent: &TaskRecord) -> &'static str {
    if parent.node_type == Some(NodeType::Plan) || parent.status == TaskStatus::PlanDone {
        "parental_plan_or_outline"
    } else {
        "parent_output"
    }
}

/// The declared dependencies of `task`, in order: `depends_on_indices` resolved through the
/// parent's plan, then `dependency_ids`. Invalid entries become warnings, never wrapped indices
/// (reference B4).
pub(crate) fn declared_dependencies(
    task: &TaskRecord,
    parent: Option<&TaskRecord>,
    position: Option<usize>,
    warnings: &mut Vec<BuildWarning>,
    redact: &(dyn Fn(&str) -> String + Sync),
) -> Vec<TaskId> {
    let mut out: Vec<TaskId> = Vec::new();
    // The task's id is redacted only for a warning: most plans have none.
    let warn = |warnings: &mut Vec<BuildWarning>, message: String| {
        warnings.push(BuildWarning::new(
            WarningKind::InvalidDependency,
            Some(redact(task.task_id.as_str())),
            message,
        ));
    };
    match task.aux_data.get(DEPENDS_ON_INDICES) {
        None | Some(Value::Null) => {}
        Some(Value::Array(indices)) if indices.is_empty() => {}
        Some(Value::Array(indices)) => {
            let plan = parent.map(|p| p.child_task_ids.as_slice());
            for raw in indices {
                let Some(index) = raw.as_i64() else {
                    warn(
                        warnings,
                        format!("dependency index {raw} is not an integer; ignored"),
                    );
                    continue;
                };
                if index < 0 {
                    warn(
                        warnings,
                        format!("dependency index {index} is negative; ignored (never wrapped)"),
                    );
                    continue;
                }
                let Some(plan) = plan else {
                    warn(
                        warnings,
                        format!("dependency index {index} cannot be resolved: no parent plan"),
                    );
                    continue;
                };
                let index = index as usize;
                let Some(id) = plan.get(index) else {
                    warn(
                        warnings,
                        format!(
                            "dependency index {index} is out of range: the parent plan has {} \
                             sub-tasks",
                            plan.len()
                        ),
                    );
                    continue;
                };
                if id == &task.task_id || position == Some(index) {
                    warn(
                        warnings,
                        format!("dependency index {index} refers to the task itself; ignored"),
                    );
                    continue;
                }
                if position.is_some_and(|p| index > p) {
                    warn(
                        warnings,
                        format!(
                            "dependency index {index} refers to a later sibling (`{}`); check the \
                             plan's indices",
                            redact(id.as_str())
                        ),
                    );
                }
                if !out.contains(id) {
                    out.push(id.clone());
                }
            }
        }
        Some(other) => warn(
            warnings,
            format!(
                "`{DEPENDS_ON_INDICES}` is not a list ({}); ignored",
                json_kind(other)
            ),
        ),
    }
    match task.aux_data.get(DEPENDENCY_IDS) {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids)) => {
            for raw in ids {
                let id = match raw {
                    Value::String(s) => TaskId::new(s.as_str()),
                    _ => {
                        warn(
                            warnings,
                            format!("dependency id {} is not a string; ignored", json_kind(raw)),
                        );
                        continue;
                    }
                };
                match id {
                    Ok(id) if id == task.task_id => warn(
                        warnings,
                        "dependency id refers to the task itself; ignored".to_string(),
                    ),
                    Ok(id) => {
                        if !out.contains(&id) {
                            out.push(id);
                        }
                    }
                    Err(e) => warn(
                        warnings,
                        format!("dependency id is not valid ({e}); ignored"),
                    ),
                }
            }
        }
        Some(other) => warn(
            warnings,
            format!(
                "`{DEPENDENCY_IDS}` is not a list ({}); ignored",
                json_kind(other)
            ),
        ),
    }
    out
}

static GOAL_REFERENCE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"`([^`\s](?:[^`\r\n]{0,254}[^`\s])?)`").ok());
static ROMA_ID: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^root(\.\d+)*$").ok());

/// Backticked strings in `goal` that are valid task ids, first occurrences in order
/// (R6.1.5). Any id spelling is accepted, not only ROMA's `root.1.2`: taskctx ids are free-form.
pub(crate) fn goal_references(goal: &str) -> Vec<TaskId> {
    let Some(pattern) = GOAL_REFERENCE.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<TaskId> = Vec::new();
    for caps in pattern.captures_iter(goal) {
        if let Some(m) = caps.get(1)
            && let Ok(id) = TaskId::new(m.as_str())
            && !out.contains(&id)
        {
            out.push(id);
        }
    }
    out
}

/// Whether `id` has ROMA's id shape (a miss is then worth a warning, not just code in backticks).
pub(crate) fn looks_like_roma_id(id: &str) -> bool {
    ROMA_ID.as_ref().is_some_and(|r| r.is_match(id))
}

/// Runs `future`, turning a panic while polling it into an error carrying the panic message, so
/// a bug in a store, strategy or collaborator degrades one context instead of unwinding through
/// the caller (SPEC R6.7). The future is polled where it stands, without a heap allocation.
pub(crate) async fn catch_unwind<F: Future>(future: F) -> Result<F::Output, String> {
    let mut future = pin!(future);
    poll_fn(
        |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        },
    )
    .await
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use taskctx_domain::TaskType;

    fn id(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }

    #[test]
    fn the_read_log_reads_each_id_once_and_answers_in_the_order_asked() {
        use taskctx_store::RecordStoreExt as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = taskctx_store_memory::MemoryRecordStore::new();
            for s in ["a", "b"] {
                store
                    .create(TaskRecord::new(id(s), "g", TaskType::Think))
                    .await
                    .unwrap();
            }
            let names = |got: Vec<Option<Arc<TaskRecord>>>| -> Vec<Option<String>> {
                got.iter()
                    .map(|r| r.as_ref().map(|r| r.task_id.as_str().to_string()))
                    .collect()
            };
            let mut log = ReadLog::default();
            let got = log.get_many(&store, &[id("a"), id("x")]).await.unwrap();
            assert_eq!(names(got), [Some("a".into()), None]);
            // Known ids, an id twice and a new one.
            let got = log
                .get_many(&store, &[id("b"), id("a"), id("b"), id("x")])
                .await
                .unwrap();
            assert_eq!(
                names(got),
                [Some("b".into()), Some("a".into()), Some("b".into()), None]
            );
            assert!(log.get(&store, &id("x")).await.unwrap().is_none());
            assert_eq!(log.len(), 3);
            let mut reads: Vec<(String, bool)> = log
                .reads()
                .map(|(id, r)| (id.into_string(), r.is_some()))
                .collect();
            reads.sort();
            assert_eq!(
                reads,
                [("a".into(), true), ("b".into(), true), ("x".into(), false)]
            );
        });
        assert!(has_duplicates(&[id("a"), id("b"), id("a")]));
        let many: Vec<TaskId> = (0..40).map(|i| id(&format!("t{i}"))).collect();
        assert!(!has_duplicates(&many));
        assert!(has_duplicates(&[many.as_slice(), &[id("t3")]].concat()));
    }

    #[test]
    fn goal_references_accept_any_valid_id_in_backticks() {
        let refs = goal_references("Use `root.1.2` and `notes/a b` but not `` or `root.1.2` again");
        assert_eq!(refs, vec![id("root.1.2"), id("notes/a b")]);
        assert!(looks_like_roma_id("root.3.1"));
        assert!(!looks_like_roma_id("cargo build"));
    }

    #[test]
    fn dependency_indices_are_validated_not_wrapped() {
        let mut parent = TaskRecord::new(id("p"), "p", TaskType::Think);
        parent.child_task_ids = vec![id("p.1"), id("p.2"), id("p.3")];
        let mut task = TaskRecord::new(id("p.2"), "t", TaskType::Write);
        task.aux_data.insert(
            DEPENDS_ON_INDICES.into(),
            json!([0, -1, 7, 1, 1.5, "0", 2, 0]),
        );
        task.aux_data
            .insert(DEPENDENCY_IDS.into(), json!(["x", "p.2", 3, "p.1"]));
        let mut warnings = Vec::new();
        let deps =
            declared_dependencies(&task, Some(&parent), Some(1), &mut warnings, &|s| s.into());
        assert_eq!(deps, vec![id("p.1"), id("p.3"), id("x")]);
        let messages: Vec<&str> = warnings.iter().map(|w| w.message.as_str()).collect();
        assert!(
            messages.iter().any(|m| m.contains("-1 is negative")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("7 is out of range")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("index 1 refers to the task itself"))
        );
        assert!(messages.iter().any(|m| m.contains("1.5 is not an integer")));
        assert!(
            messages
                .iter()
                .any(|m| m.contains("\"0\" is not an integer"))
        );
        assert!(messages.iter().any(|m| m.contains("later sibling")));
        assert!(
            messages
                .iter()
                .any(|m| m.contains("dependency id refers to the task itself"))
        );
        assert!(messages.iter().any(
            |m| m.contains("a number is not a string") || m.contains("dependency id a number")
        ));
    }
}

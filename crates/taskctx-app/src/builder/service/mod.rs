//! `ContextBuilderService`: reads the sources a strategy asks for, selects and budgets content,
//! redacts it, renders the layout, and caches the result until any record it read changes.
//!
//! This file holds the service, its public API, the cache and the per-record memo; `sources`
//! gathers candidates from the store (the only I/O), `assemble` budgets and renders them, and
//! `counts` remembers the token counts of framing texts.

mod assemble;
mod counts;
mod sources;

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use taskctx_domain::{TaskId, TaskRecord, TaskStatus, TaskType, TokenCounter, is_generic_summary};
use taskctx_store::{RecordStore, StoreResult};
use tracing::Instrument as _;

use super::budget::{self, BlockSpec, Decision, Group, Limits};
use super::error::BuildError;
use super::format::{
    self, PARAGRAPH_SEPARATOR, SECTION_ORDER, ancestor_framing, current_framing, hierarchy_heading,
    item_framing, objective_prefix, section_heading, section_rank, status_note,
};
use super::gather::{
    self, Body, ById, Candidate, MAX_ANCESTOR_HOPS, Primary, ReadLog, RecordSet, catch_unwind,
    same_record,
};
use super::memo::{FastMap, FastSet, Memo, MemoCounter, RecentCounts};
use super::metrics::{Metrics, MetricsSnapshot};
use super::options::BuilderOptions;
use super::redact::{Redactor, RuleRedactor};
use super::render::{self, extract_output, marked_compressed, render_plan};
use super::select::{Pick, pick, pick_cost};
use super::similarity::{Bm25Index, SimilarityIndex};
use super::strategy::{
    AggregationStrategy, AtomizationStrategy, ContextStrategy, DefaultStrategy, ExecutionStrategy,
    ModificationStrategy, PlanningStrategy, Source, SourcePlan,
};
use super::summarize::{ExtractiveSummarizer, Summarizer, SummaryRequest, reduce_head_tail};
use super::types::{
    AgentTaskInput, BuildWarning, ContentSelection, ContextItem, ContextRequest, ContextType,
    HierarchyEntry, Layout, OmitAction, OmitReason, OmittedItem, SourceKind, WarningKind,
};
use crate::tokens::default_token_counter;
use counts::{RecordCounts, Shape, ShapeCounts};

/// Goals and objectives are shortened to no fewer tokens than this before being dropped.
const MIN_HEADER_TOKENS: usize = 8;
/// Reductions memoised per record (one per distinct budget).
const REDUCTIONS_PER_RECORD: usize = 8;
/// Relevance of each source (SPEC R6.1).
const RELEVANCE_PINNED: f64 = 1.0;
const RELEVANCE_GOAL_REFERENCE: f64 = 0.9;
const RELEVANCE_PRIOR_SIBLING: f64 = 0.8;
const RELEVANCE_PARENT_OUTPUT: f64 = 0.7;
const RELEVANCE_ADDITIONAL: f64 = 0.6;
const RELEVANCE_SIMILAR_SCALE: f64 = 0.6;
const RELEVANCE_LATER_SIBLING: f64 = 0.5;

/// A counted text.
#[derive(Debug, Clone)]
struct Text {
    text: Arc<str>,
    tokens: usize,
}

impl Text {
    /// The text as an owned `String` (one copy, without `to_string`'s formatting machinery).
    fn to_owned_text(&self) -> String {
        String::from(&*self.text)
    }
}

/// A record's texts, redacted and counted once per revision (texts computed on first use).
struct Prepared {
    record: Arc<TaskRecord>,
    id: String,
    goal: String,
    label: Option<String>,
    output: OnceLock<Option<Text>>,
    summary: OnceLock<Option<Text>>,
    error: OnceLock<Option<Text>>,
    objective: OnceLock<Option<Text>>,
    reductions: Mutex<Vec<(Primary, usize, Option<Text>)>>,
    counts: RecordCounts,
}

/// A built context and everything needed to prove it is still current.
struct CacheEntry {
    result: AgentTaskInput,
    ids: Vec<TaskId>,
    records: Vec<Option<Arc<TaskRecord>>>,
    children: Vec<(TaskId, Vec<Arc<TaskRecord>>)>,
    similarity: Option<u64>,
}

/// Builds agent contexts from a [`RecordStore`] (SPEC §6).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use taskctx_app::builder::{ContextBuilderService, ContextRequest, ContextType};
/// use taskctx_domain::{TaskId, TaskRecord, TaskType};
/// use taskctx_store::{RecordStore, RecordStoreExt};
/// use taskctx_store_memory::MemoryRecordStore;
///
/// let store: Arc<dyn RecordStore> = Arc::new(MemoryRecordStore::new());
/// let id = TaskId::new("root").unwrap();
/// store.create(TaskRecord::new(id.clone(), "Write a report", TaskType::Write)).await.unwrap();
///
/// let service = ContextBuilderService::new(Arc::clone(&store));
/// let request = ContextRequest::new(id, ContextType::Execution).with_budget_tokens(500);
/// let context = service.build(request).await.unwrap();
/// assert!(context.formatted.contains("Goal: Write a report"));
/// assert!(context.token_count <= 500);
/// let json = serde_json::to_string(&context).unwrap();
/// # let _ = json;
/// # });
/// ```
pub struct ContextBuilderService {
    store: Arc<dyn RecordStore>,
    counter: MemoCounter,
    summarizer: Arc<dyn Summarizer>,
    redactor: Arc<dyn Redactor>,
    similarity: Arc<dyn SimilarityIndex>,
    strategies: Vec<Arc<dyn ContextStrategy>>,
    options: BuilderOptions,
    prepared: Memo<TaskId, Arc<Prepared>>,
    shapes: ShapeCounts,
    /// Counts of the final texts last built per task.
    finals: RecentCounts<TaskId>,
    cache: Memo<ContextRequest, Arc<CacheEntry>>,
    metrics: Metrics,
}

impl fmt::Debug for ContextBuilderService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextBuilderService")
            .field("store", &self.store)
            .field("counter", &self.counter)
            .field("summarizer", &self.summarizer.name())
            .field("redactor", &self.redactor)
            .field("similarity", &self.similarity.name())
            .field("options", &self.options)
            .finish()
    }
}

/// Configures a [`ContextBuilderService`]; every collaborator has a default.
pub struct ContextBuilderServiceBuilder {
    store: Arc<dyn RecordStore>,
    options: BuilderOptions,
    counter: Option<Arc<dyn TokenCounter>>,
    summarizer: Option<Arc<dyn Summarizer>>,
    redactor: Option<Arc<dyn Redactor>>,
    similarity: Option<Arc<dyn SimilarityIndex>>,
    strategies: Vec<Arc<dyn ContextStrategy>>,
}

impl fmt::Debug for ContextBuilderServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextBuilderServiceBuilder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ContextBuilderServiceBuilder {
    /// Replaces the options (defaults: [`BuilderOptions::default`]).
    pub fn options(mut self, options: BuilderOptions) -> Self {
        self.options = options;
        self
    }

    /// Replaces the token counter (default: BPE `o200k_base`).
    pub fn token_counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.counter = Some(counter);
        self
    }

    /// Replaces the summariser (default: [`ExtractiveSummarizer`]).
    pub fn summarizer(mut self, summarizer: Arc<dyn Summarizer>) -> Self {
        self.summarizer = Some(summarizer);
        self
    }

    /// Replaces the redactor (default: [`RuleRedactor::default`]).
    pub fn redactor(mut self, redactor: Arc<dyn Redactor>) -> Self {
        self.redactor = Some(redactor);
        self
    }

    /// Replaces the similarity index (default: an empty [`Bm25Index`]; see its lifecycle).
    pub fn similarity_index(mut self, index: Arc<dyn SimilarityIndex>) -> Self {
        self.similarity = Some(index);
        self
    }

    /// Replaces the strategy for `strategy.context_type()`.
    pub fn strategy(mut self, strategy: Arc<dyn ContextStrategy>) -> Self {
        self.strategies.push(strategy);
        self
    }

    /// The service.
    pub fn build(self) -> ContextBuilderService {
        let mut strategies: Vec<Arc<dyn ContextStrategy>> = vec![
            Arc::new(DefaultStrategy),
            Arc::new(PlanningStrategy),
            Arc::new(ExecutionStrategy),
            Arc::new(AggregationStrategy),
            Arc::new(AtomizationStrategy),
            Arc::new(ModificationStrategy),
        ];
        for strategy in self.strategies {
            let index = strategy.context_type().index();
            strategies[index] = strategy;
        }
        let counter = self.counter.unwrap_or_else(default_token_counter);
        let memo_bytes = self.options.memo_bytes;
        ContextBuilderService {
            store: self.store,
            counter: MemoCounter::new(counter, memo_bytes / 8),
            summarizer: self
                .summarizer
                .unwrap_or_else(|| Arc::new(ExtractiveSummarizer)),
            redactor: self
                .redactor
                .unwrap_or_else(|| Arc::new(RuleRedactor::default())),
            similarity: self
                .similarity
                .unwrap_or_else(|| Arc::new(Bm25Index::default())),
            strategies,
            prepared: Memo::new(16_384, memo_bytes),
            shapes: ShapeCounts::default(),
            finals: RecentCounts::new(4096, memo_bytes / 8),
            cache: Memo::new(self.options.cache_entries, memo_bytes / 2),
            options: self.options,
            metrics: Metrics::default(),
        }
    }
}

/// Everything the budget and the layout need, gathered from the store.
struct Assembly {
    context_type: ContextType,
    layout: Layout,
    task_type: TaskType,
    current: Arc<Prepared>,
    objective: Option<Text>,
    /// Ancestors to render, nearest first, with whether to offer their summary.
    ancestors: Vec<Arc<Prepared>>,
    /// Ancestors above `ancestors` that are not rendered.
    hidden_ancestors: usize,
    candidates: Vec<Candidate>,
    budget: usize,
    max_items: Option<usize>,
}

/// One block of the header, for the packer and then the text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HeaderPart {
    Current,
    Objective,
    Ancestor(usize),
}

impl ContextBuilderService {
    /// A service over `store` with every default (SPEC §6): BPE `o200k_base` counting, the
    /// default redaction rules, the extractive summariser, an empty BM25 index, the cache on.
    pub fn new(store: Arc<dyn RecordStore>) -> Self {
        Self::builder(store).build()
    }

    /// Configures a service over `store`.
    pub fn builder(store: Arc<dyn RecordStore>) -> ContextBuilderServiceBuilder {
        ContextBuilderServiceBuilder {
            store,
            options: BuilderOptions::default(),
            counter: None,
            summarizer: None,
            redactor: None,
            similarity: None,
            strategies: Vec::new(),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &BuilderOptions {
        &self.options
    }

    /// The counters so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// The similarity index, to keep it current (see its module docs).
    pub fn similarity_index(&self) -> &Arc<dyn SimilarityIndex> {
        &self.similarity
    }

    /// Tells the similarity index about a stored record (DONE: indexed; otherwise removed).
    /// Call it after every write for the index to stay current.
    pub fn index_record(&self, record: &TaskRecord) {
        self.similarity.upsert(record);
    }

    /// Tells the similarity index that a record was deleted.
    pub fn forget_record(&self, task_id: &TaskId) {
        self.similarity.remove(task_id);
    }

    /// Rebuilds the similarity index from every DONE record in the store (one scan; call it at
    /// start-up, not per build). Returns how many records are indexed.
    pub async fn rebuild_similarity_index(&self) -> StoreResult<usize> {
        let done = self.store.by_status(TaskStatus::Done).await?;
        self.similarity.clear();
        for record in &done {
            self.similarity.upsert(record);
        }
        Ok(self.similarity.len())
    }

    /// Forgets every cached context (they are never stale; this only frees memory).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Builds the context of `task_id` with the options' defaults.
    pub async fn build_for(
        &self,
        task_id: &TaskId,
        context_type: ContextType,
    ) -> Result<AgentTaskInput, BuildError> {
        self.build(ContextRequest::new(task_id.clone(), context_type))
            .await
    }

    /// Builds the context a request asks for.
    ///
    /// Errors only when the task's own record is missing or unreadable; any later failure (a
    /// store error, a panic in a strategy or collaborator) returns the minimal context with
    /// `degraded = true` and the cause in `warnings` (SPEC R6.7).
    pub async fn build(&self, request: ContextRequest) -> Result<AgentTaskInput, BuildError> {
        let span = tracing::info_span!(
            "context_build",
            task_id = %request.task_id,
            context_type = %request.context_type
        );
        self.build_in_span(request).instrument(span).await
    }

    async fn build_in_span(&self, request: ContextRequest) -> Result<AgentTaskInput, BuildError> {
        if self.options.cache_entries > 0 {
            if let Some(entry) = self.cache.get(&request)
                && catch_unwind(self.still_valid(&entry)).await == Ok(true)
            {
                self.metrics.cache_hit();
                self.metrics
                    .built(request.context_type, entry.result.token_count);
                tracing::debug!(
                    tokens = entry.result.token_count,
                    "context served from cache"
                );
                return Ok(entry.result.clone());
            }
            self.metrics.cache_miss();
        }
        let current = match catch_unwind(self.store.get(&request.task_id)).await {
            Ok(Ok(Some(record))) => record,
            Ok(Ok(None)) => {
                self.metrics.error();
                return Err(BuildError::TaskNotFound {
                    task_id: request.task_id,
                });
            }
            Ok(Err(source)) => {
                self.metrics.error();
                return Err(BuildError::Store {
                    task_id: request.task_id,
                    source,
                });
            }
            Err(detail) => {
                self.metrics.error();
                return Err(BuildError::Panicked {
                    task_id: request.task_id,
                    detail,
                });
            }
        };
        let mut log = ReadLog::with_capacity(32);
        log.remember(&request.task_id, Some(Arc::clone(&current)));
        let outcome = catch_unwind(self.build_full(&current, &request, &mut log)).await;
        let cause = match outcome {
            Ok(Ok(context)) => {
                self.metrics
                    .built(request.context_type, context.token_count);
                tracing::debug!(
                    tokens = context.token_count,
                    items = context.items.len(),
                    omitted = context.omitted.len(),
                    warnings = context.warnings.len(),
                    "context built"
                );
                self.remember(request, &context, log);
                return Ok(context);
            }
            Ok(Err(error)) => format!("store error: {error}"),
            Err(panic) => format!("panic: {panic}"),
        };
        tracing::warn!("context build failed; returning the minimal context");
        let context = self.degraded(&current, &request, &cause).await;
        self.metrics.degraded();
        self.metrics
            .built(request.context_type, context.token_count);
        Ok(context)
    }

    /// Caches a context with the reads it was built from, unless it depended on a similarity
    /// index that cannot say when it changes.
    fn remember(&self, request: ContextRequest, context: &AgentTaskInput, mut log: ReadLog) {
        if self.options.cache_entries == 0 || log.similarity == Some(None) {
            return;
        }
        let weight = context.formatted.len() * 2 + log.len() * 64 + 256;
        let children = std::mem::take(&mut log.children);
        let similarity = log.similarity.flatten();
        let (ids, records): (Vec<TaskId>, Vec<Option<Arc<TaskRecord>>>) = log.reads().unzip();
        let entry = CacheEntry {
            result: context.clone(),
            ids,
            records,
            children,
            similarity,
        };
        self.cache.insert(request, Arc::new(entry), weight);
    }

    /// Whether every read behind `entry` would give the same answer now: one batched re-read of
    /// the records, one indexed `children` call per children list, and the index generation.
    async fn still_valid(&self, entry: &CacheEntry) -> bool {
        if let Some(generation) = entry.similarity
            && self.similarity.generation() != Some(generation)
        {
            return false;
        }
        let Ok(now) = self.store.get_many(&entry.ids).await else {
            return false;
        };
        if now.len() != entry.records.len()
            || !now
                .iter()
                .zip(&entry.records)
                .all(|(a, b)| same_record(a.as_ref(), b.as_ref()))
        {
            return false;
        }
        for (parent, children) in &entry.children {
            let Ok(now) = self.store.children(parent).await else {
                return false;
            };
            if now.len() != children.len()
                || !now
                    .iter()
                    .zip(children)
                    .all(|(a, b)| same_record(Some(a), Some(b)))
            {
                return false;
            }
        }
        true
    }

    fn redact(&self, text: &str) -> String {
        self.redactor.redact_text(text).into_owned()
    }

    /// The memoised texts of `record` at its current revision.
    fn prepare(&self, record: &Arc<TaskRecord>) -> Arc<Prepared> {
        if let Some(prepared) = self.prepared.get(&record.task_id)
            && same_record(Some(&prepared.record), Some(record))
        {
            return prepared;
        }
        let prepared = Arc::new(Prepared {
            record: Arc::clone(record),
            id: self.redact(record.task_id.as_str()),
            goal: self.redact(&record.goal),
            label: record
                .output_type_description
                .as_deref()
                .filter(|l| !l.trim().is_empty())
                .map(|l| self.redact(l)),
            output: OnceLock::new(),
            summary: OnceLock::new(),
            error: OnceLock::new(),
            objective: OnceLock::new(),
            reductions: Mutex::new(Vec::new()),
            counts: RecordCounts::default(),
        });
        let weight = 512
            + record.goal.len() * 2
            + record.output_summary.as_ref().map_or(0, String::len) * 2
            + record.error_message.as_ref().map_or(0, String::len) * 2
            + record.overall_objective.as_ref().map_or(0, String::len) * 2
            + record.output_content.as_ref().map_or(0, json_size) * 3;
        self.prepared
            .insert(record.task_id.clone(), Arc::clone(&prepared), weight);
        prepared
    }

    fn counted(&self, text: String) -> Text {
        let tokens = self.counter.count(&text);
        Text {
            text: text.into(),
            tokens,
        }
    }

    fn output_of<'a>(&self, p: &'a Prepared) -> Option<&'a Text> {
        p.output
            .get_or_init(|| {
                let record = &p.record;
                let value = record.output_content.as_ref().filter(|v| !v.is_null())?;
                if marked_compressed(&record.aux_data) {
                    return Some(self.counted(
                        "[compressed output not shown: stored as gzip+base64]".to_string(),
                    ));
                }
                let redacted = self.redactor.redact_json(value);
                let text = extract_output(&redacted);
                // Extraction only selects and joins redacted strings; a second pass costs
                // little and guards custom redactors that only look at whole values.
                Some(self.counted(self.redact(&text)))
            })
            .as_ref()
    }

    fn summary_of<'a>(&self, p: &'a Prepared) -> Option<&'a Text> {
        p.summary
            .get_or_init(|| {
                let summary = p.record.output_summary.as_deref()?;
                if is_generic_summary(summary) {
                    return None;
                }
                Some(self.counted(self.redact(summary.trim())))
            })
            .as_ref()
    }

    fn error_of<'a>(&self, p: &'a Prepared) -> Option<&'a Text> {
        p.error
            .get_or_init(|| {
                let error = p.record.error_message.as_deref()?.trim();
                if error.is_empty() {
                    return None;
                }
                Some(self.counted(self.redact(error)))
            })
            .as_ref()
    }

    /// The record's own overall objective, redacted and counted.
    fn objective_of(&self, p: &Prepared) -> Option<Text> {
        p.objective
            .get_or_init(|| {
                let objective = p.record.overall_objective.as_deref()?;
                if objective.trim().is_empty() {
                    return None;
                }
                Some(self.counted(self.redact(objective)))
            })
            .clone()
    }

    fn primary_of<'a>(&self, p: &'a Prepared, primary: Primary) -> Option<&'a Text> {
        match primary {
            Primary::Output => self.output_of(p),
            Primary::Summary => self.summary_of(p),
            Primary::Error => self.error_of(p),
        }
    }

    /// The minimal context (goal, type, layer, overall objective) after a failure.
    async fn degraded(
        &self,
        current: &Arc<TaskRecord>,
        request: &ContextRequest,
        cause: &str,
    ) -> AgentTaskInput {
        let task_type = if request.context_type == ContextType::Aggregation {
            TaskType::Aggregate
        } else {
            current.task_type
        };
        let attempt = catch_unwind(async {
            let current_prepared = self.prepare(current);
            let assembly = Assembly {
                context_type: request.context_type,
                layout: Layout::Minimal,
                task_type,
                current: Arc::clone(&current_prepared),
                objective: self.objective_of(&current_prepared),
                ancestors: Vec::new(),
                hidden_ancestors: 0,
                candidates: Vec::new(),
                budget: request.budget_tokens.unwrap_or(self.options.budget_tokens),
                max_items: Some(0),
            };
            let mut context = self.assemble(&assembly).await;
            let cause = self.redact(cause);
            context.warnings.insert(
                0,
                BuildWarning::new(
                    WarningKind::Degraded,
                    None,
                    format!("the context could not be built ({cause}); minimal context returned"),
                ),
            );
            context
        })
        .await;
        let mut context = match attempt {
            Ok(context) => context,
            // The redactor or counter itself panics: return nothing rather than unredacted text.
            Err(_) => AgentTaskInput {
                current_task_id: current.task_id.clone(),
                current_goal: String::new(),
                current_task_type: task_type,
                current_layer: current.layer,
                context_type: request.context_type,
                layout: Layout::Minimal,
                overall_project_goal: None,
                parent_hierarchy: Vec::new(),
                ancestors_not_shown: 0,
                items: Vec::new(),
                formatted: String::new(),
                omitted: Vec::new(),
                warnings: vec![BuildWarning::new(
                    WarningKind::Degraded,
                    None,
                    "the context could not be built, nor the minimal context; nothing returned",
                )],
                degraded: true,
                token_count: 0,
                budget_tokens: request.budget_tokens.unwrap_or(self.options.budget_tokens),
            },
        };
        context.degraded = true;
        context
    }
}

/// A rough size in bytes of a JSON value (for memo weights), without serialising it.
fn json_size(value: &taskctx_domain::Value) -> usize {
    use taskctx_domain::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(json_size).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + json_size(v))
                .sum::<usize>()
        }
    }
}

//! `ContextBuilderService`: reads the sources a strategy asks for, selects and budgets content,
//! redacts it, renders the layout, and caches the result until any record it read changes.

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
    self, Body, Candidate, CatchUnwind, MAX_ANCESTOR_HOPS, Primary, ReadLog, same_record,
};
use super::memo::{FastSet, Memo, MemoCounter};
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

/// A record's texts, redacted and counted once per revision (texts computed on first use).
struct Prepared {
    record: Arc<TaskRecord>,
    id: String,
    goal: String,
    label: Option<String>,
    output: OnceLock<Option<Text>>,
    summary: OnceLock<Option<Text>>,
    error: OnceLock<Option<Text>>,
    reductions: Mutex<Vec<(Primary, usize, Option<Text>)>>,
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
            counter: MemoCounter::new(counter, memo_bytes / 4),
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
    objective: Option<String>,
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
                && CatchUnwind::new(self.still_valid(&entry)).await == Ok(true)
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
        let current = match CatchUnwind::new(self.store.get(&request.task_id)).await {
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
        let mut log = ReadLog::default();
        log.remember(request.task_id.clone(), Some(Arc::clone(&current)));
        let outcome = CatchUnwind::new(self.build_full(&current, &request, &mut log)).await;
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
    fn remember(&self, request: ContextRequest, context: &AgentTaskInput, log: ReadLog) {
        if self.options.cache_entries == 0 || log.similarity == Some(None) {
            return;
        }
        let weight = context.formatted.len() * 2 + log.gets.len() * 64 + 256;
        let (ids, records): (Vec<TaskId>, Vec<Option<Arc<TaskRecord>>>) =
            log.gets.into_iter().unzip();
        let entry = CacheEntry {
            result: context.clone(),
            ids,
            records,
            children: log.children,
            similarity: log.similarity.flatten(),
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
            reductions: Mutex::new(Vec::new()),
        });
        let weight = 512
            + record.goal.len() * 2
            + record.output_summary.as_ref().map_or(0, String::len) * 2
            + record.error_message.as_ref().map_or(0, String::len) * 2
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

    fn primary_of<'a>(&self, p: &'a Prepared, primary: Primary) -> Option<&'a Text> {
        match primary {
            Primary::Output => self.output_of(p),
            Primary::Summary => self.summary_of(p),
            Primary::Error => self.error_of(p),
        }
    }

    /// Primary tokens and, for outputs, the alternative summary's tokens.
    fn sizes(&self, candidate: &Candidate, p: Option<&Prepared>) -> (usize, Option<usize>) {
        match (&candidate.body, p) {
            (Body::Record { primary, .. }, Some(p)) => {
                let main = self.primary_of(p, *primary).map_or(0, |t| t.tokens);
                let summary = (*primary == Primary::Output)
                    .then(|| self.summary_of(p).map(|t| t.tokens))
                    .flatten();
                (main, summary)
            }
            (Body::Text { text, .. }, _) => (self.counter.count(text), None),
            (Body::Record { .. }, None) => (0, None),
        }
    }

    /// Tokens of an item's framing, estimated as the framing with empty fields plus each field
    /// counted alone (all memoised, so a warm build formats nothing here). Joins can make the
    /// real text cost a token more or less; the exact count of the final text is what the
    /// budget is checked against.
    fn framing_estimate(&self, shell: &ContextItem) -> usize {
        let template = ContextItem {
            source_task_id: String::new(),
            source_task_goal: String::new(),
            content: String::new(),
            content_type: if shell.content_type.is_empty() {
                String::new()
            } else {
                "_".to_string()
            },
            relevance: 0.0,
            tokens: 0,
            kind: shell.kind,
            pinned: shell.pinned,
            status: shell.status,
            selection: shell.selection,
        };
        let fields = match shell.kind {
            SourceKind::ReplanDetails
            | SourceKind::OriginalPlan
            | SourceKind::ModificationInstructions
            | SourceKind::GlobalConstraints => 0,
            SourceKind::Additional | SourceKind::AuxData => {
                self.counter.count(&shell.source_task_id)
            }
            _ => {
                self.counter.count(&shell.source_task_id)
                    + self.counter.count(&shell.source_task_goal)
                    + self.counter.count(&shell.content_type)
            }
        };
        self.counter.count(&item_framing(&template)) + fields
    }

    /// Gathers the sources of the strategy's plan and assembles the context.
    async fn build_full(
        &self,
        current: &Arc<TaskRecord>,
        request: &ContextRequest,
        log: &mut ReadLog,
    ) -> StoreResult<AgentTaskInput> {
        let store = self.store.as_ref();
        let plan =
            self.strategies[request.context_type.index()].plan(current, request, &self.options);
        let mut warnings: Vec<BuildWarning> = Vec::new();
        note_ignored_inputs(&plan, request, &mut warnings);
        let redact = |s: &str| self.redact(s);
        let needs_chain = plan.uses(Source::Hierarchy)
            || plan.uses(Source::GoalReferences)
            || plan.uses(Source::Similar);
        let needs_parent = [
            Source::Dependencies,
            Source::PriorSiblings,
            Source::LaterSiblings,
            Source::ParentOutput,
            Source::ParentGoal,
        ]
        .iter()
        .any(|s| plan.uses(*s));
        // The objective is inherited from the nearest ancestor that has one: walk the chain when
        // the task has none of its own.
        let own_objective = current
            .overall_objective
            .as_deref()
            .is_some_and(|o| !o.trim().is_empty());
        let limit = if needs_chain || !own_objective {
            MAX_ANCESTOR_HOPS
        } else if needs_parent {
            1
        } else {
            0
        };
        let ancestry =
            gather::ancestors(store, log, current, limit, &mut warnings, &redact).await?;
        let parent = ancestry.chain.first().cloned();
        let objective = objective(current, &ancestry).map(|o| self.redact(o));

        let mut candidates: Vec<Candidate> = Vec::new();
        let mut used: FastSet<TaskId> = FastSet::default();
        used.insert(current.task_id.clone());
        self.request_sections(&plan, request, &mut candidates);

        // Siblings, through the parent's plan (indexed reads only).
        let wants_siblings = plan.uses(Source::PriorSiblings)
            || plan.uses(Source::LaterSiblings)
            || plan.uses(Source::Dependencies);
        let mut siblings: Vec<Option<Arc<TaskRecord>>> = Vec::new();
        let mut position: Option<usize> = None;
        if let (Some(parent), true) = (&parent, wants_siblings) {
            siblings = log.get_many(store, &parent.child_task_ids).await?;
            position = parent.plan_position(&current.task_id);
            if position.is_none()
                && (plan.uses(Source::PriorSiblings) || plan.uses(Source::LaterSiblings))
            {
                warnings.push(BuildWarning::new(
                    WarningKind::NotInParentPlan,
                    Some(redact(current.task_id.as_str())),
                    format!(
                        "the task is not listed in the plan of its parent `{}`; no sibling \
                         context",
                        redact(parent.task_id.as_str())
                    ),
                ));
            }
        }

        // 2. Explicit dependencies: pinned; not DONE ones are warnings.
        if plan.uses(Source::Dependencies) {
            let deps = gather::declared_dependencies(
                current,
                parent.as_deref(),
                position,
                &mut warnings,
                &redact,
            );
            let records = log.get_many(store, &deps).await?;
            for (id, record) in deps.iter().zip(records) {
                if used.contains(id) {
                    continue;
                }
                let Some(record) = record else {
                    warnings.push(BuildWarning::new(
                        WarningKind::MissingRecord,
                        Some(redact(id.as_str())),
                        format!("dependency `{}` is not in the store", redact(id.as_str())),
                    ));
                    continue;
                };
                if record.status != TaskStatus::Done {
                    warnings.push(BuildWarning::new(
                        WarningKind::PendingDependency,
                        Some(redact(id.as_str())),
                        format!(
                            "pending dependency `{}` is {}",
                            redact(id.as_str()),
                            record.status
                        ),
                    ));
                    continue;
                }
                self.note_compressed(&record, &mut warnings);
                let order = candidates.len();
                let candidate = gather::record_candidate(
                    SourceKind::Dependency,
                    &record,
                    RELEVANCE_PINNED,
                    true,
                    "explicit_dependency_output",
                    order,
                )
                .unwrap_or_else(|| {
                    note_candidate(SourceKind::Dependency, &self.prepare(&record), order)
                });
                used.insert(id.clone());
                candidates.push(candidate);
            }
        }

        // 3. Prior DONE siblings.
        if plan.uses(Source::PriorSiblings)
            && let Some(pos) = position
        {
            for sibling in siblings[..pos].iter().flatten() {
                self.push_record(
                    &mut candidates,
                    &mut used,
                    &mut warnings,
                    sibling,
                    SourceKind::PriorSibling,
                    RELEVANCE_PRIOR_SIBLING,
                    "prerequisite_sibling_output",
                );
            }
        }

        // The parent's own output (planning).
        if plan.uses(Source::ParentOutput)
            && let Some(parent) = &parent
            && matches!(parent.status, TaskStatus::Done | TaskStatus::PlanDone)
        {
            self.push_record(
                &mut candidates,
                &mut used,
                &mut warnings,
                parent,
                SourceKind::ParentOutput,
                RELEVANCE_PARENT_OUTPUT,
                gather::parent_output_label(parent),
            );
        }

        // 5. Goal references, in the same plan tree only (reference B15).
        if plan.uses(Source::GoalReferences) {
            self.goal_references(
                current,
                &ancestry,
                log,
                &mut candidates,
                &mut used,
                &mut warnings,
            )
            .await?;
        }

        // 4. Later DONE siblings (the strategy only asks for WRITE and THINK tasks).
        if plan.uses(Source::LaterSiblings)
            && let Some(pos) = position
        {
            for sibling in siblings[pos + 1..].iter().flatten() {
                self.push_record(
                    &mut candidates,
                    &mut used,
                    &mut warnings,
                    sibling,
                    SourceKind::LaterSibling,
                    RELEVANCE_LATER_SIBLING,
                    "later_sibling_output",
                );
            }
        }

        // Children with their real status (aggregation).
        if plan.uses(Source::Children) {
            self.children(current, log, &mut candidates, &mut warnings)
                .await?;
        }

        // 6. Similar completed tasks.
        if plan.uses(Source::Similar) && self.options.max_similar > 0 && !self.similarity.is_empty()
        {
            self.similar(
                current,
                &ancestry,
                log,
                &mut candidates,
                &mut used,
                &mut warnings,
            )
            .await?;
        }

        // 7. Additional context, then allow-listed aux_data.
        if plan.uses(Source::Additional) {
            for (key, value) in &request.additional_context {
                let key = redact(key);
                let order = candidates.len();
                candidates.push(Candidate {
                    kind: SourceKind::Additional,
                    source_id: format!("additional:{key}"),
                    label_goal: Some(format!("Additional context: {key}")),
                    default_label: "additional_context",
                    forced_label: None,
                    status: None,
                    relevance: RELEVANCE_ADDITIONAL,
                    pinned: false,
                    order,
                    body: Body::Text {
                        text: self.render_value(value),
                        selection: ContentSelection::Provided,
                    },
                });
            }
        }
        if plan.uses(Source::AuxData) {
            for key in &self.options.aux_data_allow_list {
                if let Some(value) = current.aux_data.get(key) {
                    let key = redact(key);
                    let order = candidates.len();
                    candidates.push(Candidate {
                        kind: SourceKind::AuxData,
                        source_id: format!("aux_data:{key}"),
                        label_goal: Some(format!("Task data: {key}")),
                        default_label: "aux_data",
                        forced_label: None,
                        status: None,
                        relevance: RELEVANCE_ADDITIONAL,
                        pinned: false,
                        order,
                        body: Body::Text {
                            text: self.render_value(value),
                            selection: ContentSelection::Provided,
                        },
                    });
                }
            }
        }

        // The hierarchy to render: nearest `max_depth` ancestors (atomization: the parent).
        let (ancestors, hidden) = if plan.uses(Source::Hierarchy) {
            let shown = ancestry.chain.len().min(self.options.max_depth);
            (
                ancestry.chain[..shown]
                    .iter()
                    .map(|r| self.prepare(r))
                    .collect(),
                ancestry.chain.len() - shown,
            )
        } else if plan.uses(Source::ParentGoal) {
            (parent.iter().map(|r| self.prepare(r)).collect(), 0)
        } else {
            (Vec::new(), 0)
        };

        let assembly = Assembly {
            context_type: request.context_type,
            layout: plan.layout,
            task_type: plan.task_type.unwrap_or(current.task_type),
            current: self.prepare(current),
            objective,
            ancestors,
            hidden_ancestors: hidden,
            candidates,
            budget: request.budget_tokens.unwrap_or(self.options.budget_tokens),
            max_items: request.max_items.or(plan.max_items),
        };
        let mut context = self.assemble(&assembly).await;
        warnings.append(&mut context.warnings);
        // Messages quote record data (an invalid dependency entry, an id): redact them too.
        for warning in &mut warnings {
            if let Cow::Owned(redacted) = self.redactor.redact_text(&warning.message) {
                warning.message = redacted;
            }
        }
        context.warnings = warnings;
        Ok(context)
    }

    /// The caller's sections: pinned, gathered first so they are the last pinned items dropped.
    fn request_sections(
        &self,
        plan: &SourcePlan,
        request: &ContextRequest,
        candidates: &mut Vec<Candidate>,
    ) {
        let mut push = |kind: SourceKind, id: &str, label: &str, text: String| {
            let order = candidates.len();
            candidates.push(Candidate {
                kind,
                source_id: id.to_string(),
                label_goal: Some(label.to_string()),
                default_label: kind.as_str(),
                forced_label: None,
                status: None,
                relevance: RELEVANCE_PINNED,
                pinned: true,
                order,
                body: Body::Text {
                    text,
                    selection: ContentSelection::Provided,
                },
            });
        };
        if let (Some(replan), true) = (&request.replan, plan.uses(Source::ReplanDetails)) {
            let mut text = format!(
                "Failed sub-goal: {}\nReason: {}",
                self.redact(&replan.failed_sub_goal),
                self.redact(&replan.reason)
            );
            if let Some(previous) = &replan.previous_attempt_summary {
                text.push_str("\nPrevious attempt: ");
                text.push_str(&self.redact(previous));
            }
            if let Some(guidance) = &replan.guidance {
                text.push_str("\nGuidance: ");
                text.push_str(&self.redact(guidance));
            }
            push(
                SourceKind::ReplanDetails,
                "replan_details",
                "Re-plan details",
                text,
            );
        }
        if let (Some(plan_value), true) = (&request.original_plan, plan.uses(Source::OriginalPlan))
        {
            let redacted = self.redactor.redact_json(plan_value);
            let text = self.redact(&render_plan(&redacted));
            push(
                SourceKind::OriginalPlan,
                "original_plan",
                "Original plan to modify",
                text,
            );
        }
        if let (Some(instructions), true) = (
            &request.modification_instructions,
            plan.uses(Source::ModificationInstructions),
        ) {
            push(
                SourceKind::ModificationInstructions,
                "modification_instructions",
                "Modification instructions",
                self.redact(instructions),
            );
        }
        if plan.uses(Source::GlobalConstraints) && !request.global_constraints.is_empty() {
            let text = request
                .global_constraints
                .iter()
                .map(|c| format!("- {}", self.redact(c)))
                .collect::<Vec<_>>()
                .join("\n");
            push(
                SourceKind::GlobalConstraints,
                "global_constraints",
                "Global constraints or preferences",
                text,
            );
        }
    }

    /// Adds a DONE record with content as a ranked candidate, unless already used.
    #[allow(clippy::too_many_arguments)]
    fn push_record(
        &self,
        candidates: &mut Vec<Candidate>,
        used: &mut FastSet<TaskId>,
        warnings: &mut Vec<BuildWarning>,
        record: &Arc<TaskRecord>,
        kind: SourceKind,
        relevance: f64,
        default_label: &'static str,
    ) {
        if used.contains(&record.task_id)
            || (kind != SourceKind::ParentOutput && record.status != TaskStatus::Done)
        {
            return;
        }
        let order = candidates.len();
        if let Some(candidate) =
            gather::record_candidate(kind, record, relevance, false, default_label, order)
        {
            self.note_compressed(record, warnings);
            used.insert(record.task_id.clone());
            candidates.push(candidate);
        }
    }

    fn note_compressed(&self, record: &TaskRecord, warnings: &mut Vec<BuildWarning>) {
        if marked_compressed(&record.aux_data) && record.output_content.is_some() {
            warnings.push(BuildWarning::new(
                WarningKind::CompressedOutput,
                Some(self.redact(record.task_id.as_str())),
                format!(
                    "the output of `{}` is stored compressed and is not shown",
                    self.redact(record.task_id.as_str())
                ),
            ));
        }
    }

    /// Renders a caller's JSON value: strings as they are, anything else by the extraction rules.
    fn render_value(&self, value: &taskctx_domain::Value) -> String {
        let redacted = self.redactor.redact_json(value);
        let text = match redacted.as_ref() {
            taskctx_domain::Value::String(s) => {
                render::compressed_note(s).unwrap_or_else(|| s.clone())
            }
            other => extract_output(other),
        };
        self.redact(&text)
    }

    async fn goal_references(
        &self,
        current: &Arc<TaskRecord>,
        ancestry: &gather::Ancestry,
        log: &mut ReadLog,
        candidates: &mut Vec<Candidate>,
        used: &mut FastSet<TaskId>,
        warnings: &mut Vec<BuildWarning>,
    ) -> StoreResult<()> {
        let store = self.store.as_ref();
        let mut references = gather::goal_references(&current.goal);
        references.retain(|id| id != &current.task_id);
        if references.len() > self.options.max_goal_references {
            warnings.push(BuildWarning::new(
                WarningKind::GoalReference,
                None,
                format!(
                    "the goal references {} tasks; only the first {} are followed",
                    references.len(),
                    self.options.max_goal_references
                ),
            ));
            references.truncate(self.options.max_goal_references);
        }
        if references.is_empty() {
            return Ok(());
        }
        let records = log.get_many(store, &references).await?;
        // The plan tree of the current task: itself and its ancestors.
        let mut tree: FastSet<TaskId> = ancestry.chain.iter().map(|r| r.task_id.clone()).collect();
        tree.insert(current.task_id.clone());
        let root = ancestry
            .chain
            .last()
            .map_or(&current.task_id, |r| &r.task_id)
            .clone();
        for (id, record) in references.iter().zip(records) {
            let shown = self.redact(id.as_str());
            let Some(record) = record else {
                if gather::looks_like_roma_id(id.as_str()) {
                    warnings.push(BuildWarning::new(
                        WarningKind::MissingRecord,
                        Some(shown.clone()),
                        format!("referenced task `{shown}` is not in the store"),
                    ));
                }
                continue;
            };
            if used.contains(id) {
                continue;
            }
            if !self.same_tree(&record, &tree, &root, log).await? {
                warnings.push(BuildWarning::new(
                    WarningKind::GoalReference,
                    Some(shown.clone()),
                    format!("referenced task `{shown}` belongs to another plan tree; ignored"),
                ));
                continue;
            }
            if record.status != TaskStatus::Done {
                warnings.push(BuildWarning::new(
                    WarningKind::GoalReference,
                    Some(shown.clone()),
                    format!(
                        "referenced task `{shown}` is {}; no output yet",
                        record.status
                    ),
                ));
                continue;
            }
            self.push_record(
                candidates,
                used,
                warnings,
                &record,
                SourceKind::GoalReference,
                RELEVANCE_GOAL_REFERENCE,
                "explicit_goal_reference",
            );
        }
        Ok(())
    }

    /// Whether `record` is in the plan tree of the current task: its ancestor walk meets the
    /// current task's chain, or ends at the same root.
    async fn same_tree(
        &self,
        record: &Arc<TaskRecord>,
        tree: &FastSet<TaskId>,
        root: &TaskId,
        log: &mut ReadLog,
    ) -> StoreResult<bool> {
        if tree.contains(&record.task_id) {
            return Ok(true);
        }
        let mut seen: Vec<TaskId> = vec![record.task_id.clone()];
        let mut next = record.parent_task_id.clone();
        while let Some(id) = next {
            if tree.contains(&id) {
                return Ok(true);
            }
            if seen.len() > MAX_ANCESTOR_HOPS || seen.contains(&id) {
                return Ok(false);
            }
            match log.get(self.store.as_ref(), &id).await? {
                Some(parent) => {
                    next = parent.parent_task_id.clone();
                    seen.push(id);
                }
                None => return Ok(false),
            }
        }
        Ok(seen.last() == Some(root))
    }

    async fn children(
        &self,
        current: &Arc<TaskRecord>,
        log: &mut ReadLog,
        candidates: &mut Vec<Candidate>,
        warnings: &mut Vec<BuildWarning>,
    ) -> StoreResult<()> {
        let children = log.children(self.store.as_ref(), &current.task_id).await?;
        for planned in &current.child_task_ids {
            if !children.iter().any(|c| &c.task_id == planned) {
                let shown = self.redact(planned.as_str());
                warnings.push(BuildWarning::new(
                    WarningKind::MissingRecord,
                    Some(shown.clone()),
                    format!("planned child `{shown}` is not in the store"),
                ));
            }
        }
        for child in &children {
            let order = candidates.len();
            let status = child.status;
            let label = format!("child_{}_output", status.as_str().to_ascii_lowercase());
            let body = match status {
                TaskStatus::Done => match gather::primary_of(child) {
                    Some(primary) => {
                        self.note_compressed(child, warnings);
                        Body::Record {
                            record: Arc::clone(child),
                            primary,
                        }
                    }
                    None => Body::Text {
                        text: status_note(status).to_string(),
                        selection: ContentSelection::Note,
                    },
                },
                TaskStatus::Failed if self.error_of(&self.prepare(child)).is_some() => {
                    Body::Record {
                        record: Arc::clone(child),
                        primary: Primary::Error,
                    }
                }
                _ => {
                    if !status.is_terminal() {
                        let shown = self.redact(child.task_id.as_str());
                        warnings.push(BuildWarning::new(
                            WarningKind::UnfinishedChild,
                            Some(shown.clone()),
                            format!("child `{shown}` has not finished ({status})"),
                        ));
                    }
                    Body::Text {
                        text: status_note(status).to_string(),
                        selection: ContentSelection::Note,
                    }
                }
            };
            let (source_id, label_goal) = match &body {
                Body::Text { .. } => {
                    let p = self.prepare(child);
                    (p.id.clone(), Some(p.goal.clone()))
                }
                Body::Record { .. } => (child.task_id.as_str().to_string(), None),
            };
            candidates.push(Candidate {
                kind: SourceKind::Child,
                source_id,
                label_goal,
                default_label: "child_done_output",
                forced_label: (status != TaskStatus::Done).then_some(label),
                status: Some(status),
                relevance: RELEVANCE_PINNED,
                pinned: true,
                order,
                body,
            });
        }
        Ok(())
    }

    async fn similar(
        &self,
        current: &Arc<TaskRecord>,
        ancestry: &gather::Ancestry,
        log: &mut ReadLog,
        candidates: &mut Vec<Candidate>,
        used: &mut FastSet<TaskId>,
        warnings: &mut Vec<BuildWarning>,
    ) -> StoreResult<()> {
        let mut excluded: FastSet<&TaskId> = ancestry.chain.iter().map(|r| &r.task_id).collect();
        excluded.insert(&current.task_id);
        let limit = self.options.max_similar + excluded.len() + used.len();
        log.similarity = Some(self.similarity.generation());
        let hits = match self.similarity.search(&current.goal, limit).await {
            Ok(hits) => hits,
            Err(error) => {
                warnings.push(BuildWarning::new(
                    WarningKind::Collaborator,
                    None,
                    format!("similar tasks skipped: {error}"),
                ));
                return Ok(());
            }
        };
        let hits: Vec<_> = hits
            .into_iter()
            .filter(|h| !excluded.contains(&h.task_id) && !used.contains(&h.task_id))
            .collect();
        // Read only as many hits as may be needed, in batches: usually one batch of
        // `max_similar` records, more only when some hits are no longer DONE.
        let mut taken = 0;
        let mut start = 0;
        while taken < self.options.max_similar && start < hits.len() {
            let end = (start + self.options.max_similar - taken).min(hits.len());
            let ids: Vec<TaskId> = hits[start..end].iter().map(|h| h.task_id.clone()).collect();
            let records = log.get_many(self.store.as_ref(), &ids).await?;
            for (hit, record) in hits[start..end].iter().zip(records) {
                // The index may lag the store: only what the store says is DONE now counts.
                let Some(record) = record.filter(|r| r.status == TaskStatus::Done) else {
                    continue;
                };
                let before = candidates.len();
                self.push_record(
                    candidates,
                    used,
                    warnings,
                    &record,
                    SourceKind::Similar,
                    similar_relevance(hit.score),
                    "similar_task_output",
                );
                if candidates.len() > before {
                    taken += 1;
                }
            }
            start = end;
        }
        Ok(())
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
        let attempt = CatchUnwind::new(async {
            let assembly = Assembly {
                context_type: request.context_type,
                layout: Layout::Minimal,
                task_type,
                current: self.prepare(current),
                objective: current
                    .overall_objective
                    .as_deref()
                    .filter(|o| !o.trim().is_empty())
                    .map(|o| self.redact(o)),
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

    /// Budgets, selects, renders and counts; retries with a smaller effective budget in the rare
    /// case where joining the pieces costs more tokens than the pieces did.
    async fn assemble(&self, a: &Assembly) -> AgentTaskInput {
        let mut effective = a.budget;
        for attempt in 0..6usize {
            let context = self.assemble_once(a, effective).await;
            if context.token_count <= a.budget {
                return context;
            }
            let excess = context.token_count - a.budget;
            effective = effective.saturating_sub(excess + 1 + attempt * attempt * 4);
        }
        self.assemble_once(a, 0).await
    }

    async fn assemble_once(&self, a: &Assembly, budget: usize) -> AgentTaskInput {
        let count = |s: &str| self.counter.count(s);
        let separator = count(PARAGRAPH_SEPARATOR);
        let layout = a.layout;
        let mut warnings: Vec<BuildWarning> = Vec::new();
        let cap = self.options.per_item_tokens.min(a.budget);
        let min_item = self.options.min_item_tokens.max(1);

        // Section costs: 0 = none, 1 = hierarchy heading, 2.. = item sections.
        let mut section_costs = vec![0usize; 2 + SECTION_ORDER.len()];
        if layout != Layout::Minimal {
            section_costs[1] = count(&hierarchy_heading(
                layout,
                a.hidden_ancestors + a.ancestors.len(),
            )) + separator;
        }
        for (i, kind) in SECTION_ORDER.iter().enumerate() {
            section_costs[2 + i] = count(section_heading(*kind)) + separator;
        }

        // Header blocks: current, objective, ancestors nearest first.
        let current_id = a.current.record.task_id.as_str();
        let current_layer = a.current.record.layer;
        let (cur_prefix, cur_suffix) =
            current_framing(layout, current_id, a.task_type, current_layer);
        let mut blocks: Vec<BlockSpec> = Vec::new();
        let mut parts: Vec<HeaderPart> = Vec::new();
        let goal_tokens = count(&a.current.goal);
        blocks.push(BlockSpec {
            group: budget::Group::Header,
            section: 0,
            framing: count(&cur_prefix) + count(&cur_suffix) + separator,
            lean_framing: None,
            content: goal_tokens,
            min_content: MIN_HEADER_TOKENS,
            is_item: false,
            chain: None,
        });
        parts.push(HeaderPart::Current);
        let objective_tokens = a.objective.as_deref().map(count);
        if let Some(tokens) = objective_tokens {
            blocks.push(BlockSpec {
                group: Group::Header,
                section: 0,
                framing: count(objective_prefix(layout)) + separator,
                lean_framing: None,
                content: tokens,
                min_content: MIN_HEADER_TOKENS,
                is_item: false,
                chain: None,
            });
            parts.push(HeaderPart::Objective);
        }
        let mut ancestor_entries: Vec<HierarchyEntry> = Vec::new();
        for (i, p) in a.ancestors.iter().enumerate() {
            let entry = hierarchy_entry(p, self.summary_of(p).map(|t| t.text.to_string()));
            let (prefix, suffix) =
                ancestor_framing(layout, &entry, i == 0, entry.summary.as_deref());
            let (_, lean_suffix) = ancestor_framing(layout, &entry, i == 0, None);
            let framing = count(&prefix) + count(&suffix);
            let lean = count(&prefix) + count(&lean_suffix);
            blocks.push(BlockSpec {
                group: Group::Header,
                section: 1,
                framing,
                lean_framing: (entry.summary.is_some()).then_some(lean),
                content: count(&entry.goal),
                min_content: MIN_HEADER_TOKENS,
                is_item: false,
                chain: Some(0),
            });
            parts.push(HeaderPart::Ancestor(i));
            ancestor_entries.push(entry);
        }
        let header_count = blocks.len();

        // Items, in placement order: pinned, then by relevance, then gathering order.
        let mut ranked: Vec<&Candidate> = a.candidates.iter().collect();
        ranked.sort_by(|x, y| {
            y.pinned
                .cmp(&x.pinned)
                .then(y.relevance.total_cmp(&x.relevance))
                .then(x.order.cmp(&y.order))
        });
        let prepared: Vec<Option<Arc<Prepared>>> = ranked
            .iter()
            .map(|c| match &c.body {
                Body::Record { record, .. } => Some(self.prepare(record)),
                Body::Text { .. } => None,
            })
            .collect();
        let mut sizes: Vec<(usize, Option<usize>)> = Vec::with_capacity(ranked.len());
        let mut shells: Vec<ContextItem> = Vec::with_capacity(ranked.len());
        for (candidate, p) in ranked.iter().zip(&prepared) {
            let shell = self.shell(candidate, p.as_deref());
            let framing = self.framing_estimate(&shell);
            let size = self.sizes(candidate, p.as_deref());
            blocks.push(BlockSpec {
                group: if candidate.pinned {
                    Group::Pinned
                } else {
                    Group::Ranked
                },
                section: 2 + section_rank(candidate.kind).min(SECTION_ORDER.len() - 1),
                framing: framing + separator,
                lean_framing: None,
                content: pick_cost(size.0, size.1, cap),
                min_content: min_item,
                is_item: true,
                chain: None,
            });
            sizes.push(size);
            shells.push(shell);
        }
        let cost_at = |i: usize, b: usize| -> usize {
            if i < header_count {
                b
            } else {
                let (main, summary) = sizes[i - header_count];
                pick_cost(main, summary, b)
            }
        };
        let decisions = budget::pack(
            &blocks,
            &section_costs,
            Limits {
                budget,
                max_items: a.max_items,
            },
            &cost_at,
        );

        let mut omitted: Vec<OmittedItem> = Vec::new();
        // Nothing fits if the current task does not: an empty context, everything omitted.
        if matches!(decisions[0], Decision::Drop(_)) {
            omitted.push(omit(
                current_id_shown(a),
                SourceKind::CurrentTask,
                OmitAction::Dropped,
                OmitReason::Budget,
                goal_tokens,
                0,
            ));
            for (i, part) in parts.iter().enumerate().skip(1) {
                let (id, kind) = match part {
                    HeaderPart::Objective => (String::new(), SourceKind::OverallObjective),
                    HeaderPart::Ancestor(k) => {
                        (ancestor_entries[*k].task_id.clone(), SourceKind::Ancestor)
                    }
                    HeaderPart::Current => continue,
                };
                omitted.push(omit(
                    id,
                    kind,
                    OmitAction::Dropped,
                    OmitReason::Budget,
                    blocks[i].content,
                    0,
                ));
            }
            for (shell, size) in shells.iter().zip(&sizes) {
                omitted.push(omit(
                    shell.source_task_id.clone(),
                    shell.kind,
                    OmitAction::Dropped,
                    OmitReason::Budget,
                    size.0,
                    0,
                ));
            }
            warnings.push(BuildWarning::new(
                WarningKind::Budget,
                None,
                format!(
                    "a budget of {} tokens cannot hold the current task; the context is empty",
                    a.budget
                ),
            ));
            return self.finish(
                a,
                String::new(),
                None,
                Vec::new(),
                0,
                Vec::new(),
                omitted,
                warnings,
                budget,
            );
        }

        // Header texts.
        let mut current_goal = a.current.goal.clone();
        let mut objective = a.objective.clone();
        let mut hierarchy: Vec<HierarchyEntry> = Vec::new();
        let mut dropped_ancestors = 0usize;
        for (i, part) in parts.iter().enumerate() {
            let decision = decisions[i];
            match part {
                HeaderPart::Current => {
                    if let Decision::Keep {
                        content_budget: Some(b),
                        ..
                    } = decision
                    {
                        current_goal =
                            reduce_head_tail(&a.current.goal, goal_tokens, b, &self.counter);
                        omitted.push(omit(
                            current_id_shown(a),
                            SourceKind::CurrentTask,
                            OmitAction::Shortened,
                            OmitReason::Budget,
                            goal_tokens,
                            count(&current_goal),
                        ));
                    }
                }
                HeaderPart::Objective => {
                    let tokens = objective_tokens.unwrap_or(0);
                    match decision {
                        Decision::Keep {
                            content_budget: Some(b),
                            ..
                        } => {
                            let text = objective
                                .as_deref()
                                .map(|o| reduce_head_tail(o, tokens, b, &self.counter))
                                .unwrap_or_default();
                            omitted.push(omit(
                                String::new(),
                                SourceKind::OverallObjective,
                                OmitAction::Shortened,
                                OmitReason::Budget,
                                tokens,
                                count(&text),
                            ));
                            objective = (!text.is_empty()).then_some(text);
                        }
                        Decision::Keep { .. } => {}
                        Decision::Drop(reason) => {
                            omitted.push(omit(
                                String::new(),
                                SourceKind::OverallObjective,
                                OmitAction::Dropped,
                                reason,
                                tokens,
                                0,
                            ));
                            objective = None;
                        }
                    }
                }
                HeaderPart::Ancestor(k) => {
                    let mut entry = ancestor_entries[*k].clone();
                    let goal_tokens = blocks[i].content;
                    match decision {
                        Decision::Keep {
                            content_budget,
                            lean,
                        } => {
                            if lean {
                                entry.summary = None;
                            }
                            if let Some(b) = content_budget {
                                entry.goal =
                                    reduce_head_tail(&entry.goal, goal_tokens, b, &self.counter);
                            }
                            if lean || content_budget.is_some() {
                                omitted.push(omit(
                                    entry.task_id.clone(),
                                    SourceKind::Ancestor,
                                    OmitAction::Shortened,
                                    OmitReason::Budget,
                                    goal_tokens,
                                    count(&entry.goal),
                                ));
                            }
                            hierarchy.push(entry);
                        }
                        Decision::Drop(reason) => {
                            dropped_ancestors += 1;
                            omitted.push(omit(
                                entry.task_id.clone(),
                                SourceKind::Ancestor,
                                OmitAction::Dropped,
                                reason,
                                goal_tokens,
                                0,
                            ));
                        }
                    }
                }
            }
        }
        hierarchy.reverse();

        // Item contents.
        let mut items: Vec<(usize, usize, ContextItem)> = Vec::new();
        let mut fallback_warned = false;
        for (k, (candidate, mut shell)) in ranked.iter().zip(shells).enumerate() {
            let decision = decisions[header_count + k];
            let (main, summary) = sizes[k];
            let content_budget = match decision {
                Decision::Drop(reason) => {
                    omitted.push(omit(
                        shell.source_task_id,
                        shell.kind,
                        OmitAction::Dropped,
                        reason,
                        main,
                        0,
                    ));
                    continue;
                }
                Decision::Keep { content_budget, .. } => content_budget.unwrap_or(cap),
            };
            let resolved = self
                .resolve(
                    candidate,
                    prepared[k].as_deref(),
                    main,
                    summary,
                    content_budget,
                    &mut fallback_warned,
                    &mut warnings,
                )
                .await;
            let Some((content, selection, tokens)) = resolved else {
                omitted.push(omit(
                    shell.source_task_id,
                    shell.kind,
                    OmitAction::Dropped,
                    OmitReason::Budget,
                    main,
                    0,
                ));
                continue;
            };
            // Shortened: anything but the item's own primary text (`shell.selection`).
            if selection != shell.selection {
                let reason = if decision
                    == (Decision::Keep {
                        content_budget: None,
                        lean: false,
                    }) {
                    OmitReason::ItemCap
                } else {
                    OmitReason::Budget
                };
                omitted.push(omit(
                    shell.source_task_id.clone(),
                    shell.kind,
                    OmitAction::Shortened,
                    reason,
                    main,
                    tokens,
                ));
            }
            shell.content = content;
            shell.selection = selection;
            shell.tokens = tokens;
            items.push((section_rank(shell.kind), candidate.order, shell));
        }
        items.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
        let items: Vec<ContextItem> = items.into_iter().map(|(_, _, item)| item).collect();
        let hidden = if layout == Layout::Minimal {
            0
        } else {
            a.hidden_ancestors + dropped_ancestors
        };
        self.finish(
            a,
            current_goal,
            objective,
            hierarchy,
            hidden,
            items,
            omitted,
            warnings,
            budget,
        )
    }

    /// Renders and counts the final context.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        a: &Assembly,
        current_goal: String,
        objective: Option<String>,
        hierarchy: Vec<HierarchyEntry>,
        hidden: usize,
        items: Vec<ContextItem>,
        omitted: Vec<OmittedItem>,
        warnings: Vec<BuildWarning>,
        _effective_budget: usize,
    ) -> AgentTaskInput {
        let (objective, hierarchy, hidden) = if current_goal.is_empty() {
            (None, Vec::new(), 0)
        } else {
            (objective, hierarchy, hidden)
        };
        let mut context = AgentTaskInput {
            current_task_id: a.current.record.task_id.clone(),
            current_goal,
            current_task_type: a.task_type,
            current_layer: a.current.record.layer,
            context_type: a.context_type,
            layout: a.layout,
            overall_project_goal: objective,
            parent_hierarchy: hierarchy,
            ancestors_not_shown: hidden,
            items,
            formatted: String::new(),
            omitted,
            warnings,
            degraded: false,
            token_count: 0,
            budget_tokens: a.budget,
        };
        context.formatted = format::format_input(&context);
        context.token_count = self.counter.count(&context.formatted);
        context
    }

    /// An item without content: everything the framing needs.
    fn shell(&self, candidate: &Candidate, p: Option<&Prepared>) -> ContextItem {
        let (id, goal, label, selection) = match (&candidate.body, p) {
            (Body::Record { primary, .. }, Some(p)) => {
                let selection = match primary {
                    Primary::Output => ContentSelection::Output,
                    Primary::Summary => ContentSelection::Summary,
                    Primary::Error => ContentSelection::Error,
                };
                (p.id.clone(), p.goal.clone(), p.label.clone(), selection)
            }
            (Body::Text { selection, .. }, _) => (
                candidate.source_id.clone(),
                candidate.label_goal.clone().unwrap_or_default(),
                None,
                *selection,
            ),
            (Body::Record { .. }, None) => (
                candidate.source_id.clone(),
                candidate.label_goal.clone().unwrap_or_default(),
                None,
                ContentSelection::Note,
            ),
        };
        let content_type = candidate
            .forced_label
            .clone()
            .or(label)
            .unwrap_or_else(|| candidate.default_label.to_string());
        ContextItem {
            source_task_id: id,
            source_task_goal: goal,
            content: String::new(),
            content_type,
            relevance: candidate.relevance,
            tokens: 0,
            kind: candidate.kind,
            pinned: candidate.pinned,
            status: candidate.status,
            selection,
        }
    }

    /// The content of a kept item within `budget` tokens, and which text it is; `None` when the
    /// budget cannot hold even a reduction.
    #[allow(clippy::too_many_arguments)]
    async fn resolve(
        &self,
        candidate: &Candidate,
        p: Option<&Prepared>,
        main: usize,
        summary: Option<usize>,
        budget: usize,
        fallback_warned: &mut bool,
        warnings: &mut Vec<BuildWarning>,
    ) -> Option<(String, ContentSelection, usize)> {
        match &candidate.body {
            Body::Record { primary, .. } => {
                let p = p?;
                let text = self.primary_of(p, *primary)?.clone();
                let own = match primary {
                    Primary::Output => ContentSelection::Output,
                    Primary::Summary => ContentSelection::Summary,
                    Primary::Error => ContentSelection::Error,
                };
                match pick(main, summary, budget) {
                    Pick::Primary => Some((text.text.to_string(), own, text.tokens)),
                    Pick::Summary => self
                        .summary_of(p)
                        .map(|s| (s.text.to_string(), ContentSelection::Summary, s.tokens)),
                    Pick::Reduce(b) => {
                        let reduced = self
                            .reduce_record(p, *primary, &text, b, fallback_warned, warnings)
                            .await?;
                        Some((
                            reduced.text.to_string(),
                            ContentSelection::Summarized,
                            reduced.tokens,
                        ))
                    }
                }
            }
            Body::Text { text, selection } => {
                if main <= budget {
                    return Some((text.clone(), *selection, main));
                }
                let reduced = self
                    .summarize(text, main, budget, None, fallback_warned, warnings)
                    .await?;
                Some((
                    reduced.text.to_string(),
                    ContentSelection::Summarized,
                    reduced.tokens,
                ))
            }
        }
    }

    /// A reduction of a record's text, memoised per (record revision, text, budget).
    async fn reduce_record(
        &self,
        p: &Prepared,
        primary: Primary,
        text: &Text,
        budget: usize,
        fallback_warned: &mut bool,
        warnings: &mut Vec<BuildWarning>,
    ) -> Option<Text> {
        {
            let memo = p.reductions.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, _, hit)) = memo.iter().find(|(w, b, _)| *w == primary && *b == budget) {
                return hit.clone();
            }
        }
        let reduced = self
            .summarize(
                &text.text,
                text.tokens,
                budget,
                Some((&p.id, &p.goal)),
                fallback_warned,
                warnings,
            )
            .await;
        let mut memo = p.reductions.lock().unwrap_or_else(PoisonError::into_inner);
        if memo.len() >= REDUCTIONS_PER_RECORD {
            memo.remove(0);
        }
        memo.push((primary, budget, reduced.clone()));
        reduced
    }

    /// Asks the summariser, then checks its answer: redacted again, within budget, not empty;
    /// otherwise the extractive reduction is used instead.
    async fn summarize(
        &self,
        text: &str,
        tokens: usize,
        budget: usize,
        source: Option<(&str, &str)>,
        fallback_warned: &mut bool,
        warnings: &mut Vec<BuildWarning>,
    ) -> Option<Text> {
        self.metrics.summary();
        let mut request = SummaryRequest::new(text, tokens, budget, &self.counter);
        if let Some((id, goal)) = source {
            request = request.with_source(id, goal);
        }
        let answer = self.summarizer.summarize(request).await;
        let checked = match answer {
            Ok(summary) => {
                let summary = self.redact(&summary);
                let n = self.counter.count(&summary);
                (n > 0 && n <= budget).then_some(Text {
                    text: summary.into(),
                    tokens: n,
                })
            }
            Err(_) => None,
        };
        let result = match checked {
            Some(text) => text,
            None => {
                self.metrics.summarizer_fallback();
                if !*fallback_warned {
                    *fallback_warned = true;
                    warnings.push(BuildWarning::new(
                        WarningKind::Collaborator,
                        None,
                        format!(
                            "the summariser `{}` failed or exceeded its budget; the extractive \
                             reduction was used",
                            self.summarizer.name()
                        ),
                    ));
                }
                let reduced = reduce_head_tail(text, tokens, budget, &self.counter);
                let n = self.counter.count(&reduced);
                Text {
                    text: reduced.into(),
                    tokens: n,
                }
            }
        };
        (result.tokens > 0).then_some(result)
    }
}

/// The overall objective: the task's own, else the nearest ancestor's, else the goal of the root
/// the walk reached.
fn objective<'a>(current: &'a TaskRecord, ancestry: &'a gather::Ancestry) -> Option<&'a str> {
    let own = |r: &'a TaskRecord| {
        r.overall_objective
            .as_deref()
            .filter(|o| !o.trim().is_empty())
    };
    own(current)
        .or_else(|| ancestry.chain.iter().find_map(|r| own(r)))
        .or_else(|| {
            ancestry
                .reached_root
                .then(|| ancestry.chain.last().map(|r| r.goal.as_str()))
                .flatten()
                .filter(|g| !g.trim().is_empty())
        })
}

fn hierarchy_entry(p: &Prepared, summary: Option<String>) -> HierarchyEntry {
    HierarchyEntry {
        task_id: p.id.clone(),
        goal: p.goal.clone(),
        layer: p.record.layer,
        task_type: p.record.task_type,
        node_type: p.record.node_type,
        status: p.record.status,
        summary,
    }
}

fn current_id_shown(a: &Assembly) -> String {
    a.current.id.clone()
}

fn omit(
    source_task_id: String,
    kind: SourceKind,
    action: OmitAction,
    reason: OmitReason,
    original_tokens: usize,
    kept_tokens: usize,
) -> OmittedItem {
    OmittedItem {
        source_task_id,
        kind,
        action,
        reason,
        original_tokens,
        kept_tokens,
    }
}

/// A DONE record without content, as a note item (dependencies are shown even when empty, so
/// the agent knows the dependency produced nothing).
fn note_candidate(kind: SourceKind, p: &Prepared, order: usize) -> Candidate {
    // The redacted id and goal: a note item shows them as they are.
    Candidate {
        kind,
        source_id: p.id.clone(),
        label_goal: Some(p.goal.clone()),
        default_label: "explicit_dependency_output",
        forced_label: None,
        status: Some(p.record.status),
        relevance: RELEVANCE_PINNED,
        pinned: true,
        order,
        body: Body::Text {
            text: render::NO_OUTPUT.to_string(),
            selection: ContentSelection::Note,
        },
    }
}

/// Warns about caller inputs the context type does not use.
fn note_ignored_inputs(
    plan: &SourcePlan,
    request: &ContextRequest,
    warnings: &mut Vec<BuildWarning>,
) {
    let checks: [(bool, Source, &str); 5] = [
        (
            request.replan.is_some(),
            Source::ReplanDetails,
            "replan details",
        ),
        (
            !request.global_constraints.is_empty(),
            Source::GlobalConstraints,
            "global constraints",
        ),
        (
            request.original_plan.is_some(),
            Source::OriginalPlan,
            "the original plan",
        ),
        (
            request.modification_instructions.is_some(),
            Source::ModificationInstructions,
            "modification instructions",
        ),
        (
            !request.additional_context.is_empty(),
            Source::Additional,
            "additional context",
        ),
    ];
    for (given, source, what) in checks {
        if given && !plan.uses(source) {
            warnings.push(BuildWarning::new(
                WarningKind::IgnoredInput,
                None,
                format!(
                    "{what}: not used by {} contexts; ignored",
                    request.context_type
                ),
            ));
        }
    }
}

/// Relevance of a similar task: the normalised score × 0.6, rounded to 4 decimals so that
/// the last bits of a logarithm never change an order or a snapshot between platforms.
fn similar_relevance(score: f64) -> f64 {
    (score.clamp(0.0, 1.0) * RELEVANCE_SIMILAR_SCALE * 10_000.0).round() / 10_000.0
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

//! The builder's public data: context types, requests, and the `AgentTaskInput` it returns.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use taskctx_domain::{NodeType, TaskId, TaskStatus, TaskType, Value};

use super::error::UnknownContextType;

/// Which agent the context is for (SPEC §6). Each has its own strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContextType {
    /// Every R6.1 source in the execution layout, limited by the budget only.
    Default,
    /// For a planner: hierarchy, dependencies, prior siblings, parent output, goal references,
    /// similar tasks, replan details and global constraints.
    Planning,
    /// For an executor: hierarchy and every source, at most `max_items` items.
    Execution,
    /// For an aggregator: the task's children with their real status.
    Aggregation,
    /// For an atomizer: the parent goal only.
    Atomization,
    /// For a plan modifier: planning plus the original plan and the modification instructions.
    Modification,
}

impl ContextType {
    /// Every context type, in declaration order.
    pub const ALL: [ContextType; 6] = [
        Self::Default,
        Self::Planning,
        Self::Execution,
        Self::Aggregation,
        Self::Atomization,
        Self::Modification,
    ];

    /// The lower-case name (`"planning"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Planning => "planning",
            Self::Execution => "execution",
            Self::Aggregation => "aggregation",
            Self::Atomization => "atomization",
            Self::Modification => "modification",
        }
    }

    /// Position in [`ContextType::ALL`] (used to index per-type counters).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// ROMA's lenient parse: an unknown name becomes [`ContextType::Default`] and the returned
    /// warning says so. Use [`str::parse`] where a bad name must be an error.
    pub fn parse_lenient(name: &str) -> (Self, Option<BuildWarning>) {
        match name.parse() {
            Ok(context_type) => (context_type, None),
            Err(UnknownContextType { value }) => (
                Self::Default,
                Some(BuildWarning::new(
                    WarningKind::UnknownContextType,
                    None,
                    format!("unknown context type {value:?}; using \"default\""),
                )),
            ),
        }
    }
}

impl fmt::Display for ContextType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContextType {
    type Err = UnknownContextType;

    /// Case-insensitive, surrounding whitespace ignored; anything else is an error naming the value.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.as_str().eq_ignore_ascii_case(trimmed))
            .ok_or_else(|| UnknownContextType {
                value: s.chars().take(64).collect(),
            })
    }
}

impl Serialize for ContextType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ContextType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What the caller knows about a failed attempt, for a planner asked to plan again (ROMA
/// `ReplanRequestDetails`). Rendered in the planning layout (reference B6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplanDetails {
    /// The sub-goal that failed.
    pub failed_sub_goal: String,
    /// Why it failed or why a new plan is needed.
    pub reason: String,
    /// What the previous attempt produced, in short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_attempt_summary: Option<String>,
    /// Specific guidance for the new plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<String>,
}

impl ReplanDetails {
    /// Details with the two required parts.
    pub fn new(failed_sub_goal: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            failed_sub_goal: failed_sub_goal.into(),
            reason: reason.into(),
            previous_attempt_summary: None,
            guidance: None,
        }
    }

    /// Adds a summary of the previous attempt.
    pub fn with_previous_attempt_summary(mut self, summary: impl Into<String>) -> Self {
        self.previous_attempt_summary = Some(summary.into());
        self
    }

    /// Adds guidance for the new plan.
    pub fn with_guidance(mut self, guidance: impl Into<String>) -> Self {
        self.guidance = Some(guidance.into());
        self
    }
}

/// What to build: the task, the context type and the caller's inputs.
///
/// Two equal requests over unchanged records give byte-identical contexts; the built-context
/// cache is keyed by the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContextRequest {
    /// The task the context is for.
    pub task_id: TaskId,
    /// Which agent it is for.
    pub context_type: ContextType,
    /// Overrides the total token budget of the options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<usize>,
    /// Overrides the item limit; applies to every context type when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    /// Extra context from the caller, in order (source 7 of R6.1, relevance 0.6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_context: Vec<(String, Value)>,
    /// For planning and modification: why a new plan is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replan: Option<ReplanDetails>,
    /// For planning and modification: constraints or preferences that hold for the whole plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub global_constraints: Vec<String>,
    /// For modification: the plan to change (a ROMA `PlanOutput` or any JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_plan: Option<Value>,
    /// For modification: what the user wants changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modification_instructions: Option<String>,
}

impl ContextRequest {
    /// A request with the options' defaults and no caller inputs.
    pub fn new(task_id: TaskId, context_type: ContextType) -> Self {
        Self {
            task_id,
            context_type,
            budget_tokens: None,
            max_items: None,
            additional_context: Vec::new(),
            replan: None,
            global_constraints: Vec::new(),
            original_plan: None,
            modification_instructions: None,
        }
    }

    /// Sets the total token budget (CLI `--budget-tokens`).
    pub fn with_budget_tokens(mut self, tokens: usize) -> Self {
        self.budget_tokens = Some(tokens);
        self
    }

    /// Sets the item limit (CLI `--max-items`).
    pub fn with_max_items(mut self, items: usize) -> Self {
        self.max_items = Some(items);
        self
    }

    /// Appends one piece of additional context.
    pub fn with_additional(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.additional_context.push((key.into(), value.into()));
        self
    }

    /// Sets the replan details.
    pub fn with_replan(mut self, details: ReplanDetails) -> Self {
        self.replan = Some(details);
        self
    }

    /// Appends a global constraint or preference.
    pub fn with_constraint(mut self, constraint: impl Into<String>) -> Self {
        self.global_constraints.push(constraint.into());
        self
    }

    /// Sets the plan to modify.
    pub fn with_original_plan(mut self, plan: impl Into<Value>) -> Self {
        self.original_plan = Some(plan.into());
        self
    }

    /// Sets the modification instructions.
    pub fn with_modification_instructions(mut self, instructions: impl Into<String>) -> Self {
        self.modification_instructions = Some(instructions.into());
        self
    }
}

/// Which text layout `formatted` uses (SPEC R6.5; see `docs/context-building.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Objective, parent tasks, current task, then item sections (default and execution).
    Execution,
    /// Like execution, with a planning header and the planning sections first.
    Planning,
    /// Objective, parent tasks, the aggregating task, then every child with its status.
    Aggregation,
    /// Current task, type, layer, parent goal and objective only (atomization, degraded).
    Minimal,
}

/// Where an item (or an omitted part) comes from. The first group are item kinds; the last three
/// only appear in [`OmittedItem`], for parts of the header shortened or dropped by the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Why a new plan is needed (request input, pinned).
    ReplanDetails,
    /// The plan to modify (request input, pinned).
    OriginalPlan,
    /// What to change in the plan (request input, pinned).
    ModificationInstructions,
    /// Constraints for the whole plan (request input, pinned).
    GlobalConstraints,
    /// An explicit dependency (`depends_on_indices`, `dependency_ids`), relevance 1.0, pinned.
    Dependency,
    /// The parent's own output (planning), relevance 0.7.
    ParentOutput,
    /// A DONE sibling earlier in plan order, relevance 0.8.
    PriorSibling,
    /// A task referenced in backticks in the goal, relevance 0.9.
    GoalReference,
    /// A DONE sibling later in plan order (WRITE and THINK tasks), relevance 0.5.
    LaterSibling,
    /// A child of the aggregating task with its real status, pinned.
    Child,
    /// A similar completed task, relevance = normalised score × 0.6.
    Similar,
    /// Additional context from the caller, relevance 0.6.
    Additional,
    /// An allow-listed `aux_data` key of the current task, relevance 0.6.
    AuxData,
    /// The current task's goal (omissions only).
    CurrentTask,
    /// The overall objective (omissions only).
    OverallObjective,
    /// An ancestor in the parent hierarchy (omissions only).
    Ancestor,
}

impl SourceKind {
    /// The snake-case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReplanDetails => "replan_details",
            Self::OriginalPlan => "original_plan",
            Self::ModificationInstructions => "modification_instructions",
            Self::GlobalConstraints => "global_constraints",
            Self::Dependency => "dependency",
            Self::ParentOutput => "parent_output",
            Self::PriorSibling => "prior_sibling",
            Self::GoalReference => "goal_reference",
            Self::LaterSibling => "later_sibling",
            Self::Child => "child",
            Self::Similar => "similar",
            Self::Additional => "additional",
            Self::AuxData => "aux_data",
            Self::CurrentTask => "current_task",
            Self::OverallObjective => "overall_objective",
            Self::Ancestor => "ancestor",
        }
    }
}

/// Which text of the source an item carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentSelection {
    /// The output itself (rendered with the §14.5 extraction rules), whole.
    Output,
    /// The source's own non-generic `output_summary`.
    Summary,
    /// A reduction made by the `Summarizer` to fit the budget.
    Summarized,
    /// The error message of a FAILED task.
    Error,
    /// A status note (`[no result yet]`, …) for a child without output.
    Note,
    /// Text given by the caller (additional context, replan details, …), whole.
    Provided,
}

/// One piece of context, exactly as it appears in `formatted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextItem {
    /// The task the content comes from, or a pseudo id for caller inputs
    /// (`additional:KEY`, `replan_details`, `global_constraints`, `original_plan`,
    /// `modification_instructions`, `aux_data:KEY`).
    pub source_task_id: String,
    /// That task's goal, or a label for caller inputs.
    pub source_task_goal: String,
    /// The text shown to the agent (redacted, possibly shortened).
    pub content: String,
    /// A label for the content: the source's `output_type_description`, else a default per kind
    /// (`explicit_dependency_output`, `prerequisite_sibling_output`, …).
    pub content_type: String,
    /// 0.0–1.0; pinned items first, then by relevance (SPEC R6.1, R6.4).
    pub relevance: f64,
    /// Tokens of `content` by the service's counter.
    pub tokens: usize,
    /// Which source produced it.
    pub kind: SourceKind,
    /// Placed before unpinned items and shortened fairly rather than dropped first.
    pub pinned: bool,
    /// The source task's status, when the source is a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// Which text of the source `content` is.
    pub selection: ContentSelection,
}

/// One ancestor of the current task as rendered (root-most first in `parent_hierarchy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HierarchyEntry {
    /// The ancestor's id (redacted like any text).
    pub task_id: String,
    /// Its goal (redacted).
    pub goal: String,
    /// Its layer, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u32>,
    /// Its task type.
    pub task_type: TaskType,
    /// Its node type, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_type: Option<NodeType>,
    /// Its status.
    pub status: TaskStatus,
    /// Its `output_summary`, when it is specific (not generic) and fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// Whether an omitted part was left out or cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OmitAction {
    /// Not in the context at all.
    Dropped,
    /// In the context, shorter than the source (a summary or a reduction).
    Shortened,
}

/// Why a part was dropped or shortened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OmitReason {
    /// The content was larger than the per-item cap.
    ItemCap,
    /// The total token budget had no room for all of it.
    Budget,
    /// The item limit (`max_items`) was reached.
    MaxItems,
}

/// A source that is missing from the context or shortened in it (SPEC R6.4: nothing is lost
/// silently).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OmittedItem {
    /// The source (task id or pseudo id, as in [`ContextItem::source_task_id`]).
    pub source_task_id: String,
    /// Which source.
    pub kind: SourceKind,
    /// Dropped or shortened.
    pub action: OmitAction,
    /// Why.
    pub reason: OmitReason,
    /// Tokens of the full content.
    pub original_tokens: usize,
    /// Tokens that made it into the context (0 when dropped).
    pub kept_tokens: usize,
}

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// A declared dependency is not DONE yet ("pending dependency"); the caller decides whether
    /// to wait.
    PendingDependency,
    /// A dependency declaration is unusable (negative, out of range, not an integer, self, …).
    InvalidDependency,
    /// A record the builder needed is not in the store.
    MissingRecord,
    /// The parent chain loops.
    ParentCycle,
    /// The parent chain is longer than the walk limit (20 hops).
    DepthLimit,
    /// The task is not listed in its parent's plan, so it has no siblings.
    NotInParentPlan,
    /// A goal reference was ignored (not done, another plan tree, too many).
    GoalReference,
    /// A child of the aggregating task has not finished.
    UnfinishedChild,
    /// An output was stored compressed (gzip+base64) and is not shown.
    CompressedOutput,
    /// A caller input does not apply to this context type and was ignored.
    IgnoredInput,
    /// A collaborator (summariser, similarity index) failed; a fallback was used.
    Collaborator,
    /// The budget was too small for the header.
    Budget,
    /// An unknown context-type name was mapped to `default` (lenient parse only).
    UnknownContextType,
    /// The build failed and the minimal context was returned (`degraded = true`).
    Degraded,
}

/// Something the caller should know about a built context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildWarning {
    /// What it is about.
    pub kind: WarningKind,
    /// The task it concerns, when there is one (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// A one-line explanation.
    pub message: String,
}

impl BuildWarning {
    /// A warning.
    pub fn new(kind: WarningKind, task_id: Option<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            task_id,
            message: message.into(),
        }
    }
}

impl fmt::Display for BuildWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The input handed to an agent: what the builder selected, and the text it rendered from it.
///
/// `formatted` is a pure function of the other fields
/// ([`format_input`](super::format_input) re-renders it byte for byte), so `items` and
/// `formatted` always describe the same content. `token_count` is the count of `formatted` by the
/// service's counter and never exceeds `budget_tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTaskInput {
    /// The task the context is for.
    pub current_task_id: TaskId,
    /// Its goal (redacted; shortened only when the budget cannot hold it).
    pub current_goal: String,
    /// Its task type; AGGREGATE for aggregation contexts.
    pub current_task_type: TaskType,
    /// Its layer, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_layer: Option<u32>,
    /// The context type that was built.
    pub context_type: ContextType,
    /// The layout of `formatted`.
    pub layout: Layout,
    /// The goal of the whole project (reference B7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall_project_goal: Option<String>,
    /// Rendered ancestors, root-most first (at most `max_depth`; reference B8).
    pub parent_hierarchy: Vec<HierarchyEntry>,
    /// Ancestors above the rendered ones that are not shown.
    pub ancestors_not_shown: usize,
    /// The selected context, in the order it appears in `formatted`.
    pub items: Vec<ContextItem>,
    /// The text for the agent.
    pub formatted: String,
    /// Sources dropped or shortened, with the reason.
    pub omitted: Vec<OmittedItem>,
    /// Things the caller should know (pending dependencies, cycles, …).
    pub warnings: Vec<BuildWarning>,
    /// The build failed and this is the minimal fallback context.
    pub degraded: bool,
    /// Tokens of `formatted`.
    pub token_count: usize,
    /// The total budget the context was built for.
    pub budget_tokens: usize,
}

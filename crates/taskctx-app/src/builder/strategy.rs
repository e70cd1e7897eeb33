//! One strategy per context type (SPEC R6.2): pure functions from the task and request to a
//! `SourcePlan` — which sources to read, which layout, how many items. The service does all I/O
//! for a plan, in the fixed source order of R6.1, whatever the plan's order.

use std::fmt::Debug;

use taskctx_domain::{TaskRecord, TaskType};

use super::options::BuilderOptions;
use super::types::{ContextRequest, ContextType, Layout};

/// A source the service can read for a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// Ancestors, rendered root-most first (R6.1.1).
    Hierarchy,
    /// `depends_on_indices` and `dependency_ids` (R6.1.2).
    Dependencies,
    /// DONE siblings earlier in plan order (R6.1.3).
    PriorSiblings,
    /// DONE siblings later in plan order (R6.1.4).
    LaterSiblings,
    /// The parent's own output.
    ParentOutput,
    /// Ids in backticks in the goal (R6.1.5).
    GoalReferences,
    /// Similar completed tasks from the `SimilarityIndex` (R6.1.6).
    Similar,
    /// The request's additional context (R6.1.7).
    Additional,
    /// The request's replan details.
    ReplanDetails,
    /// The request's global constraints.
    GlobalConstraints,
    /// The request's original plan.
    OriginalPlan,
    /// The request's modification instructions.
    ModificationInstructions,
    /// The task's children with their status (aggregation).
    Children,
    /// The parent's goal only (atomization).
    ParentGoal,
    /// Allow-listed `aux_data` keys of the task.
    AuxData,
}

/// What a strategy asks the service to build.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourcePlan {
    /// The text layout.
    pub layout: Layout,
    /// The sources to read.
    pub sources: Vec<Source>,
    /// The item limit (a request's `max_items` overrides it).
    pub max_items: Option<usize>,
    /// The task type to report instead of the record's (AGGREGATE for aggregation).
    pub task_type: Option<TaskType>,
}

impl SourcePlan {
    /// A plan with no sources.
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            sources: Vec::new(),
            max_items: None,
            task_type: None,
        }
    }

    /// Adds sources.
    pub fn with_sources(mut self, sources: &[Source]) -> Self {
        self.sources.reserve(sources.len());
        for source in sources {
            if !self.sources.contains(source) {
                self.sources.push(*source);
            }
        }
        self
    }

    /// Sets the item limit.
    pub fn with_max_items(mut self, max_items: Option<usize>) -> Self {
        self.max_items = max_items;
        self
    }

    /// Sets the reported task type.
    pub fn with_task_type(mut self, task_type: TaskType) -> Self {
        self.task_type = Some(task_type);
        self
    }

    /// Whether `source` is part of the plan.
    pub fn uses(&self, source: Source) -> bool {
        self.sources.contains(&source)
    }
}

/// Decides what a context of one type is made of. Pure: no I/O, no state.
pub trait ContextStrategy: Send + Sync + Debug {
    /// The context type this strategy builds.
    fn context_type(&self) -> ContextType;

    /// The plan for `task`.
    fn plan(
        &self,
        task: &TaskRecord,
        request: &ContextRequest,
        options: &BuilderOptions,
    ) -> SourcePlan;
}

/// WRITE and THINK tasks also see later DONE siblings (R6.1.4).
fn sees_later_siblings(task: &TaskRecord) -> bool {
    matches!(task.task_type, TaskType::Write | TaskType::Think)
}

fn executor_sources(task: &TaskRecord) -> Vec<Source> {
    let mut sources = vec![
        Source::Hierarchy,
        Source::Dependencies,
        Source::PriorSiblings,
        Source::GoalReferences,
        Source::Similar,
        Source::Additional,
        Source::AuxData,
    ];
    if sees_later_siblings(task) {
        sources.push(Source::LaterSiblings);
    }
    sources
}

const PLANNING_SOURCES: &[Source] = &[
    Source::Hierarchy,
    Source::Dependencies,
    Source::PriorSiblings,
    Source::ParentOutput,
    Source::GoalReferences,
    Source::Similar,
    Source::Additional,
    Source::ReplanDetails,
    Source::GlobalConstraints,
    Source::AuxData,
];

/// `default`: every R6.1 source in the execution layout, bounded by the budget only.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultStrategy;

impl ContextStrategy for DefaultStrategy {
    fn context_type(&self) -> ContextType {
        ContextType::Default
    }

    fn plan(&self, task: &TaskRecord, _: &ContextRequest, _: &BuilderOptions) -> SourcePlan {
        SourcePlan::new(Layout::Execution).with_sources(&executor_sources(task))
    }
}

/// `execution`: hierarchy and every source, at most `max_items` items.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutionStrategy;

impl ContextStrategy for ExecutionStrategy {
    fn context_type(&self) -> ContextType {
        ContextType::Execution
    }

    fn plan(&self, task: &TaskRecord, _: &ContextRequest, options: &BuilderOptions) -> SourcePlan {
        SourcePlan::new(Layout::Execution)
            .with_sources(&executor_sources(task))
            .with_max_items(Some(options.max_items))
    }
}

/// `planning`: hierarchy, dependencies, prior siblings, parent output, goal references, similar
/// tasks, replan details, global constraints (and additional context).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanningStrategy;

impl ContextStrategy for PlanningStrategy {
    fn context_type(&self) -> ContextType {
        ContextType::Planning
    }

    fn plan(&self, _: &TaskRecord, _: &ContextRequest, _: &BuilderOptions) -> SourcePlan {
        SourcePlan::new(Layout::Planning).with_sources(PLANNING_SOURCES)
    }
}

/// `modification`: planning plus the original plan and the modification instructions, each once.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModificationStrategy;

impl ContextStrategy for ModificationStrategy {
    fn context_type(&self) -> ContextType {
        ContextType::Modification
    }

    fn plan(&self, _: &TaskRecord, _: &ContextRequest, _: &BuilderOptions) -> SourcePlan {
        SourcePlan::new(Layout::Planning)
            .with_sources(PLANNING_SOURCES)
            .with_sources(&[Source::OriginalPlan, Source::ModificationInstructions])
    }
}

/// `aggregation`: the children in plan order with their real status, and the hierarchy; the
/// reported type is AGGREGATE.
#[derive(Debug, Clone, Copy, Default)]
pub struct AggregationStrategy;

impl ContextStrategy for AggregationStrategy {
    fn context_type(&self) -> ContextType {
        ContextType::Aggregation
    }

    fn plan(&self, _: &TaskRecord, _: &ContextRequest, _: &BuilderOptions) -> SourcePlan {
        SourcePlan::new(Layout::Aggregation)
            .with_sources(&[
                Source::Hierarchy,
                Source::Children,
                Source::Additional,
                Source::AuxData,
            ])
            .with_task_type(TaskType::Aggregate)
    }
}

/// `atomization`: the parent goal only, in the minimal layout.
#[derive(Debug, Clone, Copy, Default)]
pub struct AtomizationStrategy;

impl ContextStrategy for AtomizationStrategy {
    fn context_type(&self) -> ContextType {
        ContextType::Atomization
    }

    fn plan(&self, _: &TaskRecord, _: &ContextRequest, _: &BuilderOptions) -> SourcePlan {
        SourcePlan::new(Layout::Minimal).with_sources(&[Source::ParentGoal])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskctx_domain::TaskId;

    #[test]
    fn only_write_and_think_tasks_see_later_siblings() {
        let options = BuilderOptions::default();
        let mut task = TaskRecord::new(TaskId::new("t").unwrap(), "g", TaskType::Search);
        let request = ContextRequest::new(task.task_id.clone(), ContextType::Execution);
        let plan = ExecutionStrategy.plan(&task, &request, &options);
        assert!(!plan.uses(Source::LaterSiblings));
        assert_eq!(plan.max_items, Some(10));
        task.task_type = TaskType::Write;
        assert!(
            ExecutionStrategy
                .plan(&task, &request, &options)
                .uses(Source::LaterSiblings)
        );
        assert!(
            !PlanningStrategy
                .plan(&task, &request, &options)
                .uses(Source::LaterSiblings)
        );
        let aggregation = AggregationStrategy.plan(&task, &request, &options);
        assert_eq!(aggregation.task_type, Some(TaskType::Aggregate));
        assert_eq!(
            AtomizationStrategy.plan(&task, &request, &options).sources,
            vec![Source::ParentGoal]
        );
    }
}

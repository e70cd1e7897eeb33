//! The context builder (SPEC §6): `ContextBuilderService` and its strategies, budget, formatter,
//! redactor and summariser.
//!
//! A build reads the sources a [`ContextStrategy`] asks for through the [`RecordStore`] port
//! (the only I/O), turns each into a candidate item, lets the pure budget packer decide what fits
//! within the token budget, shortens what must be shortened (a record's own summary, else the
//! [`Summarizer`]), and renders one of four layouts. Every text passes the [`Redactor`] first.
//! The result, an [`AgentTaskInput`], is serialisable; its `formatted` text is a pure function of
//! its other fields ([`format_input`]).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use taskctx_app::builder::{ContextBuilderService, ContextRequest, ContextType};
//! use taskctx_domain::{HeuristicTokenCounter, TaskId, TaskRecord, TaskStatus, TaskType};
//! use taskctx_store::{RecordStore, RecordStoreExt};
//! use taskctx_store_memory::MemoryRecordStore;
//!
//! let store: Arc<dyn RecordStore> = Arc::new(MemoryRecordStore::new());
//! let root = TaskId::new("root").unwrap();
//! let first = TaskId::new("root.1").unwrap();
//! let second = TaskId::new("root.2").unwrap();
//! let mut plan = TaskRecord::new(root.clone(), "Write a battery market report", TaskType::Write);
//! plan.child_task_ids = vec![first.clone(), second.clone()];
//! let mut search = TaskRecord::new(first.clone(), "Find vendors", TaskType::Search);
//! search.parent_task_id = Some(root.clone());
//! search.status = TaskStatus::Done;
//! search.output_content = Some("Five vendors ship solid-state cells.".into());
//! let mut write = TaskRecord::new(second.clone(), "Write the vendor section", TaskType::Write);
//! write.parent_task_id = Some(root.clone());
//! for record in [plan, search, write] {
//!     store.create(record).await.unwrap();
//! }
//!
//! let service = ContextBuilderService::builder(Arc::clone(&store))
//!     .token_counter(Arc::new(HeuristicTokenCounter))
//!     .build();
//! let context = service
//!     .build(ContextRequest::new(second, ContextType::Execution).with_budget_tokens(1000))
//!     .await
//!     .unwrap();
//! assert_eq!(context.items[0].source_task_id, "root.1");
//! assert!(context.formatted.contains("=== Prior Sibling Results ==="));
//! assert!(context.token_count <= 1000);
//! # });
//! ```
//!
//! `docs/context-building.md` describes the sources, budget rules, layouts, redaction and the
//! defects of the original this module fixes.
//!
//! [`RecordStore`]: taskctx_store::RecordStore

mod budget;
mod error;
mod format;
mod gather;
mod memo;
mod metrics;
mod options;
mod redact;
mod render;
mod select;
mod service;
mod similarity;
mod strategy;
mod summarize;
mod types;

pub use error::{BuildError, UnknownContextType};
pub use format::{FormatView, format_input, format_view};
pub use metrics::MetricsSnapshot;
pub use options::BuilderOptions;
pub use redact::{
    RedactionRuleError, RedactionRules, Redactor, RuleRedactor, SecretPattern, SensitiveKey,
};
pub use render::{extract_output, render_plan};
pub use service::{ContextBuilderService, ContextBuilderServiceBuilder};
pub use similarity::{Bm25Config, Bm25Index, SimilarHit, SimilarityError, SimilarityIndex};
pub use strategy::{
    AggregationStrategy, AtomizationStrategy, ContextStrategy, DefaultStrategy, ExecutionStrategy,
    ModificationStrategy, PlanningStrategy, Source, SourcePlan,
};
pub use summarize::{
    ExtractiveSummarizer, SummarizeError, Summarizer, SummaryRequest, omission_marker,
    reduce_head_tail,
};
pub use types::{
    AgentTaskInput, BuildWarning, ContentSelection, ContextItem, ContextRequest, ContextType,
    HierarchyEntry, Layout, OmitAction, OmitReason, OmittedItem, ReplanDetails, SourceKind,
    WarningKind,
};

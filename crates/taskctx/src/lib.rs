#![doc = include_str!("../README.md")]

mod open;
mod url;

pub use open::{OpenError, Stores, default_store_url, open, open_url};
pub use url::{StoreUrl, UrlError};

/// AIECS interoperability: read `context_history_{chat_id}.json` files, import them into any
/// history store, export a chat in the AIECS format or as JSON lines.
#[cfg(feature = "fs")]
pub use taskctx_store_fs::aiecs;

/// The layers, complete, for what the curated re-exports below leave out.
pub use taskctx_app as app;
pub use taskctx_domain as domain;
pub use taskctx_layers as layers;
pub use taskctx_store as store;

pub use taskctx_app::builder::{
    AgentTaskInput, BuildError, BuildWarning, ContextBuilderService, ContextItem, ContextRequest,
    ContextType, OmitAction, OmitReason, OmittedItem, ReplanDetails,
};
pub use taskctx_app::config::{Config, ConfigError, LogLevel};
pub use taskctx_app::context::{
    BlockingContext, CleanupError, ContextError, ContextInit, HistoryBudget, Persistence, Resource,
    ScopeError, TaskContext, build_context, on_close, on_close_async, task_context,
    task_context_blocking,
};
pub use taskctx_app::tokens::{BpeTokenCounter, default_token_counter};
pub use taskctx_domain::{
    ChatId, ContextUpdate, Map, OptimizeReport, TaskId, TaskRecord, TaskStatus, TaskType,
    Timestamp, UpdateType, UserId, Value,
};
pub use taskctx_store::{
    HistoryStore, HistoryStoreExt, PutRecord, RecordStore, RecordStoreExt, StoreError, StoreResult,
};

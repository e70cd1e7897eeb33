//! Task-context scopes: run a body with a context, then always record failure, close resources
//! and save — on success, on error, on panic, and (through the context's drop) on cancellation.
//!
//! The async scope and the blocking scope share [`finish`], so their semantics are identical by
//! construction (AIECS's sync `with` never saved, and its async helper never saw the body's
//! exceptions).

use std::any::Any;
use std::fmt::Display;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use taskctx_domain::{ContextUpdate, OptimizeReport, Timestamp, UpdateType};
use taskctx_store::HistoryStore;
use tracing::Instrument;

use super::error::{CleanupError, ContextError, ScopeError};
use super::init::ContextInit;
use super::resources::{Resource, ResourceCloseError, panic_message};
use super::task_context::{AddResourceError, HistoryBudget, TaskContext, TaskContextBuilder};
use super::unwind::CatchUnwind;

/// Runs `body` with a write-through context on `store`, then records an `error` update if the
/// body failed or panicked, closes every resource (last registered first) and saves. A panic is
/// re-raised after cleanup.
///
/// ```
/// # use std::sync::Arc;
/// # use taskctx_app::context::{ContextInit, task_context};
/// # use taskctx_domain::{ChatId, UpdateType, Value};
/// # use taskctx_store_memory::MemoryHistoryStore;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = Arc::new(MemoryHistoryStore::new());
/// let init = ContextInit::for_chat(ChatId::new("demo").unwrap());
/// let answer = task_context(init, store, |ctx| async move {
///     ctx.add_context_update(UpdateType::MESSAGE, Value::from("hello"), None).await?;
///     Ok::<_, taskctx_app::context::ContextError>(42)
/// })
/// .await
/// .unwrap();
/// assert_eq!(answer, 42);
/// # });
/// ```
pub async fn task_context<T, E, F, Fut>(
    init: ContextInit,
    store: Arc<dyn HistoryStore>,
    body: F,
) -> Result<T, ScopeError<E>>
where
    F: FnOnce(TaskContext) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    TaskContext::builder(init).store(store).scope(body).await
}

/// The blocking twin of [`task_context`], for synchronous code; same semantics. It must not be
/// called on an async runtime thread (it returns [`ContextError::BlockingInsideRuntime`] there
/// instead of blocking the runtime).
pub fn task_context_blocking<T, E, F>(
    init: ContextInit,
    store: Arc<dyn HistoryStore>,
    body: F,
) -> Result<T, ScopeError<E>>
where
    F: FnOnce(&BlockingContext<'_>) -> Result<T, E>,
    E: Display,
{
    TaskContext::builder(init).store(store).scope_blocking(body)
}

impl TaskContextBuilder {
    /// Opens the context, runs `body` with it and cleans up (see [`task_context`]).
    pub async fn scope<T, E, F, Fut>(self, body: F) -> Result<T, ScopeError<E>>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Display,
    {
        let ctx = self.open().await.map_err(ScopeError::Open)?;
        let span =
            tracing::info_span!("task_context", chat_id = %ctx.chat_id(), user_id = %ctx.user_id());
        async move {
            let outcome = CatchUnwind::new(AssertUnwindSafe(body(ctx.clone()))).await;
            finish(&ctx, outcome).await
        }
        .instrument(span)
        .await
    }

    /// Opens the context, runs the synchronous `body` with it and cleans up (see
    /// [`task_context_blocking`]).
    pub fn scope_blocking<T, E, F>(self, body: F) -> Result<T, ScopeError<E>>
    where
        F: FnOnce(&BlockingContext<'_>) -> Result<T, E>,
        E: Display,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ScopeError::Open(ContextError::BlockingInsideRuntime));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ScopeError::Open(ContextError::Runtime(e)))?;
        let ctx = runtime.block_on(self.open()).map_err(ScopeError::Open)?;
        let span =
            tracing::info_span!("task_context", chat_id = %ctx.chat_id(), user_id = %ctx.user_id());
        let _entered = span.enter();
        let blocking = BlockingContext {
            ctx: ctx.clone(),
            runtime: &runtime,
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| body(&blocking)));
        runtime.block_on(finish(&ctx, outcome))
    }
}

/// Records the failure (if any), closes resources, saves, logs the duration, then returns the
/// body's value, reports what failed, or re-raises the body's panic.
async fn finish<T, E: Display>(
    ctx: &TaskContext,
    outcome: Result<Result<T, E>, Box<dyn Any + Send>>,
) -> Result<T, ScopeError<E>> {
    let failure = match &outcome {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(json!({"message": error.to_string(), "kind": "error"})),
        Err(panic) => Some(json!({"message": panic_message(&**panic), "kind": "panic"})),
    };
    let failed = failure.is_some();
    if let Some(data) = failure {
        // Recorded without its own save: the final save below stores it with everything else.
        ctx.record(ContextUpdate::new(UpdateType::ERROR, data));
    }
    let cleanup = ctx.close().await.err();
    tracing::info!(
        duration_ms = ctx.elapsed().as_millis() as u64,
        failed,
        cleanup_failed = cleanup.is_some(),
        "task context finished"
    );
    match outcome {
        Err(panic) => resume_unwind(panic),
        Ok(Err(error)) => Err(ScopeError::Body { error, cleanup }),
        Ok(Ok(value)) => match cleanup {
            None => Ok(value),
            Some(cleanup) => Err(ScopeError::Cleanup(cleanup)),
        },
    }
}

/// A task context for synchronous code: the same operations as [`TaskContext`], blocking.
#[derive(Debug)]
pub struct BlockingContext<'rt> {
    ctx: TaskContext,
    runtime: &'rt tokio::runtime::Runtime,
}

impl BlockingContext<'_> {
    /// The underlying context, for the non-blocking accessors (history, trackers, metadata, …).
    pub fn context(&self) -> &TaskContext {
        &self.ctx
    }

    /// See [`TaskContext::add_context_update`].
    pub fn add_context_update(
        &self,
        update_type: UpdateType,
        data: Value,
        metadata: Option<Map<String, Value>>,
    ) -> Result<(), ContextError> {
        self.runtime
            .block_on(self.ctx.add_context_update(update_type, data, metadata))
    }

    /// See [`TaskContext::add_resource`].
    pub fn add_resource(
        &self,
        name: impl Into<String>,
        resource: impl Resource,
    ) -> Result<(), AddResourceError> {
        self.runtime.block_on(self.ctx.add_resource(name, resource))
    }

    /// See [`TaskContext::track_file_operation`].
    pub fn track_file_operation(
        &self,
        path: &str,
        operation: &str,
        source: &str,
    ) -> Result<(), ContextError> {
        self.runtime
            .block_on(self.ctx.track_file_operation(path, operation, source))
    }

    /// See [`TaskContext::track_model_usage`].
    pub fn track_model_usage(
        &self,
        model_id: &str,
        provider_id: &str,
        mode: &str,
    ) -> Result<bool, ContextError> {
        self.runtime
            .block_on(self.ctx.track_model_usage(model_id, provider_id, mode))
    }

    /// See [`TaskContext::optimize_context`].
    pub fn optimize_context(&self, budget: HistoryBudget) -> Result<OptimizeReport, ContextError> {
        self.runtime.block_on(self.ctx.optimize_context(budget))
    }

    /// See [`TaskContext::truncate_context_history`].
    pub fn truncate_context_history(&self, until: Timestamp) -> Result<usize, ContextError> {
        self.runtime
            .block_on(self.ctx.truncate_context_history(until))
    }

    /// See [`TaskContext::save`].
    pub fn save(&self) -> Result<(), ContextError> {
        self.runtime.block_on(self.ctx.save())
    }

    /// See [`TaskContext::close_resources`].
    pub fn close_resources(&self) -> Vec<ResourceCloseError> {
        self.runtime.block_on(self.ctx.close_resources())
    }

    /// See [`TaskContext::close`].
    pub fn close(&self) -> Result<(), CleanupError> {
        self.runtime.block_on(self.ctx.close())
    }
}

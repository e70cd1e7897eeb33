//! Resources a task context owns and closes: anything with an async or sync `close`.
//!
//! Each resource is closed exactly once — it is moved out of the registry to be closed — in
//! reverse order of registration. A close that fails or panics is reported and never stops the
//! others (AIECS stopped at nothing but also never awaited an `async` close, so async resources
//! were never really closed).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use async_trait::async_trait;

use super::unwind::CatchUnwind;

/// The error type resources report from `close`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Something a task context closes when its scope ends (a connection, a client, a temp dir…).
#[async_trait]
pub trait Resource: Send + Sync + 'static {
    /// A short name for the kind of resource, recorded in the history (AIECS recorded the class
    /// name).
    fn kind(&self) -> &str;

    /// Releases the resource. Called at most once.
    async fn close(&mut self) -> Result<(), BoxError>;
}

/// A resource whose close is a synchronous function.
pub struct SyncClose<F> {
    kind: String,
    close: Option<F>,
}

/// A resource whose close is an async function.
pub struct AsyncClose<F> {
    kind: String,
    close: Option<F>,
}

/// Wraps a synchronous close function as a [`Resource`].
pub fn on_close<F, E>(kind: impl Into<String>, close: F) -> SyncClose<F>
where
    F: FnOnce() -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError>,
{
    SyncClose {
        kind: kind.into(),
        close: Some(close),
    }
}

/// Wraps an async close function as a [`Resource`].
pub fn on_close_async<F, Fut, E>(kind: impl Into<String>, close: F) -> AsyncClose<F>
where
    F: FnOnce() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    AsyncClose {
        kind: kind.into(),
        close: Some(close),
    }
}

#[async_trait]
impl<F, E> Resource for SyncClose<F>
where
    F: FnOnce() -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError>,
{
    fn kind(&self) -> &str {
        &self.kind
    }

    async fn close(&mut self) -> Result<(), BoxError> {
        match self.close.take() {
            Some(close) => close().map_err(Into::into),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl<F, Fut, E> Resource for AsyncClose<F>
where
    F: FnOnce() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn kind(&self) -> &str {
        &self.kind
    }

    async fn close(&mut self) -> Result<(), BoxError> {
        match self.close.take() {
            Some(close) => close().await.map_err(Into::into),
            None => Ok(()),
        }
    }
}

impl<F> fmt::Debug for SyncClose<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncClose")
            .field("kind", &self.kind)
            .finish()
    }
}

impl<F> fmt::Debug for AsyncClose<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncClose")
            .field("kind", &self.kind)
            .finish()
    }
}

/// A resource that failed to close.
#[derive(Debug, thiserror::Error)]
#[error("closing resource `{name}` ({kind}) failed: {error}")]
pub struct ResourceCloseError {
    /// The name it was registered under.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// What its close reported (or the panic message, if it panicked).
    #[source]
    pub error: BoxError,
}

/// One registered resource.
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) resource: Box<dyn Resource>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("kind", &self.resource.kind())
            .finish()
    }
}

/// Closes one resource, turning a panic inside its close into an error.
pub(crate) async fn close_one(mut entry: Entry) -> Result<(), ResourceCloseError> {
    let kind = entry.resource.kind().to_owned();
    let outcome = CatchUnwind::new(AssertUnwindSafe(entry.resource.close())).await;
    let error = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => error,
        Err(panic) => format!("close panicked: {}", panic_message(&*panic)).into(),
    };
    Err(ResourceCloseError {
        name: entry.name,
        kind,
        error,
    })
}

/// Closes every entry, last registered first, and collects every failure.
pub(crate) async fn close_all(mut entries: Vec<Entry>) -> Vec<ResourceCloseError> {
    let mut errors = Vec::new();
    while let Some(entry) = entries.pop() {
        if let Err(error) = close_one(entry).await {
            tracing::warn!(resource = %error.name, kind = %error.kind, error = %error.error, "resource close failed");
            errors.push(error);
        }
    }
    errors
}

/// The message of a panic payload, for reports.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

//! Which failures are usage errors (exit 2) and which are runtime errors (exit 1).

use std::fmt;

/// A mistake in what the user asked for: a bad argument, id, JSON value or setting.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Returns an `anyhow` error that exits with code 2.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// 2 for usage errors, 1 for everything else.
pub(crate) fn exit_code(error: &anyhow::Error) -> u8 {
    let usage = error.chain().any(|cause| {
        cause.is::<UsageError>()
            || cause.is::<taskctx::ConfigError>()
            || cause.is::<taskctx::UrlError>()
            || cause.is::<taskctx::domain::IdError>()
            || matches!(
                cause.downcast_ref::<taskctx::OpenError>(),
                Some(taskctx::OpenError::Url(_))
            )
    });
    if usage { 2 } else { 1 }
}

//! Mapping of sled's errors (plain and transactional) into the port's `StoreError`.

use sled::transaction::{ConflictableTransactionError, TransactionError};
use taskctx_store::StoreError;

/// What a transaction closure returns: `Abort` carries our own error (a `Conflict`, a `Corrupt`
/// value found inside the transaction), which aborts the transaction with nothing written.
pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Aborts the running transaction with `error`; nothing of it is written.
pub(crate) fn abort<T>(error: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(error))
}

/// Maps a sled error raised while doing `action` (e.g. "appending to chat `a`").
///
/// `Io` keeps the operating-system error, `Corruption` becomes `Corrupt` at the position sled
/// reports, everything else (unsupported use, sled bugs, a missing tree) is a non-retryable
/// `Backend` error.
pub(crate) fn from_sled(action: &str, error: sled::Error) -> StoreError {
    match error {
        sled::Error::Io(source) => StoreError::io(action, source),
        sled::Error::Corruption { at, .. } => StoreError::corrupt(
            match at {
                Some(at) => format!("sled log at {at}"),
                None => "sled log".to_owned(),
            },
            format!("sled detected corruption while {action}"),
        ),
        other => StoreError::Backend {
            detail: format!("sled failed while {action}: {other}"),
            retryable: false,
        },
    }
}

/// Maps the result of a whole transaction: an abort is our own error, passed through as it is.
pub(crate) fn from_transaction(action: &str, error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => from_sled(action, error),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn sled_errors_map_to_what_they_mean() {
        let io = from_sled(
            "appending",
            sled::Error::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        );
        assert!(matches!(io, StoreError::Io { ref action, .. } if action == "appending"));
        let corrupt = from_sled("loading", sled::Error::Corruption { at: None, bt: () });
        assert!(matches!(corrupt, StoreError::Corrupt { .. }), "{corrupt:?}");
        let bug = from_sled("loading", sled::Error::ReportableBug("oops".into()));
        assert!(matches!(
            bug,
            StoreError::Backend {
                retryable: false,
                ..
            }
        ));
        let aborted = from_transaction(
            "putting",
            TransactionError::Abort(StoreError::InvalidInput("x".into())),
        );
        assert!(matches!(aborted, StoreError::InvalidInput(_)));
    }
}

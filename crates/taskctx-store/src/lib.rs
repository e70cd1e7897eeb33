#![doc = include_str!("../README.md")]

mod error;
mod ext;
mod history;
mod record;

pub use error::{StoreError, StoreResult};
pub use ext::{HistoryStoreExt, RecordStoreExt};
pub use history::{ChatSummary, HistoryStats, HistoryStore};
pub use record::{PutRecord, RecordStats, RecordStore, order_children, reject_duplicate_ids};

#[cfg(feature = "mocks")]
pub use history::MockHistoryStore;
#[cfg(feature = "mocks")]
pub use record::MockRecordStore;

/// Re-exported so adapters and callers name the same domain types.
pub use taskctx_domain as domain;

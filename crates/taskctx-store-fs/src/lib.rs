#![doc = include_str!("../README.md")]

pub mod aiecs;
mod fsutil;
mod history;
mod lock;
mod names;
mod records;
mod store;
#[cfg(test)]
mod testing;

pub use history::FsHistoryStore;
pub use lock::LOCK_FILE;
pub use records::FsRecordStore;
pub use store::{FORMAT_FILE, FsStore, HISTORY_DIR, RECORDS_DIR};

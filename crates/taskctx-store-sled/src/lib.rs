#![doc = include_str!("../README.md")]

mod codec;
mod error;
mod flush;
mod history;
mod keys;
mod records;
mod store;

pub use flush::FlushStats;
pub use history::SledHistoryStore;
pub use records::SledRecordStore;
pub use store::{LOCK_FILE_NAME, SledStore};

#![doc = include_str!("../README.md")]

mod history;
mod records;

pub use history::MemoryHistoryStore;
pub use records::MemoryRecordStore;

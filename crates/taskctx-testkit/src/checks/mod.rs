//! The contract checks, one `pub async fn` each, named `history_…` or `records_…`.

mod history;
mod records;

pub use history::*;
pub use records::*;

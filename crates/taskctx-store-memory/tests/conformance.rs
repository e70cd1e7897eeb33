//! The memory store runs the whole conformance suite.

use async_trait::async_trait;
use std::sync::Arc;
use taskctx_store::StoreResult;
use taskctx_store_memory::{MemoryHistoryStore, MemoryRecordStore};
use taskctx_testkit::{Capabilities, Capability, Harness, Stores};

/// A fresh memory store per check; "reopening" hands out the same store, since memory is not
/// persistent (the reopen checks are skipped, visibly).
#[derive(Default)]
struct MemoryHarness {
    history: MemoryHistoryStore,
    records: MemoryRecordStore,
}

#[async_trait]
impl Harness for MemoryHarness {
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with(Capability::AtomicBatch)
    }

    async fn open(&self) -> StoreResult<Stores> {
        Ok(Stores {
            history: Arc::new(self.history.clone()),
            records: Arc::new(self.records.clone()),
        })
    }

    fn property_cases(&self) -> u32 {
        256
    }
}

taskctx_testkit::conformance_tests!(MemoryHarness::default());

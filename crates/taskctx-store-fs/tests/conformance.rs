//! The file store runs the whole conformance suite, reopening the same directory for the
//! persistence checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;
use taskctx_store::StoreResult;
use taskctx_store_fs::FsStore;
use taskctx_testkit::{Capabilities, Capability, Harness, Stores};
use tempfile::TempDir;

/// A fresh directory per check; `open` opens that same directory again, so reopen checks see
/// what the previous handles wrote.
struct FsHarness {
    dir: TempDir,
}

impl FsHarness {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temp dir for the store"),
        }
    }
}

#[async_trait]
impl Harness for FsHarness {
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with(Capability::Persistent)
            .with(Capability::AtomicBatch)
    }

    async fn open(&self) -> StoreResult<Stores> {
        let store = FsStore::open(self.dir.path()).await?;
        Ok(Stores {
            history: Arc::new(store.history()),
            records: Arc::new(store.records()),
        })
    }

    fn property_cases(&self) -> u32 {
        // Every write pays an fsync, yet the default number of cases runs in seconds; more
        // cases find more interleavings of reopen, batch and delete.
        128
    }
}

taskctx_testkit::conformance_tests!(FsHarness::new());

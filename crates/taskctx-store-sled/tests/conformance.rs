//! The sled store runs the whole conformance suite, reopening the same directory for the
//! persistence checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;
use taskctx_store::StoreResult;
use taskctx_store_sled::SledStore;
use taskctx_testkit::{Capabilities, Capability, Harness, Stores};
use tempfile::TempDir;

/// A fresh directory per check; `open` opens the store in it, again and again, so the reopen
/// checks see what the previous handles left on disk.
struct SledHarness {
    dir: TempDir,
}

impl SledHarness {
    fn new() -> Self {
        match tempfile::tempdir() {
            Ok(dir) => Self { dir },
            Err(error) => panic!("cannot create a temporary directory: {error}"),
        }
    }
}

#[async_trait]
impl Harness for SledHarness {
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with(Capability::Persistent)
            .with(Capability::AtomicBatch)
    }

    async fn open(&self) -> StoreResult<Stores> {
        let path = self.dir.path().join("store");
        let store = SledStore::open_async(path).await?;
        Ok(Stores {
            history: Arc::new(store.history()),
            records: Arc::new(store.records()),
        })
    }

    // `property_cases` keeps its default (64): the whole suite runs in a few seconds even though
    // every case opens a new sled database and every write pays an fsync.
}

taskctx_testkit::conformance_tests!(SledHarness::new());

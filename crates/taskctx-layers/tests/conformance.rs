//! The whole conformance suite, unchanged, for each decorator stack over the memory store: the
//! cache, the write buffer (configured so that checks really run against buffered writes), and
//! the cache over the buffer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use taskctx_layers::{CacheConfig, CacheLayer, Layer, WriteBufferConfig, WriteBufferLayer};
use taskctx_store::{RecordStore, StoreResult};
use taskctx_store_memory::{MemoryHistoryStore, MemoryRecordStore};
use taskctx_testkit::{Capabilities, Capability, Harness, Stores};

/// Small enough that the suite's checks cross flushes, large enough that most reads in a check
/// are answered from the overlay.
const MAX_PENDING: usize = 7;

fn cache() -> CacheLayer {
    // Small bounds, so entries are also evicted during the property checks.
    CacheLayer::new(
        CacheConfig::default()
            .with_max_entries(64)
            .with_max_bytes(256 << 10)
            .with_ttl(Duration::from_secs(60)),
    )
}

fn buffer() -> WriteBufferLayer {
    // A long age limit: flushes happen by count and before other writes, never by chance.
    WriteBufferLayer::new(
        WriteBufferConfig::default()
            .with_max_pending(MAX_PENDING)
            .with_max_age(Duration::from_secs(3600)),
    )
}

/// A memory store under the decorators that `wrap` builds; the decorators are built at `open`,
/// inside the check's runtime. The history port is the plain memory store: these decorators
/// are for records.
struct Decorated {
    history: MemoryHistoryStore,
    records: MemoryRecordStore,
    wrap: fn(MemoryRecordStore) -> Arc<dyn RecordStore>,
}

impl Decorated {
    fn new(wrap: fn(MemoryRecordStore) -> Arc<dyn RecordStore>) -> Self {
        Self {
            history: MemoryHistoryStore::new(),
            records: MemoryRecordStore::new(),
            wrap,
        }
    }
}

#[async_trait]
impl Harness for Decorated {
    fn capabilities(&self) -> Capabilities {
        // As the memory store: the decorators keep its batches atomic (the buffer flushes first
        // and passes `put_many` through whole).
        Capabilities::NONE.with(Capability::AtomicBatch)
    }

    async fn open(&self) -> StoreResult<Stores> {
        Ok(Stores {
            history: Arc::new(self.history.clone()),
            records: (self.wrap)(self.records.clone()),
        })
    }

    fn property_cases(&self) -> u32 {
        256
    }
}

mod cache_over_memory {
    use super::*;

    fn wrap(store: MemoryRecordStore) -> Arc<dyn RecordStore> {
        Arc::new(cache().layer(store))
    }

    taskctx_testkit::conformance_tests!(Decorated::new(wrap));
}

mod buffer_over_memory {
    use super::*;

    fn wrap(store: MemoryRecordStore) -> Arc<dyn RecordStore> {
        Arc::new(buffer().layer(store))
    }

    taskctx_testkit::conformance_tests!(Decorated::new(wrap));
}

mod cache_over_buffer_over_memory {
    use super::*;

    fn wrap(store: MemoryRecordStore) -> Arc<dyn RecordStore> {
        Arc::new(cache().layer(buffer().layer(store)))
    }

    taskctx_testkit::conformance_tests!(Decorated::new(wrap));
}

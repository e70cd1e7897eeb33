//! `CacheConfig` and `CacheLayer`: the bounds and lifetime of cached entries, and the layer that
//! wraps a store with them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskctx_store::RecordStore;

use crate::Layer;
use crate::cache::CachedRecordStore;

/// The longest TTL moka accepts is 1000 years; anything longer means "as long as possible".
pub(crate) const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Bounds and lifetime of a [`CachedRecordStore`]'s entries.
///
/// Both bounds hold at once: the cache never keeps more than `max_entries` entries nor more than
/// `max_bytes` approximate bytes (see the crate docs for how). In files, `ttl` is written as
/// `ttl_ms`, whole milliseconds.
///
/// ```
/// use std::time::Duration;
/// use taskctx_layers::CacheConfig;
///
/// let config = CacheConfig::default()
///     .with_max_entries(50_000)
///     .with_max_bytes(256 << 20)
///     .with_ttl(Duration::from_secs(10));
/// assert_eq!(config.max_bytes, Some(256 << 20));
/// let unbounded_bytes = config.with_max_bytes(None);
/// assert_eq!(unbounded_bytes.max_bytes, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// The most entries kept: one per record id asked for (also ids that do not exist) and one per
    /// parent whose children were listed. 0 disables caching. Default 10 000.
    pub max_entries: u64,
    /// The most approximate bytes kept (records and children lists, see
    /// [`approx_record_bytes`](crate::approx_record_bytes)); `None`: bounded by entries only.
    /// A record larger than this is never cached. Default 64 MiB.
    pub max_bytes: Option<u64>,
    /// How long an entry lives after it was cached. Writes through the cache are seen at once
    /// whatever the TTL; the TTL bounds how long writes made *around* it (another process, or
    /// code holding the inner store) stay unseen. `None`: until evicted. Default 60 s.
    #[serde(rename = "ttl_ms", with = "crate::millis")]
    pub ttl: Option<Duration>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: Some(64 << 20),
            ttl: Some(Duration::from_secs(60)),
        }
    }
}

impl CacheConfig {
    /// The defaults: 10 000 entries, 64 MiB, 60 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`max_entries`](Self::max_entries).
    #[must_use]
    pub fn with_max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// Sets [`max_bytes`](Self::max_bytes) (`None` removes the byte bound).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: impl Into<Option<u64>>) -> Self {
        self.max_bytes = max_bytes.into();
        self
    }

    /// Sets [`ttl`](Self::ttl) (`None`: entries live until evicted).
    #[must_use]
    pub fn with_ttl(mut self, ttl: impl Into<Option<Duration>>) -> Self {
        self.ttl = ttl.into();
        self
    }
}

/// Wraps record stores in a [`CachedRecordStore`] with one configuration (tower style).
///
/// ```
/// use taskctx_layers::{CacheConfig, CacheLayer, Layer};
/// use taskctx_store_memory::MemoryRecordStore;
///
/// let cached = CacheLayer::new(CacheConfig::default()).layer(MemoryRecordStore::new());
/// assert_eq!(cached.cache_stats().hits, 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct CacheLayer {
    config: CacheConfig,
}

impl CacheLayer {
    /// A layer that caches with `config`.
    pub fn new(config: CacheConfig) -> Self {
        Self { config }
    }

    /// The configuration every wrapped store gets.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }
}

impl<S: RecordStore> Layer<S> for CacheLayer {
    type Store = CachedRecordStore<S>;

    fn layer(&self, inner: S) -> CachedRecordStore<S> {
        CachedRecordStore::new(inner, self.config.clone())
    }
}

//! `WriteBufferConfig` and `WriteBufferLayer`: when buffered puts are flushed, and the layer that
//! wraps a store with a buffer.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskctx_store::RecordStore;

use crate::Layer;
use crate::buffer::BufferedRecordStore;

/// When a [`BufferedRecordStore`] flushes. Besides these triggers it flushes on
/// [`flush`](BufferedRecordStore::flush), before any write other than `put`, on
/// [`shutdown`](BufferedRecordStore::shutdown), and (best effort) when dropped. In files,
/// `max_age` is written as `max_age_ms`, whole milliseconds.
///
/// ```
/// use std::time::Duration;
/// use taskctx_layers::WriteBufferConfig;
///
/// let config = WriteBufferConfig::default()
///     .with_max_pending(500)
///     .with_max_age(Duration::from_millis(250));
/// assert_eq!(config.max_pending, 500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WriteBufferConfig {
    /// Flush when this many puts are buffered (0 and 1 both mean: flush every put, i.e. write
    /// through). Default 100.
    pub max_pending: usize,
    /// Flush when the oldest buffered put is this old, from a background task (started on the
    /// first buffered put; needs a tokio runtime with its time driver). `None`: no age limit.
    /// Default 100 ms.
    #[serde(rename = "max_age_ms", with = "crate::millis")]
    pub max_age: Option<Duration>,
}

impl Default for WriteBufferConfig {
    fn default() -> Self {
        Self {
            max_pending: 100,
            max_age: Some(Duration::from_millis(100)),
        }
    }
}

impl WriteBufferConfig {
    /// The defaults: 100 puts, 100 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`max_pending`](Self::max_pending).
    #[must_use]
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// Sets [`max_age`](Self::max_age) (`None`: no age limit).
    #[must_use]
    pub fn with_max_age(mut self, max_age: impl Into<Option<Duration>>) -> Self {
        self.max_age = max_age.into();
        self
    }
}

/// Wraps record stores in a [`BufferedRecordStore`] with one configuration (tower style).
///
/// ```
/// use taskctx_layers::{Layer, WriteBufferConfig, WriteBufferLayer};
/// use taskctx_store_memory::MemoryRecordStore;
///
/// let buffered = WriteBufferLayer::new(WriteBufferConfig::default()).layer(MemoryRecordStore::new());
/// assert_eq!(buffered.pending(), 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct WriteBufferLayer {
    config: WriteBufferConfig,
}

impl WriteBufferLayer {
    /// A layer that buffers with `config`.
    pub fn new(config: WriteBufferConfig) -> Self {
        Self { config }
    }

    /// The configuration every wrapped store gets.
    pub fn config(&self) -> &WriteBufferConfig {
        &self.config
    }
}

impl<S: RecordStore> Layer<S> for WriteBufferLayer {
    type Store = BufferedRecordStore<S>;

    fn layer(&self, inner: S) -> BufferedRecordStore<S> {
        BufferedRecordStore::new(inner, self.config.clone())
    }
}

#![doc = include_str!("../README.md")]

mod buffer;
mod cache;
mod millis;
mod size;

pub use buffer::{
    BufferStats, BufferedRecordStore, FlushConflict, FlushError, IntoInnerError, WriteBufferConfig,
    WriteBufferLayer,
};
pub use cache::{CacheConfig, CacheLayer, CacheStats, CachedRecordStore};
pub use size::approx_record_bytes;

/// Wraps a store in a decorator (tower style), so decorators stack:
/// `CacheLayer::new(..).layer(WriteBufferLayer::new(..).layer(store))`.
pub trait Layer<S> {
    /// The decorated store.
    type Store;

    /// Wraps `inner`.
    fn layer(&self, inner: S) -> Self::Store;
}

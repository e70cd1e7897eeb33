//! Counters of a `ContextBuilderService` (SPEC R6.8): lock-free, read as a serialisable snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::types::ContextType;

/// The live counters. Relaxed atomics: each counter is exact, a snapshot is not a transaction.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    built: [AtomicU64; 6],
    degraded: AtomicU64,
    errors: AtomicU64,
    tokens: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    summaries: AtomicU64,
    summarizer_fallbacks: AtomicU64,
}

impl Metrics {
    pub(crate) fn built(&self, context_type: ContextType, tokens: usize) {
        self.built[context_type.index()].fetch_add(1, Ordering::Relaxed);
        self.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
    }

    pub(crate) fn degraded(&self) {
        self.degraded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn summary(&self) {
        self.summaries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn summarizer_fallback(&self) {
        self.summarizer_fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            contexts_built: ContextType::ALL
                .iter()
                .map(|t| (*t, load(&self.built[t.index()])))
                .collect(),
            degraded: load(&self.degraded),
            errors: load(&self.errors),
            tokens: load(&self.tokens),
            cache_hits: load(&self.cache_hits),
            cache_misses: load(&self.cache_misses),
            summaries: load(&self.summaries),
            summarizer_fallbacks: load(&self.summarizer_fallbacks),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Contexts returned per type, cache hits and degraded ones included.
    pub contexts_built: BTreeMap<ContextType, u64>,
    /// Contexts that fell back to the minimal context (store error or panic).
    pub degraded: u64,
    /// Builds that returned an error (task missing or unreadable).
    pub errors: u64,
    /// Tokens of every context returned.
    pub tokens: u64,
    /// Contexts served from the built-context cache.
    pub cache_hits: u64,
    /// Cache lookups that had to build (absent or stale).
    pub cache_misses: u64,
    /// Summaries computed (memoised ones not counted again).
    pub summaries: u64,
    /// Summaries where the summariser failed or overran and the extractive reduction was used.
    pub summarizer_fallbacks: u64,
}

impl MetricsSnapshot {
    /// Contexts returned, all types together.
    pub fn total_built(&self) -> u64 {
        self.contexts_built.values().sum()
    }
}

//! `BuilderOptions`: the limits and switches of a `ContextBuilderService`, with SPEC defaults.

use serde::{Deserialize, Serialize};

/// Limits and switches of the context builder. Defaults are SPEC §6's.
///
/// ```
/// use taskctx_app::builder::BuilderOptions;
/// let options = BuilderOptions::default().with_budget_tokens(4000).with_max_items(6);
/// assert_eq!(options.budget_tokens, 4000);
/// assert_eq!(options.max_depth, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BuilderOptions {
    /// Ancestors rendered in the parent hierarchy (nearest first kept). Default 3.
    pub max_depth: usize,
    /// Similar completed tasks at most. Default 5.
    pub max_similar: usize,
    /// Items at most in execution contexts (and in every context when a request sets it).
    /// Default 10.
    pub max_items: usize,
    /// Total token budget of `formatted`. Default 8000.
    pub budget_tokens: usize,
    /// Token cap of one item's content. Default 2000.
    pub per_item_tokens: usize,
    /// An item that would get fewer content tokens than this is dropped rather than cut to a
    /// stub. Default 32.
    pub min_item_tokens: usize,
    /// Backticked goal references followed at most; more are ignored with a warning. Default 16.
    pub max_goal_references: usize,
    /// `aux_data` keys of the current task that may be rendered (as `aux_data` items). Everything
    /// else in `aux_data` is never rendered. Default: none.
    pub aux_data_allow_list: Vec<String>,
    /// Built contexts kept by the cache; 0 turns the cache off. Default 256.
    pub cache_entries: usize,
    /// Bytes of prepared source text (redacted outputs, summaries, token counts) memoised per
    /// service. Default 64 MiB.
    pub memo_bytes: usize,
}

impl Default for BuilderOptions {
    fn default() -> Self {
        Self {
            max_depth: 3,
            max_similar: 5,
            max_items: 10,
            budget_tokens: 8000,
            per_item_tokens: 2000,
            min_item_tokens: 32,
            max_goal_references: 16,
            aux_data_allow_list: Vec::new(),
            cache_entries: 256,
            memo_bytes: 64 << 20,
        }
    }
}

impl BuilderOptions {
    /// Sets [`BuilderOptions::max_depth`].
    pub fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Sets [`BuilderOptions::max_similar`].
    pub fn with_max_similar(mut self, similar: usize) -> Self {
        self.max_similar = similar;
        self
    }

    /// Sets [`BuilderOptions::max_items`].
    pub fn with_max_items(mut self, items: usize) -> Self {
        self.max_items = items;
        self
    }

    /// Sets [`BuilderOptions::budget_tokens`].
    pub fn with_budget_tokens(mut self, tokens: usize) -> Self {
        self.budget_tokens = tokens;
        self
    }

    /// Sets [`BuilderOptions::per_item_tokens`].
    pub fn with_per_item_tokens(mut self, tokens: usize) -> Self {
        self.per_item_tokens = tokens;
        self
    }

    /// Sets [`BuilderOptions::min_item_tokens`].
    pub fn with_min_item_tokens(mut self, tokens: usize) -> Self {
        self.min_item_tokens = tokens;
        self
    }

    /// Sets [`BuilderOptions::max_goal_references`].
    pub fn with_max_goal_references(mut self, references: usize) -> Self {
        self.max_goal_references = references;
        self
    }

    /// Allows one more `aux_data` key to be rendered.
    pub fn allow_aux_data_key(mut self, key: impl Into<String>) -> Self {
        self.aux_data_allow_list.push(key.into());
        self
    }

    /// Sets [`BuilderOptions::cache_entries`] (0 = no cache).
    pub fn with_cache_entries(mut self, entries: usize) -> Self {
        self.cache_entries = entries;
        self
    }

    /// Sets [`BuilderOptions::memo_bytes`].
    pub fn with_memo_bytes(mut self, bytes: usize) -> Self {
        self.memo_bytes = bytes;
        self
    }
}

//! `TokenCounter`: how many model tokens a text costs, and a cheap heuristic counter for tests.
//!
//! The real counter (a BPE tokenizer) lives in `taskctx-app`; budgets in this crate take any
//! counter so they stay pure and testable without loading a vocabulary.

use std::fmt::Debug;

/// Counts the tokens a model would see for a text. Implementations are pure and thread-safe.
pub trait TokenCounter: Send + Sync + Debug {
    /// The number of tokens in `text`.
    fn count(&self, text: &str) -> usize;

    /// A short name for reports (`o200k_base`, `heuristic`, …).
    fn name(&self) -> &str;
}

impl<T: TokenCounter + ?Sized> TokenCounter for &T {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

impl<T: TokenCounter + ?Sized> TokenCounter for std::sync::Arc<T> {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

impl<T: TokenCounter + ?Sized> TokenCounter for Box<T> {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

/// An approximation of BPE counts without a vocabulary: a run of letters or digits costs one
/// token per four characters (rounded up), every other non-space character costs one, spaces are
/// free. It tends to over-count English slightly, which is the safe side for a budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeuristicTokenCounter;

impl TokenCounter for HeuristicTokenCounter {
    fn count(&self, text: &str) -> usize {
        let mut tokens = 0;
        let mut run = 0usize;
        for c in text.chars() {
            if c.is_alphanumeric() {
                run += 1;
                continue;
            }
            tokens += run.div_ceil(4);
            run = 0;
            if !c.is_whitespace() {
                tokens += 1;
            }
        }
        tokens + run.div_ceil(4)
    }

    fn name(&self) -> &str {
        "heuristic"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_counts_words_and_punctuation() {
        let c = HeuristicTokenCounter;
        assert_eq!(c.count(""), 0);
        assert_eq!(c.count("   "), 0);
        assert_eq!(c.count("word"), 1);
        assert_eq!(c.count("words"), 2);
        assert_eq!(c.count("hi, you!"), 4);
        assert_eq!(c.count("{\"a\":1}"), 7);
    }
}

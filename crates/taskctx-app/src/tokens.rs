//! The default `TokenCounter`: a real BPE tokenizer whose vocabulary ships inside `tiktoken-rs`
//! (works offline), built once per process.

use std::fmt;
use std::sync::Arc;

use taskctx_domain::TokenCounter;
use tiktoken_rs::CoreBPE;

/// Counts tokens with an OpenAI BPE vocabulary (`o200k_base` by default, `cl100k_base` on
/// request). The vocabulary is loaded on first use and shared by every counter of the process.
#[derive(Clone, Copy)]
pub struct BpeTokenCounter {
    bpe: &'static CoreBPE,
    name: &'static str,
}

impl BpeTokenCounter {
    /// The `o200k_base` vocabulary (GPT-4o and later models).
    pub fn o200k_base() -> Self {
        Self {
            bpe: tiktoken_rs::o200k_base_singleton(),
            name: "o200k_base",
        }
    }

    /// The `cl100k_base` vocabulary (GPT-4, GPT-3.5).
    pub fn cl100k_base() -> Self {
        Self {
            bpe: tiktoken_rs::cl100k_base_singleton(),
            name: "cl100k_base",
        }
    }
}

impl fmt::Debug for BpeTokenCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BpeTokenCounter")
            .field("vocabulary", &self.name)
            .finish()
    }
}

impl TokenCounter for BpeTokenCounter {
    fn count(&self, text: &str) -> usize {
        // Special-token text such as "<|endoftext|>" in task output is counted as ordinary text:
        // it is data here, never a control token.
        self.bpe.encode_ordinary(text).len()
    }

    fn name(&self) -> &str {
        self.name
    }
}

/// The counter taskctx uses unless told otherwise: `o200k_base`.
pub fn default_token_counter() -> Arc<dyn TokenCounter> {
    Arc::new(BpeTokenCounter::o200k_base())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_real_bpe_tokens() {
        let counter = BpeTokenCounter::o200k_base();
        assert_eq!(counter.count(""), 0);
        assert_eq!(counter.count("hello world"), 2);
        // As ordinary text, a special-token spelling costs several tokens, not one.
        assert!(counter.count("<|endoftext|>") > 1);
        assert!(counter.count(&"word ".repeat(1000)) >= 1000);
        assert_eq!(BpeTokenCounter::cl100k_base().count("hello world"), 2);
        assert_eq!(counter.name(), "o200k_base");
    }
}

//! Shortening content to a token budget: the `Summarizer` port and the default deterministic
//! extractive reduction (head and tail with an explicit omission marker).

use std::fmt::Debug;

use async_trait::async_trait;
use taskctx_domain::TokenCounter;

/// What to shorten and to how many tokens.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SummaryRequest<'a> {
    /// The (already redacted) text.
    pub text: &'a str,
    /// Its tokens by `counter`.
    pub text_tokens: usize,
    /// The result must count at most this many tokens by `counter`.
    pub budget_tokens: usize,
    /// The task the text comes from, if any (for prompts and logs).
    pub source_task_id: Option<&'a str>,
    /// That task's goal, if any (an LLM summariser can focus on it).
    pub goal: Option<&'a str>,
    /// The counter the budget is measured with.
    pub counter: &'a dyn TokenCounter,
}

impl<'a> SummaryRequest<'a> {
    /// A request without source information.
    pub fn new(
        text: &'a str,
        text_tokens: usize,
        budget_tokens: usize,
        counter: &'a dyn TokenCounter,
    ) -> Self {
        Self {
            text,
            text_tokens,
            budget_tokens,
            source_task_id: None,
            goal: None,
            counter,
        }
    }

    /// Adds the source task.
    pub fn with_source(mut self, task_id: &'a str, goal: &'a str) -> Self {
        self.source_task_id = Some(task_id);
        self.goal = Some(goal);
        self
    }
}

/// A summariser that failed; the builder falls back to the extractive reduction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("summariser failed: {0}")]
pub struct SummarizeError(pub String);

/// Shortens text to a token budget (SPEC R6.3).
///
/// # Contract
///
/// The result should count at most `budget_tokens`; the builder checks, redacts the result
/// again, and replaces an over-long or failed result by [`reduce_head_tail`], so a faulty
/// summariser can cost quality but never the budget. Async so that a model-backed summariser
/// does not block the runtime (reference P1); the builder memoises results per
/// (task id, revision, budget) so each is asked once (reference P2).
#[async_trait]
pub trait Summarizer: Send + Sync + Debug {
    /// A version of `request.text` within `request.budget_tokens`.
    async fn summarize(&self, request: SummaryRequest<'_>) -> Result<String, SummarizeError>;

    /// A short name for reports.
    fn name(&self) -> &str;
}

/// The default summariser: [`reduce_head_tail`]. Deterministic, local, no model.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractiveSummarizer;

#[async_trait]
impl Summarizer for ExtractiveSummarizer {
    async fn summarize(&self, request: SummaryRequest<'_>) -> Result<String, SummarizeError> {
        Ok(reduce_head_tail(
            request.text,
            request.text_tokens,
            request.budget_tokens,
            request.counter,
        ))
    }

    fn name(&self) -> &str {
        "extractive"
    }
}

/// The omission marker placed between head and tail.
pub fn omission_marker(omitted_tokens: usize) -> String {
    format!("\n[… {omitted_tokens} tokens omitted …]\n")
}

/// Keeps the head (about two thirds) and the tail of `text` with
/// `[… N tokens omitted …]` between them, so that the result counts at most `budget` tokens.
///
/// `text_tokens` is `counter.count(text)` (callers have it already). Cuts prefer a line break or
/// a space near the cut point and otherwise fall on a character boundary, so even a single
/// enormous line keeps a head and a tail (reference B18). Returns `text` unchanged when it fits,
/// and an empty string when the budget cannot hold the marker and a few tokens of text.
/// Costs a handful of counts over budget-sized pieces, never a search over the whole text.
pub fn reduce_head_tail(
    text: &str,
    text_tokens: usize,
    budget: usize,
    counter: &dyn TokenCounter,
) -> String {
    if text_tokens <= budget {
        return text.to_string();
    }
    // The marker with the largest number it can carry: its real cost is at most this.
    let marker_cost = counter.count(&omission_marker(text_tokens));
    if budget < marker_cost + 4 || text.is_empty() {
        return String::new();
    }
    let available = budget - marker_cost;
    let mut head_budget = available * 2 / 3;
    let mut tail_budget = available - head_budget;
    let bytes_per_token = (text.len() as f64 / text_tokens.max(1) as f64).max(0.25);
    for _ in 0..8 {
        let head = fit_piece(text, head_budget, bytes_per_token, counter, Side::Head);
        let rest = &text[head.len()..];
        let tail = fit_piece(rest, tail_budget, bytes_per_token, counter, Side::Tail);
        let head_tokens = counter.count(head);
        let tail_tokens = counter.count(tail);
        let omitted = text_tokens.saturating_sub(head_tokens + tail_tokens).max(1);
        let mut out = String::with_capacity(head.len() + tail.len() + 40);
        out.push_str(head);
        out.push_str(&omission_marker(omitted));
        out.push_str(tail);
        let total = counter.count(&out);
        if total <= budget {
            return out;
        }
        // Joining pieces can cost a little more than the pieces alone: shrink and retry.
        let excess = total - budget;
        let cut = excess.div_ceil(2) + 1;
        head_budget = head_budget.saturating_sub(cut);
        tail_budget = tail_budget.saturating_sub(cut);
        if head_budget + tail_budget == 0 {
            break;
        }
    }
    String::new()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Head,
    Tail,
}

/// The longest prefix (head) or suffix (tail) of `text` found by a few proportional steps that
/// counts at most `budget` tokens.
fn fit_piece<'a>(
    text: &'a str,
    budget: usize,
    bytes_per_token: f64,
    counter: &dyn TokenCounter,
    side: Side,
) -> &'a str {
    if budget == 0 || text.is_empty() {
        return "";
    }
    let mut bytes = ((budget as f64) * bytes_per_token) as usize;
    let mut best = "";
    for _ in 0..12 {
        bytes = bytes.min(text.len());
        let piece = cut(text, bytes, side);
        let tokens = counter.count(piece);
        if tokens <= budget {
            if piece.len() > best.len() {
                best = piece;
            }
            // Close enough, or nothing more to take.
            if tokens * 10 >= budget * 9 || piece.len() == text.len() {
                break;
            }
            let grown =
                (piece.len().max(1) as f64 * budget as f64 / tokens.max(1) as f64 * 0.97) as usize;
            if grown <= bytes {
                break;
            }
            bytes = grown;
        } else {
            let shrunk = (piece.len() as f64 * budget as f64 / tokens as f64 * 0.95) as usize;
            if shrunk == 0 {
                break;
            }
            bytes = shrunk.min(bytes.saturating_sub(1));
        }
    }
    best
}

/// A prefix or suffix of about `bytes` bytes, moved to a nearby line break or space when one is
/// within the last eighth, else to a character boundary.
fn cut(text: &str, bytes: usize, side: Side) -> &str {
    if bytes >= text.len() {
        return text;
    }
    let window = (bytes / 8).min(256);
    match side {
        Side::Head => {
            let end = text.floor_char_boundary(bytes);
            let from = text.floor_char_boundary(end.saturating_sub(window));
            let slice = &text[from..end];
            let end = slice
                .rfind('\n')
                .or_else(|| slice.rfind(' '))
                .map_or(end, |i| from + i + 1);
            &text[..end]
        }
        Side::Tail => {
            let start = text.ceil_char_boundary(text.len() - bytes);
            let to = text.ceil_char_boundary((start + window).min(text.len()));
            let slice = &text[start..to];
            let start = slice
                .find('\n')
                .or_else(|| slice.find(' '))
                .map_or(start, |i| start + i + 1);
            &text[start..]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskctx_domain::HeuristicTokenCounter;

    #[test]
    fn short_text_is_unchanged() {
        let c = HeuristicTokenCounter;
        assert_eq!(reduce_head_tail("a b c", 3, 10, &c), "a b c");
    }

    #[test]
    fn long_text_keeps_head_and_tail_within_budget() {
        let c = HeuristicTokenCounter;
        let text: String = (0..2000).map(|i| format!("word{i} ")).collect();
        let n = c.count(&text);
        for budget in [20, 50, 100, 500, 1999] {
            let out = reduce_head_tail(&text, n, budget, &c);
            assert!(
                c.count(&out) <= budget,
                "budget {budget}: {}",
                c.count(&out)
            );
            assert!(out.starts_with("word0 "), "{out}");
            assert!(out.trim_end().ends_with("word1999"), "{out}");
            assert!(out.contains(" tokens omitted …]"), "{out}");
        }
    }

    #[test]
    fn one_enormous_line_still_has_a_head_and_tail() {
        let c = HeuristicTokenCounter;
        let text = format!("BEGIN{}END", "x".repeat(100_000));
        let out = reduce_head_tail(&text, c.count(&text), 100, &c);
        assert!(out.starts_with("BEGIN"), "{out}");
        assert!(out.ends_with("END"), "{out}");
        assert!(c.count(&out) <= 100);
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let c = HeuristicTokenCounter;
        let text = "é😀ß".repeat(5000);
        let out = reduce_head_tail(&text, c.count(&text), 64, &c);
        assert!(c.count(&out) <= 64);
        assert!(!out.is_empty());
    }

    #[test]
    fn tiny_budgets_give_nothing() {
        let c = HeuristicTokenCounter;
        let text = "word ".repeat(100);
        assert_eq!(reduce_head_tail(&text, c.count(&text), 3, &c), "");
    }
}

//! Content selection per item (SPEC R6.3): the output if it fits, else a specific summary that
//! fits, else a reduction by the `Summarizer`. Pure arithmetic over token counts.

/// Which text an item gets for a content budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The primary text (output, summary or error), whole.
    Primary,
    /// The record's own specific summary (reference B2: used whenever the output is too big).
    Summary,
    /// A reduction of the primary text to this many tokens.
    Reduce(usize),
}

/// Picks the text for `budget` tokens given the primary text's tokens and, when the primary is
/// an output, the tokens of the record's specific summary.
pub(crate) fn pick(primary: usize, summary: Option<usize>, budget: usize) -> Pick {
    if primary <= budget {
        Pick::Primary
    } else if summary.is_some_and(|s| s <= budget) {
        Pick::Summary
    } else {
        Pick::Reduce(budget)
    }
}

/// The tokens the pick takes (a reduction takes at most its budget).
pub(crate) fn pick_cost(primary: usize, summary: Option<usize>, budget: usize) -> usize {
    match pick(primary, summary, budget) {
        Pick::Primary => primary,
        Pick::Summary => summary.unwrap_or(budget),
        Pick::Reduce(b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_then_summary_then_reduction() {
        assert_eq!(pick(100, Some(10), 100), Pick::Primary);
        assert_eq!(pick(101, Some(10), 100), Pick::Summary);
        assert_eq!(pick(101, Some(150), 100), Pick::Reduce(100));
        assert_eq!(pick(101, None, 100), Pick::Reduce(100));
        assert_eq!(pick_cost(101, Some(10), 100), 10);
        assert_eq!(pick_cost(101, None, 50), 50);
        assert_eq!(pick_cost(20, None, 50), 20);
    }
}

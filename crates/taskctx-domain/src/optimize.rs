//! History optimisation to a size budget (SPEC R1.4, AIECS `optimize_context` with its defects
//! fixed).
//!
//! Walk newest to oldest. The dedup key is the update type plus the canonical JSON of `data`, so
//! `{a,b}` equals `{b,a}`. The newest entry of each key is the only candidate; it is kept while the
//! running size stays within the budget. An entry that does not fit is dropped and later (older)
//! smaller ones may still fit; an older duplicate of a dropped entry counts as a duplicate, never
//! as a survivor. Chronological order is preserved. The report says what happened, so "was it
//! optimised" is true exactly when something was removed (AIECS always returned `False`).

use std::collections::HashSet;

use crate::canonical::write_canonical_json;
use crate::tokens::TokenCounter;
use crate::update::ContextUpdate;

/// How the size of a history is measured, and its limit.
#[derive(Debug, Clone, Copy)]
pub enum SizeBudget<'a> {
    /// Characters (Unicode scalar values) of the canonical JSON of each entry's `data`: the seed's
    /// unit, default 1000.
    Chars(usize),
    /// Tokens of the canonical JSON of each entry's `data`, as counted by `counter`.
    Tokens {
        /// The most tokens the kept entries may cost together.
        limit: usize,
        /// How tokens are counted.
        counter: &'a dyn TokenCounter,
    },
}

impl SizeBudget<'_> {
    /// The seed's default budget: 1000 characters.
    pub const DEFAULT: SizeBudget<'static> = SizeBudget::Chars(1000);

    /// The limit, in this budget's unit.
    pub fn limit(&self) -> usize {
        match self {
            Self::Chars(limit) | Self::Tokens { limit, .. } => *limit,
        }
    }

    fn measure(&self, canonical_data: &str) -> usize {
        match self {
            // ASCII (the common case) has one character per byte, and checking that is
            // cheaper than counting characters.
            Self::Chars(_) if canonical_data.is_ascii() => canonical_data.len(),
            Self::Chars(_) => canonical_data.chars().count(),
            Self::Tokens { counter, .. } => counter.count(canonical_data),
        }
    }
}

/// What an optimisation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct OptimizeReport {
    /// Entries kept.
    pub kept: usize,
    /// Older entries with the same key as a newer one.
    pub removed_duplicates: usize,
    /// Newest-of-their-key entries that did not fit the budget.
    pub removed_for_budget: usize,
    /// The size of the kept entries, in the budget's unit.
    pub kept_size: usize,
}

impl OptimizeReport {
    /// Whether anything was removed.
    pub fn optimized(&self) -> bool {
        self.removed() > 0
    }

    /// How many entries were removed for either reason.
    pub fn removed(&self) -> usize {
        self.removed_duplicates + self.removed_for_budget
    }
}

/// Which entries of a history an optimisation keeps, computed without changing the history, so
/// a caller can persist the result first and apply it only when that succeeded.
#[derive(Debug, Clone)]
pub struct Selection {
    keep: Vec<bool>,
    report: OptimizeReport,
}

impl Selection {
    /// What the optimisation does.
    pub fn report(&self) -> OptimizeReport {
        self.report
    }

    /// Whether entry `index` is kept.
    pub fn keeps(&self, index: usize) -> bool {
        self.keep.get(index).copied().unwrap_or(false)
    }

    /// The kept entries of `history` (the slice this selection was computed from), in order.
    pub fn kept<'h>(
        &'h self,
        history: &'h [ContextUpdate],
    ) -> impl Iterator<Item = &'h ContextUpdate> {
        history
            .iter()
            .zip(&self.keep)
            .filter_map(|(update, keep)| keep.then_some(update))
    }

    /// Removes the entries this selection drops from `history` (the vector it was computed from).
    pub fn apply(&self, history: &mut Vec<ContextUpdate>) {
        let mut index = 0;
        history.retain(|_| {
            let keep = self.keeps(index);
            index += 1;
            keep
        });
    }
}

/// Computes which entries [`optimize_history`] would keep. O(n) in the number of entries plus the
/// size of their data. Every key is written once into one shared buffer and the set of seen keys
/// borrows from it, so each entry costs one hash and one probe and no allocation of its own.
pub fn select_optimized(history: &[ContextUpdate], budget: SizeBudget<'_>) -> Selection {
    let limit = budget.limit();
    let mut keep = vec![false; history.len()];
    let mut report = OptimizeReport::default();
    // Each key is the length-prefixed type (unambiguous whatever the type contains), `:`, and
    // the canonical JSON of the data; `starts[i]` is where entry i's key begins and where its
    // data begins inside it.
    let mut keys = String::with_capacity(history.len() * 32);
    let mut starts: Vec<(usize, usize)> = Vec::with_capacity(history.len());
    for update in history {
        let start = keys.len();
        let kind = update.update_type.as_str();
        push_decimal(kind.len(), &mut keys);
        keys.push(':');
        keys.push_str(kind);
        let data_start = keys.len();
        write_canonical_json(&update.data, &mut keys);
        starts.push((start, data_start));
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(history.len());
    let mut end = keys.len();
    for (index, &(start, data_start)) in starts.iter().enumerate().rev() {
        let key = &keys[start..end];
        let data = &keys[data_start..end];
        end = start;
        if !seen.insert(key) {
            report.removed_duplicates += 1;
            continue;
        }
        let size = budget.measure(data);
        match report.kept_size.checked_add(size) {
            Some(total) if total <= limit => {
                report.kept_size = total;
                report.kept += 1;
                if let Some(slot) = keep.get_mut(index) {
                    *slot = true;
                }
            }
            _ => report.removed_for_budget += 1,
        }
    }
    Selection { keep, report }
}

/// Appends `n` in decimal (cheaper than `write!` for the one integer of each key).
fn push_decimal(mut n: usize, out: &mut String) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// Optimises `history` in place to `budget` and reports what was removed.
pub fn optimize_history(
    history: &mut Vec<ContextUpdate>,
    budget: SizeBudget<'_>,
) -> OptimizeReport {
    let selection = select_optimized(history, budget);
    selection.apply(history);
    selection.report()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::canonical_json;
    use crate::time::Timestamp;
    use crate::tokens::HeuristicTokenCounter;
    use crate::update::UpdateType;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn update(ts: f64, kind: &str, data: Value) -> ContextUpdate {
        ContextUpdate::new(UpdateType::new(kind).unwrap(), data)
            .at(Timestamp::from_secs(ts).unwrap())
    }

    #[test]
    fn keeps_the_newest_of_each_key_with_keys_compared_canonically() {
        let mut history = vec![
            update(1.0, "message", json!({"a": 1, "b": 2})),
            update(2.0, "message", json!("other")),
            update(3.0, "message", json!({"b": 2, "a": 1})),
            update(4.0, "error", json!({"a": 1, "b": 2})),
        ];
        let report = optimize_history(&mut history, SizeBudget::Chars(1000));
        assert_eq!(
            history
                .iter()
                .map(|u| u.timestamp.as_secs())
                .collect::<Vec<_>>(),
            vec![2.0, 3.0, 4.0]
        );
        assert_eq!(report.removed_duplicates, 1);
        assert_eq!(report.removed_for_budget, 0);
        assert!(report.optimized());
    }

    #[test]
    fn an_entry_that_does_not_fit_is_dropped_and_smaller_older_ones_still_fit() {
        // Sizes: "xxxxxxxx" = 10 chars, "big-…" = 21 chars, "y" = 3 chars.
        let mut history = vec![
            update(1.0, "message", json!("y")),
            update(2.0, "message", json!("big-big-big-big-big")),
            update(3.0, "message", json!("xxxxxxxx")),
        ];
        let report = optimize_history(&mut history, SizeBudget::Chars(15));
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].data, json!("y"));
        assert_eq!(history[1].data, json!("xxxxxxxx"));
        assert_eq!(
            report,
            OptimizeReport {
                kept: 2,
                removed_duplicates: 0,
                removed_for_budget: 1,
                kept_size: 13
            }
        );
    }

    #[test]
    fn nothing_removed_reports_not_optimised() {
        let mut history = vec![
            update(1.0, "message", json!("a")),
            update(2.0, "message", json!("b")),
        ];
        let report = optimize_history(&mut history, SizeBudget::DEFAULT);
        assert!(!report.optimized());
        assert_eq!(report.kept, 2);
    }

    #[test]
    fn token_budget_counts_tokens_of_the_canonical_data() {
        let counter = HeuristicTokenCounter;
        let mut history = vec![
            update(1.0, "message", json!("one two three four")),
            update(2.0, "message", json!("five")),
        ];
        // "\"five\"" = 3 tokens, "\"one two three four\"" = 7 tokens.
        let report = optimize_history(
            &mut history,
            SizeBudget::Tokens {
                limit: 5,
                counter: &counter,
            },
        );
        assert_eq!(report.kept, 1);
        assert_eq!(history[0].data, json!("five"));
    }

    #[test]
    fn the_type_is_part_of_the_key_and_cannot_collide_with_data() {
        let mut history = vec![update(1.0, "a", json!("x")), update(2.0, "b", json!("x"))];
        assert_eq!(optimize_history(&mut history, SizeBudget::DEFAULT).kept, 2);
    }

    fn arb_history() -> impl Strategy<Value = Vec<ContextUpdate>> {
        let data = prop_oneof![
            (0u8..6).prop_map(|n| json!(n)),
            "[a-c]{0,12}".prop_map(Value::String),
            ((0u8..3), (0u8..3)).prop_map(|(a, b)| json!({"a": a, "b": b})),
        ];
        prop::collection::vec(
            (prop_oneof![Just("message"), Just("error"), Just("x")], data),
            0..60,
        )
        .prop_map(|entries| {
            entries
                .into_iter()
                .enumerate()
                .map(|(i, (kind, data))| update(i as f64, kind, data))
                .collect()
        })
    }

    fn key(u: &ContextUpdate) -> (String, String) {
        (u.update_type.to_string(), canonical_json(&u.data))
    }

    proptest! {
        #[test]
        fn optimisation_invariants(history in arb_history(), limit in 0usize..80) {
            let mut optimised = history.clone();
            let report = optimize_history(&mut optimised, SizeBudget::Chars(limit));
            // Never reorders: the kept timestamps are increasing like the input's.
            prop_assert!(optimised.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
            // Never keeps two entries with one key, and each kept entry is the newest of its key.
            let mut keys = HashSet::new();
            for kept in &optimised {
                prop_assert!(keys.insert(key(kept)));
                let newest = history.iter().rev().find(|u| key(u) == key(kept)).unwrap();
                prop_assert_eq!(newest.timestamp, kept.timestamp);
            }
            // Never exceeds the budget, and the report adds up.
            let size: usize = optimised.iter().map(|u| canonical_json(&u.data).chars().count()).sum();
            prop_assert!(size <= limit);
            prop_assert_eq!(report.kept_size, size);
            prop_assert_eq!(report.kept, optimised.len());
            prop_assert_eq!(report.kept + report.removed(), history.len());
            prop_assert_eq!(report.optimized(), optimised.len() < history.len());
            // Greedy: every dropped newest-of-key entry really did not fit at its turn.
            let distinct: HashSet<_> = history.iter().map(key).collect();
            prop_assert_eq!(report.removed_duplicates, history.len() - distinct.len());
        }
    }
}

//! The token budget (SPEC R6.4): which blocks fit, whole or shortened. Pure arithmetic over
//! token counts; the service turns decisions into text.
//!
//! Blocks come in three groups, placed in this order:
//!
//! 1. **Header** (current task, overall objective, ancestors from the immediate parent up), each
//!    kept whole, without its optional part (an ancestor's outcome line), shortened, or dropped —
//!    an ancestor chain stops at the first ancestor that does not fit, so what is shown is always
//!    the nearest part of the chain.
//! 2. **Pinned items** (dependencies, children of an aggregation, caller sections), shared
//!    fairly: when they do not all fit, every item gets at least the same share ("water
//!    filling": items smaller than the share keep their size, the others are cut to it), and
//!    only when the share would fall below the minimum are the last-ranked ones dropped.
//! 3. **Ranked items**, by relevance then source order: kept whole if they fit, else shortened to
//!    the room left if that is at least the minimum, else dropped (a later, smaller one may still
//!    fit).
//!
//! A section heading is charged with the first block of its section. `max_items` counts pinned
//! and ranked items in placement order.

use super::types::OmitReason;

/// Which placement rule a block follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    Header,
    Pinned,
    Ranked,
}

/// One block to place.
#[derive(Debug, Clone)]
pub(crate) struct BlockSpec {
    pub(crate) group: Group,
    /// Index into the section-cost table; the heading is charged once per section.
    pub(crate) section: usize,
    /// Tokens of the fixed text around the content, separator included.
    pub(crate) framing: usize,
    /// Tokens of the fixed text without its optional part, when there is one.
    pub(crate) lean_framing: Option<usize>,
    /// Tokens of the preferred content.
    pub(crate) content: usize,
    /// The least content worth keeping when shortening; 0 = cannot be shortened.
    pub(crate) min_content: usize,
    /// Counts toward `max_items`.
    pub(crate) is_item: bool,
    /// Header blocks of one chain (ancestors): once one is dropped, the rest are.
    pub(crate) chain: Option<usize>,
}

/// What happens to a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Kept. `content_budget` is `None` for the whole content, or the tokens its content must
    /// fit in; `lean` drops the framing's optional part.
    Keep {
        content_budget: Option<usize>,
        lean: bool,
    },
    /// Left out.
    Drop(OmitReason),
}

/// The budget and limits of one packing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) budget: usize,
    pub(crate) max_items: Option<usize>,
}

/// Decides every block. `cost_at(i, b)` is the tokens block `i`'s content really takes when given
/// `b` tokens (at most `b`: a summary that fits may take fewer).
pub(crate) fn pack(
    blocks: &[BlockSpec],
    section_costs: &[usize],
    limits: Limits,
    cost_at: &dyn Fn(usize, usize) -> usize,
) -> Vec<Decision> {
    let mut decisions = vec![Decision::Drop(OmitReason::Budget); blocks.len()];
    let mut open = vec![false; section_costs.len()];
    let mut remaining = limits.budget;
    let mut items = 0usize;
    let max_items = limits.max_items.unwrap_or(usize::MAX);
    let heading = |open: &[bool], section: usize| -> usize {
        if open.get(section).copied().unwrap_or(true) {
            0
        } else {
            section_costs.get(section).copied().unwrap_or(0)
        }
    };

    // 1. Header, greedily in the given order.
    let mut broken_chains: Vec<usize> = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if block.group != Group::Header {
            continue;
        }
        if block.chain.is_some_and(|c| broken_chains.contains(&c)) {
            continue;
        }
        let head = heading(&open, block.section);
        let decision = place_greedy(block, head, remaining, i, cost_at);
        match decision {
            Some((decision, used)) => {
                decisions[i] = decision;
                remaining -= used;
                if let Some(flag) = open.get_mut(block.section) {
                    *flag = true;
                }
            }
            None => {
                if let Some(chain) = block.chain {
                    broken_chains.push(chain);
                }
            }
        }
    }

    // 2. Pinned items, shared fairly.
    let mut pinned: Vec<usize> = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if block.group != Group::Pinned {
            continue;
        }
        if block.is_item && items >= max_items {
            decisions[i] = Decision::Drop(OmitReason::MaxItems);
            continue;
        }
        if block.is_item {
            items += 1;
        }
        pinned.push(i);
    }
    while !pinned.is_empty() {
        let mut sections = open.clone();
        let mut fixed = 0usize;
        for &i in &pinned {
            fixed += blocks[i].framing + heading(&sections, blocks[i].section);
            if let Some(flag) = sections.get_mut(blocks[i].section) {
                *flag = true;
            }
        }
        let demands: Vec<usize> = pinned.iter().map(|&i| blocks[i].content).collect();
        let total: usize = demands.iter().sum();
        if fixed <= remaining && total <= remaining - fixed {
            for &i in &pinned {
                decisions[i] = Decision::Keep {
                    content_budget: None,
                    lean: false,
                };
            }
            remaining -= fixed + total;
            open = sections;
            break;
        }
        let level = if fixed <= remaining {
            water_level(&demands, remaining - fixed)
        } else {
            0
        };
        let too_small = pinned.iter().any(|&i| {
            let b = &blocks[i];
            b.content > level && (b.min_content == 0 || level < b.min_content)
        });
        if fixed > remaining || too_small {
            if let Some(last) = pinned.pop() {
                decisions[last] = Decision::Drop(OmitReason::Budget);
                if blocks[last].is_item {
                    items -= 1;
                }
            }
            continue;
        }
        let mut used = fixed;
        for &i in &pinned {
            let b = &blocks[i];
            if b.content <= level {
                decisions[i] = Decision::Keep {
                    content_budget: None,
                    lean: false,
                };
                used += b.content;
            } else {
                decisions[i] = Decision::Keep {
                    content_budget: Some(level),
                    lean: false,
                };
                used += cost_at(i, level).min(level);
            }
        }
        remaining = remaining.saturating_sub(used);
        open = sections;
        break;
    }

    // 3. Ranked items, greedily.
    for (i, block) in blocks.iter().enumerate() {
        if block.group != Group::Ranked {
            continue;
        }
        if block.is_item && items >= max_items {
            decisions[i] = Decision::Drop(OmitReason::MaxItems);
            continue;
        }
        let head = heading(&open, block.section);
        if let Some((decision, used)) = place_greedy(block, head, remaining, i, cost_at) {
            decisions[i] = decision;
            remaining -= used;
            if block.is_item {
                items += 1;
            }
            if let Some(flag) = open.get_mut(block.section) {
                *flag = true;
            }
        }
    }
    decisions
}

/// Whole, lean, or shortened if it fits in `remaining` (with `head` for a new section): the
/// decision and the tokens it uses. `None` when it does not fit at all.
fn place_greedy(
    block: &BlockSpec,
    head: usize,
    remaining: usize,
    index: usize,
    cost_at: &dyn Fn(usize, usize) -> usize,
) -> Option<(Decision, usize)> {
    let whole = head + block.framing + block.content;
    if whole <= remaining {
        return Some((
            Decision::Keep {
                content_budget: None,
                lean: false,
            },
            whole,
        ));
    }
    let framing = block.lean_framing.unwrap_or(block.framing);
    let lean = block.lean_framing.is_some();
    if head + framing + block.content <= remaining {
        return Some((
            Decision::Keep {
                content_budget: None,
                lean,
            },
            head + framing + block.content,
        ));
    }
    if block.min_content == 0 {
        return None;
    }
    let room = remaining.checked_sub(head + framing)?;
    if room < block.min_content {
        return None;
    }
    let used = cost_at(index, room).min(room);
    Some((
        Decision::Keep {
            content_budget: Some(room),
            lean,
        },
        head + framing + used,
    ))
}

/// The largest share `L` with `Σ min(dᵢ, L) ≤ available`.
pub(crate) fn water_level(demands: &[usize], available: usize) -> usize {
    let mut sorted = demands.to_vec();
    sorted.sort_unstable();
    let mut left = available;
    let n = sorted.len();
    for (k, d) in sorted.iter().enumerate() {
        let share = left / (n - k);
        if *d > share {
            return share;
        }
        left -= d;
    }
    sorted.last().copied().unwrap_or(0).max(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(group: Group, section: usize, framing: usize, content: usize) -> BlockSpec {
        BlockSpec {
            group,
            section,
            framing,
            lean_framing: None,
            content,
            min_content: 10,
            is_item: group != Group::Header,
            chain: None,
        }
    }

    fn keep(budget: Option<usize>) -> Decision {
        Decision::Keep {
            content_budget: budget,
            lean: false,
        }
    }

    fn exact(_: usize, b: usize) -> usize {
        b
    }

    #[test]
    fn water_level_shares_fairly() {
        assert_eq!(water_level(&[10, 10, 10], 30), 10);
        assert_eq!(water_level(&[5, 100, 100], 105), 50);
        assert_eq!(water_level(&[100, 100, 100, 100], 100), 25);
        assert_eq!(water_level(&[], 10), 10);
    }

    #[test]
    fn everything_fits() {
        let blocks = [
            block(Group::Header, 0, 5, 10),
            block(Group::Pinned, 1, 3, 20),
            block(Group::Ranked, 2, 3, 20),
        ];
        let limits = Limits {
            budget: 100,
            max_items: None,
        };
        let d = pack(&blocks, &[0, 2, 2], limits, &exact);
        assert_eq!(d, vec![keep(None), keep(None), keep(None)]);
    }

    #[test]
    fn pinned_items_are_cut_fairly_before_any_is_dropped() {
        let blocks = [
            block(Group::Pinned, 0, 2, 100),
            block(Group::Pinned, 0, 2, 100),
            block(Group::Pinned, 0, 2, 5),
        ];
        let limits = Limits {
            budget: 6 + 1 + 85,
            max_items: None,
        };
        let d = pack(&blocks, &[1], limits, &exact);
        assert_eq!(d, vec![keep(Some(40)), keep(Some(40)), keep(None)]);
    }

    #[test]
    fn pinned_items_are_dropped_from_the_end_when_shares_get_too_small() {
        let blocks: Vec<BlockSpec> = (0..10).map(|_| block(Group::Pinned, 0, 1, 100)).collect();
        let limits = Limits {
            budget: 40,
            max_items: None,
        };
        let d = pack(&blocks, &[0], limits, &exact);
        let kept = d
            .iter()
            .filter(|d| matches!(d, Decision::Keep { .. }))
            .count();
        assert_eq!(kept, 3);
        assert_eq!(d[0], keep(Some(12)));
        assert_eq!(d[9], Decision::Drop(OmitReason::Budget));
    }

    #[test]
    fn ranked_items_shrink_then_drop_and_later_small_ones_still_fit() {
        let blocks = [
            block(Group::Ranked, 0, 2, 50),
            block(Group::Ranked, 0, 2, 50),
            block(Group::Ranked, 0, 2, 50),
            block(Group::Ranked, 0, 2, 3),
        ];
        let limits = Limits {
            budget: 2 + 50 + 2 + 20,
            max_items: None,
        };
        let d = pack(&blocks, &[0], limits, &exact);
        assert_eq!(d[0], keep(None));
        assert_eq!(d[1], keep(Some(20)));
        assert_eq!(d[2], Decision::Drop(OmitReason::Budget));
        assert_eq!(d[3], Decision::Drop(OmitReason::Budget));
        let limits = Limits {
            budget: 2 + 50 + 2 + 8,
            max_items: None,
        };
        let d = pack(&blocks, &[0], limits, &exact);
        assert_eq!(d[1], Decision::Drop(OmitReason::Budget));
        assert_eq!(d[3], keep(None));
    }

    #[test]
    fn max_items_counts_pinned_then_ranked() {
        let blocks = [
            block(Group::Pinned, 0, 1, 1),
            block(Group::Ranked, 0, 1, 1),
            block(Group::Ranked, 0, 1, 1),
        ];
        let limits = Limits {
            budget: 100,
            max_items: Some(2),
        };
        let d = pack(&blocks, &[0], limits, &exact);
        assert_eq!(d[2], Decision::Drop(OmitReason::MaxItems));
    }

    #[test]
    fn a_broken_ancestor_chain_drops_the_rest() {
        let mut blocks = vec![
            block(Group::Header, 0, 2, 5),
            block(Group::Header, 0, 2, 50),
            block(Group::Header, 0, 2, 1),
        ];
        for b in &mut blocks[1..] {
            b.chain = Some(0);
            b.min_content = 0;
        }
        let limits = Limits {
            budget: 20,
            max_items: None,
        };
        let d = pack(&blocks, &[0], limits, &exact);
        assert_eq!(d[0], keep(None));
        assert_eq!(d[1], Decision::Drop(OmitReason::Budget));
        assert_eq!(d[2], Decision::Drop(OmitReason::Budget));
    }

    #[test]
    fn lean_framing_is_tried_before_shortening() {
        let mut b = block(Group::Header, 0, 30, 10);
        b.lean_framing = Some(5);
        let limits = Limits {
            budget: 20,
            max_items: None,
        };
        let d = pack(&[b], &[0], limits, &exact);
        assert_eq!(
            d[0],
            Decision::Keep {
                content_budget: None,
                lean: true
            }
        );
    }
}

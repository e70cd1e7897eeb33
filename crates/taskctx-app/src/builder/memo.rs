//! Bounded memo tables: token counts of texts, the counts of the last texts built for a key, and
//! anything keyed by value with a weight.
//!
//! Eviction is first-in-first-out: simple, O(1), and good enough for the access pattern (the same
//! records are asked for again while their plan runs, then never). Every table is bounded by
//! entries and by weight (bytes), so memory never grows with the store.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use taskctx_domain::TokenCounter;

/// A multiply-rotate hasher (the Fx hash of rustc) for the small maps a single build keeps
/// (records read, ids used): several times faster than SipHash on short keys. Not for
/// long-lived tables keyed by outside data, where SipHash's resistance to crafted collisions
/// matters.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
/// A `HashSet` with [`FastHasher`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<FastHasher>>;

/// A bounded map with FIFO eviction, shared between threads.
pub(crate) struct Memo<K, V> {
    inner: Mutex<MemoInner<K, V>>,
    max_entries: usize,
    max_weight: usize,
}

struct MemoInner<K, V> {
    map: HashMap<K, (V, usize)>,
    order: VecDeque<K>,
    weight: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Memo<K, V> {
    pub(crate) fn new(max_entries: usize, max_weight: usize) -> Self {
        Self {
            inner: Mutex::new(MemoInner {
                map: HashMap::new(),
                order: VecDeque::new(),
                weight: 0,
            }),
            max_entries,
            max_weight,
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.map.get(key).map(|(v, _)| v.clone())
    }

    /// Stores `value`; an entry heavier than the whole table is not stored.
    pub(crate) fn insert(&self, key: K, value: V, weight: usize) {
        if self.max_entries == 0 || weight > self.max_weight {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match inner.map.insert(key.clone(), (value, weight)) {
            Some((_, old)) => inner.weight = inner.weight - old + weight,
            None => {
                inner.weight += weight;
                inner.order.push_back(key);
            }
        }
        while inner.map.len() > self.max_entries || inner.weight > self.max_weight {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, w)) = inner.map.remove(&oldest) {
                inner.weight -= w;
            }
        }
    }

    pub(crate) fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.map.clear();
        inner.order.clear();
        inner.weight = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }
}

impl<K, V> fmt::Debug for Memo<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("max_entries", &self.max_entries)
            .field("max_weight", &self.max_weight)
            .finish()
    }
}

/// Texts longer than this are counted every time rather than memoised (they would crowd out the
/// many short framing lines that make repeated builds cheap).
const MAX_MEMO_TEXT: usize = 64 << 10;

/// A [`TokenCounter`] that remembers the counts of texts it has seen. BPE counting costs tens of
/// nanoseconds per byte; a repeated build re-counts the same framing lines and final text, so
/// memoising them is what keeps a warm build within microseconds.
pub(crate) struct MemoCounter {
    counter: Arc<dyn TokenCounter>,
    memo: Memo<Box<str>, usize>,
}

impl MemoCounter {
    pub(crate) fn new(counter: Arc<dyn TokenCounter>, max_bytes: usize) -> Self {
        Self {
            counter,
            memo: Memo::new(1 << 16, max_bytes),
        }
    }
}

impl MemoCounter {
    /// The counter without the memo, for texts memoised elsewhere.
    pub(crate) fn uncached(&self) -> &dyn TokenCounter {
        &*self.counter
    }
}

impl fmt::Debug for MemoCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoCounter")
            .field("counter", &self.counter.name())
            .finish()
    }
}

impl TokenCounter for MemoCounter {
    fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        if text.len() > MAX_MEMO_TEXT {
            return self.counter.count(text);
        }
        if let Some(n) = self.memo.get(text) {
            return n;
        }
        let n = self.counter.count(text);
        self.memo.insert(text.into(), n, text.len() + 32);
        n
    }

    fn name(&self) -> &str {
        self.counter.name()
    }
}

/// Texts kept per key by [`RecentCounts`].
const RECENT_PER_KEY: usize = 4;

/// The token counts of the last few texts counted for a key (the final text of a task's
/// context, which names its task): a repeated text is recognised by comparing it with those
/// few, instead of hashing several kilobytes into [`MemoCounter`]'s table on every build.
/// Bounded by keys and bytes like every memo; texts longer than the counter memoises are not
/// kept.
pub(crate) struct RecentCounts<K> {
    memo: Memo<K, Arc<[Counted]>>,
}

/// A text and its tokens.
type Counted = (Arc<str>, usize);

impl<K: Eq + Hash + Clone> RecentCounts<K> {
    pub(crate) fn new(max_keys: usize, max_bytes: usize) -> Self {
        Self {
            memo: Memo::new(max_keys, max_bytes),
        }
    }

    /// The tokens of `text`, counted for `key`: remembered if it is one of the key's last texts,
    /// else counted by `counter` and remembered.
    pub(crate) fn count(&self, key: &K, text: &str, counter: &dyn TokenCounter) -> usize {
        if text.is_empty() {
            return 0;
        }
        let recent = self.memo.get(key);
        let kept: &[Counted] = recent.as_deref().unwrap_or(&[]);
        if let Some((_, n)) = kept.iter().find(|(t, _)| **t == *text) {
            return *n;
        }
        let n = counter.count(text);
        if text.len() <= MAX_MEMO_TEXT {
            let skip = (kept.len() + 1).saturating_sub(RECENT_PER_KEY);
            let texts: Arc<[Counted]> = kept[skip..]
                .iter()
                .cloned()
                .chain(std::iter::once((Arc::from(text), n)))
                .collect();
            let weight = 64 + texts.iter().map(|(t, _)| t.len() + 32).sum::<usize>();
            self.memo.insert(key.clone(), texts, weight);
        }
        n
    }
}

impl<K> fmt::Debug for RecentCounts<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecentCounts")
            .field("memo", &self.memo)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskctx_domain::HeuristicTokenCounter;

    #[test]
    fn evicts_oldest_first_by_entries_and_weight() {
        let memo: Memo<u32, u32> = Memo::new(2, 100);
        memo.insert(1, 10, 1);
        memo.insert(2, 20, 1);
        memo.insert(3, 30, 1);
        assert_eq!(memo.get(&1), None);
        assert_eq!(memo.get(&2), Some(20));
        // 1 + 1 + 99 > 100: the oldest (2) goes.
        memo.insert(4, 40, 99);
        assert_eq!(memo.get(&2), None);
        assert_eq!(memo.get(&3), Some(30));
        assert_eq!(memo.get(&4), Some(40));
        memo.insert(5, 50, 101);
        assert_eq!(memo.get(&5), None);
        assert_eq!(memo.len(), 2);
        memo.insert(6, 60, 1);
        memo.clear();
        assert_eq!(memo.get(&6), None);
    }

    #[test]
    fn recent_counts_keep_the_last_texts_per_key() {
        let recent: RecentCounts<u32> = RecentCounts::new(16, 1 << 20);
        let counter = HeuristicTokenCounter;
        let texts: Vec<String> = (0..6)
            .map(|i| format!("text number {i} ").repeat(i + 1))
            .collect();
        for text in &texts {
            assert_eq!(recent.count(&1, text, &counter), counter.count(text));
        }
        // The last four are remembered, the first two were let go; other keys are separate.
        let kept = recent.memo.get(&1).unwrap();
        let kept: Vec<&str> = kept.iter().map(|(t, _)| &**t).collect();
        assert_eq!(
            kept,
            texts[2..].iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(recent.memo.get(&2).is_none());
        assert_eq!(
            recent.count(&2, &texts[0], &counter),
            counter.count(&texts[0])
        );
        assert_eq!(recent.count(&1, "", &counter), 0);
    }

    #[test]
    fn memo_counter_agrees_with_its_counter() {
        let counter = MemoCounter::new(Arc::new(HeuristicTokenCounter), 1 << 20);
        for text in ["", "a b c", "a b c", "hello, world", &"x".repeat(70_000)] {
            assert_eq!(counter.count(text), HeuristicTokenCounter.count(text));
        }
        assert_eq!(counter.name(), "heuristic");
    }
}

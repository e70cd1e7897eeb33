//! What the cache stores under which key, and the striped write epochs that keep racing readers
//! from caching values older than a finished write.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use moka::Equivalent;
use taskctx_domain::{TaskId, TaskRecord};

/// Which of the two kinds of entry a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// The record with this id, or its absence.
    Record,
    /// The children list of the parent with this id.
    Children,
}

/// An owned cache key. Hashing is written out by hand so that [`KeyRef`] hashes identically,
/// which lets a lookup borrow the caller's id instead of cloning it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheKey {
    kind: Kind,
    id: TaskId,
}

impl CacheKey {
    pub(crate) fn new(kind: Kind, id: TaskId) -> Self {
        Self { kind, id }
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.id.as_str().hash(state);
    }
}

/// A borrowed cache key, for lookups and invalidations without allocating.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyRef<'a> {
    kind: Kind,
    id: &'a TaskId,
}

impl<'a> KeyRef<'a> {
    pub(crate) fn record(id: &'a TaskId) -> Self {
        Self {
            kind: Kind::Record,
            id,
        }
    }

    pub(crate) fn children(id: &'a TaskId) -> Self {
        Self {
            kind: Kind::Children,
            id,
        }
    }

    pub(crate) fn id(&self) -> &'a TaskId {
        self.id
    }

    pub(crate) fn to_owned_key(self) -> CacheKey {
        CacheKey::new(self.kind, self.id.clone())
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.id.as_str().hash(state);
    }
}

impl Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.kind == key.kind && *self.id == key.id
    }
}

/// A cached answer. Cloned on every hit, so both variants are reference-counted.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    /// What `get` returned: the record or `None` (negative entries are cached too).
    Record(Option<Arc<TaskRecord>>),
    /// What `children` returned, in order.
    Children(Arc<[Arc<TaskRecord>]>),
}

/// A cached answer with its weight, computed once at insertion so moka's weigher and the
/// byte counter agree for the entry's whole life.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) value: Cached,
    pub(crate) bytes: u64,
    pub(crate) weight: u32,
}

/// Stripes of write epochs: enough that unrelated writes rarely stop a reader from caching.
const STRIPES: usize = 64;

/// Write epochs, one counter per stripe of ids.
///
/// A writer bumps the stripe of every id whose entries it invalidates; a reader that missed
/// notes the stripe of the id it reads before asking the inner store, and caches the answer only
/// if the stripe did not move meanwhile (see `CachedRecordStore::publish`). Striping keeps a
/// write to one record from discarding the reads of unrelated records in flight.
#[derive(Debug)]
pub(crate) struct Epochs {
    stripes: Box<[AtomicU64]>,
    hasher: RandomState,
}

impl Epochs {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The stripe of `id` (also used to pick the writer lock of `id`).
    pub(crate) fn stripe(&self, id: &TaskId) -> usize {
        (self.hasher.hash_one(id.as_str()) % STRIPES as u64) as usize
    }

    /// The number of stripes (and of writer locks).
    pub(crate) fn len(&self) -> usize {
        self.stripes.len()
    }

    /// The current epoch of `id`'s stripe. Acquire pairs with the release in [`Self::bump`]: a
    /// reader that sees a writer's bump also sees the writer's inner write.
    pub(crate) fn load(&self, id: &TaskId) -> u64 {
        self.stripes
            .get(self.stripe(id))
            .map_or(0, |s| s.load(Ordering::Acquire))
    }

    /// Moves `id`'s stripe on.
    pub(crate) fn bump(&self, id: &TaskId) {
        if let Some(stripe) = self.stripes.get(self.stripe(id)) {
            stripe.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Moves every stripe on (clear, subtree deletes, explicit invalidation).
    pub(crate) fn bump_all(&self) {
        for stripe in self.stripes.iter() {
            stripe.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn borrowed_and_owned_keys_hash_alike() {
        let state = RandomState::new();
        let id = TaskId::new("root.1").unwrap();
        for kind in [Kind::Record, Kind::Children] {
            let owned = CacheKey::new(kind, id.clone());
            let borrowed = KeyRef { kind, id: &id };
            assert_eq!(state.hash_one(&owned), state.hash_one(borrowed));
            assert!(borrowed.equivalent(&owned));
        }
        assert!(!KeyRef::record(&id).equivalent(&CacheKey::new(Kind::Children, id.clone())));
    }
}

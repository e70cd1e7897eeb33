//! The write buffer's state — the queue of buffered puts and the overlay reads merge over the
//! inner store — with the pure parts of flushing (batching) and of reading (merges, stats).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use taskctx_domain::{TaskId, TaskRecord};
use taskctx_store::RecordStats;
use tokio::time::Instant;

/// Everything the buffer holds. Guarded by the buffer's lock.
#[derive(Debug, Default)]
pub(crate) struct BufferState {
    /// Buffered puts in the order they were accepted, each with the revision it was given.
    /// Several puts of one id may be queued: flushing does not coalesce, so that every revision
    /// returned to a writer is stored (see `next_batch_len`).
    pub(crate) queue: VecDeque<Arc<TaskRecord>>,
    /// The newest buffered record per id: what reads return for that id.
    pub(crate) latest: HashMap<TaskId, Arc<TaskRecord>>,
    /// Per buffered id, the record the inner store holds (`None`: absent), kept in step as
    /// flushes store earlier puts, so `stats` can take its contribution out.
    pub(crate) original: HashMap<TaskId, Option<Arc<TaskRecord>>>,
    /// When the oldest queued put was accepted (`None` when the queue is empty).
    pub(crate) oldest: Option<Instant>,
    /// Set by `shutdown`: the queue is empty and stays so; writes pass through.
    pub(crate) closed: bool,
}

impl BufferState {
    /// Queues `record`; `original` is the inner store's record when `record`'s id was not
    /// buffered yet.
    pub(crate) fn push(
        &mut self,
        record: Arc<TaskRecord>,
        original: Option<Option<Arc<TaskRecord>>>,
    ) {
        let id = record.task_id.clone();
        if let Some(original) = original {
            self.original.entry(id.clone()).or_insert(original);
        }
        self.latest.insert(id, Arc::clone(&record));
        if self.queue.is_empty() {
            self.oldest = Some(Instant::now());
        }
        self.queue.push_back(record);
    }

    /// How many queued puts form the next batch: the longest prefix of the queue in which no id
    /// appears twice (a batch may not name an id twice, and each put's precondition is the
    /// revision the one before it stores). Flushing batch after batch thus keeps every id's puts
    /// in order, and after each batch the store holds a prefix of the accepted puts.
    pub(crate) fn next_batch_len(&self) -> usize {
        distinct_prefix_len(self.queue.iter().map(|r| &r.task_id))
    }

    /// Records that the inner store now holds `record` (a queued put, already removed from the
    /// queue): the overlay forgets it unless a later put of its id is still queued.
    pub(crate) fn mark_written(&mut self, record: &Arc<TaskRecord>) {
        let id = &record.task_id;
        if self.latest.get(id).is_some_and(|l| Arc::ptr_eq(l, record)) {
            self.latest.remove(id);
            self.original.remove(id);
        } else {
            self.original.insert(id.clone(), Some(Arc::clone(record)));
        }
    }

    /// Removes the queued puts `written` (stored by an earlier flush that did not learn it) and
    /// marks them written.
    pub(crate) fn remove_written(&mut self, written: &[Arc<TaskRecord>]) {
        let doomed: HashSet<*const TaskRecord> = written.iter().map(Arc::as_ptr).collect();
        self.queue.retain(|r| !doomed.contains(&Arc::as_ptr(r)));
        for record in written {
            self.mark_written(record);
        }
        self.queue_changed();
    }

    /// Drops every queued put of `id` (it can never be stored) and returns how many there were.
    pub(crate) fn discard(&mut self, id: &TaskId) -> usize {
        let before = self.queue.len();
        self.queue.retain(|r| &r.task_id != id);
        self.latest.remove(id);
        self.original.remove(id);
        self.queue_changed();
        before - self.queue.len()
    }

    /// Takes back `record` if it is still the last queued put (its flush failed before reaching
    /// it): the buffer is left as it was before that put. Returns whether it did.
    pub(crate) fn rollback_last(&mut self, record: &Arc<TaskRecord>) -> bool {
        if !self.queue.back().is_some_and(|r| Arc::ptr_eq(r, record)) {
            return false;
        }
        self.queue.pop_back();
        let id = &record.task_id;
        match self.queue.iter().rev().find(|r| &r.task_id == id) {
            Some(previous) => {
                self.latest.insert(id.clone(), Arc::clone(previous));
            }
            None => {
                self.latest.remove(id);
                self.original.remove(id);
            }
        }
        self.queue_changed();
        true
    }

    /// Keeps `oldest` meaningful after puts leave the queue other than by a flush that empties
    /// it. The age of what remains is not known exactly; the old stamp is kept, which flushes it
    /// no later than it would have been.
    pub(crate) fn queue_changed(&mut self) {
        if self.queue.is_empty() {
            self.oldest = None;
        }
    }

    /// Applies the overlay to `list`, the inner store's children of `parent`: buffered records
    /// replace their stored versions (and leave when they moved to another parent), buffered
    /// children are added. Returns whether the list must be ordered again.
    pub(crate) fn overlay_children(
        &self,
        parent: &TaskId,
        list: &mut Vec<Arc<TaskRecord>>,
    ) -> bool {
        list.retain(|r| !self.latest.contains_key(&r.task_id));
        let before = list.len();
        list.extend(
            self.latest
                .values()
                .filter(|r| r.parent_task_id.as_ref() == Some(parent))
                .cloned(),
        );
        // Removing keeps the order; adding, or a buffered parent (maybe a new plan), does not.
        list.len() != before || self.latest.contains_key(parent)
    }

    /// Applies the overlay to `stored`, an inner answer in byte order of ids: buffered records
    /// replace their stored versions and join where `keep` accepts them, in id order.
    pub(crate) fn overlay_sorted(
        &self,
        stored: Vec<Arc<TaskRecord>>,
        keep: impl Fn(&TaskRecord) -> bool,
    ) -> Vec<Arc<TaskRecord>> {
        if self.latest.is_empty() {
            return stored;
        }
        let mut buffered: Vec<Arc<TaskRecord>> =
            self.latest.values().filter(|r| keep(r)).cloned().collect();
        buffered.sort_by(|a, b| a.task_id.as_str().cmp(b.task_id.as_str()));
        let stored = stored
            .into_iter()
            .filter(|r| !self.latest.contains_key(&r.task_id));
        merge_by_id(stored, buffered)
    }

    /// Corrects the inner store's totals for the overlay: each buffered id's stored record (if
    /// any) is taken out and its newest buffered record counted in. Layers are a set, so a layer
    /// only a replaced record had cannot be taken out here: those layers are returned, for the
    /// caller to check against the store.
    pub(crate) fn overlay_stats(&self, stats: &mut RecordStats) -> BTreeSet<u32> {
        let buffered_layers: BTreeSet<u32> = self.latest.values().filter_map(|r| r.layer).collect();
        let mut maybe_gone = BTreeSet::new();
        for (id, record) in &self.latest {
            if let Some(Some(stored)) = self.original.get(id) {
                stats.total = stats.total.saturating_sub(1);
                if let Some(count) = stats.per_status.get_mut(&stored.status) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        stats.per_status.remove(&stored.status);
                    }
                }
                if let Some(layer) = stored.layer
                    && !buffered_layers.contains(&layer)
                {
                    maybe_gone.insert(layer);
                }
            }
            stats.add(record);
        }
        maybe_gone
    }
}

/// The length of the longest prefix of `ids` without a repeated id.
pub(crate) fn distinct_prefix_len<'a>(ids: impl Iterator<Item = &'a TaskId>) -> usize {
    let mut seen = HashSet::new();
    ids.take_while(|id| seen.insert(*id)).count()
}

/// Merges two lists sorted by id bytes (no id in both) into one.
fn merge_by_id(
    a: impl Iterator<Item = Arc<TaskRecord>>,
    b: Vec<Arc<TaskRecord>>,
) -> Vec<Arc<TaskRecord>> {
    let mut a = a.peekable();
    let mut b = b.into_iter().peekable();
    let mut merged = Vec::new();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.task_id.as_str() <= y.task_id.as_str(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return merged,
        };
        let next = if take_a { a.next() } else { b.next() };
        merged.extend(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskctx_domain::{TaskStatus, TaskType};

    fn id(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }

    fn rec(s: &str, revision: u64) -> Arc<TaskRecord> {
        let mut r = TaskRecord::new(id(s), "g", TaskType::Think);
        r.revision = revision;
        Arc::new(r)
    }

    #[test]
    fn batches_are_prefixes_without_repeats() {
        let ids: Vec<TaskId> = ["a", "b", "a", "c", "a"].into_iter().map(id).collect();
        assert_eq!(distinct_prefix_len(ids.iter()), 2);
        assert_eq!(distinct_prefix_len(ids[2..].iter()), 2);
        assert_eq!(distinct_prefix_len(ids[4..].iter()), 1);
        assert_eq!(distinct_prefix_len([].iter()), 0);
    }

    #[test]
    fn flushing_in_batches_keeps_the_overlay_in_step() {
        let mut s = BufferState::default();
        let (a1, b1, a2) = (rec("a", 1), rec("b", 4), rec("a", 2));
        s.push(Arc::clone(&a1), Some(None));
        s.push(Arc::clone(&b1), Some(Some(rec("b", 3))));
        s.push(Arc::clone(&a2), None);
        assert_eq!(s.next_batch_len(), 2);
        for r in s.queue.drain(..2).collect::<Vec<_>>() {
            s.mark_written(&r);
        }
        // `a` is still buffered (a2), and the store now holds a1.
        assert!(Arc::ptr_eq(&s.latest[&id("a")], &a2));
        assert!(Arc::ptr_eq(s.original[&id("a")].as_ref().unwrap(), &a1));
        assert!(!s.latest.contains_key(&id("b")));
        assert!(!s.original.contains_key(&id("b")));
    }

    #[test]
    fn rollback_restores_the_previous_buffered_version() {
        let mut s = BufferState::default();
        let (a1, a2) = (rec("a", 1), rec("a", 2));
        s.push(Arc::clone(&a1), Some(None));
        s.push(Arc::clone(&a2), None);
        assert!(!s.rollback_last(&a1));
        assert!(s.rollback_last(&a2));
        assert!(Arc::ptr_eq(&s.latest[&id("a")], &a1));
        assert!(s.rollback_last(&a1));
        assert!(s.latest.is_empty() && s.original.is_empty() && s.oldest.is_none());
    }

    #[test]
    fn sorted_overlay_replaces_and_merges_by_id() {
        let mut s = BufferState::default();
        let mut done = TaskRecord::clone(&rec("b", 2));
        done.status = TaskStatus::Done;
        s.push(Arc::new(done), Some(Some(rec("b", 1))));
        s.push(rec("d", 1), Some(None));
        let stored = vec![rec("a", 1), rec("b", 1), rec("c", 1)];
        let all = s.overlay_sorted(stored.clone(), |_| true);
        let ids: Vec<&str> = all.iter().map(|r| r.task_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(all[1].revision, 2);
        let done = s.overlay_sorted(stored, |r| r.status == TaskStatus::Done);
        let ids: Vec<&str> = done.iter().map(|r| r.task_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}

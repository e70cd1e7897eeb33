//! `FsRecordStore`: one JSON file per task record, replaced atomically, with every record and the
//! parent→children index held in memory (the store's lock makes the memory authoritative).

mod batch;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use async_trait::async_trait;
use taskctx_domain::{TaskId, TaskRecord, TaskStatus};
use taskctx_store::{
    PutRecord, RecordStats, RecordStore, StoreError, StoreResult, order_children,
    reject_duplicate_ids,
};

use crate::fsutil::{self, blocking, describe_json_error, io_error};
use crate::names;
use crate::store::Shared;

use batch::{INTENT_FILE, Op};

/// The extension of record files.
pub(crate) const EXT: &str = "json";

/// Directories left by `clear` start with this; a crash can leave one behind, and loading removes
/// it.
const TRASH_PREFIX: &str = ".records-trash-";

/// The task records of a store (see the crate docs for the layout and the promises).
///
/// Obtained from [`FsStore::records`](crate::FsStore::records); every clone and the matching
/// [`FsHistoryStore`](crate::FsHistoryStore) share one opened directory and its lock.
///
/// The records are read into memory on first use (every file, plus the parent→children index),
/// so reads never touch the disk and `children` costs O(k log k) for k children. Memory use is
/// about the size of the records' JSON. A corrupt record file makes every record operation fail
/// with [`StoreError::Corrupt`] naming it, until it is repaired or removed by hand; the history
/// half of the store is unaffected.
#[derive(Clone)]
pub struct FsRecordStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FsRecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsRecordStore")
            .field("dir", &self.shared.records.dir)
            .finish()
    }
}

impl FsRecordStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The file that holds (or would hold) the record `id`.
    pub fn path_of(&self, id: &TaskId) -> PathBuf {
        self.shared.records.path(id)
    }

    /// Runs `query` on the in-memory records, loading them first if needed.
    async fn query<R>(&self, query: impl Fn(&Records) -> R) -> StoreResult<R> {
        // A failed batch can reset the state between the load and the read; a few rounds cover
        // that without looping forever on a store that keeps failing.
        for _ in 0..3 {
            if let Some(result) = self.shared.records.try_read(&query) {
                return Ok(result);
            }
            let shared = Arc::clone(&self.shared);
            blocking(move || shared.records.load_now()).await?;
        }
        Err(StoreError::Backend {
            detail: "the record index was reset by failing writes; try again".to_owned(),
            retryable: true,
        })
    }

    /// Runs `work` on the blocking pool, holding the writer lock with the records loaded.
    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        F: FnOnce(&RecordArea) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            let area = &shared.records;
            let _writer = lock(&area.writer);
            area.ensure_loaded()?;
            work(area)
        })
        .await
    }
}

#[async_trait]
impl RecordStore for FsRecordStore {
    async fn put(&self, record: TaskRecord, expected_revision: Option<u64>) -> StoreResult<u64> {
        self.write(move |area| {
            let mut record = record;
            let actual = area.revision(&record.task_id);
            if let Some(expected) = expected_revision
                && expected != actual
            {
                return Err(StoreError::record_conflict(
                    &record.task_id,
                    expected,
                    actual,
                ));
            }
            record.revision = actual + 1;
            let revision = record.revision;
            area.commit(vec![Op::Put(Arc::new(record))])?;
            Ok(revision)
        })
        .await
    }

    async fn put_many(&self, batch: Vec<PutRecord>) -> StoreResult<Vec<u64>> {
        reject_duplicate_ids(&batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |area| {
            let mut revisions = Vec::with_capacity(batch.len());
            for put in &batch {
                let id = &put.record.task_id;
                let actual = area.revision(id);
                if let Some(expected) = put.expected_revision
                    && expected != actual
                {
                    return Err(StoreError::record_conflict(id, expected, actual));
                }
                revisions.push(actual + 1);
            }
            let ops = batch
                .into_iter()
                .zip(&revisions)
                .map(|(put, revision)| {
                    let mut record = put.record;
                    record.revision = *revision;
                    Op::Put(Arc::new(record))
                })
                .collect();
            area.commit(ops)?;
            Ok(revisions)
        })
        .await
    }

    async fn get(&self, id: &TaskId) -> StoreResult<Option<Arc<TaskRecord>>> {
        self.query(|records| records.by_id.get(id).cloned()).await
    }

    async fn get_many(&self, ids: &[TaskId]) -> StoreResult<Vec<Option<Arc<TaskRecord>>>> {
        self.query(|records| {
            ids.iter()
                .map(|id| records.by_id.get(id).cloned())
                .collect()
        })
        .await
    }

    async fn children(&self, parent: &TaskId) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.query(|records| records.children(parent)).await
    }

    async fn by_status(&self, status: TaskStatus) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.query(|records| records.scan(|r| r.status == status))
            .await
    }

    async fn by_layer(&self, layer: u32) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.query(|records| records.scan(|r| r.layer == Some(layer)))
            .await
    }

    async fn roots(&self) -> StoreResult<Vec<Arc<TaskRecord>>> {
        self.query(|records| records.scan(TaskRecord::is_root))
            .await
    }

    async fn delete(&self, id: &TaskId) -> StoreResult<bool> {
        let id = id.clone();
        self.write(move |area| {
            if area.revision(&id) == 0 {
                return Ok(false);
            }
            area.commit(vec![Op::Delete(id)])?;
            Ok(true)
        })
        .await
    }

    async fn delete_subtree(&self, id: &TaskId) -> StoreResult<u64> {
        let id = id.clone();
        self.write(move |area| {
            let doomed = area
                .try_read(|records| records.subtree(&id))
                .unwrap_or_default();
            let removed = doomed.len() as u64;
            if !doomed.is_empty() {
                area.commit(doomed.into_iter().map(Op::Delete).collect())?;
            }
            Ok(removed)
        })
        .await
    }

    async fn clear(&self) -> StoreResult<()> {
        self.write(RecordArea::clear).await
    }

    async fn stats(&self) -> StoreResult<RecordStats> {
        self.query(|records| {
            let mut stats = RecordStats::default();
            records.by_id.values().for_each(|r| stats.add(r));
            stats
        })
        .await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every record in memory, by id (so scans come out in byte order of ids), and the
/// parent→children index.
#[derive(Debug, Default)]
pub(crate) struct Records {
    by_id: BTreeMap<TaskId, Arc<TaskRecord>>,
    children: HashMap<TaskId, BTreeSet<TaskId>>,
}

impl Records {
    fn install(&mut self, record: Arc<TaskRecord>) {
        let id = record.task_id.clone();
        let parent = record.parent_task_id.clone();
        let previous = self.by_id.insert(id.clone(), record);
        if let Some(old) = previous.and_then(|p| p.parent_task_id.clone())
            && parent.as_ref() != Some(&old)
        {
            self.unlink(&old, &id);
        }
        if let Some(parent) = parent {
            self.children.entry(parent).or_default().insert(id);
        }
    }

    fn remove(&mut self, id: &TaskId) {
        if let Some(parent) = self.by_id.remove(id).and_then(|r| r.parent_task_id.clone()) {
            self.unlink(&parent, id);
        }
    }

    fn unlink(&mut self, parent: &TaskId, child: &TaskId) {
        if let Some(siblings) = self.children.get_mut(parent) {
            siblings.remove(child);
            if siblings.is_empty() {
                self.children.remove(parent);
            }
        }
    }

    fn apply(&mut self, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::Put(record) => self.install(record),
                Op::Delete(id) => self.remove(&id),
            }
        }
    }

    fn children(&self, parent: &TaskId) -> Vec<Arc<TaskRecord>> {
        let mut children: Vec<Arc<TaskRecord>> = self
            .children
            .get(parent)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.by_id.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default();
        order_children(self.by_id.get(parent).map(|p| &**p), &mut children);
        children
    }

    fn scan(&self, keep: impl Fn(&TaskRecord) -> bool) -> Vec<Arc<TaskRecord>> {
        self.by_id.values().filter(|r| keep(r)).cloned().collect()
    }

    /// The existing records of the subtree under `root` (itself included if it exists; its
    /// descendants also if it does not), in a cycle-safe walk.
    fn subtree(&self, root: &TaskId) -> Vec<TaskId> {
        let mut visited = HashSet::new();
        let mut pending = vec![root.clone()];
        while let Some(next) = pending.pop() {
            if let Some(children) = self.children.get(&next) {
                pending.extend(children.iter().filter(|c| !visited.contains(*c)).cloned());
            }
            visited.insert(next);
        }
        let mut doomed: Vec<TaskId> = visited
            .into_iter()
            .filter(|id| self.by_id.contains_key(id))
            .collect();
        doomed.sort();
        doomed
    }
}

/// The record half of an opened store.
pub(crate) struct RecordArea {
    root: PathBuf,
    dir: PathBuf,
    /// Serialises writers and loading; held on the blocking pool only, never across `.await`.
    writer: Mutex<()>,
    /// `None` until loaded, and again after a failure that left memory and disk out of step
    /// (the next operation reloads, re-applying an interrupted batch).
    state: RwLock<Option<Records>>,
}

/// What applying operations changed, to be made durable together.
#[derive(Default)]
struct Touched {
    /// Directories whose entries changed.
    dirs: BTreeSet<PathBuf>,
    /// Files written without being synced (under the intent log).
    files: Vec<PathBuf>,
}

/// How a write failed.
enum Failure {
    /// Nothing changed, on disk or in memory.
    Unchanged(StoreError),
    /// The change is on disk (and so in memory) but its durability could not be confirmed.
    Visible(StoreError),
    /// Disk and memory may differ: memory is dropped and reloaded from disk on next use.
    Unknown(StoreError),
}

impl RecordArea {
    pub(crate) fn new(root: PathBuf, dir: PathBuf) -> Self {
        Self {
            root,
            dir,
            writer: Mutex::new(()),
            state: RwLock::new(None),
        }
    }

    fn path(&self, id: &TaskId) -> PathBuf {
        self.dir.join(names::relative_path(id.as_str(), EXT))
    }

    fn try_read<R>(&self, query: impl Fn(&Records) -> R) -> Option<R> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.as_ref().map(query)
    }

    fn revision(&self, id: &TaskId) -> u64 {
        self.try_read(|records| records.by_id.get(id).map_or(0, |r| r.revision))
            .unwrap_or(0)
    }

    fn set_state(&self, records: Option<Records>) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = records;
    }

    fn update_state(&self, ops: Vec<Op>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(records) = state.as_mut() {
            records.apply(ops);
        }
    }

    /// Loads the records for a reader (taking the writer lock, so a load never races a write).
    fn load_now(&self) -> StoreResult<()> {
        let _writer = lock(&self.writer);
        self.ensure_loaded()
    }

    /// Loads the records unless they are loaded. The caller holds the writer lock.
    fn ensure_loaded(&self) -> StoreResult<()> {
        if self.try_read(|_| ()).is_some() {
            return Ok(());
        }
        let records = self.load()?;
        self.set_state(Some(records));
        Ok(())
    }

    /// Reads the whole directory: finishes an interrupted batch or clear, removes temp files,
    /// parses every record file and builds the index.
    fn load(&self) -> StoreResult<Records> {
        self.ensure_dir()?;
        self.remove_trash();
        self.recover_batch()?;
        let (found, temps) = fsutil::walk(&self.dir, EXT)
            .map_err(|e| io_error("listing the task records", &self.dir, e))?;
        fsutil::remove_temps(&temps);
        let mut records = Records::default();
        for item in found {
            // A decoded name that is not a valid id is not one of ours.
            let Ok(id) = TaskId::new(item.id) else {
                continue;
            };
            let bytes = fs::read(&item.path)
                .map_err(|e| io_error(format!("reading task record `{id}`"), &item.path, e))?;
            records.install(Arc::new(parse_record(&bytes, &item.path, &id)?));
        }
        tracing::debug!(dir = %self.dir.display(), records = records.by_id.len(), "loaded task records");
        Ok(records)
    }

    /// Creates the records directory if it is missing (a fresh store, or a crash inside `clear`).
    fn ensure_dir(&self) -> StoreResult<()> {
        match fs::create_dir(&self.dir) {
            Ok(()) => fsutil::sync_dir(&self.root)
                .map_err(|e| io_error("creating the records directory", &self.root, e)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_error("creating the records directory", &self.dir, e)),
        }
    }

    /// Removes the directories a `clear` moved aside. Best effort: they are invisible anyway.
    fn remove_trash(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let is_trash = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TRASH_PREFIX));
            if is_trash && let Err(error) = fs::remove_dir_all(entry.path()) {
                tracing::warn!(
                    path = %entry.path().display(),
                    %error,
                    "cannot remove the records of a cleared store"
                );
            }
        }
    }

    /// Re-applies a batch whose intent was committed but whose removal was not seen (a crash or
    /// an I/O failure in the middle of a batch).
    fn recover_batch(&self) -> StoreResult<()> {
        let path = self.dir.join(INTENT_FILE);
        let bytes = fsutil::read_if_exists(&path)
            .map_err(|e| io_error("reading the batch intent log", &path, e))?;
        let Some(bytes) = bytes else {
            return Ok(());
        };
        let ops = batch::parse(&bytes).map_err(|(line, detail)| {
            StoreError::corrupt(format!("{}:{line}", path.display()), detail)
        })?;
        tracing::info!(path = %path.display(), operations = ops.len(), "re-applying an interrupted batch of task records");
        let mut touched = Touched::default();
        for op in &ops {
            self.apply(op, &mut touched, false).map_err(|(path, e)| {
                io_error(
                    format!("re-applying the batch to task record `{}`", op.id()),
                    &path,
                    e,
                )
            })?;
        }
        self.finish_batch(&touched)
            .map_err(|(path, e)| io_error("finishing an interrupted batch", &path, e))
    }

    /// Writes `ops` durably and updates memory. One operation is one atomic file operation; more
    /// go through the intent log so that they are all-or-nothing across a crash.
    fn commit(&self, ops: Vec<Op>) -> StoreResult<()> {
        let result = match ops.as_slice() {
            [one] => self.commit_one(one),
            many => self.commit_many(many),
        };
        match result {
            Ok(()) => {
                self.update_state(ops);
                Ok(())
            }
            Err(Failure::Unchanged(error)) => Err(error),
            Err(Failure::Visible(error)) => {
                self.update_state(ops);
                Err(error)
            }
            Err(Failure::Unknown(error)) => {
                tracing::warn!(%error, "a batch of task records failed half-way; reloading the records from disk on next use");
                self.set_state(None);
                Err(error)
            }
        }
    }

    fn commit_one(&self, op: &Op) -> Result<(), Failure> {
        let mut touched = Touched::default();
        let action = |op: &Op| match op {
            Op::Put(r) => format!("writing task record `{}`", r.task_id),
            Op::Delete(id) => format!("deleting task record `{id}`"),
        };
        self.ensure_dir().map_err(Failure::Unchanged)?;
        self.apply(op, &mut touched, true)
            .map_err(|(path, e)| Failure::Unchanged(io_error(action(op), &path, e)))?;
        for dir in &touched.dirs {
            fsutil::sync_dir(dir).map_err(|e| Failure::Visible(io_error(action(op), dir, e)))?;
        }
        if let Op::Delete(id) = op {
            self.prune(id);
        }
        Ok(())
    }

    fn commit_many(&self, ops: &[Op]) -> Result<(), Failure> {
        let intent = self.dir.join(INTENT_FILE);
        let action = "writing a batch of task records";
        self.ensure_dir().map_err(Failure::Unchanged)?;
        let bytes = batch::render(ops).map_err(|e| {
            Failure::Unchanged(StoreError::InvalidInput(format!(
                "a task record cannot be written as JSON: {e}"
            )))
        })?;
        fsutil::replace_file(&intent, &bytes)
            .map_err(|e| Failure::Unchanged(io_error(action, &intent, e)))?;
        if let Err(e) = fsutil::sync_dir(&self.dir) {
            // Not known to be committed: withdraw it, or let the next load settle it.
            let error = io_error(action, &self.dir, e);
            return Err(match fs::remove_file(&intent) {
                Ok(()) => Failure::Unchanged(error),
                Err(_) => Failure::Unknown(error),
            });
        }
        let before: Vec<Option<Arc<TaskRecord>>> = ops
            .iter()
            .map(|op| self.try_read(|r| r.by_id.get(op.id()).cloned()).flatten())
            .collect();
        let mut touched = Touched::default();
        for (index, op) in ops.iter().enumerate() {
            if let Err((path, e)) = self.apply(op, &mut touched, false) {
                let error = io_error(
                    format!("writing a batch of task records, at `{}`", op.id()),
                    &path,
                    e,
                );
                return Err(self.roll_back(&ops[..index], &before[..index], error));
            }
        }
        let finished = self.finish_batch(&touched);
        for op in ops {
            if let Op::Delete(id) = op {
                self.prune(id);
            }
        }
        // The batch is applied; if it cannot be confirmed durable or the intent cannot be
        // removed, memory is reloaded so that the intent is re-applied before any later write
        // (a stale intent must never be applied over newer writes).
        finished.map_err(|(path, e)| Failure::Unknown(io_error(action, &path, e)))
    }

    /// Restores the records the first operations of a failed batch had changed, then withdraws
    /// the intent; if that is impossible the batch is left to be re-applied on the next load.
    fn roll_back(
        &self,
        applied: &[Op],
        before: &[Option<Arc<TaskRecord>>],
        error: StoreError,
    ) -> Failure {
        let mut touched = Touched::default();
        for (op, old) in applied.iter().zip(before) {
            let undo = match old {
                Some(record) => Op::Put(Arc::clone(record)),
                None => Op::Delete(op.id().clone()),
            };
            if self.apply(&undo, &mut touched, false).is_err() {
                return Failure::Unknown(error);
            }
        }
        let withdrawn = self.finish_batch(&touched);
        match withdrawn {
            Ok(()) => Failure::Unchanged(error),
            Err(_) => Failure::Unknown(error),
        }
    }

    /// Applies one operation to the files (idempotent), recording what to sync. `durable` writes
    /// sync a record's content before renaming it into place; without it (under the intent log,
    /// which replays the write after a crash) the file is synced later by [`Self::finish_batch`].
    fn apply(
        &self,
        op: &Op,
        touched: &mut Touched,
        durable: bool,
    ) -> Result<(), (PathBuf, io::Error)> {
        let id = op.id();
        let components = names::components(id.as_str(), EXT);
        let path = self.dir.join(components.iter().collect::<PathBuf>());
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        match op {
            Op::Put(record) => {
                let bytes = render_record(record).map_err(|e| (path.clone(), e))?;
                fsutil::ensure_dirs(&self.dir, names::dirs(&components))
                    .map_err(|e| (parent.clone(), e))?;
                if durable {
                    fsutil::replace_file(&path, &bytes).map_err(|e| (path.clone(), e))?;
                } else {
                    fsutil::replace_file_unsynced(&path, &bytes).map_err(|e| (path.clone(), e))?;
                    touched.files.push(path);
                }
            }
            Op::Delete(_) => match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err((path, e)),
            },
        }
        touched.dirs.insert(parent);
        Ok(())
    }

    /// Makes an applied batch durable and removes its intent.
    fn finish_batch(&self, touched: &Touched) -> Result<(), (PathBuf, io::Error)> {
        fsutil::sync_files(&touched.files)?;
        for dir in &touched.dirs {
            fsutil::sync_dir(dir).map_err(|e| (dir.clone(), e))?;
        }
        let intent = self.dir.join(INTENT_FILE);
        match fs::remove_file(&intent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err((intent, e)),
        }
        fsutil::sync_dir(&self.dir).map_err(|e| (self.dir.clone(), e))
    }

    /// Removes the empty continuation directories a deleted long id leaves.
    fn prune(&self, id: &TaskId) {
        let components = names::components(id.as_str(), EXT);
        fsutil::prune_dirs(&self.dir, names::dirs(&components));
    }

    /// Empties the store: the records directory is renamed aside (the atomic step), a fresh one
    /// created, and the old one removed.
    fn clear(&self) -> StoreResult<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let trash = self
            .root
            .join(format!("{TRASH_PREFIX}{}-{n}", std::process::id()));
        match fs::rename(&self.dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("clearing the task records", &self.dir, e)),
        }
        self.set_state(Some(Records::default()));
        // The rename is the commit; from here on an error means "cleared, but not yet durably".
        self.ensure_dir()?;
        if let Err(error) = fs::remove_dir_all(&trash)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(
                path = %trash.display(),
                %error,
                "cannot remove the cleared records; the next load retries"
            );
        }
        Ok(())
    }
}

/// A record file's content: pretty JSON (these files are read by people too) and a newline.
fn render_record(record: &TaskRecord) -> io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Parses a record file, checking that it holds the record its name says, with a revision.
fn parse_record(bytes: &[u8], path: &Path, id: &TaskId) -> StoreResult<TaskRecord> {
    let record: TaskRecord = serde_json::from_slice(bytes).map_err(|e| {
        StoreError::corrupt(
            format!("{}:{}", path.display(), e.line().max(1)),
            describe_json_error(&e),
        )
    })?;
    if &record.task_id != id {
        return Err(StoreError::corrupt(
            path.display().to_string(),
            format!(
                "the file name is that of task record `{id}` but the file holds `{}`",
                record.task_id
            ),
        ));
    }
    if record.revision == 0 {
        return Err(StoreError::corrupt(
            path.display().to_string(),
            "the record has no revision (a stored record has revision 1 or more)",
        ));
    }
    Ok(record)
}

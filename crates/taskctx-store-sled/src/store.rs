//! `SledStore`: opening a store directory (lock file, sled, trees, format check) and the shared
//! state both ports run on.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::Duration;

use taskctx_store::{StoreError, StoreResult};

use crate::codec::{
    CHATS_TREE, CHILDREN_TREE, FORMAT_KEY, FORMAT_VERSION, HISTORY_TREE, RECORDS_TREE,
};
use crate::error::from_sled;
use crate::flush::{FlushStats, GroupCommit};
use crate::history::SledHistoryStore;
use crate::records::SledRecordStore;

/// Name of this adapter's lock file inside the store directory. sled only touches its own
/// files there (`conf`, `db`, `blobs/`, `snap.*`), so it never sees or removes this one.
pub const LOCK_FILE_NAME: &str = "taskctx.lock";

/// How many independently locked stripes the per-chat reader/replacer locks are spread over.
const CHAT_LOCK_STRIPES: usize = 64;

/// How long `open` keeps retrying when sled's own lock on its files is still held although this
/// adapter's lock was free: that happens for a moment after the previous handle of this very
/// process was dropped, while sled's background threads finish closing its files.
const SLED_LOCK_RETRIES: u32 = 100;
const SLED_LOCK_RETRY_DELAY: Duration = Duration::from_millis(20);

/// An open sled store: one directory holding both taskctx ports.
///
/// Open it once per process with [`SledStore::open`] and hand out its ports with
/// [`history`](Self::history) and [`records`](Self::records); they are cheap handles to the same
/// database. The store stays open (and its directory locked) until the last of `SledStore`,
/// [`SledHistoryStore`] and [`SledRecordStore`] handles is dropped. A second `open` of the same
/// directory — in this process or another — fails with [`StoreError::Locked`] meanwhile.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

/// What both ports share. Field order matters: fields drop in declaration order, so sled closes
/// before the lock file is released.
pub(crate) struct Inner {
    pub(crate) db: sled::Db,
    pub(crate) history: sled::Tree,
    pub(crate) chats: sled::Tree,
    pub(crate) records: sled::Tree,
    pub(crate) children: sled::Tree,
    /// Readers and appenders of a chat hold one stripe shared, `replace` and `delete` hold it
    /// exclusively: sled iterators lock per step, not per scan, so without this a `load` racing a
    /// `replace` could see part of the old and part of the new history, and an append could add a
    /// chunk between a `replace` listing the chat's chunks and removing them.
    chat_locks: Box<[RwLock<()>]>,
    /// Record writes hold this shared; `delete_subtree` and `clear`, which read the children
    /// index and then delete what they found, hold it exclusively so nothing moves in between.
    record_structure: RwLock<()>,
    pub(crate) flush: GroupCommit,
    path: PathBuf,
    _lock: File,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`.
    ///
    /// First takes the exclusive lock file `path/taskctx.lock`; if another handle in this
    /// process or another process holds it, fails with [`StoreError::Locked`] naming the holder's
    /// process id. Then opens sled (which recovers from an earlier crash if needed), its four
    /// trees, and checks the format marker.
    ///
    /// This blocks (file I/O, crash recovery): from async code, call it inside
    /// `tokio::task::spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|e| {
            StoreError::io(
                format!("creating the store directory {}", path.display()),
                e,
            )
        })?;
        let lock = take_lock(&path)?;
        let db = open_sled(&path)?;
        let open_tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| from_sled(&format!("opening the `{name}` tree"), e))
        };
        let history = open_tree(HISTORY_TREE)?;
        let chats = open_tree(CHATS_TREE)?;
        let records = open_tree(RECORDS_TREE)?;
        let children = open_tree(CHILDREN_TREE)?;
        check_format(&db)?;
        tracing::debug!(
            path = %path.display(),
            recovered = db.was_recovered(),
            "opened sled store"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                history,
                chats,
                records,
                children,
                chat_locks: (0..CHAT_LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
                record_structure: RwLock::new(()),
                flush: GroupCommit::default(),
                path,
                _lock: lock,
            }),
        })
    }

    /// [`open`](Self::open) on tokio's blocking pool, for async callers (or right here when no
    /// tokio runtime is running).
    pub async fn open_async(path: impl Into<PathBuf>) -> StoreResult<Self> {
        let path = path.into();
        let job = move || Self::open(path);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn_blocking(job).await.unwrap_or_else(|e| {
                Err(StoreError::Backend {
                    detail: format!("opening the sled store did not finish: {e}"),
                    retryable: false,
                })
            }),
            Err(_) => job(),
        }
    }

    /// The history port of this store.
    pub fn history(&self) -> SledHistoryStore {
        SledHistoryStore::new(Arc::clone(&self.inner))
    }

    /// The record port of this store.
    pub fn records(&self) -> SledRecordStore {
        SledRecordStore::new(Arc::clone(&self.inner))
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many durable writes were acknowledged and how many flushes they needed (group commit
    /// makes the second smaller than the first under concurrency).
    pub fn flush_stats(&self) -> FlushStats {
        self.inner.flush.stats()
    }
}

impl Inner {
    fn chat_lock(&self, chat: &str) -> &RwLock<()> {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(chat);
        &self.chat_locks[(hash as usize) % self.chat_locks.len()]
    }

    /// Held while reading or appending to a chat's history.
    pub(crate) fn read_chat(&self, chat: &str) -> RwLockReadGuard<'_, ()> {
        // The lock guards no data (sled holds it), so a poisoned lock is still a good lock.
        self.chat_lock(chat)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Held while replacing or deleting a chat's history.
    pub(crate) fn rewrite_chat(&self, chat: &str) -> RwLockWriteGuard<'_, ()> {
        self.chat_lock(chat)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Held by every record write that does not scan the children index.
    pub(crate) fn write_records(&self) -> RwLockReadGuard<'_, ()> {
        self.record_structure
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Held by record writes that scan the children index and act on what they found.
    pub(crate) fn restructure_records(&self) -> RwLockWriteGuard<'_, ()> {
        self.record_structure
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes every write completed so far durable (group commit; see `flush.rs`).
    pub(crate) fn make_durable(&self) -> StoreResult<()> {
        self.flush.sync(|| self.db.flush())
    }

    /// The size of the store's files, for `stats`.
    pub(crate) fn bytes_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }
}

/// Runs `job` (blocking sled calls) on tokio's blocking pool, or right here when no tokio
/// runtime is running (a caller on another executor still gets an answer rather than a panic).
pub(crate) async fn blocking<T, F>(
    inner: &Arc<Inner>,
    action: &'static str,
    job: F,
) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
{
    let inner = Arc::clone(inner);
    let job = move || job(&inner);
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.spawn_blocking(job).await.unwrap_or_else(|e| {
            Err(StoreError::Backend {
                detail: format!("the blocking task {action} did not finish: {e}"),
                retryable: false,
            })
        }),
        Err(_) => job(),
    }
}

/// Runs `job` (a point read: sled serves it from its page cache, or with a few reads of its
/// file) on this thread. On a multi-thread runtime it runs inside `block_in_place`, which moves
/// this worker's other tasks to another thread first, so a slow disk read still never stalls
/// them; on a current-thread runtime, where that is not possible, it goes to the blocking pool
/// like any other call.
pub(crate) async fn read<T, F>(inner: &Arc<Inner>, action: &'static str, job: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| job(inner))
        }
        Ok(_) => blocking(inner, action, job).await,
        Err(_) => job(inner),
    }
}

/// Takes the exclusive lock file of the store in `dir`, writing this process's id into it so a
/// second opener can say who holds the store.
fn take_lock(dir: &Path) -> StoreResult<File> {
    let path = dir.join(LOCK_FILE_NAME);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io(format!("opening the lock file {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = match holder.parse::<u32>() {
                Ok(pid) if pid == std::process::id() => "another handle in this process".to_owned(),
                Ok(pid) => format!("process {pid}"),
                Err(_) => "another process".to_owned(),
            };
            return Err(StoreError::Locked {
                path: dir.display().to_string(),
                detail: format!("{} is held by {who}", path.display()),
            });
        }
        Err(TryLockError::Error(e)) => {
            return Err(StoreError::io(format!("locking {}", path.display()), e));
        }
    }
    // Informational only: the lock is the flock, not the content.
    let note = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| write!(file, "{}", std::process::id()));
    if let Err(error) = note {
        tracing::debug!(%error, "could not write the process id into the lock file");
    }
    Ok(file)
}

/// Opens sled in `dir`, which this process has just locked.
fn open_sled(dir: &Path) -> StoreResult<sled::Db> {
    let mut attempts = 0;
    loop {
        let config = sled::Config::new().path(dir);
        // sled panics on some kinds of damage instead of returning an error; turn that into an
        // error so a caller (the CLI) can report it rather than crash.
        let opened = catch_unwind(AssertUnwindSafe(|| config.open())).map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            StoreError::Backend {
                detail: format!("sled panicked while opening {}: {message}", dir.display()),
                retryable: false,
            }
        })?;
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                // Our lock was free, so no other taskctx handle has the store open: sled's lock is
                // either a handle of ours still closing, or a program using sled directly.
                attempts += 1;
                if attempts >= SLED_LOCK_RETRIES {
                    return Err(StoreError::Locked {
                        path: dir.display().to_string(),
                        detail: format!("sled's own lock is held: {e}"),
                    });
                }
                thread::sleep(SLED_LOCK_RETRY_DELAY);
            }
            Err(e) => {
                return Err(from_sled(
                    &format!("opening the sled database in {}", dir.display()),
                    e,
                ));
            }
        }
    }
}

/// Writes the format marker into a new store, or checks the one an existing store carries.
fn check_format(db: &sled::Db) -> StoreResult<()> {
    let action = "reading the format marker";
    match db.get(FORMAT_KEY).map_err(|e| from_sled(action, e))? {
        Some(found) if found.as_ref() == FORMAT_VERSION => Ok(()),
        // Not `Corrupt`: the data may be fine, only newer than this code.
        Some(found) => Err(StoreError::Backend {
            detail: format!(
                "the store has format {:?} but this version of taskctx reads format {:?} \
                 (key {:?} of sled's default tree)",
                String::from_utf8_lossy(&found),
                String::from_utf8_lossy(FORMAT_VERSION),
                String::from_utf8_lossy(FORMAT_KEY),
            ),
            retryable: false,
        }),
        None => {
            db.insert(FORMAT_KEY, FORMAT_VERSION)
                .map_err(|e| from_sled("writing the format marker", e))?;
            db.flush()
                .map_err(|e| from_sled("writing the format marker", e))?;
            Ok(())
        }
    }
}

//! `FsStore`: opening a store directory (lock, format marker, layout) and handing out its two
//! ports, which share the directory and the lock.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use taskctx_domain::{ChatId, TaskId};
use taskctx_store::{StoreError, StoreResult};

use crate::fsutil::{self, blocking, io_error};
use crate::history::{FsHistoryStore, HistoryArea};
use crate::lock::DirLock;
use crate::records::{FsRecordStore, RecordArea};

/// The directory of history files inside the root.
pub const HISTORY_DIR: &str = "history";
/// The directory of record files inside the root.
pub const RECORDS_DIR: &str = "records";
/// The format marker file inside the root.
pub const FORMAT_FILE: &str = "taskctx-fs.json";

const FORMAT_NAME: &str = "taskctx-fs";
const FORMAT_VERSION: u32 = 1;

/// What `taskctx-fs.json` says: which layout the directory holds, so that a future layout change
/// is detected instead of misread.
#[derive(Debug, Serialize, Deserialize)]
struct FormatMarker {
    format: String,
    version: u32,
}

/// A store directory, opened and locked: the plain-files adapter of both storage ports.
///
/// [`history`](Self::history) and [`records`](Self::records) hand out the two ports; they and
/// every clone share the directory and its exclusive lock, which is released when the last of
/// them is dropped. A second `open` of the same directory, from this process or another, fails
/// with [`StoreError::Locked`] until then.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// # rt.block_on(async {
/// use taskctx_domain::{ChatId, ContextUpdate, UpdateType, Value};
/// use taskctx_store::HistoryStore;
/// use taskctx_store_fs::FsStore;
///
/// let dir = tempfile::tempdir()?;
/// let store = FsStore::open(dir.path()).await?;
/// let history = store.history();
/// let chat = ChatId::new("demo")?;
/// let seqs = history.append(&chat, &[ContextUpdate::new(UpdateType::MESSAGE, Value::from("hi"))]).await?;
/// assert_eq!(seqs, 0..1);
/// assert!(history.path_of(&chat).ends_with("history/demo.jsonl"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
#[derive(Clone)]
pub struct FsStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStore")
            .field("root", &self.shared.root)
            .finish()
    }
}

/// Everything the handles of one opened store share.
pub(crate) struct Shared {
    pub(crate) root: PathBuf,
    pub(crate) history: HistoryArea,
    pub(crate) records: RecordArea,
    /// Declared last so it is released last, after every other field is gone.
    _lock: DirLock,
}

impl FsStore {
    /// Opens (creating if needed) the store in the directory `root`, on tokio's blocking pool.
    ///
    /// Takes the directory's lock, checks or writes the format marker, creates the `history`
    /// and `records` directories and removes temp files a crash left. Task records are read
    /// later, on their first use.
    pub async fn open(root: impl AsRef<Path>) -> StoreResult<Self> {
        let root = root.as_ref().to_path_buf();
        blocking(move || Self::open_blocking(root)).await
    }

    /// [`open`](Self::open) for code that is not running on a tokio runtime.
    pub fn open_blocking(root: impl AsRef<Path>) -> StoreResult<Self> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root)
            .map_err(|e| io_error("creating the store directory", &root, e))?;
        let lock = DirLock::acquire(&root)?;
        let mut created = check_format(&root)?;
        for dir in [HISTORY_DIR, RECORDS_DIR] {
            let path = root.join(dir);
            match fs::create_dir(&path) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("creating the store layout", &path, e)),
            }
        }
        if created {
            fsutil::sync_dir(&root).map_err(|e| io_error("creating the store layout", &root, e))?;
        }
        remove_root_temps(&root);
        let history = HistoryArea::new(root.join(HISTORY_DIR));
        history.remove_temps()?;
        let records = RecordArea::new(root.clone(), root.join(RECORDS_DIR));
        tracing::debug!(root = %root.display(), "opened file store");
        Ok(Self {
            shared: Arc::new(Shared {
                root,
                history,
                records,
                _lock: lock,
            }),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// The history port.
    pub fn history(&self) -> FsHistoryStore {
        FsHistoryStore::new(Arc::clone(&self.shared))
    }

    /// The record port.
    pub fn records(&self) -> FsRecordStore {
        FsRecordStore::new(Arc::clone(&self.shared))
    }

    /// The file that holds (or would hold) `chat`'s history.
    pub fn history_path(&self, chat: &ChatId) -> PathBuf {
        self.history().path_of(chat)
    }

    /// The file that holds (or would hold) the record `id`.
    pub fn record_path(&self, id: &TaskId) -> PathBuf {
        self.records().path_of(id)
    }
}

/// Reads the format marker, or writes it into a directory that has none; returns whether it was
/// written (so the directory needs a sync).
fn check_format(root: &Path) -> StoreResult<bool> {
    let path = root.join(FORMAT_FILE);
    let bytes = fsutil::read_if_exists(&path)
        .map_err(|e| io_error("reading the store's format marker", &path, e))?;
    match bytes {
        Some(bytes) => {
            let marker: FormatMarker = serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::corrupt(
                    format!("{}:{}", path.display(), e.line().max(1)),
                    format!("not a format marker: {}", fsutil::describe_json_error(&e)),
                )
            })?;
            if marker.format != FORMAT_NAME {
                return Err(StoreError::corrupt(
                    path.display().to_string(),
                    format!(
                        "the directory holds a `{}` store, not `{FORMAT_NAME}`",
                        marker.format
                    ),
                ));
            }
            if marker.version != FORMAT_VERSION {
                return Err(StoreError::Backend {
                    detail: format!(
                        "{} says the store has format version {}; this build reads version \
                         {FORMAT_VERSION}",
                        path.display(),
                        marker.version
                    ),
                    retryable: false,
                });
            }
            Ok(false)
        }
        None => {
            let marker = FormatMarker {
                format: FORMAT_NAME.to_owned(),
                version: FORMAT_VERSION,
            };
            let mut bytes = serde_json::to_vec(&marker).map_err(|e| StoreError::Backend {
                detail: format!("cannot render the format marker: {e}"),
                retryable: false,
            })?;
            bytes.push(b'\n');
            fsutil::replace_file(&path, &bytes)
                .map_err(|e| io_error("writing the store's format marker", &path, e))?;
            Ok(true)
        }
    }
}

/// Removes temp files a crash left in the root (from writing the format marker).
fn remove_root_temps(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let temps: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| fsutil::is_temp_name(&e.file_name()))
        .map(|e| e.path())
        .collect();
    fsutil::remove_temps(&temps);
}

//! File-system primitives with the durability rules of this crate: fsync'd files, fsync'd
//! directories, temp-file-and-rename replacement, and directory trees for long names.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use taskctx_store::StoreError;

/// Every temp file this crate creates starts with this; such files are never valid encoded names
/// (those never start with a dot), so a leftover is recognised and removed.
pub(crate) const TEMP_PREFIX: &str = ".taskctx-tmp-";

/// A fresh temp path in `dir`, unique within this process (and across processes by the pid).
pub(crate) fn temp_path(dir: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
}

/// Whether a directory entry is a temp file left by this crate.
pub(crate) fn is_temp_name(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX))
}

/// Makes the directory entries of `dir` durable (creations, renames, removals in it). A no-op
/// where directories cannot be opened as files (Windows); the crate documents that limit.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A durable temp file waiting to be renamed into place; removed if dropped before that.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// Writes `bytes` to a new temp file in `dir` and makes its content durable.
    pub(crate) fn write(dir: &Path, bytes: &[u8]) -> io::Result<Self> {
        Self::write_with(dir, bytes, true)
    }

    fn write_with(dir: &Path, bytes: &[u8], sync: bool) -> io::Result<Self> {
        let path = temp_path(dir);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let temp = Self { path: Some(path) };
        file.write_all(bytes)?;
        if sync {
            file.sync_data()?;
        }
        Ok(temp)
    }

    /// Renames the file over `target` (atomically replacing it). The rename becomes durable with
    /// a later [`sync_dir`] of the parent, which the caller does, so a batch can share one.
    pub(crate) fn persist(mut self, target: &Path) -> io::Result<()> {
        let Some(path) = self.path.take() else {
            return Err(io::Error::other("temp file already persisted"));
        };
        match fs::rename(&path, target) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Replaces `target` with `bytes` atomically: temp file in the same directory, fsync, rename. On
/// error `target` is untouched and no temp file is left. The caller syncs the parent directory.
pub(crate) fn replace_file(target: &Path, bytes: &[u8]) -> io::Result<()> {
    TempFile::write(parent_dir(target), bytes)?.persist(target)
}

/// [`replace_file`] without making the content durable: for writes covered by a durable log that
/// replays them after a crash, which [`sync_file`] each file before the log is dropped. Syncing
/// many files after all are written costs far less than syncing each before the next.
pub(crate) fn replace_file_unsynced(target: &Path, bytes: &[u8]) -> io::Result<()> {
    TempFile::write_with(parent_dir(target), bytes, false)?.persist(target)
}

/// Makes a file's content durable.
pub(crate) fn sync_file(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_data()
}

/// Files a batch syncs on each thread, at least: below this, a thread costs more than it saves.
const FILES_PER_SYNC_THREAD: usize = 16;

/// Threads that sync one batch's files at most.
const SYNC_THREADS: usize = 8;

/// Makes the content of every file in `files` durable, several at a time: a journaling file
/// system (ext4, xfs) folds fsyncs that wait together into one journal commit, so a batch of
/// files costs a fraction of syncing each in turn. On error, one failing file and its error.
pub(crate) fn sync_files(files: &[PathBuf]) -> Result<(), (PathBuf, io::Error)> {
    let sync_each = |files: &[PathBuf]| {
        files
            .iter()
            .try_for_each(|file| sync_file(file).map_err(|e| (file.clone(), e)))
    };
    let threads = (files.len() / FILES_PER_SYNC_THREAD).clamp(1, SYNC_THREADS);
    if threads == 1 {
        return sync_each(files);
    }
    let per_thread = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || sync_each(chunk)))
            .collect();
        let mut outcome = Ok(());
        for (worker, chunk) in workers.into_iter().zip(files.chunks(per_thread)) {
            let result = worker.join().unwrap_or_else(|_| {
                let file = chunk.first().cloned().unwrap_or_default();
                Err((
                    file,
                    io::Error::other("the thread syncing this file panicked"),
                ))
            });
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    })
}

/// The directory `path` is in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates the directories `dirs` (relative, outermost first) under `base` where missing, making
/// each new entry durable in its parent.
pub(crate) fn ensure_dirs(base: &Path, dirs: &[String]) -> io::Result<()> {
    let mut current = base.to_path_buf();
    for dir in dirs {
        let parent = current.clone();
        current.push(dir);
        match fs::create_dir(&current) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the now-empty continuation directories `dirs` under `base`, innermost first, stopping
/// at the first one that is not empty. Best effort: a leftover empty directory is harmless.
pub(crate) fn prune_dirs(base: &Path, dirs: &[String]) {
    let mut paths: Vec<PathBuf> = Vec::with_capacity(dirs.len());
    let mut current = base.to_path_buf();
    for dir in dirs {
        current.push(dir);
        paths.push(current.clone());
    }
    for path in paths.iter().rev() {
        if fs::remove_dir(path).is_err() {
            return;
        }
        if let Some(parent) = path.parent() {
            let _ = sync_dir(parent);
        }
    }
}

/// Continuation directories nest at most this deep; the longest id needs four components.
const MAX_DEPTH: usize = 16;

/// A stored item found by [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The decoded id, exactly as stored.
    pub(crate) id: String,
    /// The item's file.
    pub(crate) path: PathBuf,
    /// The file's length.
    pub(crate) len: u64,
}

/// Every file under `base` whose path is the exact encoding of an id (see [`crate::names`]),
/// plus the temp files found on the way. Anything else (foreign files, symbolic links,
/// non-canonical names) is ignored. A missing `base` holds nothing.
pub(crate) fn walk(base: &Path, ext: &str) -> io::Result<(Vec<Found>, Vec<PathBuf>)> {
    let mut found = Vec::new();
    let mut temps = Vec::new();
    let mut chunks = Vec::new();
    match visit(base, ext, &mut chunks, &mut found, &mut temps) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((Vec::new(), Vec::new())),
        other => other.map(|()| (found, temps)),
    }
}

fn visit(
    dir: &Path,
    ext: &str,
    chunks: &mut Vec<String>,
    found: &mut Vec<Found>,
    temps: &mut Vec<PathBuf>,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let file_type = entry.file_type()?;
        if file_type.is_file() && is_temp_name(&name) {
            temps.push(entry.path());
            continue;
        }
        let Some(name) = name.to_str() else {
            continue;
        };
        if file_type.is_file() {
            let dirs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            if let Some(id) = crate::names::decode(&dirs, name, ext) {
                found.push(Found {
                    id,
                    path: entry.path(),
                    len: entry.metadata()?.len(),
                });
            }
        } else if file_type.is_dir()
            && chunks.len() < MAX_DEPTH
            && crate::names::continuation_chunk(name).is_some()
        {
            chunks.push(name.to_owned());
            let result = visit(&entry.path(), ext, chunks, found, temps);
            chunks.pop();
            result?;
        }
    }
    Ok(())
}

/// Removes leftover temp files (from a crash between writing and renaming). Best effort: a temp
/// file that stays is ignored by every reader anyway.
pub(crate) fn remove_temps(temps: &[PathBuf]) {
    for temp in temps {
        match fs::remove_file(temp) {
            Ok(()) => tracing::debug!(path = %temp.display(), "removed a leftover temp file"),
            Err(error) => {
                tracing::warn!(path = %temp.display(), %error, "cannot remove a leftover temp file");
            }
        }
    }
}

/// Reads a whole file; `Ok(None)` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An [`StoreError::Io`] whose action names what was being done and the file it was done to.
pub(crate) fn io_error(
    action: impl std::fmt::Display,
    path: &Path,
    source: io::Error,
) -> StoreError {
    StoreError::io(format!("{action} ({})", path.display()), source)
}

/// serde_json's message with the position as a column only: callers name the file and line in
/// the error's location, and a history line is one line.
pub(crate) fn describe_json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("{message} (column {})", error.column()),
        None => text,
    }
}

/// A copy of `error` for every waiter of a group commit (`StoreError` is not `Clone` because
/// `io::Error` is not).
pub(crate) fn replicate(error: &StoreError) -> StoreError {
    match error {
        StoreError::Io { action, source } => StoreError::Io {
            action: action.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        StoreError::Corrupt { location, detail } => StoreError::corrupt(location, detail),
        StoreError::InvalidInput(message) => StoreError::InvalidInput(message.clone()),
        other => StoreError::Backend {
            detail: other.to_string(),
            retryable: other.is_retryable(),
        },
    }
}

/// Runs blocking file-system work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) => Err(StoreError::Backend {
            detail: format!("a blocking file-system task failed: {error}"),
            retryable: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_file_swaps_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x");
        replace_file(&target, b"one").unwrap();
        replace_file(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x")]);
    }

    #[test]
    fn syncing_a_batch_names_the_file_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        let mut files: Vec<PathBuf> = (0..100).map(|i| dir.path().join(format!("f{i}"))).collect();
        for file in &files {
            replace_file_unsynced(file, b"content").unwrap();
        }
        sync_files(&files).unwrap();
        sync_files(&files[..3]).unwrap();
        // One file gone in the middle of a batch large enough to use several threads.
        files.insert(57, dir.path().join("missing"));
        let (file, error) = sync_files(&files).unwrap_err();
        assert_eq!(file, dir.path().join("missing"));
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn failed_replace_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"k").unwrap();
        // Renaming a file over a non-empty directory fails.
        assert!(replace_file(&target, b"x").is_err());
        assert_eq!(fs::read(target.join("keep")).unwrap(), b"k");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dirs_are_created_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec!["a~".to_owned(), "b~".to_owned()];
        ensure_dirs(dir.path(), &dirs).unwrap();
        ensure_dirs(dir.path(), &dirs).unwrap();
        assert!(dir.path().join("a~/b~").is_dir());
        prune_dirs(dir.path(), &dirs);
        assert!(!dir.path().join("a~").exists());
    }
}

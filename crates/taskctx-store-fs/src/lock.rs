//! The store's exclusive lock file: one holder per directory, across threads and processes.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use taskctx_store::{StoreError, StoreResult};

use crate::fsutil::io_error;

/// The name of the lock file in the store's root.
pub const LOCK_FILE: &str = "taskctx.lock";

/// How long an opener waits for a lock that may be on its way out before reporting `Locked`.
///
/// The lock belongs to the open file, and a process forked while the store was open shares that
/// open file until it execs, so a store closed and reopened while another thread spawns a process
/// can find its own lock still held for a moment.
const GRACE: Duration = Duration::from_millis(200);

/// An exclusive lock on a store directory, held until dropped (closing the file releases it, also
/// when the process dies, so a crash never leaves a stale lock behind).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `root`, or fails with [`StoreError::Locked`] if it is still held after a
    /// short grace period. The lock is an OS advisory lock on the open file (`flock` on Unix), so
    /// a second open in the same process conflicts too.
    pub(crate) fn acquire(root: &Path) -> StoreResult<Self> {
        let path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("opening the lock file", &path, e))?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if started.elapsed() < GRACE => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(TryLockError::WouldBlock) => return Err(locked(root, &path, &mut file)),
                Err(TryLockError::Error(e)) => return Err(io_error("locking the store", &path, e)),
            }
        }
        // Who holds the lock, for the error message of the next opener. Diagnostics only: not
        // synced, and a failure to write it does not matter.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "process {}", std::process::id()));
        Ok(Self { _file: file })
    }
}

/// The error for a lock another holder keeps, naming the holder if the lock file says who.
fn locked(root: &Path, path: &Path, file: &mut File) -> StoreError {
    let mut holder = String::new();
    let _ = file.read_to_string(&mut holder);
    let holder = holder.trim();
    let detail = if holder.is_empty() {
        format!("{} is held", path.display())
    } else {
        format!("{} is held by {holder}", path.display())
    };
    StoreError::Locked {
        path: root.display().to_string(),
        detail,
    }
}

//! `FsHistoryStore`: one append-only JSON-lines file per chat, fsync'd before `append` returns,
//! replaced by temp file and rename, with concurrent appends to one chat grouped into one fsync.

mod lines;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use taskctx_domain::{ChatId, ContextUpdate, Timestamp};
use taskctx_store::{ChatSummary, HistoryStats, HistoryStore, StoreError, StoreResult};

use crate::fsutil::{self, TempFile, blocking, io_error, replicate};
use crate::names;
use crate::store::Shared;

pub(crate) use lines::FileInfo;

/// The extension of history files.
pub(crate) const EXT: &str = "jsonl";

/// The histories of a store (see the crate docs for the layout and the promises).
///
/// Obtained from [`FsStore::history`](crate::FsStore::history); every clone and the matching
/// [`FsRecordStore`](crate::FsRecordStore) share one opened directory and its lock, which is
/// released when the last of them is dropped.
#[derive(Clone)]
pub struct FsHistoryStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FsHistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsHistoryStore")
            .field("dir", &self.shared.history.dir)
            .finish()
    }
}

impl FsHistoryStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The file that holds (or would hold) `chat`'s history.
    pub fn path_of(&self, chat: &ChatId) -> PathBuf {
        self.shared.history.path(chat)
    }

    /// Runs `work` on the blocking pool with the chat's slot.
    async fn on_chat<T, F>(&self, chat: &ChatId, work: F) -> StoreResult<T>
    where
        F: FnOnce(&HistoryArea, &Slot, &ChatId) -> StoreResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let chat = chat.clone();
        blocking(move || {
            let area = &shared.history;
            let slot = area.slot(&chat);
            work(area, &slot, &chat)
        })
        .await
    }
}

#[async_trait]
impl HistoryStore for FsHistoryStore {
    async fn append(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<Range<u64>> {
        if updates.is_empty() {
            let entries = self
                .on_chat(chat, |area, slot, chat| {
                    Ok(match area.known(slot, chat)? {
                        Disk::Present(info) => info.entries,
                        Disk::Absent | Disk::Unknown => 0,
                    })
                })
                .await?;
            return Ok(entries..entries);
        }
        let bytes = lines::render(updates).map_err(|e| {
            StoreError::InvalidInput(format!(
                "an update for chat `{chat}` cannot be written as JSON: {e}"
            ))
        })?;
        let batch = Batch {
            ticket: 0,
            bytes,
            count: updates.len() as u64,
            last_timestamp: updates.last().map(|u| u.timestamp),
        };
        self.on_chat(chat, move |area, slot, chat| area.append(slot, chat, batch))
            .await
    }

    async fn load(&self, chat: &ChatId) -> StoreResult<Vec<ContextUpdate>> {
        self.load_since(chat, 0).await
    }

    async fn load_since(&self, chat: &ChatId, from: u64) -> StoreResult<Vec<ContextUpdate>> {
        self.on_chat(chat, move |area, slot, chat| area.read(slot, chat, from))
            .await
    }

    async fn replace(&self, chat: &ChatId, updates: &[ContextUpdate]) -> StoreResult<()> {
        let bytes = lines::render(updates).map_err(|e| {
            StoreError::InvalidInput(format!(
                "an update for chat `{chat}` cannot be written as JSON: {e}"
            ))
        })?;
        let info = FileInfo::fresh(
            bytes.len(),
            updates.len() as u64,
            updates.last().map(|u| u.timestamp),
        );
        self.on_chat(chat, move |area, slot, chat| {
            area.replace(slot, chat, &bytes, info)
        })
        .await
    }

    async fn list(&self) -> StoreResult<Vec<ChatSummary>> {
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            let mut chats: Vec<ChatSummary> = shared
                .history
                .survey()?
                .into_iter()
                .map(|(chat_id, info)| ChatSummary {
                    chat_id,
                    entries: info.entries,
                    last_timestamp: info.last_timestamp,
                })
                .collect();
            chats.sort_by(|a, b| a.chat_id.as_str().cmp(b.chat_id.as_str()));
            Ok(chats)
        })
        .await
    }

    async fn delete(&self, chat: &ChatId) -> StoreResult<bool> {
        self.on_chat(chat, |area, slot, chat| area.delete(slot, chat))
            .await
    }

    async fn stats(&self) -> StoreResult<HistoryStats> {
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            let chats = shared.history.survey()?;
            Ok(HistoryStats {
                chats: chats.len() as u64,
                updates: chats.iter().map(|(_, info)| info.entries).sum(),
                bytes_on_disk: Some(chats.iter().map(|(_, info)| info.disk_len).sum()),
            })
        })
        .await
    }
}

/// What the store knows about a chat's file.
#[derive(Debug, Clone, Copy, Default)]
enum Disk {
    /// Not looked at since the store was opened (or an I/O failure left it uncertain).
    #[default]
    Unknown,
    /// There is no file: the chat does not exist.
    Absent,
    /// The file and what a scan (or our own writes since) found in it.
    Present(FileInfo),
}

/// One chat's in-memory state. Its mutex is held only for moments, never during file I/O except
/// for the `open`, `rename` and `unlink` that must be atomic with the state they go with; file I/O
/// is serialised by the `busy` turn instead, so readers are not blocked by an fsync.
#[derive(Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    turn: Condvar,
}

#[derive(Default)]
struct SlotState {
    disk: Disk,
    /// Someone holds the chat's I/O turn (a group-commit leader, a replace, a delete or a scan).
    busy: bool,
    /// Appends waiting for the next group commit.
    queue: Vec<Batch>,
    next_ticket: u64,
    /// Results of group commits, collected by their waiters.
    finished: HashMap<u64, StoreResult<Range<u64>>>,
}

/// One `append` call's rendered lines.
struct Batch {
    ticket: u64,
    bytes: Vec<u8>,
    count: u64,
    last_timestamp: Option<Timestamp>,
}

/// The chat's I/O turn; released (and waiters woken) when dropped, on every path.
struct Turn<'a> {
    slot: &'a Slot,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(&self.slot.state).busy = false;
        self.slot.turn.notify_all();
    }
}

impl Slot {
    fn wait<'a>(&self, guard: MutexGuard<'a, SlotState>) -> MutexGuard<'a, SlotState> {
        self.turn
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no one else does I/O on the chat and takes the turn.
    fn take_turn(&self) -> Turn<'_> {
        let mut state = lock(&self.state);
        while state.busy {
            state = self.wait(state);
        }
        state.busy = true;
        Turn { slot: self }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The history half of an opened store: its directory and the per-chat slots.
pub(crate) struct HistoryArea {
    dir: PathBuf,
    /// One slot per chat touched since the store was opened. Slots are never removed (a deleted
    /// chat's slot says `Absent`), so no append can be lost on a slot that was swapped out.
    slots: Mutex<HashMap<ChatId, Arc<Slot>>>,
    /// Held while continuation directories (long ids) are created, filled or pruned, so pruning
    /// an empty directory cannot race another chat creating its file there.
    tree: Mutex<()>,
}

/// A failed write, and what the chat's state is after it.
struct Failure {
    disk: Disk,
    error: StoreError,
}

impl HistoryArea {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            slots: Mutex::default(),
            tree: Mutex::new(()),
        }
    }

    /// Removes temp files left by a crash; called at open, while the store's lock is held.
    pub(crate) fn remove_temps(&self) -> StoreResult<()> {
        let (_, temps) = fsutil::walk(&self.dir, EXT)
            .map_err(|e| io_error("looking for leftover temp files", &self.dir, e))?;
        fsutil::remove_temps(&temps);
        Ok(())
    }

    fn slot(&self, chat: &ChatId) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        Arc::clone(slots.entry(chat.clone()).or_default())
    }

    fn path(&self, chat: &ChatId) -> PathBuf {
        self.dir.join(names::relative_path(chat.as_str(), EXT))
    }

    fn corrupt(path: &Path, line: u64, detail: String) -> StoreError {
        StoreError::corrupt(format!("{}:{line}", path.display()), detail)
    }

    /// Reads and scans the chat's file. The caller holds the chat's turn.
    fn scan(&self, chat: &ChatId) -> StoreResult<Disk> {
        let path = self.path(chat);
        let bytes = fsutil::read_if_exists(&path).map_err(|e| {
            io_error(
                format_args!("reading the history of chat `{chat}`"),
                &path,
                e,
            )
        })?;
        match bytes {
            None => Ok(Disk::Absent),
            Some(bytes) => lines::scan(&bytes)
                .map(Disk::Present)
                .map_err(|e| Self::corrupt(&path, e.line, e.detail)),
        }
    }

    /// The chat's state, scanning its file (under the turn) if it was never looked at.
    fn known(&self, slot: &Slot, chat: &ChatId) -> StoreResult<Disk> {
        let disk = lock(&slot.state).disk;
        if !matches!(disk, Disk::Unknown) {
            return Ok(disk);
        }
        let _turn = slot.take_turn();
        let disk = lock(&slot.state).disk;
        if !matches!(disk, Disk::Unknown) {
            return Ok(disk);
        }
        let disk = self.scan(chat)?;
        lock(&slot.state).disk = disk;
        Ok(disk)
    }

    /// Appends `batch`, grouping it with whatever other appends to the chat are waiting: the first
    /// waiter to find the chat idle writes the whole group with one `write` and one fsync, and
    /// hands every waiter its own range (or a copy of the error).
    fn append(&self, slot: &Slot, chat: &ChatId, mut batch: Batch) -> StoreResult<Range<u64>> {
        let mut state = lock(&slot.state);
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        batch.ticket = ticket;
        state.queue.push(batch);
        loop {
            if let Some(result) = state.finished.remove(&ticket) {
                return result;
            }
            if state.busy {
                state = slot.wait(state);
                continue;
            }
            if !state.queue.iter().any(|b| b.ticket == ticket) {
                // Only a leader that died half-way (a panic on the blocking pool) can lose a
                // batch; fail this call rather than wait for an answer that will never come.
                return Err(StoreError::Backend {
                    detail: format!("an append to chat `{chat}` was lost by a failed writer"),
                    retryable: true,
                });
            }
            state.busy = true;
            let group = std::mem::take(&mut state.queue);
            let disk = state.disk;
            drop(state);
            let turn = Turn { slot };
            let outcome = self.commit(chat, disk, &group);
            let mut guard = lock(&slot.state);
            match outcome {
                Ok((info, ranges)) => {
                    guard.disk = Disk::Present(info);
                    for (batch, range) in group.iter().zip(ranges) {
                        guard.finished.insert(batch.ticket, Ok(range));
                    }
                }
                Err(failure) => {
                    guard.disk = failure.disk;
                    for batch in &group {
                        guard
                            .finished
                            .insert(batch.ticket, Err(replicate(&failure.error)));
                    }
                }
            }
            drop(guard);
            drop(turn);
            state = lock(&slot.state);
        }
    }

    /// Writes a group of batches. The caller holds the turn.
    fn commit(
        &self,
        chat: &ChatId,
        disk: Disk,
        group: &[Batch],
    ) -> Result<(FileInfo, Vec<Range<u64>>), Failure> {
        let disk = match disk {
            Disk::Unknown => self.scan(chat).map_err(|error| Failure {
                disk: Disk::Unknown,
                error,
            })?,
            known => known,
        };
        let before = match disk {
            Disk::Present(info) => info.entries,
            Disk::Absent | Disk::Unknown => 0,
        };
        let mut ranges = Vec::with_capacity(group.len());
        let mut next = before;
        for batch in group {
            ranges.push(next..next + batch.count);
            next += batch.count;
        }
        let last_timestamp = group.iter().rev().find_map(|b| b.last_timestamp);
        let info = match disk {
            Disk::Present(info) => self.extend(chat, info, group, next - before, last_timestamp)?,
            Disk::Absent | Disk::Unknown => {
                let bytes = concat(None, group);
                let info = FileInfo::fresh(bytes.len(), next, last_timestamp);
                self.create(chat, &bytes, info)?;
                info
            }
        };
        Ok((info, ranges))
    }

    /// Writes a new chat's first lines as a whole file (temp file and rename), so a crash never
    /// leaves a half-created chat behind.
    fn create(&self, chat: &ChatId, bytes: &[u8], info: FileInfo) -> Result<(), Failure> {
        let components = names::components(chat.as_str(), EXT);
        let dirs = names::dirs(&components);
        let _tree = (!dirs.is_empty()).then(|| lock(&self.tree));
        let path = self.path(chat);
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        let action = &format!("creating the history of chat `{chat}`");
        let unchanged = |error| Failure {
            disk: Disk::Absent,
            error,
        };
        fsutil::ensure_dirs(&self.dir, dirs)
            .and_then(|()| TempFile::write(&parent, bytes))
            .and_then(|temp| temp.persist(&path))
            .map_err(|e| unchanged(io_error(action, &path, e)))?;
        fsutil::sync_dir(&parent).map_err(|e| Failure {
            disk: Disk::Present(info),
            error: io_error(action, &parent, e),
        })
    }

    /// Appends a group to an existing file: cuts a torn tail first, writes every line at the end
    /// of the valid data in one `write`, fsyncs. On failure the file is cut back to where it was.
    fn extend(
        &self,
        chat: &ChatId,
        mut info: FileInfo,
        group: &[Batch],
        added: u64,
        last_timestamp: Option<Timestamp>,
    ) -> Result<FileInfo, Failure> {
        let path = self.path(chat);
        let action = &format!("appending to the history of chat `{chat}`");
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Failure {
                // The file was there when it was scanned: something outside the store moved it.
                disk: Disk::Unknown,
                error: io_error(action, &path, e),
            })?;
        if info.disk_len > info.valid_len {
            file.set_len(info.valid_len)
                .and_then(|()| file.sync_data())
                .map_err(|e| Failure {
                    disk: Disk::Unknown,
                    error: io_error(
                        format_args!("cutting the torn last line of chat `{chat}`"),
                        &path,
                        e,
                    ),
                })?;
            tracing::warn!(
                chat = %chat,
                path = %path.display(),
                bytes = info.disk_len - info.valid_len,
                "cut a torn last line (an append interrupted by a crash) before appending"
            );
            info.disk_len = info.valid_len;
        }
        let prefix: &[u8] = if info.missing_newline { b"\n" } else { b"" };
        let joined;
        let bytes: &[u8] = match group {
            [single] if prefix.is_empty() => &single.bytes,
            _ => {
                joined = concat(Some(prefix), group);
                &joined
            }
        };
        let written = file
            .seek(SeekFrom::Start(info.valid_len))
            .and_then(|_| file.write_all(bytes))
            .and_then(|()| file.sync_data());
        if let Err(error) = written {
            let error = io_error(action, &path, error);
            let restored = file.set_len(info.valid_len).and_then(|()| file.sync_data());
            return Err(Failure {
                disk: if restored.is_ok() {
                    Disk::Present(info)
                } else {
                    Disk::Unknown
                },
                error,
            });
        }
        Ok(FileInfo {
            entries: info.entries + added,
            valid_len: info.valid_len + bytes.len() as u64,
            disk_len: info.valid_len + bytes.len() as u64,
            missing_newline: false,
            last_timestamp: last_timestamp.or(info.last_timestamp),
        })
    }

    /// Replaces the chat's file with `bytes` (temp file, fsync, rename, fsync the directory).
    /// The rename happens under the slot's mutex, where readers open the file, so a reader gets
    /// the old file with the old length or the new file with the new length.
    fn replace(&self, slot: &Slot, chat: &ChatId, bytes: &[u8], info: FileInfo) -> StoreResult<()> {
        let _turn = slot.take_turn();
        let components = names::components(chat.as_str(), EXT);
        let dirs = names::dirs(&components);
        let _tree = (!dirs.is_empty()).then(|| lock(&self.tree));
        let path = self.path(chat);
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        let action = &format!("replacing the history of chat `{chat}`");
        let temp = fsutil::ensure_dirs(&self.dir, dirs)
            .and_then(|()| TempFile::write(&parent, bytes))
            .map_err(|e| io_error(action, &path, e))?;
        {
            let mut state = lock(&slot.state);
            temp.persist(&path)
                .map_err(|e| io_error(action, &path, e))?;
            state.disk = Disk::Present(info);
        }
        fsutil::sync_dir(&parent).map_err(|e| io_error(action, &parent, e))
    }

    /// Deletes the chat's file; an explicit delete removes it even if it is corrupt.
    fn delete(&self, slot: &Slot, chat: &ChatId) -> StoreResult<bool> {
        let _turn = slot.take_turn();
        let components = names::components(chat.as_str(), EXT);
        let dirs = names::dirs(&components);
        let _tree = (!dirs.is_empty()).then(|| lock(&self.tree));
        let path = self.path(chat);
        let action = &format!("deleting the history of chat `{chat}`");
        let existed = {
            let mut state = lock(&slot.state);
            let existed = match fs::remove_file(&path) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(io_error(action, &path, e)),
            };
            state.disk = Disk::Absent;
            existed
        };
        if existed {
            let parent = path.parent().unwrap_or(&self.dir);
            fsutil::sync_dir(parent).map_err(|e| io_error(action, parent, e))?;
            fsutil::prune_dirs(&self.dir, dirs);
        }
        Ok(existed)
    }

    /// Reads the chat's updates from position `from` on.
    fn read(&self, slot: &Slot, chat: &ChatId, from: u64) -> StoreResult<Vec<ContextUpdate>> {
        let path = self.path(chat);
        let action = &format!("reading the history of chat `{chat}`");
        let (file, info) = loop {
            let state = lock(&slot.state);
            match state.disk {
                Disk::Absent => return Ok(Vec::new()),
                Disk::Present(info) if from >= info.entries => return Ok(Vec::new()),
                Disk::Present(info) => {
                    // Opened under the mutex: see `replace`.
                    let file = File::open(&path).map_err(|e| io_error(action, &path, e))?;
                    break (file, info);
                }
                Disk::Unknown => {
                    drop(state);
                    self.known(slot, chat)?;
                }
            }
        };
        let mut bytes = Vec::with_capacity(usize::try_from(info.valid_len).unwrap_or(0));
        file.take(info.valid_len)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(action, &path, e))?;
        if (bytes.len() as u64) < info.valid_len {
            return Err(StoreError::corrupt(
                path.display().to_string(),
                format!(
                    "the file is {} bytes long but the store wrote {} bytes: it was cut outside \
                     the store",
                    bytes.len(),
                    info.valid_len
                ),
            ));
        }
        let start = lines::offset_of_line(&bytes, from).ok_or_else(|| {
            StoreError::corrupt(
                path.display().to_string(),
                format!("fewer than {from} lines: the file was changed outside the store"),
            )
        })?;
        let capacity = usize::try_from(info.entries - from).unwrap_or(0);
        lines::parse(&bytes[start..], from + 1, capacity)
            .map_err(|e| Self::corrupt(&path, e.line, e.detail))
    }

    /// Every chat on disk with what is known about its file, scanning files seen for the first
    /// time. Chats deleted while the survey runs are left out.
    fn survey(&self) -> StoreResult<Vec<(ChatId, FileInfo)>> {
        let (found, _) = fsutil::walk(&self.dir, EXT)
            .map_err(|e| io_error("listing the chats", &self.dir, e))?;
        let mut chats = Vec::with_capacity(found.len());
        for item in found {
            // A decoded name that is not a valid id (e.g. longer than ids may be) is not ours.
            let Ok(chat) = ChatId::new(item.id) else {
                continue;
            };
            let slot = self.slot(&chat);
            if let Disk::Present(info) = self.known(&slot, &chat)? {
                chats.push((chat, info));
            }
        }
        Ok(chats)
    }
}

/// All lines of a group in one buffer, after an optional prefix.
fn concat(prefix: Option<&[u8]>, group: &[Batch]) -> Vec<u8> {
    let prefix = prefix.unwrap_or_default();
    let len = prefix.len() + group.iter().map(|b| b.bytes.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(prefix);
    for batch in group {
        out.extend_from_slice(&batch.bytes);
    }
    out
}

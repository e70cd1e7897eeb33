//! Group commit: writers that finish at about the same time share one flush of the sled log.
//!
//! sled acknowledges a write once it is in its in-memory log buffer; only `flush` makes it
//! durable (writes the buffer and fsyncs). Every write of this adapter therefore calls
//! [`GroupCommit::sync`] after its transaction committed and before it returns `Ok`.
//!
//! Flushes are numbered. A writer needs a flush that *started after its write completed* (a flush
//! already running may have captured the log before the write reached it), so on arrival it
//! targets `started + 1`: the next flush to start. At most one flush runs at a time; whoever
//! finds none running while its target is not yet reached starts one, and everybody else waits
//! on a condition variable. All writers that arrive while flush `n` runs target `n + 1`, and one
//! flush serves them all.
//!
//! This runs on blocking threads (`spawn_blocking`): waiting here blocks a thread, never a runtime
//! worker. sled's `flush_async` is never used: it deadlocks under concurrency in 0.34.7.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use taskctx_store::{StoreError, StoreResult};

/// Counters of the group commit, to see how many writes shared each flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct FlushStats {
    /// Writes that waited for durability (each one acknowledged only after a flush).
    pub durable_writes: u64,
    /// Flushes of the sled log that ran on behalf of those writes (failed ones included).
    pub flushes: u64,
}

/// Why the last flush failed, kept so that every writer waiting on it gets the error.
#[derive(Debug, Clone)]
struct Failure {
    kind: Option<io::ErrorKind>,
    message: String,
}

impl Failure {
    fn from_sled(error: &sled::Error) -> Self {
        Self {
            kind: match error {
                sled::Error::Io(e) => Some(e.kind()),
                _ => None,
            },
            message: error.to_string(),
        }
    }

    fn to_error(&self) -> StoreError {
        const ACTION: &str = "flushing the sled log to disk";
        match self.kind {
            Some(kind) => StoreError::io(ACTION, io::Error::new(kind, self.message.clone())),
            None => StoreError::Backend {
                detail: format!("{ACTION} failed: {}", self.message),
                retryable: false,
            },
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Number of the last flush that started.
    started: u64,
    /// Number of the last flush that finished, successfully or not.
    completed: u64,
    /// Number of the last flush that succeeded.
    succeeded: u64,
    /// Whether a flush is running now.
    running: bool,
    /// Why flush `completed` failed, if it did.
    failure: Option<Failure>,
    /// Writers waiting for a flush to finish (they have chosen their target already).
    waiting: usize,
}

/// The flush coordinator of one store.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    finished: Condvar,
    writes: AtomicU64,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a handful of counters that are valid after every statement, so a panic
        // elsewhere while holding the lock cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once a flush that started after this call began has succeeded, running it with
    /// `flush` if no other writer is already doing so. Call it after the write completed.
    pub(crate) fn sync(&self, flush: impl FnOnce() -> sled::Result<usize>) -> StoreResult<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut flush = Some(flush);
        let mut state = self.lock();
        let target = state.started + 1;
        loop {
            if state.completed >= target {
                if state.succeeded >= target {
                    return Ok(());
                }
                // Every flush since our target failed (they run one at a time, so the last one
                // to finish is the one that failed most recently).
                return Err(state
                    .failure
                    .as_ref()
                    .map_or_else(|| unknown_failure().to_error(), Failure::to_error));
            }
            if !state.running {
                let Some(flush) = flush.take() else {
                    // Unreachable: once this writer ran a flush, `completed >= target` holds.
                    return Err(unknown_failure().to_error());
                };
                state.running = true;
                state.started += 1;
                let number = state.started;
                drop(state);
                let outcome = {
                    let mut guard = RunningFlush {
                        commit: self,
                        number,
                        done: false,
                    };
                    let result = flush();
                    guard.done = true;
                    result
                };
                state = self.lock();
                finish(
                    &mut state,
                    number,
                    outcome.err().as_ref().map(Failure::from_sled),
                );
                self.finished.notify_all();
                continue;
            }
            state.waiting += 1;
            state = self
                .finished
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> FlushStats {
        FlushStats {
            durable_writes: self.writes.load(Ordering::Relaxed),
            flushes: self.lock().completed,
        }
    }
}

fn unknown_failure() -> Failure {
    Failure {
        kind: None,
        message: "the flush failed for an unknown reason".to_owned(),
    }
}

/// Records that flush `number` finished, failed when `failure` is set.
fn finish(state: &mut State, number: u64, failure: Option<Failure>) {
    state.running = false;
    state.completed = number;
    match failure {
        None => state.succeeded = number,
        Some(failure) => {
            // Logged once here; every writer that waited for this flush also gets the error.
            tracing::warn!(error = %failure.message, "flushing the sled log failed");
            state.failure = Some(failure);
        }
    }
}

/// Marks a flush as failed if the thread running it unwinds (a panic inside sled), so that the
/// writers waiting for it get an error instead of waiting forever.
struct RunningFlush<'a> {
    commit: &'a GroupCommit,
    number: u64,
    done: bool,
}

impl Drop for RunningFlush<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.commit.lock();
            finish(
                &mut state,
                self.number,
                Some(Failure {
                    kind: None,
                    message: "sled panicked while flushing".to_owned(),
                }),
            );
            self.commit.finished.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    /// Waits until `n` writers are parked in `sync` (each has chosen its target flush).
    fn wait_for(commit: &GroupCommit, n: usize) {
        for _ in 0..5000 {
            if commit.lock().waiting >= n {
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
        panic!("writers never arrived");
    }

    #[test]
    fn writers_arriving_during_a_flush_share_the_next_one() {
        let commit = Arc::new(GroupCommit::default());
        let (release_first, first_may_finish) = mpsc::channel::<()>();
        let (count_tx, count_rx) = mpsc::channel::<&'static str>();

        // Writer A starts flush 1 and holds it until released.
        let a = {
            let commit = Arc::clone(&commit);
            let count_tx = count_tx.clone();
            thread::spawn(move || {
                commit.sync(|| {
                    count_tx.send("flush 1").unwrap();
                    first_may_finish.recv().unwrap();
                    Ok(0)
                })
            })
        };
        assert_eq!(count_rx.recv().unwrap(), "flush 1");

        // Writers B..E complete their writes while flush 1 runs: flush 1 does not cover them.
        let late: Vec<_> = (0..4)
            .map(|_| {
                let commit = Arc::clone(&commit);
                let count_tx = count_tx.clone();
                thread::spawn(move || {
                    commit.sync(|| {
                        count_tx.send("flush 2").unwrap();
                        Ok(0)
                    })
                })
            })
            .collect();
        wait_for(&commit, 4);
        assert!(
            count_rx.try_recv().is_err(),
            "nobody may flush while one runs"
        );

        release_first.send(()).unwrap();
        a.join().unwrap().unwrap();
        for writer in late {
            writer.join().unwrap().unwrap();
        }
        // Exactly one more flush ran, for all four late writers.
        assert_eq!(count_rx.try_iter().collect::<Vec<_>>(), vec!["flush 2"]);
        assert_eq!(
            commit.stats(),
            FlushStats {
                durable_writes: 5,
                flushes: 2
            }
        );
    }

    #[test]
    fn a_failed_flush_fails_every_writer_waiting_for_it_and_the_next_one_retries() {
        let commit = GroupCommit::default();
        let error = commit
            .sync(|| Err(sled::Error::Io(io::Error::other("disk on fire"))))
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::Io { source, .. } if source.to_string().contains("disk on fire")),
            "{error:?}"
        );
        commit.sync(|| Ok(0)).unwrap();
        assert_eq!(commit.stats().flushes, 2);
    }

    #[test]
    fn a_panicking_flush_releases_the_waiters() {
        let commit = Arc::new(GroupCommit::default());
        let panicker = {
            let commit = Arc::clone(&commit);
            thread::spawn(move || commit.sync(|| panic!("sled bug")))
        };
        assert!(panicker.join().is_err());
        // The coordinator is usable afterwards: the panicked flush counts as failed.
        commit.sync(|| Ok(0)).unwrap();
        assert_eq!(commit.stats().flushes, 2);
    }
}

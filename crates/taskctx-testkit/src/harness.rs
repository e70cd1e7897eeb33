//! `Harness`: how the suite opens (and reopens) the store under test, and what it can do.

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use taskctx_store::{HistoryStore, RecordStore, StoreResult};

/// A property a store may or may not have; checks that need one are skipped, visibly, without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Data survives dropping every handle and opening the store again.
    Persistent,
    /// `put_many` writes all or nothing, also when the process dies mid-batch.
    AtomicBatch,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Persistent => "persistent",
            Self::AtomicBatch => "atomic_batch",
        })
    }
}

/// The capabilities of a store under test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// See [`Capability::Persistent`].
    pub persistent: bool,
    /// See [`Capability::AtomicBatch`].
    pub atomic_batch: bool,
}

impl Capabilities {
    /// No optional capability.
    pub const NONE: Capabilities = Capabilities {
        persistent: false,
        atomic_batch: false,
    };

    /// Adds `capability`.
    #[must_use]
    pub const fn with(mut self, capability: Capability) -> Self {
        match capability {
            Capability::Persistent => self.persistent = true,
            Capability::AtomicBatch => self.atomic_batch = true,
        }
        self
    }

    /// Whether `capability` is present.
    pub fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::Persistent => self.persistent,
            Capability::AtomicBatch => self.atomic_batch,
        }
    }
}

/// Both ports of one store.
#[derive(Debug, Clone)]
pub struct Stores {
    /// The history port.
    pub history: Arc<dyn HistoryStore>,
    /// The record port.
    pub records: Arc<dyn RecordStore>,
}

/// Opens the store under test. One harness is made per check, so each check starts empty.
#[async_trait]
pub trait Harness: Send + Sync {
    /// What the store can do.
    fn capabilities(&self) -> Capabilities;

    /// Opens the store. Called again, after every handle of the previous call was dropped, to
    /// check what survives a reopen.
    async fn open(&self) -> StoreResult<Stores>;

    /// How many random operation sequences the property checks try (durable stores pay an fsync
    /// per write, so they may ask for fewer).
    fn property_cases(&self) -> u32 {
        64
    }
}

/// A check that did not run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

/// What a check returns: `Ok` when it ran and passed (failures panic), `Err` when skipped.
pub type CheckResult = Result<(), Skip>;

/// Skips the calling check unless the harness has `capability`.
pub fn require(harness: &dyn Harness, capability: Capability) -> CheckResult {
    if harness.capabilities().has(capability) {
        Ok(())
    } else {
        Err(Skip(format!("needs capability `{capability}`")))
    }
}

/// Runs `future` on a fresh two-thread runtime (so checks can race tasks for real) and reports
/// a skip. The skip goes straight to the process's stderr: libtest captures only `print!`-style
/// output, and a skipped check must be visible in every run, never hidden.
pub fn run_check<F: std::future::Future<Output = CheckResult>>(name: &str, future: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => panic!("cannot start a tokio runtime for {name}: {error}"),
    };
    if let Err(Skip(reason)) = runtime.block_on(future) {
        let _ = writeln!(
            std::io::stderr(),
            "conformance check {name}: SKIPPED ({reason})"
        );
    }
}

/// Opens the harness, failing the check with the store's error if it cannot.
pub async fn open(harness: &dyn Harness) -> Stores {
    match harness.open().await {
        Ok(stores) => stores,
        Err(error) => panic!("the store under test failed to open: {error}"),
    }
}

/// Awaits a store call, failing the check with the store's error if it returns one.
pub async fn must<T>(what: &str, call: impl std::future::Future<Output = StoreResult<T>>) -> T {
    match call.await {
        Ok(value) => value,
        Err(error) => panic!("{what} failed: {error}"),
    }
}

//! `open(url)`: the stores behind the ports for a store URL, and the default store.

use std::sync::Arc;

use taskctx_app::config::Config;
use taskctx_store::{HistoryStore, RecordStore, StoreError};
use taskctx_store_memory::{MemoryHistoryStore, MemoryRecordStore};

use crate::url::{StoreUrl, UrlError};

/// Both ports of one opened store.
#[derive(Debug, Clone)]
pub struct Stores {
    /// Histories of task contexts.
    pub history: Arc<dyn HistoryStore>,
    /// Task records.
    pub records: Arc<dyn RecordStore>,
    /// Where they live.
    pub url: StoreUrl,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is malformed or names an unknown scheme.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The URL names a backend this build does not include.
    #[error(
        "store URL `{url}` needs the `{feature}` feature of the taskctx crate, which this build lacks"
    )]
    NotBuilt {
        /// The URL.
        url: String,
        /// The cargo feature that adds the backend.
        feature: &'static str,
    },
    /// The backend failed to open (locked by another process, corrupt, unreadable, …).
    #[error("cannot open store `{url}`: {source}")]
    Store {
        /// The URL.
        url: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// The store URL a configuration means: `config.store` if set, else the embedded default under
/// `config.task_dir` — `sled:{task_dir}/taskctx.sled` (or `fs:{task_dir}` in a build without
/// sled, `memory:` in a build with neither).
pub fn default_store_url(config: &Config) -> String {
    if let Some(url) = &config.store {
        return url.clone();
    }
    if cfg!(feature = "sled") {
        format!("sled:{}", config.task_dir.join("taskctx.sled").display())
    } else if cfg!(feature = "fs") {
        format!("fs:{}", config.task_dir.display())
    } else {
        "memory:".to_owned()
    }
}

/// Opens the store `url` names and returns both ports.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let stores = taskctx::open("memory:").await.unwrap();
/// assert!(stores.history.list().await.unwrap().is_empty());
/// # });
/// ```
pub async fn open(url: &str) -> Result<Stores, OpenError> {
    open_url(url.parse()?).await
}

/// [`open`] for an already parsed URL.
pub async fn open_url(url: StoreUrl) -> Result<Stores, OpenError> {
    match &url {
        StoreUrl::Memory => Ok(Stores::new(
            MemoryHistoryStore::new(),
            MemoryRecordStore::new(),
            url,
        )),
        #[cfg(feature = "fs")]
        StoreUrl::Fs(path) => {
            let opened = taskctx_store_fs::FsStore::open(path).await;
            let opened = opened.map_err(|source| OpenError::store(&url, source))?;
            Ok(Stores::new(opened.history(), opened.records(), url))
        }
        #[cfg(feature = "sled")]
        StoreUrl::Sled(path) => {
            // `open_async` runs sled's blocking open (and crash recovery) off the runtime threads.
            let opened = taskctx_store_sled::SledStore::open_async(path.clone()).await;
            let opened = opened.map_err(|source| OpenError::store(&url, source))?;
            Ok(Stores::new(opened.history(), opened.records(), url))
        }
        #[allow(unreachable_patterns)]
        other => Err(OpenError::NotBuilt {
            url: other.to_string(),
            feature: other.scheme(),
        }),
    }
}

impl Stores {
    fn new(history: impl HistoryStore, records: impl RecordStore, url: StoreUrl) -> Self {
        Self {
            history: Arc::new(history),
            records: Arc::new(records),
            url,
        }
    }
}

impl OpenError {
    fn store(url: &StoreUrl, source: StoreError) -> Self {
        Self::Store {
            url: url.to_string(),
            source,
        }
    }
}

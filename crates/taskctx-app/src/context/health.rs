//! Health findings and statistics of a task context (SPEC R5.7, the seed's maintenance helpers).

use serde::Serialize;
use taskctx_domain::ChatId;

use super::task_context::{Persistence, TaskContext};

/// A context larger than this many characters should be optimised (the seed's threshold).
pub const LARGE_CONTEXT_CHARS: usize = 5000;
/// A history longer than this many entries should be optimised (the seed's threshold).
pub const MANY_ENTRIES: usize = 100;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth acting on.
    Warning,
    /// Something is wrong.
    Error,
}

/// One thing the health check noticed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Finding {
    /// The context's JSON is large; optimisation would shrink it.
    LargeContext {
        /// Its size in characters.
        chars: usize,
        /// The threshold.
        threshold: usize,
    },
    /// The history has many entries.
    ManyEntries {
        /// How many.
        entries: usize,
        /// The threshold.
        threshold: usize,
    },
    /// Updates not yet in the store (buffered mode, or a failed save).
    UnsavedUpdates {
        /// How many.
        count: usize,
    },
    /// The store holds more updates for this chat than the context saved: another writer
    /// appended, and this context does not show those updates.
    StoreAhead {
        /// Entries in the store.
        stored: usize,
        /// Entries this context saved.
        saved: usize,
    },
    /// The store could not be read.
    StoreUnreadable {
        /// The error.
        error: String,
    },
    /// Nothing is persisted: the history ends with the process.
    PersistenceOff,
}

impl Finding {
    /// How serious it is.
    pub fn severity(&self) -> Severity {
        match self {
            Self::PersistenceOff => Severity::Info,
            Self::LargeContext { .. } | Self::ManyEntries { .. } | Self::UnsavedUpdates { .. } => {
                Severity::Warning
            }
            Self::StoreAhead { .. } | Self::StoreUnreadable { .. } => Severity::Error,
        }
    }

    /// One line for people.
    pub fn message(&self) -> String {
        match self {
            Self::LargeContext { chars, threshold } => format!(
                "context is {chars} characters (over {threshold}); consider optimize_context"
            ),
            Self::ManyEntries { entries, threshold } => format!(
                "history has {entries} entries (over {threshold}); consider optimize_context"
            ),
            Self::UnsavedUpdates { count } => format!("{count} updates are not saved yet"),
            Self::StoreAhead { stored, saved } => format!(
                "the store holds {stored} entries but this context saved {saved}: another writer appended"
            ),
            Self::StoreUnreadable { error } => format!("the store could not be read: {error}"),
            Self::PersistenceOff => "persistence is off: the history ends with the process".into(),
        }
    }
}

/// The result of [`TaskContext::health`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The chat checked.
    pub chat_id: ChatId,
    /// What was noticed, most serious first.
    pub findings: Vec<Finding>,
}

impl HealthReport {
    /// Whether no finding is an error.
    pub fn is_healthy(&self) -> bool {
        self.findings.iter().all(|f| f.severity() < Severity::Error)
    }
}

/// The result of [`TaskContext::stats`] (the seed's performance monitor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextStats {
    /// The chat.
    pub chat_id: ChatId,
    /// Characters of the context's JSON (`to_json`).
    pub size_chars: usize,
    /// Tokens of the same text.
    pub size_tokens: usize,
    /// History entries.
    pub entries: usize,
    /// Registered resources.
    pub resources: usize,
    /// Tracked files.
    pub files: usize,
    /// Recorded model usages.
    pub models: usize,
    /// Updates not yet saved.
    pub pending: usize,
    /// What to do about it, if anything.
    pub suggestions: Vec<String>,
}

impl TaskContext {
    /// Size, counts and suggestions (over 5000 characters or 100 entries: optimise).
    pub fn stats(&self) -> ContextStats {
        let text = self.to_json().to_string();
        let size_chars = text.chars().count();
        let size_tokens = self.token_counter().count(&text);
        let entries = self.history_len();
        let mut suggestions = Vec::new();
        if size_chars > LARGE_CONTEXT_CHARS {
            suggestions.push(format!(
                "context is large ({size_chars} characters): consider optimize_context"
            ));
        }
        if entries > MANY_ENTRIES {
            suggestions.push(format!(
                "history has many entries ({entries}): consider optimize_context"
            ));
        }
        ContextStats {
            chat_id: self.chat_id().clone(),
            size_chars,
            size_tokens,
            entries,
            resources: self.resource_count(),
            files: self.file_tracker().len(),
            models: self.model_tracker().len(),
            pending: self.pending_updates(),
            suggestions,
        }
    }

    /// Checks the context and, if it persists, that the store agrees with it.
    pub async fn health(&self) -> HealthReport {
        let mut findings = Vec::new();
        let chars = self.to_json().to_string().chars().count();
        if chars > LARGE_CONTEXT_CHARS {
            findings.push(Finding::LargeContext {
                chars,
                threshold: LARGE_CONTEXT_CHARS,
            });
        }
        let entries = self.history_len();
        if entries > MANY_ENTRIES {
            findings.push(Finding::ManyEntries {
                entries,
                threshold: MANY_ENTRIES,
            });
        }
        let pending = self.pending_updates();
        if pending > 0 {
            findings.push(Finding::UnsavedUpdates { count: pending });
        }
        match (self.persistence(), self.store()) {
            (Persistence::Off, _) | (_, None) => findings.push(Finding::PersistenceOff),
            (_, Some(store)) => {
                let saved = self.persisted_len();
                match store.load_since(self.chat_id(), saved as u64).await {
                    Ok(extra) if !extra.is_empty() => findings.push(Finding::StoreAhead {
                        stored: saved + extra.len(),
                        saved,
                    }),
                    Ok(_) => {}
                    Err(error) => findings.push(Finding::StoreUnreadable {
                        error: error.to_string(),
                    }),
                }
            }
        }
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity()));
        HealthReport {
            chat_id: self.chat_id().clone(),
            findings,
        }
    }
}

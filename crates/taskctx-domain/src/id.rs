//! Validated identifier newtypes: `UserId`, `ChatId`, `TaskId` (SPEC R1.2).
//!
//! An id is valid when it is non-empty, at most [`MAX_ID_BYTES`] bytes of UTF-8 and free of
//! control characters. Everything else (slashes, dots, `..`, spaces, emoji) is allowed: turning an
//! id into a file name or key safely is the adapters' job, not the caller's.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize};

/// The largest id, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 256;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is the empty string.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which id ("chat id", "user id", "task id").
        kind: &'static str,
    },
    /// The id is longer than [`MAX_ID_BYTES`].
    #[error("{kind} is {len} bytes long; the limit is {MAX_ID_BYTES} bytes")]
    TooLong {
        /// Which id.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The id contains a control character (NUL, newline, tab, DEL, …).
    #[error("{kind} contains the control character {character:?} at byte {position}")]
    ControlCharacter {
        /// Which id.
        kind: &'static str,
        /// The offending character.
        character: char,
        /// Its byte offset.
        position: usize,
    },
}

/// Checks the rules shared by every id kind.
fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
        });
    }
    if let Some((position, character)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(IdError::ControlCharacter {
            kind,
            character,
            position,
        });
    }
    Ok(())
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// What this id is called in error messages.
            pub const KIND: &'static str = $kind;

            /// Validates `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            /// The id as a string slice, exactly as it was given.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Unwraps the id into its string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// The user a task context belongs to (AIECS `user_id`, default `anonymous`).
    UserId,
    "user id"
);
define_id!(
    /// One conversation or task history (AIECS `chat_id`).
    ChatId,
    "chat id"
);
define_id!(
    /// One task record of a hierarchical plan (ROMA `task_id`, e.g. `root.1.2`).
    TaskId,
    "task id"
);

impl UserId {
    /// The AIECS default user, `anonymous`.
    pub fn anonymous() -> Self {
        Self("anonymous".to_owned())
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::anonymous()
    }
}

impl ChatId {
    /// A fresh id that no other call in any process returns, for contexts created without a chat
    /// id (AIECS gave them all the shared id `"none"`, so they overwrote each other's history).
    ///
    /// The id is `chat-` followed by the current time in nanoseconds, the process id and a
    /// per-process counter, all in hexadecimal: unique across processes and restarts without a
    /// random-number dependency, and sortable by creation time.
    pub fn generate() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(format!("chat-{nanos:x}-{:x}-{count:x}", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_everything_that_is_not_control_or_oversized() {
        for id in [
            "a",
            "../../x",
            "/abs",
            "a/b",
            "a b",
            "..",
            "é😀",
            "root.1.2",
            "NUL\u{2400}",
        ] {
            assert_eq!(ChatId::new(id).unwrap().as_str(), id);
        }
        assert!(TaskId::new("x".repeat(MAX_ID_BYTES)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_control_characters_with_the_reason() {
        assert_eq!(ChatId::new(""), Err(IdError::Empty { kind: "chat id" }));
        assert_eq!(
            TaskId::new("x".repeat(MAX_ID_BYTES + 1)),
            Err(IdError::TooLong {
                kind: "task id",
                len: MAX_ID_BYTES + 1
            })
        );
        assert_eq!(
            UserId::new("a\nb"),
            Err(IdError::ControlCharacter {
                kind: "user id",
                character: '\n',
                position: 1
            })
        );
        assert!(ChatId::new("a\0").is_err());
        assert!(ChatId::new("\u{7f}").is_err());
        let message = ChatId::new("a\0b").unwrap_err().to_string();
        assert!(
            message.contains("chat id") && message.contains("byte 1"),
            "{message}"
        );
    }

    #[test]
    fn deserialisation_validates() {
        let ok: ChatId = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(ok, "a/b");
        let err = serde_json::from_str::<ChatId>("\"\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not be empty"), "{err}");
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"a/b\"");
    }

    #[test]
    fn generated_chat_ids_are_distinct_and_valid() {
        let a = ChatId::generate();
        let b = ChatId::generate();
        assert_ne!(a, b);
        assert!(ChatId::new(a.as_str()).is_ok());
    }
}

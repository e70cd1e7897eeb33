//! Value encodings of the sled trees, and the `Corrupt` errors raised when a value cannot be read.
//!
//! Every decoder here returns [`StoreError::Corrupt`] naming the tree and the key; none of them
//! repairs or drops anything: the bytes stay where they are for an operator to inspect.

use taskctx_domain::{ContextUpdate, TaskRecord, Timestamp};
use taskctx_store::{StoreError, StoreResult};

/// Names of the trees, as they appear in `Corrupt` locations and in the README.
pub(crate) const HISTORY_TREE: &str = "history";
/// Per-chat metadata.
pub(crate) const CHATS_TREE: &str = "chats";
/// Task records.
pub(crate) const RECORDS_TREE: &str = "records";
/// Parent → children index.
pub(crate) const CHILDREN_TREE: &str = "children";

/// Key of the format marker in sled's default tree (the `Db` itself).
pub(crate) const FORMAT_KEY: &[u8] = b"taskctx.format";
/// The on-disk layout this adapter writes; a store marked with another value is refused rather
/// than misread.
pub(crate) const FORMAT_VERSION: &[u8] = b"1";

/// Version byte that starts every chat metadata value.
const CHAT_META_VERSION: u8 = 1;
/// Length of an encoded [`ChatMeta`]: version, count, timestamp flag, timestamp bits.
const CHAT_META_LEN: usize = 1 + 8 + 1 + 8;

/// What the chats tree keeps per chat, so that `append`, `list`, `stats` and `load_since` know
/// the length and last timestamp of a history without scanning it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct ChatMeta {
    /// How many entries the chat has; its history keys are exactly sequences `0..entries`.
    pub(crate) entries: u64,
    /// The timestamp of the last entry.
    pub(crate) last_timestamp: Option<Timestamp>,
}

impl ChatMeta {
    /// The fixed 18-byte form: `[version][entries: u64 BE][has timestamp: 0|1][f64 bits BE]`.
    /// Fixed binary rather than JSON because `append` reads and rewrites it on every call.
    pub(crate) fn encode(&self) -> [u8; CHAT_META_LEN] {
        let mut out = [0u8; CHAT_META_LEN];
        out[0] = CHAT_META_VERSION;
        out[1..9].copy_from_slice(&self.entries.to_be_bytes());
        if let Some(ts) = self.last_timestamp {
            out[9] = 1;
            out[10..18].copy_from_slice(&ts.as_secs().to_bits().to_be_bytes());
        }
        out
    }

    /// Reads the value stored for `chat`; anything but a well-formed value is `Corrupt`.
    pub(crate) fn decode(chat: &str, bytes: &[u8]) -> StoreResult<Self> {
        let corrupt = |detail: String| StoreError::corrupt(chat_location(chat), detail);
        let bytes: &[u8; CHAT_META_LEN] = bytes.try_into().map_err(|_| {
            corrupt(format!(
                "chat metadata is {} bytes long, expected {CHAT_META_LEN}",
                bytes.len()
            ))
        })?;
        if bytes[0] != CHAT_META_VERSION {
            return Err(corrupt(format!(
                "unknown chat metadata version {}",
                bytes[0]
            )));
        }
        let mut entries = [0u8; 8];
        entries.copy_from_slice(&bytes[1..9]);
        let mut bits = [0u8; 8];
        bits.copy_from_slice(&bytes[10..18]);
        let last_timestamp = match bytes[9] {
            0 => None,
            1 => {
                let secs = f64::from_bits(u64::from_be_bytes(bits));
                Some(Timestamp::from_secs(secs).ok_or_else(|| {
                    corrupt(format!("last timestamp {secs} is not a finite number"))
                })?)
            }
            flag => return Err(corrupt(format!("invalid timestamp flag {flag}"))),
        };
        Ok(Self {
            entries: u64::from_be_bytes(entries),
            last_timestamp,
        })
    }
}

/// `chats/"<id>"`: where a chat's metadata lives.
pub(crate) fn chat_location(chat: &str) -> String {
    format!("{CHATS_TREE}/{chat:?}")
}

/// `history/"<id>"/<seq>`: where one history entry lives.
pub(crate) fn entry_location(chat: &str, seq: u64) -> String {
    format!("{HISTORY_TREE}/{chat:?}/{seq}")
}

/// `records/"<id>"`: where a task record lives.
pub(crate) fn record_location(id: &str) -> String {
    format!("{RECORDS_TREE}/{id:?}")
}

/// Encodes one history entry as JSON (the AIECS field names, readable with any sled tool).
pub(crate) fn encode_update(update: &ContextUpdate) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(update)
        .map_err(|e| StoreError::InvalidInput(format!("cannot encode a context update: {e}")))
}

/// Decodes the history entry stored at `chat`/`seq`.
pub(crate) fn decode_update(chat: &str, seq: u64, bytes: &[u8]) -> StoreResult<ContextUpdate> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::corrupt(
            entry_location(chat, seq),
            format!("undecodable history entry: {e}"),
        )
    })
}

/// Encodes a task record as JSON, revision included.
pub(crate) fn encode_record(record: &TaskRecord) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| {
        StoreError::InvalidInput(format!(
            "cannot encode task record `{}`: {e}",
            record.task_id
        ))
    })
}

/// Decodes the record stored under the key `id`; a record whose own id differs from its key is
/// corrupt too (it would otherwise shadow another record).
pub(crate) fn decode_record(id: &[u8], bytes: &[u8]) -> StoreResult<TaskRecord> {
    let location = || record_location(&String::from_utf8_lossy(id));
    let record: TaskRecord = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::corrupt(location(), format!("undecodable task record: {e}")))?;
    if record.task_id.as_str().as_bytes() != id {
        return Err(StoreError::corrupt(
            location(),
            format!(
                "the record stored under this key has task_id {:?}",
                record.task_id.as_str()
            ),
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn chat_meta_round_trips() {
        for meta in [
            ChatMeta::default(),
            ChatMeta {
                entries: u64::MAX,
                last_timestamp: Timestamp::from_secs(-5.25),
            },
            ChatMeta {
                entries: 3,
                last_timestamp: Timestamp::from_secs(1_700_000_000.125),
            },
        ] {
            assert_eq!(ChatMeta::decode("c", &meta.encode()).unwrap(), meta);
        }
    }

    #[test]
    fn malformed_chat_meta_is_corrupt_with_its_location() {
        let good = ChatMeta::default().encode();
        let mut bad_version = good;
        bad_version[0] = 9;
        let mut bad_flag = good;
        bad_flag[9] = 2;
        let mut nan = good;
        nan[9] = 1;
        nan[10..18].copy_from_slice(&f64::NAN.to_bits().to_be_bytes());
        for bytes in [
            &b""[..],
            &good[..5],
            &bad_version[..],
            &bad_flag[..],
            &nan[..],
        ] {
            match ChatMeta::decode("a/b", bytes) {
                Err(StoreError::Corrupt { location, .. }) => {
                    assert_eq!(location, "chats/\"a/b\"");
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_record_under_the_wrong_key_is_corrupt() {
        let record = TaskRecord::new(
            taskctx_domain::TaskId::new("x").unwrap(),
            "g",
            taskctx_domain::TaskType::Think,
        );
        let bytes = encode_record(&record).unwrap();
        assert_eq!(decode_record(b"x", &bytes).unwrap(), record);
        match decode_record(b"y", &bytes) {
            Err(StoreError::Corrupt { location, detail }) => {
                assert_eq!(location, "records/\"y\"");
                assert!(detail.contains("\"x\""), "{detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

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

/// `history/"<id>"/<seq>`: where the history chunk starting at entry `seq` lives.
pub(crate) fn entry_location(chat: &str, seq: u64) -> String {
    format!("{HISTORY_TREE}/{chat:?}/{seq}")
}

/// `records/"<id>"`: where a task record lives.
pub(crate) fn record_location(id: &str) -> String {
    format!("{RECORDS_TREE}/{id:?}")
}

/// Version byte that starts every history chunk.
const CHUNK_VERSION: u8 = 1;
/// Length of a chunk's header: version, entry count.
const CHUNK_HEADER_LEN: usize = 1 + 4;
/// A chunk holds at most this many entries...
const MAX_CHUNK_ENTRIES: usize = 1024;
/// ...and, unless one entry alone is larger, at most about this many bytes. Small enough that
/// sled keeps chunks inline in its pages rather than as separate blob files.
const MAX_CHUNK_BYTES: usize = 32 * 1024;

/// Encodes consecutive history entries as chunks: `(offset of the chunk's first entry, value)`.
///
/// One sled key per entry would make a large append or replace cost one sled insert per entry
/// (several microseconds each); one key per chunk keeps the cost per byte. A chunk value is
/// `[version][entry count: u32 BE]` followed by the entries as a JSON array (AIECS field names,
/// readable with any sled tool). Appends of a few updates make one small chunk each.
pub(crate) fn encode_chunks(updates: &[ContextUpdate]) -> StoreResult<Vec<(u64, Vec<u8>)>> {
    let mut chunks = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut first = 0usize;
    let mut count = 0usize;
    let mut close = |current: &mut Vec<u8>, first: usize, count: usize| {
        current.push(b']');
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        current[1..CHUNK_HEADER_LEN].copy_from_slice(&count.to_be_bytes());
        chunks.push((first as u64, std::mem::take(current)));
    };
    for (i, update) in updates.iter().enumerate() {
        let encoded = serde_json::to_vec(update).map_err(|e| {
            StoreError::InvalidInput(format!("cannot encode a context update: {e}"))
        })?;
        if count > 0
            && (count == MAX_CHUNK_ENTRIES || current.len() + 1 + encoded.len() > MAX_CHUNK_BYTES)
        {
            close(&mut current, first, count);
            count = 0;
        }
        if count == 0 {
            first = i;
            current.reserve(CHUNK_HEADER_LEN + 2 + encoded.len());
            current.extend_from_slice(&[CHUNK_VERSION, 0, 0, 0, 0, b'[']);
        } else {
            current.push(b',');
        }
        current.extend_from_slice(&encoded);
        count += 1;
    }
    if count > 0 {
        close(&mut current, first, count);
    }
    Ok(chunks)
}

/// Decodes the chunk of `chat` whose first entry is `first`; never empty.
pub(crate) fn decode_chunk(
    chat: &str,
    first: u64,
    bytes: &[u8],
) -> StoreResult<Vec<ContextUpdate>> {
    let corrupt = |detail: String| StoreError::corrupt(entry_location(chat, first), detail);
    let (header, body) = bytes.split_at_checked(CHUNK_HEADER_LEN).ok_or_else(|| {
        corrupt(format!(
            "history chunk of {} bytes has no header",
            bytes.len()
        ))
    })?;
    if header[0] != CHUNK_VERSION {
        return Err(corrupt(format!(
            "unknown history chunk version {}",
            header[0]
        )));
    }
    let mut count = [0u8; 4];
    count.copy_from_slice(&header[1..]);
    let count = u32::from_be_bytes(count) as usize;
    let updates: Vec<ContextUpdate> = serde_json::from_slice(body)
        .map_err(|e| corrupt(format!("undecodable history entries: {e}")))?;
    if updates.len() != count || count == 0 {
        return Err(corrupt(format!(
            "history chunk says it holds {count} entries but holds {}",
            updates.len()
        )));
    }
    Ok(updates)
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

    fn numbered(n: u64, bytes: usize) -> ContextUpdate {
        ContextUpdate::new(
            taskctx_domain::UpdateType::MESSAGE,
            serde_json::json!({"n": n, "pad": "x".repeat(bytes)}),
        )
    }

    #[test]
    fn chunks_split_by_count_and_size_and_round_trip() {
        // 3000 small entries: split by count.
        let small: Vec<ContextUpdate> = (0..3000).map(|n| numbered(n, 1)).collect();
        let chunks = encode_chunks(&small).unwrap();
        let firsts: Vec<u64> = chunks.iter().map(|(first, _)| *first).collect();
        assert!(firsts.len() >= 3 && firsts[0] == 0, "{firsts:?}");
        // Large entries: split by size, and one entry larger than a chunk gets its own.
        let mut large: Vec<ContextUpdate> = (0..10).map(|n| numbered(n, 10_000)).collect();
        large.insert(4, numbered(99, 100_000));
        let large_chunks = encode_chunks(&large).unwrap();
        assert!(large_chunks.len() >= 4);
        for (updates, chunks) in [(&small, &chunks), (&large, &large_chunks)] {
            let mut back = Vec::new();
            for (first, bytes) in chunks.iter() {
                assert_eq!(*first as usize, back.len());
                assert!(
                    bytes.len() <= MAX_CHUNK_BYTES + 1
                        || decode_chunk("c", *first, bytes).unwrap().len() == 1
                );
                back.extend(decode_chunk("c", *first, bytes).unwrap());
            }
            assert_eq!(&back, updates);
        }
        assert!(encode_chunks(&[]).unwrap().is_empty());
    }

    #[test]
    fn damaged_chunks_are_corrupt_at_their_first_position() {
        let good = encode_chunks(&[numbered(1, 1), numbered(2, 1)])
            .unwrap()
            .remove(0)
            .1;
        let mut wrong_count = good.clone();
        wrong_count[4] = 3;
        let mut wrong_version = good.clone();
        wrong_version[0] = 7;
        let truncated = &good[..good.len() - 1];
        for bytes in [
            &b"\x01\x00"[..],
            &wrong_count,
            &wrong_version,
            truncated,
            &b"\x01\x00\x00\x00\x00[]"[..],
        ] {
            match decode_chunk("a/b", 7, bytes) {
                Err(StoreError::Corrupt { location, .. }) => {
                    assert_eq!(location, "history/\"a/b\"/7")
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

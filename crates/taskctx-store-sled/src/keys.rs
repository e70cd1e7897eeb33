//! Key layout of the sled trees: a prefix-free, order-preserving encoding of ids, and the keys
//! built from it.
//!
//! Keys that start with an id and continue with something else (a sequence number, a child id)
//! need an id encoding that is *prefix-free*: otherwise a range scan over chat `a` would also
//! return the entries of chat `ab`. Ids are escaped and terminated:
//!
//! - byte `0x00` becomes `0x00 0xFF`,
//! - the id ends with `0x00 0x01`.
//!
//! Every `0x00` in an encoding is followed by `0xFF` (escaped NUL) or `0x01` (the end), so the
//! end is unambiguous and no encoding is a prefix of another. The terminator sorts below every
//! continuation (`0x00 0x01` < `0x00 0xFF` < any byte from `0x01` up), so encoded ids sort like the
//! ids themselves. Valid ids never contain NUL (control characters are rejected by
//! `taskctx-domain`), so the escape never fires today; it is there so that the encoding stays
//! correct for any bytes, not only for what validation happens to let through.

/// The byte that starts an escape pair or the terminator.
const ESCAPE: u8 = 0x00;
/// Second byte of an escaped NUL.
const ESCAPED_NUL: u8 = 0xFF;
/// Second byte of the terminator.
const END: u8 = 0x01;

/// Appends the prefix-free encoding of `id` to `out`.
pub(crate) fn encode_id(id: &[u8], out: &mut Vec<u8>) {
    out.reserve(id.len() + 2);
    for &byte in id {
        if byte == ESCAPE {
            out.extend_from_slice(&[ESCAPE, ESCAPED_NUL]);
        } else {
            out.push(byte);
        }
    }
    out.extend_from_slice(&[ESCAPE, END]);
}

/// Splits a key that starts with an encoded id into the id and the rest of the key; `None` when
/// the key does not start with a well-formed encoding. The store itself never needs to decode a
/// key (it always knows the id it looks for); the tests use this to prove the encoding reversible.
#[cfg(test)]
pub(crate) fn decode_id(key: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut id = Vec::with_capacity(key.len());
    let mut i = 0;
    while i < key.len() {
        let byte = key[i];
        if byte != ESCAPE {
            id.push(byte);
            i += 1;
            continue;
        }
        match key.get(i + 1) {
            Some(&ESCAPED_NUL) => {
                id.push(ESCAPE);
                i += 2;
            }
            Some(&END) => return Some((id, &key[i + 2..])),
            _ => return None,
        }
    }
    None
}

/// The prefix shared by every history key of `chat` (its encoded id).
pub(crate) fn history_prefix(chat: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(chat.len() + 2 + 8);
    encode_id(chat.as_bytes(), &mut key);
    key
}

/// The history key of entry `seq` of the chat whose [`history_prefix`] is `prefix`:
/// the prefix followed by `seq` in big-endian, so a chat's entries sort by position.
pub(crate) fn history_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number at the end of a history key, if the key is long enough to hold one.
pub(crate) fn history_seq(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8).map(|start| &key[start..])?;
    let bytes: [u8; 8] = tail.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The prefix shared by every children-index key of `parent`.
pub(crate) fn children_prefix(parent: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(parent.len() + 2 + 32);
    encode_id(parent.as_bytes(), &mut key);
    key
}

/// The children-index key saying that `child` has the parent `parent`: the encoded parent
/// followed by the child's id as it is (it is the last component, so it needs no terminator).
pub(crate) fn child_key(parent: &str, child: &str) -> Vec<u8> {
    let mut key = children_prefix(parent);
    key.extend_from_slice(child.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Every byte string of length 0..=3 over an alphabet holding the bytes the encoding treats
    /// specially and their neighbours.
    fn samples() -> Vec<Vec<u8>> {
        let alphabet = [0x00u8, 0x01, 0x02, b'a', b'b', 0xFE, 0xFF];
        let mut all = vec![Vec::new()];
        let mut frontier = vec![Vec::new()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for &byte in &alphabet {
                    let mut s: Vec<u8> = prefix.clone();
                    s.push(byte);
                    next.push(s);
                }
            }
            all.extend(next.iter().cloned());
            frontier = next;
        }
        all
    }

    fn encoded(id: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_id(id, &mut out);
        out
    }

    #[test]
    fn round_trips_with_any_suffix() {
        for id in samples() {
            let mut key = encoded(&id);
            key.extend_from_slice(&[0x00, 0x01, 0xFF, 7]);
            let (back, rest) = decode_id(&key).unwrap();
            assert_eq!(back, id);
            assert_eq!(rest, &[0x00, 0x01, 0xFF, 7]);
        }
    }

    #[test]
    fn no_encoding_is_a_prefix_of_another() {
        let all = samples();
        for a in &all {
            for b in &all {
                if a != b {
                    assert!(
                        !encoded(b).starts_with(&encoded(a)),
                        "{a:?} is a key prefix of {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn encoding_preserves_byte_order() {
        let all = samples();
        for a in &all {
            for b in &all {
                assert_eq!(a.cmp(b), encoded(a).cmp(&encoded(b)), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn history_keys_of_look_alike_chats_never_share_a_range() {
        // Chat `a`'s entries must not fall in the range of chat `ab` or `a/`, and vice versa,
        // whatever the sequence number (whose bytes could mimic an id continuation).
        let chats = ["a", "ab", "a/", "a b", "aa"];
        for owner in chats {
            let prefix = history_prefix(owner);
            for seq in [0, 1, 0x61, 0x0001_0000_0000_0000, u64::MAX] {
                let key = history_key(&prefix, seq);
                assert_eq!(history_seq(&key), Some(seq));
                for other in chats {
                    assert_eq!(
                        key.starts_with(&history_prefix(other)),
                        owner == other,
                        "{owner} seq {seq} vs {other}"
                    );
                }
            }
        }
    }

    #[test]
    fn child_keys_split_back_into_parent_and_child() {
        let key = child_key("p/a", "c\u{e9}");
        let (parent, child) = decode_id(&key).unwrap();
        assert_eq!(parent, b"p/a");
        assert_eq!(child, "c\u{e9}".as_bytes());
        assert!(key.starts_with(&children_prefix("p/a")));
        assert!(!key.starts_with(&children_prefix("p")));
    }

    #[test]
    fn malformed_keys_do_not_decode() {
        assert!(decode_id(b"abc").is_none());
        assert!(decode_id(&[b'a', 0x00]).is_none());
        assert!(decode_id(&[b'a', 0x00, 0x07]).is_none());
        assert!(history_seq(&[1, 2, 3]).is_none());
    }
}

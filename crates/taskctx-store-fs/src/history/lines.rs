//! The JSON-lines history format as pure functions over bytes: rendering updates, scanning a file
//! for its entry count and torn tail, and parsing lines with their line numbers.

use serde_json::error::Category;
use taskctx_domain::{ContextUpdate, Timestamp};

use crate::fsutil::describe_json_error as describe;

/// A problem with one line: its 1-based number and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    pub(crate) line: u64,
    pub(crate) detail: String,
}

/// What a scan learns about a history file without parsing every line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FileInfo {
    /// Updates in the file (complete lines, plus a final unterminated line that is complete).
    pub(crate) entries: u64,
    /// Bytes that hold those updates; anything after is a torn tail.
    pub(crate) valid_len: u64,
    /// The file's length on disk (`> valid_len` when there is a torn tail to cut).
    pub(crate) disk_len: u64,
    /// The last update is complete but has no newline yet; the next append writes one first.
    pub(crate) missing_newline: bool,
    /// The timestamp of the last update.
    pub(crate) last_timestamp: Option<Timestamp>,
}

impl FileInfo {
    /// The state after writing `bytes` holding `entries` updates as a whole new file.
    pub(crate) fn fresh(bytes: usize, entries: u64, last_timestamp: Option<Timestamp>) -> Self {
        Self {
            entries,
            valid_len: bytes as u64,
            disk_len: bytes as u64,
            missing_newline: false,
            last_timestamp,
        }
    }
}

/// Renders updates as lines, each `\n`-terminated; serde_json escapes every control character,
/// so a rendered line never contains a raw newline.
pub(crate) fn render(updates: &[ContextUpdate]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(updates.len() * 160);
    for update in updates {
        serde_json::to_writer(&mut out, update)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Finds the entry count, the valid length, the torn tail and the last timestamp of a history
/// file's bytes. Only the last complete line and the unterminated tail are parsed; a corrupt line
/// further up is found by [`parse`] when the history is loaded.
///
/// The tail after the last newline is:
/// - nothing, or only NUL bytes and whitespace: no entry (NULs are what a power loss can leave in
///   a file's last block);
/// - a complete, valid update: an entry (a crash can stop right before the newline, and a
///   hand-written file may lack its last newline: cutting a valid update would lose data);
/// - a truncated prefix of JSON: a torn tail, ignored and cut before the next append;
/// - anything else (garbage, a complete value of the wrong shape): corrupt, never cut.
pub(crate) fn scan(bytes: &[u8]) -> Result<FileInfo, LineError> {
    let body_end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (body, tail) = bytes.split_at(body_end);
    let lines = count_lines(body);
    let mut info = FileInfo {
        entries: lines,
        valid_len: body_end as u64,
        disk_len: bytes.len() as u64,
        missing_newline: false,
        last_timestamp: None,
    };
    match classify_tail(tail) {
        Tail::Empty => {}
        Tail::Complete(update, len) => {
            info.entries += 1;
            info.valid_len += len as u64;
            info.missing_newline = true;
            info.last_timestamp = Some(update.timestamp);
            return Ok(info);
        }
        Tail::Corrupt(detail) => {
            return Err(LineError {
                line: lines + 1,
                detail: format!("{detail} (in the last line, which has no newline)"),
            });
        }
    }
    if let Some(without_newline) = body.strip_suffix(b"\n") {
        let start = without_newline
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let last = parse_line(&without_newline[start..]).map_err(|detail| LineError {
            line: lines,
            detail,
        })?;
        info.last_timestamp = Some(last.timestamp);
    }
    Ok(info)
}

/// Parses every line of `bytes` (the valid part of a file from line `first_line` on; the last
/// line may lack its newline). Any line that is not a valid update is an error naming its line.
pub(crate) fn parse(
    bytes: &[u8],
    first_line: u64,
    capacity: usize,
) -> Result<Vec<ContextUpdate>, LineError> {
    let mut updates = Vec::with_capacity(capacity);
    let mut line = first_line;
    let mut rest = bytes;
    while !rest.is_empty() {
        let (current, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        updates.push(parse_line(current).map_err(|detail| LineError { line, detail })?);
        line += 1;
        rest = next;
    }
    Ok(updates)
}

/// The byte offset where line `skip + 1` starts (after `skip` newlines), or `None` if the bytes
/// hold fewer lines.
pub(crate) fn offset_of_line(bytes: &[u8], skip: u64) -> Option<usize> {
    if skip == 0 {
        return Some(0);
    }
    let mut seen = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            seen += 1;
            if seen == skip {
                return Some(i + 1);
            }
        }
    }
    None
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Parses one line; the error text says what is wrong and at which column.
fn parse_line(line: &[u8]) -> Result<ContextUpdate, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err("empty line (every line must hold one update)".to_owned());
    }
    serde_json::from_slice(line).map_err(|e| describe(&e))
}

enum Tail {
    Empty,
    Complete(ContextUpdate, usize),
    Corrupt(String),
}

fn classify_tail(tail: &[u8]) -> Tail {
    let end = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let trimmed = &tail[..end];
    if trimmed.iter().all(u8::is_ascii_whitespace) {
        return Tail::Empty;
    }
    match serde_json::from_slice::<ContextUpdate>(trimmed) {
        Ok(update) => Tail::Complete(update, trimmed.len()),
        Err(e) if is_truncation(&e, trimmed) => Tail::Empty,
        Err(e) => Tail::Corrupt(describe(&e)),
    }
}

/// Whether a parse error is what cutting valid JSON short produces: the input ended inside a
/// value, or a number was cut right after its `.`, `e`, sign or `-` (serde_json reports that as
/// an invalid number at the end rather than as an early end).
fn is_truncation(error: &serde_json::Error, input: &[u8]) -> bool {
    match error.classify() {
        Category::Eof => true,
        Category::Syntax => {
            error.line() == 1
                && error.column() >= input.len()
                && input
                    .last()
                    .is_some_and(|b| matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        }
        Category::Io | Category::Data => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskctx_testkit::fixtures::{awkward_updates, update, updates};

    fn lines(updates: &[ContextUpdate]) -> Vec<u8> {
        render(updates).unwrap()
    }

    #[test]
    fn renders_one_line_per_update_and_parses_back() {
        let batch = awkward_updates();
        let bytes = lines(&batch);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), batch.len());
        assert_eq!(parse(&bytes, 1, 0).unwrap(), batch);
        let info = scan(&bytes).unwrap();
        assert_eq!(info.entries, batch.len() as u64);
        assert_eq!(info.valid_len, bytes.len() as u64);
        assert_eq!(info.last_timestamp, Some(batch[batch.len() - 1].timestamp));
    }

    #[test]
    fn empty_bytes_are_an_empty_history() {
        let info = scan(b"").unwrap();
        assert_eq!(
            (info.entries, info.valid_len, info.last_timestamp),
            (0, 0, None)
        );
    }

    #[test]
    fn every_prefix_of_a_line_is_a_torn_tail() {
        let mut batch = awkward_updates();
        batch.truncate(4); // skip the 1 MiB string: its prefixes add nothing but time
        batch.extend(updates(0..2));
        let head = lines(&updates(10..12));
        for update in &batch {
            let line = lines(std::slice::from_ref(update));
            let line = &line[..line.len() - 1];
            for cut in 1..line.len() {
                let mut bytes = head.clone();
                bytes.extend_from_slice(&line[..cut]);
                let info = scan(&bytes).unwrap_or_else(|e| {
                    panic!("prefix {:?}: {e:?}", String::from_utf8_lossy(&line[..cut]))
                });
                assert_eq!(
                    info.entries,
                    2,
                    "prefix {:?}",
                    String::from_utf8_lossy(&line[..cut])
                );
                assert_eq!(info.valid_len, head.len() as u64);
                assert_eq!(info.disk_len, bytes.len() as u64);
                assert_eq!(info.last_timestamp, Some(update_at(11)));
            }
        }
    }

    fn update_at(n: u64) -> Timestamp {
        update(n).timestamp
    }

    #[test]
    fn a_complete_last_line_without_newline_is_kept() {
        let mut bytes = lines(&updates(0..2));
        bytes.pop();
        let info = scan(&bytes).unwrap();
        assert_eq!(info.entries, 2);
        assert!(info.missing_newline);
        assert_eq!(info.valid_len, bytes.len() as u64);
        assert_eq!(parse(&bytes, 1, 2).unwrap(), updates(0..2));
    }

    #[test]
    fn nul_filled_tails_are_torn() {
        let mut bytes = lines(&updates(0..1));
        let valid = bytes.len() as u64;
        bytes.extend_from_slice(&[0; 64]);
        assert_eq!(scan(&bytes).unwrap().valid_len, valid);
        bytes.truncate(valid as usize);
        bytes.extend_from_slice(b"{\"timestamp\": 1.5, \"upd");
        bytes.extend_from_slice(&[0; 16]);
        let info = scan(&bytes).unwrap();
        assert_eq!((info.entries, info.valid_len), (1, valid));
    }

    #[test]
    fn garbage_and_wrong_shapes_are_corrupt_with_their_line() {
        let good = lines(&updates(0..2));
        let cases: Vec<(Vec<u8>, u64, &str)> = vec![
            (
                [good.clone(), b"\x00\xffgarbage".to_vec()].concat(),
                3,
                "expected value",
            ),
            (
                [good.clone(), b"{\"a\"x".to_vec()].concat(),
                3,
                "expected `:`",
            ),
            (
                [good.clone(), b"[1, 2]\n".to_vec()].concat(),
                3,
                "invalid type",
            ),
            (
                [good.clone(), b"{\"timestamp\": 1}\n".to_vec()].concat(),
                3,
                "missing field",
            ),
            ([good.clone(), b"\n".to_vec()].concat(), 3, "empty line"),
            (
                [
                    good.clone(),
                    b"{\"timestamp\": 1, \"update_type\": \"\", \"data\": 1}".to_vec(),
                ]
                .concat(),
                3,
                "must not be empty",
            ),
        ];
        for (bytes, line, needle) in cases {
            let error = scan(&bytes).unwrap_err();
            assert_eq!(error.line, line, "{error:?}");
            assert!(error.detail.contains(needle), "{error:?} lacks {needle:?}");
        }
    }

    #[test]
    fn a_bad_line_in_the_middle_is_found_by_parse_not_scan() {
        let mut bytes = lines(&updates(0..1));
        bytes.extend_from_slice(b"not json\n");
        bytes.extend_from_slice(&lines(&updates(1..2)));
        assert_eq!(scan(&bytes).unwrap().entries, 3);
        let error = parse(&bytes, 1, 3).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.detail.contains("column"), "{error:?}");
    }

    #[test]
    fn no_input_makes_the_decoders_panic() {
        let valid = lines(&updates(0..3));
        let awkward = lines(&awkward_updates()[..4]);
        for input in crate::testing::inputs(7, 20_000, &[&valid, &awkward]) {
            let scanned = scan(&input);
            let parsed = parse(&input, 1, 0);
            if let (Ok(info), Ok(updates)) = (&scanned, &parsed) {
                // When every line parses and nothing is torn, scan and parse agree.
                if info.valid_len == input.len() as u64 {
                    assert_eq!(info.entries, updates.len() as u64);
                }
            }
            let _ = offset_of_line(&input, 2);
        }
    }

    #[test]
    fn offsets_of_lines() {
        let bytes = b"a\nbb\nccc\n";
        assert_eq!(offset_of_line(bytes, 0), Some(0));
        assert_eq!(offset_of_line(bytes, 1), Some(2));
        assert_eq!(offset_of_line(bytes, 3), Some(9));
        assert_eq!(offset_of_line(bytes, 4), None);
    }
}

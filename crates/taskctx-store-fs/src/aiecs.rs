//! AIECS interop: reading `context_history_{chat_id}.json` files where AIECS left them, importing
//! them into any [`HistoryStore`], and exporting a chat in the AIECS format (byte for byte what
//! Python's `json.dump(history, f, indent=2)` writes) or as JSON lines.
//!
//! The parsing and rendering functions ([`parse_history`], [`render_aiecs`],
//! [`render_json_lines`], [`chat_id_from_file_name`], [`file_name`]) are pure; the file I/O is in
//! [`read_history_file`], [`find_history_files`] and [`write_file`], and the store I/O in
//! [`import_file`], [`import_updates`], [`export_file`] and [`export_to_dir`].
//!
//! "Reading AIECS files in place" (SPEC R3.2) means reading them directly from the AIECS task
//! directory, unchanged and without a conversion step: [`read_history_file`] takes the file's
//! path, the chat id comes from its name, and the entries load with their AIECS field names.
//!
//! Import never merges: a chat that already has updates is refused with
//! [`AiecsError::ChatExists`] unless [`ImportMode::Replace`] asks for its history to be replaced
//! (atomically, through [`HistoryStore::replace`]). The check and the write are two store calls,
//! so run imports while nothing else writes the same chat.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::error::Category;
use taskctx_domain::{ChatId, ContextUpdate, IdError, Map, Value, json_kind};
use taskctx_store::{HistoryStore, StoreError};

use crate::fsutil;

/// What every AIECS history file name starts with.
pub const FILE_PREFIX: &str = "context_history_";
/// What every AIECS history file name ends with.
pub const FILE_SUFFIX: &str = ".json";

/// The longest file name most file systems accept, in bytes.
const MAX_FILE_NAME: usize = 255;

/// Why a file's content is not an AIECS history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The bytes are not JSON.
    #[error("invalid JSON at line {line} column {column}: {detail}")]
    Json {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in bytes) of the error.
        column: usize,
        /// What is wrong.
        detail: String,
    },
    /// The JSON is not an array.
    #[error("expected a JSON array of updates, found {found}")]
    NotAnArray {
        /// What was found instead ("an object", "a string", …).
        found: &'static str,
    },
    /// An entry of the array is not an update (a field missing or of the wrong type).
    #[error("entry {index} (line {line} column {column}) is not an update: {detail}")]
    Entry {
        /// 0-based position of the entry in the array.
        index: usize,
        /// 1-based line where the problem was found.
        line: usize,
        /// 1-based column where the problem was found.
        column: usize,
        /// What is wrong.
        detail: String,
    },
}

/// Why a file name is not an AIECS history file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileNameError {
    /// The name is not `context_history_{chat_id}.json`.
    #[error("expected a name of the form `{FILE_PREFIX}<chat id>{FILE_SUFFIX}`")]
    Shape,
    /// The chat id in the name is not a valid chat id.
    #[error("the chat id in the name is invalid: {0}")]
    InvalidChatId(#[from] IdError),
}

/// What can go wrong reading, importing or exporting AIECS histories.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AiecsError {
    /// The file name does not name a chat.
    #[error("{}: not an AIECS history file: {source}", path.display())]
    FileName {
        /// The file.
        path: PathBuf,
        /// What is wrong with its name.
        source: FileNameError,
    },
    /// The file's content is not an AIECS history.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        source: ParseError,
    },
    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "writing", …).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Import refused: the chat already has a history and the import mode does not replace it.
    #[error(
        "chat `{chat_id}` already has a history in the store; refusing to merge or overwrite it \
         (import with `ImportMode::Replace` to replace it)"
    )]
    ChatExists {
        /// The chat.
        chat_id: ChatId,
    },
    /// Export impossible: AIECS could not find a file for this chat id.
    #[error("chat `{chat_id}` cannot be exported under an AIECS file name: {reason}")]
    UnnamableChat {
        /// The chat.
        chat_id: ChatId,
        /// Why.
        reason: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to do when an imported chat already has a history in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ImportMode {
    /// Refuse with [`AiecsError::ChatExists`] (the default: nothing is merged or overwritten).
    #[default]
    Create,
    /// Replace the chat's whole history with the imported one, atomically.
    Replace,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// The chat the history was stored under.
    pub chat_id: ChatId,
    /// How many updates were imported.
    pub updates: usize,
    /// Whether an existing history was replaced.
    pub replaced: bool,
}

/// The two export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// A JSON array as AIECS writes it ([`render_aiecs`]).
    Aiecs,
    /// One update per line ([`render_json_lines`]), the format of this store's history files.
    JsonLines,
}

impl ExportFormat {
    /// Renders `updates` in this format.
    pub fn render(self, updates: &[ContextUpdate]) -> String {
        match self {
            Self::Aiecs => render_aiecs(updates),
            Self::JsonLines => render_json_lines(updates),
        }
    }
}

/// The chat id in an AIECS file name `context_history_{chat_id}.json`.
pub fn chat_id_from_file_name(name: &str) -> Result<ChatId, FileNameError> {
    let id = name
        .strip_prefix(FILE_PREFIX)
        .and_then(|rest| rest.strip_suffix(FILE_SUFFIX))
        .ok_or(FileNameError::Shape)?;
    Ok(ChatId::new(id)?)
}

/// The AIECS file name of `chat`. AIECS joins the id into a path unescaped, so an id with a path
/// separator, or one too long for a file name, has no file AIECS could load.
pub fn file_name(chat: &ChatId) -> Result<String, AiecsError> {
    let unnamable = |reason| AiecsError::UnnamableChat {
        chat_id: chat.clone(),
        reason,
    };
    if chat.as_str().contains(['/', '\\']) {
        return Err(unnamable("it contains a path separator"));
    }
    let name = format!("{FILE_PREFIX}{chat}{FILE_SUFFIX}");
    if name.len() > MAX_FILE_NAME {
        return Err(unnamable("the file name would exceed 255 bytes"));
    }
    Ok(name)
}

/// Parses the content of an AIECS history file: a JSON array of `{timestamp, update_type, data,
/// metadata}` objects (`metadata` may be missing; other keys are ignored).
pub fn parse_history(bytes: &[u8]) -> Result<Vec<ContextUpdate>, ParseError> {
    let error = match serde_json::from_slice::<Vec<ContextUpdate>>(bytes) {
        Ok(updates) => return Ok(updates),
        Err(error) => error,
    };
    if !matches!(error.classify(), Category::Data) {
        return Err(ParseError::Json {
            line: error.line(),
            column: error.column(),
            detail: message(&error),
        });
    }
    // Well-formed JSON of the wrong shape: parse again as plain JSON to say which entry is wrong
    // (the fast path above has no entry index).
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ParseError::Json {
        line: e.line(),
        column: e.column(),
        detail: message(&e),
    })?;
    let Value::Array(entries) = value else {
        return Err(ParseError::NotAnArray {
            found: json_kind(&value),
        });
    };
    for (index, entry) in entries.iter().enumerate() {
        if let Err(e) = ContextUpdate::deserialize(entry) {
            return Err(ParseError::Entry {
                index,
                line: error.line(),
                column: error.column(),
                detail: e.to_string(),
            });
        }
    }
    // Unreachable in practice: the entries that failed together parse one by one.
    Err(ParseError::Json {
        line: error.line(),
        column: error.column(),
        detail: message(&error),
    })
}

/// Renders a history as AIECS writes it: `json.dump(history, f, indent=2)` with Python's
/// defaults — two-space indentation, `", "`-less item separators with newlines, `": "` between
/// key and value, every non-ASCII character escaped as `\uXXXX` (surrogate pairs beyond the BMP),
/// floats as Python's `repr` writes them, no trailing newline. Each entry's keys come in AIECS's
/// order: `timestamp`, `update_type`, `data`, `metadata`.
pub fn render_aiecs(updates: &[ContextUpdate]) -> String {
    if updates.is_empty() {
        return "[]".to_owned();
    }
    let mut out = String::with_capacity(updates.len() * 200);
    out.push('[');
    for (i, update) in updates.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        newline(&mut out, 1);
        out.push('{');
        newline(&mut out, 2);
        write_string(&mut out, "timestamp");
        out.push_str(": ");
        write_float(&mut out, update.timestamp.as_secs());
        out.push(',');
        newline(&mut out, 2);
        write_string(&mut out, "update_type");
        out.push_str(": ");
        write_string(&mut out, update.update_type.as_str());
        out.push(',');
        newline(&mut out, 2);
        write_string(&mut out, "data");
        out.push_str(": ");
        write_value(&mut out, &update.data, 2);
        out.push(',');
        newline(&mut out, 2);
        write_string(&mut out, "metadata");
        out.push_str(": ");
        write_object(&mut out, &update.metadata, 2);
        newline(&mut out, 1);
        out.push('}');
    }
    newline(&mut out, 0);
    out.push(']');
    out
}

/// Renders a history as JSON lines: one compact update per line, each ending in `\n` — the format
/// of this store's history files.
pub fn render_json_lines(updates: &[ContextUpdate]) -> String {
    let mut out = String::with_capacity(updates.len() * 160);
    for update in updates {
        // Serialising a `ContextUpdate` to a string cannot fail: its map keys are strings and its
        // numbers finite.
        if let Ok(line) = serde_json::to_string(update) {
            out.push_str(&line);
        }
        out.push('\n');
    }
    out
}

/// Reads an AIECS history file where it is: the chat id from its name, the updates from its
/// content.
pub fn read_history_file(path: &Path) -> Result<(ChatId, Vec<ContextUpdate>), AiecsError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| AiecsError::FileName {
            path: path.to_path_buf(),
            source: FileNameError::Shape,
        })?;
    let chat = chat_id_from_file_name(name).map_err(|source| AiecsError::FileName {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = fs::read(path).map_err(|source| AiecsError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let updates = parse_history(&bytes).map_err(|source| AiecsError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((chat, updates))
}

/// The AIECS history files directly inside `dir` (an AIECS `task_dir`), sorted by name. Other
/// files are skipped.
pub fn find_history_files(dir: &Path) -> Result<Vec<PathBuf>, AiecsError> {
    let io_error = |source| AiecsError::Io {
        action: "listing",
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let is_history = entry
            .file_name()
            .to_str()
            .is_some_and(|name| chat_id_from_file_name(name).is_ok());
        if is_history && entry.file_type().map_err(io_error)?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename, fsync the directory), so a
/// reader — AIECS included — sees the old file or the new one, never a truncated one.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), AiecsError> {
    let io_error = |source| AiecsError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    };
    fsutil::replace_file(path, contents).map_err(io_error)?;
    fsutil::sync_dir(fsutil::parent_dir(path)).map_err(io_error)
}

/// Imports the AIECS history file at `path` into `store`, under the chat id its name gives.
pub async fn import_file(
    store: &dyn HistoryStore,
    path: &Path,
    mode: ImportMode,
) -> Result<ImportReport, AiecsError> {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || read_history_file(&owned)).await;
    let (chat, updates) = match read {
        Ok(result) => result?,
        Err(error) => {
            return Err(AiecsError::Io {
                action: "reading",
                path: path.to_path_buf(),
                source: io::Error::other(error),
            });
        }
    };
    import_updates(store, &chat, &updates, mode).await
}

/// Stores `updates` as the history of `chat`, following `mode` if the chat already has updates.
/// The history is written with one atomic [`HistoryStore::replace`].
///
/// [`ImportMode::Create`] refuses a chat with a history (and reports a chat whose history cannot
/// be read, rather than overwriting it); a chat without updates is filled. [`ImportMode::Replace`]
/// replaces whatever is there, an unreadable history included: the caller asked for exactly that.
pub async fn import_updates(
    store: &dyn HistoryStore,
    chat: &ChatId,
    updates: &[ContextUpdate],
    mode: ImportMode,
) -> Result<ImportReport, AiecsError> {
    let replaced = match (store.load(chat).await, mode) {
        (Ok(existing), ImportMode::Create) if !existing.is_empty() => {
            return Err(AiecsError::ChatExists {
                chat_id: chat.clone(),
            });
        }
        (Ok(existing), _) => !existing.is_empty(),
        (Err(StoreError::Corrupt { .. }), ImportMode::Replace) => true,
        (Err(error), _) => return Err(error.into()),
    };
    store.replace(chat, updates).await?;
    Ok(ImportReport {
        chat_id: chat.clone(),
        updates: updates.len(),
        replaced,
    })
}

/// Writes `chat`'s history from `store` to `path` in `format`, atomically; returns how many
/// updates were written. A chat the store does not have is [`StoreError::NotFound`] (an existing
/// chat without updates exports as an empty history).
pub async fn export_file(
    store: &dyn HistoryStore,
    chat: &ChatId,
    path: &Path,
    format: ExportFormat,
) -> Result<usize, AiecsError> {
    let updates = store.load(chat).await?;
    if updates.is_empty() && !store.list().await?.iter().any(|c| &c.chat_id == chat) {
        return Err(StoreError::NotFound {
            what: format!("chat `{chat}`"),
        }
        .into());
    }
    let contents = format.render(&updates);
    let target = path.to_path_buf();
    let written =
        tokio::task::spawn_blocking(move || write_file(&target, contents.as_bytes())).await;
    match written {
        Ok(result) => result.map(|()| updates.len()),
        Err(error) => Err(AiecsError::Io {
            action: "writing",
            path: path.to_path_buf(),
            source: io::Error::other(error),
        }),
    }
}

/// Exports `chat` in the AIECS format into the directory `dir` under its AIECS file name, where
/// AIECS's `TaskContext({"chat_id": chat}, task_dir=dir)` finds it; returns the file's path.
pub async fn export_to_dir(
    store: &dyn HistoryStore,
    chat: &ChatId,
    dir: &Path,
) -> Result<PathBuf, AiecsError> {
    let path = dir.join(file_name(chat)?);
    export_file(store, chat, &path, ExportFormat::Aiecs).await?;
    Ok(path)
}

fn message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => match number.as_f64() {
            Some(float) if number.is_f64() => write_float(out, float),
            // Integers print the same in Python and in serde_json.
            _ => {
                let _ = write!(out, "{number}");
            }
        },
        Value::String(text) => write_string(out, text),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_value(out, item, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, depth),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>, depth: usize) {
    if map.is_empty() {
        out.push_str("{}");
        return;
    }
    out.push('{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        newline(out, depth + 1);
        write_string(out, key);
        out.push_str(": ");
        write_value(out, value, depth + 1);
    }
    newline(out, depth);
    out.push('}');
}

/// A JSON string as Python's `json` writes it with `ensure_ascii=True`: printable ASCII as is,
/// the short escapes, everything else as lower-case `\uXXXX` (UTF-16, so surrogate pairs).
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// A float as Python's `repr` writes it: the shortest digits that read back to the same value
/// (as Rust's formatting also finds), in positional notation for decimal exponents from -4 to 15
/// (with `.0` when integral) and scientific notation otherwise (`1e-05`, `1.5e+16`).
fn write_float(out: &mut String, value: f64) {
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if negative {
        out.push('-');
    }
    // Python's `decpt`: the value is 0.DIGITS × 10^decpt.
    let decpt = exponent + 1;
    let len = digits.len() as i64;
    if decpt <= -4 || decpt > 16 {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        for _ in 0..-decpt {
            out.push('0');
        }
        out.push_str(&digits);
    } else if decpt >= len {
        out.push_str(&digits);
        for _ in 0..decpt - len {
            out.push('0');
        }
        out.push_str(".0");
    } else {
        let (whole, fraction) = digits.split_at(usize::try_from(decpt).unwrap_or(0));
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(value: f64) -> String {
        let mut out = String::new();
        write_float(&mut out, value);
        out
    }

    #[test]
    fn floats_print_as_python_repr_does() {
        // Each pair is (value, Python's `repr(value)`), checked against CPython 3.11.
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1_700_000_000.125, "1700000000.125"),
            (1_700_000_000.123_456_7, "1700000000.1234567"),
            (-3e-7, "-3e-07"),
            (123_456_789_012_345_678.0, "1.2345678901234568e+17"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (0.1, "0.1"),
            (2.5, "2.5"),
            (1e22, "1e+22"),
            (12_345_678_901_234_567.0, "1.2345678901234568e+16"),
        ];
        for (value, python) in cases {
            assert_eq!(float(value), python, "{value:e}");
        }
    }

    #[test]
    fn strings_are_escaped_as_python_ensure_ascii_does() {
        let mut out = String::new();
        write_string(&mut out, "héllo 😀 \"q\" \\ \n\t\u{1}\u{7f}/");
        assert_eq!(
            out,
            r#""h\u00e9llo \ud83d\ude00 \"q\" \\ \n\t\u0001\u007f/""#
        );
    }

    #[test]
    fn no_input_makes_the_parser_panic_and_every_float_round_trips() {
        let valid = render_aiecs(&taskctx_testkit::fixtures::updates(0..3));
        for input in crate::testing::inputs(5, 20_000, &[valid.as_bytes(), b"[]"]) {
            if let Ok(updates) = parse_history(&input) {
                assert_eq!(
                    parse_history(render_aiecs(&updates).as_bytes()),
                    Ok(updates)
                );
            }
        }
        let mut rng = crate::testing::Rng::new(9);
        for _ in 0..20_000 {
            let value = f64::from_bits(rng.next());
            if !value.is_finite() {
                continue;
            }
            let text = float(value);
            assert_eq!(text.parse::<f64>().ok(), Some(value), "{text}");
        }
    }

    #[test]
    fn file_names_give_chat_ids_and_back() {
        assert_eq!(
            chat_id_from_file_name("context_history_abc.json").unwrap(),
            "abc"
        );
        assert_eq!(
            chat_id_from_file_name("context_history_a.b.json").unwrap(),
            "a.b"
        );
        assert_eq!(
            chat_id_from_file_name("history_abc.json"),
            Err(FileNameError::Shape)
        );
        assert_eq!(
            chat_id_from_file_name("context_history_abc.jsonl"),
            Err(FileNameError::Shape)
        );
        assert!(matches!(
            chat_id_from_file_name("context_history_.json"),
            Err(FileNameError::InvalidChatId(_))
        ));
        let chat = ChatId::new("x y").unwrap();
        assert_eq!(file_name(&chat).unwrap(), "context_history_x y.json");
        assert!(file_name(&ChatId::new("a/b").unwrap()).is_err());
        assert!(file_name(&ChatId::new("x".repeat(240)).unwrap()).is_err());
    }

    #[test]
    fn parse_errors_say_where_and_what() {
        match parse_history(b"[\n  {\"timestamp\": 1,\n") {
            Err(ParseError::Json { line: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
        match parse_history(b"[1, 2") {
            Err(ParseError::Json {
                line: 1, column: 5, ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_history(b"{\"a\": 1}"),
            Err(ParseError::NotAnArray { found: "an object" })
        );
        let wrong = br#"[
  {"timestamp": 1, "update_type": "message", "data": 1, "metadata": {}},
  {"timestamp": "soon", "update_type": "message", "data": 1, "metadata": {}}
]"#;
        match parse_history(wrong) {
            Err(ParseError::Entry {
                index: 1,
                line: 3,
                detail,
                ..
            }) => {
                assert!(detail.contains("invalid timestamp"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        match parse_history(br#"[{"timestamp": 1, "update_type": "message"}]"#) {
            Err(ParseError::Entry {
                index: 0, detail, ..
            }) => {
                assert!(detail.contains("missing field `data`"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_history(b""), Err(ParseError::Json { .. })));
        assert_eq!(parse_history(b"[]"), Ok(Vec::new()));
    }
}

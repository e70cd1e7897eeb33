//! The batch intent log: how a multi-record write (`put_many`, `delete_subtree`) is made
//! all-or-nothing across a crash. Pure rendering and parsing; the I/O is in the parent module.
//!
//! The batch is written to `records/.batch-intent` (temp file, fsync, rename, fsync the
//! directory: from then on it is committed), applied file by file, made durable, and removed. A
//! store that finds the file when it loads re-applies it (every operation is idempotent) before
//! reading anything, so a crash at any point leaves the whole batch or none of it.
//!
//! Format: JSON lines. The first line is `{"taskctx_fs_batch":1,"ops":N}`, then exactly `N`
//! lines, each `{"put":RECORD}` or `{"delete":"TASK_ID"}`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use taskctx_domain::{TaskId, TaskRecord};

use crate::fsutil::describe_json_error;

/// The name of the intent file inside the records directory (a dot name: never an encoded id).
pub(crate) const INTENT_FILE: &str = ".batch-intent";

const VERSION: u32 = 1;

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// Store this record (its revision already assigned).
    Put(Arc<TaskRecord>),
    /// Remove this record's file.
    Delete(TaskId),
}

impl Op {
    pub(crate) fn id(&self) -> &TaskId {
        match self {
            Self::Put(record) => &record.task_id,
            Self::Delete(id) => id,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    taskctx_fs_batch: u32,
    ops: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum OpRef<'a> {
    Put(&'a TaskRecord),
    Delete(&'a TaskId),
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum OpOwned {
    Put(Box<TaskRecord>),
    Delete(TaskId),
}

/// Renders the intent file for `ops`.
pub(crate) fn render(ops: &[Op]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    serde_json::to_writer(
        &mut out,
        &Header {
            taskctx_fs_batch: VERSION,
            ops: ops.len() as u64,
        },
    )?;
    out.push(b'\n');
    for op in ops {
        let op = match op {
            Op::Put(record) => OpRef::Put(record),
            Op::Delete(id) => OpRef::Delete(id),
        };
        serde_json::to_writer(&mut out, &op)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Parses an intent file; an error names the 1-based line and what is wrong with it.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Op>, (u64, String)> {
    // Every line ends with a newline; the empty piece after the last one is not a line.
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut lines = body.split(|&b| b == b'\n');
    let header: Header = lines
        .next()
        .ok_or_else(|| (1, "empty file".to_owned()))
        .and_then(|line| serde_json::from_slice(line).map_err(|e| (1, describe_json_error(&e))))?;
    if header.taskctx_fs_batch != VERSION {
        return Err((
            1,
            format!(
                "batch format {} is not supported (this build writes {VERSION})",
                header.taskctx_fs_batch
            ),
        ));
    }
    let mut ops = Vec::new();
    for (index, line) in lines.enumerate() {
        let number = index as u64 + 2;
        if ops.len() as u64 == header.ops {
            if line.is_empty() {
                continue;
            }
            return Err((
                number,
                "more operations than the header announces".to_owned(),
            ));
        }
        let op: OpOwned =
            serde_json::from_slice(line).map_err(|e| (number, describe_json_error(&e)))?;
        ops.push(match op {
            OpOwned::Put(record) if record.revision == 0 => {
                return Err((number, "a stored record needs a revision".to_owned()));
            }
            OpOwned::Put(record) => Op::Put(Arc::new(*record)),
            OpOwned::Delete(id) => Op::Delete(id),
        });
    }
    if (ops.len() as u64) < header.ops {
        return Err((
            header.ops.min(ops.len() as u64) + 2,
            format!(
                "the header announces {} operations but the file holds {}",
                header.ops,
                ops.len()
            ),
        ));
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskctx_testkit::fixtures::{full_record, task};

    #[test]
    fn round_trips() {
        let mut record = full_record("a/b");
        record.revision = 3;
        let ops = vec![
            Op::Put(Arc::new(record)),
            Op::Delete(task("..")),
            Op::Delete(task("x")),
        ];
        let bytes = render(&ops).unwrap();
        assert_eq!(parse(&bytes).unwrap(), ops);
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        let mut record = full_record("a");
        record.revision = 1;
        let valid = render(&[Op::Put(Arc::new(record)), Op::Delete(task("b"))]).unwrap();
        for input in crate::testing::inputs(13, 5_000, &[&valid]) {
            let _ = parse(&input);
        }
    }

    #[test]
    fn short_long_and_garbled_files_are_errors_with_a_line() {
        let ops = vec![Op::Delete(task("a")), Op::Delete(task("b"))];
        let bytes = render(&ops).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let short: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert_eq!(parse(short.as_bytes()).unwrap_err().0, 3);
        let long = format!("{text}{{\"delete\":\"c\"}}\n");
        assert_eq!(parse(long.as_bytes()).unwrap_err().0, 4);
        let garbled = text.replace("\"b\"", "7");
        assert_eq!(parse(garbled.as_bytes()).unwrap_err().0, 3);
        assert_eq!(parse(b"").unwrap_err().0, 1);
        assert!(
            parse(b"{\"taskctx_fs_batch\":9,\"ops\":0}\n")
                .unwrap_err()
                .1
                .contains("not supported")
        );
    }
}

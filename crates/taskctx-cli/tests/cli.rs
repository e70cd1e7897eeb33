//! The `taskctx` binary, run as a user runs it: exit codes, one-line errors, JSON shapes, stdin
//! appends, and the demo on a durable store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn taskctx(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskctx"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("TASKCTX_STORE")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn sled_url(dir: &Path) -> String {
    format!("sled:{}", dir.join("store.sled").display())
}

/// Asserts a failure: the exit code, and exactly one line on stderr mentioning `needle`.
fn assert_fails(output: &Output, code: i32, needle: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stderr: {}",
        stderr(output)
    );
    let err = stderr(output);
    assert_eq!(
        err.lines().count(),
        1,
        "more than one line on stderr: {err}"
    );
    assert!(err.starts_with("taskctx: error: "), "{err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn the_demo_runs_and_a_second_run_continues_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let url = sled_url(dir.path());
    let first = taskctx(&url, &["demo"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let text = stdout(&first);
    assert!(text.contains("new history"), "{text}");
    assert!(text.contains("closed at scope exit: yes"), "{text}");
    let second = taskctx(&url, &["--json", "demo"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let json: Value = serde_json::from_str(&stdout(&second)).unwrap();
    assert!(json["earlier_entries"].as_u64().unwrap() >= 10, "{json}");
    assert_eq!(json["resource_closed"], true);
    assert_eq!(json["context"]["metadata"].get("internal_notes"), None);
}

#[test]
fn history_commands_round_trip_through_a_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = sled_url(dir.path());
    let appended = taskctx(
        &url,
        &[
            "--json",
            "history",
            "append",
            "chat/1",
            "--type",
            "message",
            "--data",
            r#"{"text":"hi"}"#,
            "--metadata",
            r#"{"source":"cli"}"#,
        ],
    );
    assert!(appended.status.success(), "{}", stderr(&appended));
    let reply: Value = serde_json::from_str(&stdout(&appended)).unwrap();
    assert_eq!(reply["seq"], 0);
    for i in 0..3 {
        let out = taskctx(
            &url,
            &[
                "history",
                "append",
                "chat/1",
                "--type",
                "status",
                "--data",
                r#""same""#,
            ],
        );
        assert!(out.status.success(), "append {i}: {}", stderr(&out));
    }
    let shown = taskctx(&url, &["--json", "history", "show", "chat/1"]);
    let entries: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 4);
    for key in ["seq", "timestamp", "update_type", "data", "metadata"] {
        assert!(
            entries[0].get(key).is_some(),
            "missing {key}: {}",
            entries[0]
        );
    }
    assert_eq!(entries[0]["metadata"]["source"], "cli");
    let listed: Value =
        serde_json::from_str(&stdout(&taskctx(&url, &["--json", "history", "list"]))).unwrap();
    assert_eq!(listed[0]["chat_id"], "chat/1");
    assert_eq!(listed[0]["entries"], 4);
    let optimised = taskctx(
        &url,
        &[
            "--json",
            "history",
            "optimize",
            "chat/1",
            "--max-size",
            "1000",
        ],
    );
    let report: Value = serde_json::from_str(&stdout(&optimised)).unwrap();
    assert_eq!(report["report"]["removed_duplicates"], 2);
    let truncated = taskctx(
        &url,
        &["--json", "history", "truncate", "chat/1", "--after", "0"],
    );
    let report: Value = serde_json::from_str(&stdout(&truncated)).unwrap();
    assert_eq!(report["kept"], 0);
    let deleted = taskctx(&url, &["history", "delete", "chat/1"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert_fails(
        &taskctx(&url, &["history", "delete", "chat/1"]),
        1,
        "has no history",
    );
}

#[test]
fn append_from_stdin_prints_one_sequence_number_per_durable_update() {
    let dir = tempfile::tempdir().unwrap();
    let url = sled_url(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskctx"))
        .args(["--store", &url, "history", "append", "s", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, r#"{{"update_type": "message", "data": "one"}}"#).unwrap();
        writeln!(stdin).unwrap();
        writeln!(stdin, r#"{{"update_type": "tool", "data": {{"x": 1}}, "metadata": {{"m": 2}}, "timestamp": 5.5}}"#).unwrap();
        writeln!(stdin, r#"{{"update_type": "", "data": 1}}"#).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(stdout(&output), "0\n1\n");
    assert_fails(&output, 2, "stdin line 4");
    let shown: Value =
        serde_json::from_str(&stdout(&taskctx(&url, &["--json", "history", "show", "s"]))).unwrap();
    assert_eq!(shown[1]["timestamp"], 5.5);
    assert_eq!(shown[1]["metadata"]["m"], 2);
}

#[test]
fn usage_mistakes_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = sled_url(dir.path());
    assert_fails(
        &taskctx(
            &url,
            &[
                "history", "append", "c", "--type", "message", "--data", "{oops",
            ],
        ),
        2,
        "--data is not valid JSON",
    );
    assert_fails(
        &taskctx(&url, &["history", "show", "bad\nid"]),
        2,
        "control character",
    );
    assert_fails(&taskctx("nonsense", &["stats"]), 2, "invalid store URL");
    assert_fails(
        &taskctx(&url, &["history", "truncate", "c", "--after", "yesterday"]),
        2,
        "--after expects",
    );
    let bad_env = Command::new(env!("CARGO_BIN_EXE_taskctx"))
        .args(["--store", &url, "stats"])
        .env("AIECS_MAX_CONTEXT_SIZE", "zero")
        .output()
        .unwrap();
    assert_fails(&bad_env, 2, "AIECS_MAX_CONTEXT_SIZE=\"zero\" is invalid");
    // clap's own usage errors also exit 2.
    assert_eq!(
        taskctx(&url, &["history", "frobnicate"]).status.code(),
        Some(2)
    );
}

#[test]
fn runtime_failures_exit_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = sled_url(dir.path());
    assert_fails(
        &taskctx(&url, &["history", "show", "nobody"]),
        1,
        "has no history",
    );
    // A store held by another process is reported as locked, not as a raw I/O error.
    let holder = Command::new(env!("CARGO_BIN_EXE_taskctx"))
        .args(["--store", &url, "history", "append", "c", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the holder has the store open (it appends and prints once it has).
    let mut holder = holder;
    {
        let stdin = holder.stdin.as_mut().unwrap();
        writeln!(stdin, r#"{{"update_type": "message", "data": 1}}"#).unwrap();
        stdin.flush().unwrap();
    }
    let mut first = [0u8; 2];
    std::io::Read::read_exact(holder.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_fails(&taskctx(&url, &["stats"]), 1, "locked");
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
}

#[test]
fn stats_and_health_report_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = sled_url(dir.path());
    taskctx(
        &url,
        &["history", "append", "c", "--type", "message", "--data", "1"],
    );
    let stats: Value = serde_json::from_str(&stdout(&taskctx(&url, &["--json", "stats"]))).unwrap();
    assert_eq!(stats["history"]["chats"], 1);
    assert_eq!(stats["history"]["updates"], 1);
    let health = taskctx(&url, &["--json", "health"]);
    assert!(health.status.success(), "{}", stderr(&health));
    let report: Value = serde_json::from_str(&stdout(&health)).unwrap();
    assert_eq!(report["healthy"], true);
}

#[test]
fn aiecs_files_import_from_a_directory_and_export_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = sled_url(dir.path());
    let aiecs_dir = dir.path().join("aiecs-tasks");
    std::fs::create_dir(&aiecs_dir).unwrap();
    let history = r#"[
  {
    "timestamp": 1700000000.5,
    "update_type": "message",
    "data": "h\u00e9llo",
    "metadata": {}
  },
  {
    "timestamp": 1700000001.25,
    "update_type": "file_operation",
    "data": {"path": "a.txt", "operation": "read"},
    "metadata": {"source": "task"}
  }
]"#;
    std::fs::write(aiecs_dir.join("context_history_chat-1.json"), history).unwrap();
    std::fs::write(aiecs_dir.join("context_history_chat-2.json"), "[]").unwrap();
    std::fs::write(aiecs_dir.join("notes.txt"), "not a history").unwrap();

    let imported = taskctx(&url, &["history", "import", aiecs_dir.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let text = stdout(&imported);
    assert!(text.contains("chat `chat-1` (2 updates"), "{text}");
    // Importing again refuses to merge or overwrite, naming the chat; --replace replaces.
    assert_fails(
        &taskctx(&url, &["history", "import", aiecs_dir.to_str().unwrap()]),
        1,
        "could not be imported",
    );
    let replaced = taskctx(
        &url,
        &[
            "history",
            "import",
            "--replace",
            aiecs_dir
                .join("context_history_chat-1.json")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    assert!(stdout(&replaced).contains("replaced the old history"));

    let exported = dir.path().join("out.json");
    let out = taskctx(
        &url,
        &[
            "history",
            "export",
            "chat-1",
            "--format",
            "aiecs",
            "-o",
            exported.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&exported).unwrap()).unwrap();
    let original: Value = serde_json::from_str(history).unwrap();
    assert_eq!(written, original);
    let lines = stdout(&taskctx(
        &url,
        &["history", "export", "chat-1", "--format", "jsonl"],
    ));
    assert_eq!(lines.lines().count(), 2);
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["data"], "héllo");
    assert_fails(
        &taskctx(
            &url,
            &[
                "history",
                "import",
                dir.path().join("missing.json").to_str().unwrap(),
            ],
        ),
        2,
        "cannot read",
    );
}

#[test]
fn a_roma_dump_imports_and_its_contexts_build_identically_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let url = sled_url(dir.path());
    let dump = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/roma_dump.json");
    let imported = taskctx(&url, &["tasks", "import", dump.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(stdout(&imported).contains("imported 4 task records (1 roots)"));

    let tree = stdout(&taskctx(&url, &["tasks", "tree"]));
    assert!(tree.starts_with("root  [PLAN_DONE] WRITE"), "{tree}");
    let order: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split("root.").nth(1))
        .collect();
    assert_eq!(order.len(), 3, "{tree}");
    assert!(
        stdout(&taskctx(&url, &["tasks", "tree", "--format", "mermaid"])).starts_with("graph TD")
    );
    assert!(
        stdout(&taskctx(&url, &["tasks", "tree", "--format", "dot"])).starts_with("digraph tasks")
    );
    let shown: Value = serde_json::from_str(&stdout(&taskctx(
        &url,
        &["--json", "tasks", "show", "root.1"],
    )))
    .unwrap();
    assert_eq!(shown["task_type"], "SEARCH");
    assert_eq!(shown["parent_task_id"], "root");

    let build = |args: &[&str]| {
        let mut all = vec!["context", "build"];
        all.extend_from_slice(args);
        taskctx(&url, &all)
    };
    let first = build(&["root.3", "--type", "execution", "--budget-tokens", "600"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = build(&["root.3", "--type", "execution", "--budget-tokens", "600"]);
    assert_eq!(
        first.stdout, second.stdout,
        "context output differs between runs"
    );
    let text = stdout(&first);
    assert!(text.contains("Factorial raised 200M USD"), "{text}");
    assert!(
        text.contains("warning:"),
        "pending and invalid dependencies are warnings: {text}"
    );
    assert!(
        !text.contains("ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        "{text}"
    );

    let json: Value = serde_json::from_str(&stdout(&build(&[
        "--json",
        "root.3",
        "--type",
        "execution",
        "--budget-tokens",
        "600",
        "--max-items",
        "1",
    ])))
    .unwrap();
    for key in [
        "current_task_id",
        "current_goal",
        "current_task_type",
        "overall_project_goal",
        "parent_hierarchy",
        "items",
        "formatted",
        "omitted",
        "warnings",
        "degraded",
        "token_count",
    ] {
        assert!(
            json.get(key).is_some(),
            "AgentTaskInput lacks {key}: {json}"
        );
    }
    assert!(json["items"].as_array().unwrap().len() <= 1);
    assert!(json["token_count"].as_u64().unwrap() <= 600);

    let aggregation = stdout(&build(&["root", "--type", "aggregation"]));
    assert!(aggregation.contains("FAILED"), "{aggregation}");
    assert!(
        aggregation.contains("rate limited by the funding database"),
        "{aggregation}"
    );

    assert_fails(&build(&["root.3", "--type", "brainstorm"]), 2, "--type");
    assert_fails(&build(&["root.9", "--type", "execution"]), 1, "root.9");
    let deleted = taskctx(&url, &["tasks", "delete", "root", "--subtree"]);
    assert!(
        stdout(&deleted).contains("deleted 4 task record(s)"),
        "{}",
        stdout(&deleted)
    );
    assert_fails(&taskctx(&url, &["tasks", "show", "root"]), 1, "not found");
}

#[test]
fn a_task_dump_with_a_bad_record_names_it_and_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = sled_url(dir.path());
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(
        &file,
        "{\"task_id\":\"a\",\"goal\":\"g\",\"task_type\":\"WRITE\",\"status\":\"DONE\"}\n\
         {\"task_id\":\"b\",\"goal\":\"g\",\"task_type\":\"WRITE\",\"status\":\"FINISHED\"}\n",
    )
    .unwrap();
    assert_fails(
        &taskctx(&url, &["tasks", "import", file.to_str().unwrap()]),
        1,
        "tasks.jsonl:2",
    );
    let stats: Value = serde_json::from_str(&stdout(&taskctx(&url, &["--json", "stats"]))).unwrap();
    assert_eq!(stats["records"]["total"], 0);
}

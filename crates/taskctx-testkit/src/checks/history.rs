//! Contract checks for `HistoryStore` (SPEC R2.1, R2.3). Each `pub async fn` is one check.

use std::collections::BTreeSet;
use std::sync::Arc;

use taskctx_domain::{ChatId, ContextUpdate};

use crate::fixtures::{awkward_updates, chat, hostile_chat_ids, update, updates};
use crate::harness::{Capability, CheckResult, Harness, must, open, require};

/// `append` assigns consecutive 0-based sequence numbers and returns their range.
pub async fn history_append_assigns_positions(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let c = chat("c");
    assert_eq!(
        must("append", s.history.append(&c, &updates(0..3))).await,
        0..3
    );
    assert_eq!(
        must("append", s.history.append(&c, &updates(3..4))).await,
        3..4
    );
    assert_eq!(
        must("append", s.history.append(&c, &updates(4..9))).await,
        4..9
    );
    Ok(())
}

/// `load` returns exactly what was appended, in order, field for field.
pub async fn history_load_returns_appends_in_order(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let c = chat("c");
    must("append", s.history.append(&c, &updates(0..2))).await;
    must("append", s.history.append(&c, &updates(2..5))).await;
    assert_eq!(must("load", s.history.load(&c)).await, updates(0..5));
    Ok(())
}

/// Unusual payloads (unicode, escapes, NUL, nesting, extreme numbers, 1 MiB strings, unknown
/// update types, metadata) come back exactly as they went in.
pub async fn history_payloads_round_trip_exactly(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let c = chat("payloads");
    let batch = awkward_updates();
    must("append", s.history.append(&c, &batch)).await;
    assert_eq!(must("load", s.history.load(&c)).await, batch);
    Ok(())
}

/// A chat that was never written loads as empty and is not listed.
pub async fn history_unknown_chat_is_empty(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    assert!(
        must("load", s.history.load(&chat("nobody")))
            .await
            .is_empty()
    );
    assert!(
        must("load_since", s.history.load_since(&chat("nobody"), 3))
            .await
            .is_empty()
    );
    assert!(must("list", s.history.list()).await.is_empty());
    assert!(!must("delete", s.history.delete(&chat("nobody"))).await);
    Ok(())
}

/// An empty `append` writes nothing and does not create the chat.
pub async fn history_empty_append_is_a_no_op(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let c = chat("c");
    assert_eq!(must("append", s.history.append(&c, &[])).await, 0..0);
    assert!(must("list", s.history.list()).await.is_empty());
    must("append", s.history.append(&c, &updates(0..2))).await;
    assert_eq!(must("append", s.history.append(&c, &[])).await, 2..2);
    assert_eq!(must("load", s.history.load(&c)).await.len(), 2);
    Ok(())
}

/// `load_since(n)` returns the updates from position `n` on.
pub async fn history_load_since_returns_the_tail(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let c = chat("c");
    must("append", s.history.append(&c, &updates(0..6))).await;
    for from in 0..8u64 {
        let expected = updates(from.min(6)..6);
        assert_eq!(
            must("load_since", s.history.load_since(&c, from)).await,
            expected,
            "load_since({from})"
        );
    }
    assert!(
        must("load_since", s.history.load_since(&c, u64::MAX))
            .await
            .is_empty()
    );
    Ok(())
}

/// `replace` swaps the whole history and renumbers it; later appends continue from its end.
pub async fn history_replace_renumbers(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let c = chat("c");
    must("append", s.history.append(&c, &updates(0..10))).await;
    let kept = vec![update(2), update(7)];
    must("replace", s.history.replace(&c, &kept)).await;
    assert_eq!(must("load", s.history.load(&c)).await, kept);
    assert_eq!(
        must("append", s.history.append(&c, &updates(20..21))).await,
        2..3
    );
    assert_eq!(
        must("load_since", s.history.load_since(&c, 1)).await,
        vec![update(7), update(20)]
    );
    Ok(())
}

/// `replace` of an unknown chat creates it; with no updates it leaves an existing, empty chat.
pub async fn history_replace_creates_and_empties(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    must("replace", s.history.replace(&chat("new"), &updates(0..2))).await;
    assert_eq!(
        must("load", s.history.load(&chat("new"))).await,
        updates(0..2)
    );
    must("replace", s.history.replace(&chat("new"), &[])).await;
    assert!(must("load", s.history.load(&chat("new"))).await.is_empty());
    let listed = must("list", s.history.list()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].entries, 0);
    assert_eq!(listed[0].last_timestamp, None);
    assert_eq!(
        must("append", s.history.append(&chat("new"), &updates(5..6))).await,
        0..1
    );
    Ok(())
}

/// `list` reports every chat with its entry count and last timestamp, in byte order of ids.
pub async fn history_list_reports_chats_in_id_order(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    for (id, n) in [("b", 3u64), ("a", 1), ("B", 2), ("a/b", 4)] {
        must("append", s.history.append(&chat(id), &updates(0..n))).await;
    }
    let listed = must("list", s.history.list()).await;
    let ids: Vec<&str> = listed.iter().map(|c| c.chat_id.as_str()).collect();
    assert_eq!(ids, vec!["B", "a", "a/b", "b"]);
    let b = &listed[3];
    assert_eq!(b.entries, 3);
    assert_eq!(b.last_timestamp, Some(update(2).timestamp));
    Ok(())
}

/// `delete` removes one chat's history and reports whether it existed.
pub async fn history_delete_removes_only_that_chat(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    must("append", s.history.append(&chat("x"), &updates(0..2))).await;
    must("append", s.history.append(&chat("y"), &updates(0..3))).await;
    assert!(must("delete", s.history.delete(&chat("x"))).await);
    assert!(!must("delete", s.history.delete(&chat("x"))).await);
    assert!(must("load", s.history.load(&chat("x"))).await.is_empty());
    assert_eq!(must("load", s.history.load(&chat("y"))).await.len(), 3);
    assert_eq!(
        must("append", s.history.append(&chat("x"), &updates(9..10))).await,
        0..1
    );
    Ok(())
}

/// `stats` counts chats and updates.
pub async fn history_stats_count_chats_and_updates(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let empty = must("stats", s.history.stats()).await;
    assert_eq!((empty.chats, empty.updates), (0, 0));
    must("append", s.history.append(&chat("x"), &updates(0..2))).await;
    must("append", s.history.append(&chat("y"), &updates(0..3))).await;
    let stats = must("stats", s.history.stats()).await;
    assert_eq!((stats.chats, stats.updates), (2, 5));
    Ok(())
}

/// Ids that break naive file-name or key schemes (traversal, separators, case twins, look-alikes,
/// the longest id) are stored separately and listed exactly as given.
pub async fn history_hostile_ids_are_distinct_and_exact(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let ids = hostile_chat_ids();
    for (n, id) in ids.iter().enumerate() {
        must(
            "append",
            s.history.append(id, &updates(n as u64..n as u64 + 1)),
        )
        .await;
    }
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(
            must("load", s.history.load(id)).await,
            vec![update(n as u64)],
            "history of {id:?}"
        );
    }
    let listed: BTreeSet<ChatId> = must("list", s.history.list())
        .await
        .into_iter()
        .map(|c| c.chat_id)
        .collect();
    assert_eq!(listed, ids.iter().cloned().collect::<BTreeSet<_>>());
    Ok(())
}

/// Many tasks appending to one chat at once: every update is stored exactly once, each append's
/// range is where its updates really are, and the ranges tile the history.
pub async fn history_concurrent_appends_to_one_chat(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let c = chat("shared");
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let store = Arc::clone(&s.history);
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut ranges = Vec::new();
            for i in 0..10u64 {
                let n = writer * 1000 + i * 2;
                let batch = updates(n..n + 2);
                let range = must("append", store.append(&c, &batch)).await;
                ranges.push((range, batch));
            }
            ranges
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(
            task.await
                .unwrap_or_else(|e| panic!("writer task failed: {e}")),
        );
    }
    let history = must("load", s.history.load(&c)).await;
    assert_eq!(history.len(), 160);
    let mut covered = vec![false; history.len()];
    for (range, batch) in &all {
        let slice = &history[range.start as usize..range.end as usize];
        assert_eq!(slice, batch.as_slice(), "append returned {range:?}");
        for seq in range.clone() {
            assert!(!covered[seq as usize], "sequence {seq} assigned twice");
            covered[seq as usize] = true;
        }
    }
    assert!(covered.iter().all(|c| *c));
    Ok(())
}

/// Many chats written at once do not disturb each other.
pub async fn history_concurrent_appends_to_many_chats(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let mut tasks = Vec::new();
    for writer in 0..16u64 {
        let store = Arc::clone(&s.history);
        tasks.push(tokio::spawn(async move {
            let c = chat(&format!("chat-{writer}"));
            for i in 0..8u64 {
                must("append", store.append(&c, &[update(writer * 100 + i)])).await;
            }
        }));
    }
    for task in tasks {
        task.await
            .unwrap_or_else(|e| panic!("writer task failed: {e}"));
    }
    for writer in 0..16u64 {
        let expected: Vec<ContextUpdate> = (0..8).map(|i| update(writer * 100 + i)).collect();
        assert_eq!(
            must("load", s.history.load(&chat(&format!("chat-{writer}")))).await,
            expected
        );
    }
    assert_eq!(must("list", s.history.list()).await.len(), 16);
    Ok(())
}

/// Readers racing a `replace` see the old history or the new one, never a mix.
pub async fn history_replace_is_atomic_for_readers(h: &dyn Harness) -> CheckResult {
    let s = open(h).await;
    let c = chat("swap");
    let old = updates(0..40);
    let new = updates(100..125);
    must("append", s.history.append(&c, &old)).await;
    let store = Arc::clone(&s.history);
    let (old_r, new_r, c_r) = (old.clone(), new.clone(), c.clone());
    let reader = tokio::spawn(async move {
        for _ in 0..200 {
            let seen = must("load", store.load(&c_r)).await;
            assert!(
                seen == old_r || seen == new_r,
                "saw a mix of {} entries",
                seen.len()
            );
            tokio::task::yield_now().await;
        }
    });
    for round in 0..20 {
        let next = if round % 2 == 0 { &new } else { &old };
        must("replace", s.history.replace(&c, next)).await;
        tokio::task::yield_now().await;
    }
    reader
        .await
        .unwrap_or_else(|e| panic!("reader failed: {e}"));
    Ok(())
}

/// Everything written is there after every handle is dropped and the store is opened again.
pub async fn history_reopen_keeps_everything(h: &dyn Harness) -> CheckResult {
    require(h, Capability::Persistent)?;
    {
        let s = open(h).await;
        must("append", s.history.append(&chat("a"), &updates(0..3))).await;
        must("append", s.history.append(&chat("a"), &updates(3..5))).await;
        must("append", s.history.append(&chat("b"), &awkward_updates())).await;
        must("replace", s.history.replace(&chat("c"), &updates(7..8))).await;
        must("append", s.history.append(&chat("d"), &updates(0..1))).await;
        must("delete", s.history.delete(&chat("d"))).await;
    }
    let s = open(h).await;
    assert_eq!(
        must("load", s.history.load(&chat("a"))).await,
        updates(0..5)
    );
    assert_eq!(
        must("load", s.history.load(&chat("b"))).await,
        awkward_updates()
    );
    assert_eq!(
        must("load", s.history.load(&chat("c"))).await,
        updates(7..8)
    );
    assert!(must("load", s.history.load(&chat("d"))).await.is_empty());
    assert_eq!(
        must("append", s.history.append(&chat("a"), &updates(5..6))).await,
        5..6
    );
    let ids: Vec<String> = must("list", s.history.list())
        .await
        .into_iter()
        .map(|c| c.chat_id.into_string())
        .collect();
    assert_eq!(ids, vec!["a", "b", "c"]);
    Ok(())
}

//! Task-context scopes and resources (SPEC R5.4, R5.5): closed exactly once, in reverse order, on
//! success, error, panic and cancellation; every close error reported; sync and async scopes with
//! the same semantics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod context_common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use context_common::{Instrumented, chat};
use serde_json::json;
use taskctx_app::context::{
    AddResourceError, ContextError, ContextInit, Persistence, ScopeError, TaskContext, on_close,
    on_close_async, task_context, task_context_blocking,
};
use taskctx_domain::UpdateType;
use taskctx_store::HistoryStore;

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A resource with an async close that really awaits before recording itself.
fn async_resource(log: &Log, name: &'static str) -> impl taskctx_app::context::Resource {
    let log = log.clone();
    on_close_async("AsyncThing", move || async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        log.lock().unwrap().push(name.to_owned());
        Ok::<_, std::io::Error>(())
    })
}

fn sync_resource(log: &Log, name: &'static str) -> impl taskctx_app::context::Resource {
    let log = log.clone();
    on_close("SyncThing", move || {
        log.lock().unwrap().push(name.to_owned());
        Ok::<_, std::io::Error>(())
    })
}

fn init(id: &str) -> ContextInit {
    ContextInit::for_chat(chat(id))
}

/// AIECS defect: `async def close` was never awaited, so async resources were never closed.
#[tokio::test]
async fn async_closes_really_run_in_reverse_order_exactly_once() {
    let store = Instrumented::new();
    let closed = log();
    let value = task_context(init("c"), store.clone(), |ctx| {
        let closed = closed.clone();
        async move {
            ctx.add_resource("first", async_resource(&closed, "first"))
                .await
                .unwrap();
            ctx.add_resource("second", sync_resource(&closed, "second"))
                .await
                .unwrap();
            ctx.add_resource("third", async_resource(&closed, "third"))
                .await
                .unwrap();
            Ok::<_, ContextError>("done")
        }
    })
    .await
    .unwrap();
    assert_eq!(value, "done");
    assert_eq!(entries(&closed), vec!["third", "second", "first"]);
    let history = store.load(&chat("c")).await.unwrap();
    let resources: Vec<_> = history
        .iter()
        .filter(|u| u.update_type == UpdateType::RESOURCE)
        .map(|u| (u.data["name"].clone(), u.metadata["type"].clone()))
        .collect();
    assert_eq!(resources.len(), 3);
    assert_eq!(resources[0], (json!("first"), json!("AsyncThing")));
}

/// AIECS defect: the async helper never saw the body's exception.
#[tokio::test]
async fn a_failing_body_is_recorded_closes_resources_and_is_returned() {
    let store = Instrumented::new();
    let closed = log();
    let result: Result<(), _> = task_context(init("c"), store.clone(), |ctx| {
        let closed = closed.clone();
        async move {
            ctx.add_resource("db", async_resource(&closed, "db"))
                .await
                .unwrap();
            Err::<(), _>("model refused the request")
        }
    })
    .await;
    match result {
        Err(ScopeError::Body { error, cleanup }) => {
            assert_eq!(error, "model refused the request");
            assert!(cleanup.is_none());
        }
        other => panic!("expected a body error, got {other:?}"),
    }
    assert_eq!(entries(&closed), vec!["db"]);
    let history = store.load(&chat("c")).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.update_type, UpdateType::ERROR);
    assert_eq!(last.data["message"], "model refused the request");
}

#[tokio::test]
async fn a_panicking_body_still_cleans_up_and_the_panic_propagates() {
    let store = Instrumented::new();
    let closed = log();
    let store_for_scope: Arc<dyn HistoryStore> = store.clone();
    let closed_in = closed.clone();
    let outcome = tokio::spawn(async move {
        task_context(init("c"), store_for_scope, |ctx| async move {
            ctx.add_resource("db", async_resource(&closed_in, "db"))
                .await
                .unwrap();
            if ctx.history_len() > 0 {
                panic!("tool crashed");
            }
            Ok::<(), ContextError>(())
        })
        .await
    })
    .await;
    let panic = outcome.unwrap_err();
    assert!(panic.is_panic());
    assert_eq!(entries(&closed), vec!["db"]);
    let history = store.load(&chat("c")).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.update_type, UpdateType::ERROR);
    assert_eq!(last.data["message"], "tool crashed");
    assert_eq!(last.data["kind"], "panic");
}

#[tokio::test]
async fn cancelling_the_scope_closes_resources_and_saves_buffered_updates() {
    let store = Instrumented::new();
    let closed = log();
    let store_for_scope: Arc<dyn HistoryStore> = store.clone();
    let closed_in = closed.clone();
    let scope = tokio::spawn(async move {
        TaskContext::builder(init("c"))
            .store(store_for_scope)
            .persistence(Persistence::Buffered)
            .scope(|ctx| async move {
                ctx.add_resource("db", async_resource(&closed_in, "db"))
                    .await
                    .unwrap();
                ctx.add_context_update(UpdateType::MESSAGE, json!("before cancel"), None)
                    .await
                    .unwrap();
                std::future::pending::<()>().await;
                Ok::<(), ContextError>(())
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    scope.abort();
    assert!(scope.await.unwrap_err().is_cancelled());
    for _ in 0..100 {
        if !entries(&closed).is_empty() && store.appends.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(entries(&closed), vec!["db"]);
    let history = store.load(&chat("c")).await.unwrap();
    assert!(history.iter().any(|u| u.data == json!("before cancel")));
}

#[tokio::test]
async fn every_close_error_is_reported_and_none_stops_the_others() {
    let store = Instrumented::new();
    let closed = log();
    let result = task_context(init("c"), store.clone(), |ctx| {
        let closed = closed.clone();
        async move {
            ctx.add_resource("ok-first", sync_resource(&closed, "ok-first"))
                .await
                .unwrap();
            ctx.add_resource(
                "failing",
                on_close("Conn", || {
                    Err::<(), _>(std::io::Error::other("connection reset"))
                }),
            )
            .await
            .unwrap();
            ctx.add_resource(
                "panicking",
                on_close_async("Client", || async {
                    if true {
                        panic!("close blew up");
                    }
                    Ok::<(), std::io::Error>(())
                }),
            )
            .await
            .unwrap();
            ctx.add_resource("ok-last", sync_resource(&closed, "ok-last"))
                .await
                .unwrap();
            Ok::<_, ContextError>(())
        }
    })
    .await;
    let cleanup = match result {
        Err(ScopeError::Cleanup(cleanup)) => cleanup,
        other => panic!("expected a cleanup error, got {other:?}"),
    };
    assert_eq!(entries(&closed), vec!["ok-last", "ok-first"]);
    let failed: Vec<&str> = cleanup
        .close_errors
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(failed, vec!["panicking", "failing"]);
    assert!(
        cleanup.close_errors[0]
            .error
            .to_string()
            .contains("close blew up")
    );
    assert!(
        cleanup.close_errors[1]
            .error
            .to_string()
            .contains("connection reset")
    );
    assert!(cleanup.save_error.is_none());
    assert!(cleanup.to_string().contains("connection reset"));
}

#[tokio::test]
async fn a_failed_final_save_is_reported_not_only_logged() {
    let store = Instrumented::new();
    let result = TaskContext::builder(init("c"))
        .store(store.clone())
        .persistence(Persistence::Buffered)
        .scope(|ctx| {
            let store = store.clone();
            async move {
                ctx.add_context_update(UpdateType::MESSAGE, json!(1), None)
                    .await
                    .unwrap();
                store.fail_writes(true);
                Ok::<_, ContextError>(())
            }
        })
        .await;
    match result {
        Err(ScopeError::Cleanup(cleanup)) => {
            let save = cleanup.save_error.expect("a save error");
            assert!(save.to_string().contains("disk full"), "{save}");
        }
        other => panic!("expected a cleanup error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_second_resource_under_one_name_closes_the_first() {
    let closed = log();
    let ctx = TaskContext::detached(init("c"));
    ctx.add_resource("client", sync_resource(&closed, "old"))
        .await
        .unwrap();
    ctx.add_resource("client", sync_resource(&closed, "new"))
        .await
        .unwrap();
    assert_eq!(entries(&closed), vec!["old"]);
    assert_eq!(ctx.resource_names(), vec!["client"]);
    let err = {
        ctx.add_resource(
            "flaky",
            on_close("X", || Err::<(), _>(std::io::Error::other("stuck"))),
        )
        .await
        .unwrap();
        ctx.add_resource("flaky", sync_resource(&closed, "replacement"))
            .await
            .unwrap_err()
    };
    assert!(
        matches!(err, AddResourceError::ReplacedCloseFailed(_)),
        "{err:?}"
    );
    assert_eq!(ctx.resource_names(), vec!["client", "flaky"]);
    ctx.close().await.unwrap();
    assert_eq!(entries(&closed), vec!["old", "replacement", "new"]);
    // Closed exactly once: a second close finds nothing left.
    ctx.close().await.unwrap();
    assert_eq!(entries(&closed).len(), 3);
}

/// AIECS defect: the sync `with` closed resources but never saved; here both scopes are one.
#[test]
fn the_blocking_scope_has_the_same_semantics() {
    let store = Instrumented::new();
    let closed = log();
    let result: Result<(), _> = task_context_blocking(init("sync"), store.clone(), |ctx| {
        ctx.add_resource("conn", async_resource(&closed, "conn"))
            .unwrap();
        ctx.add_resource("file", sync_resource(&closed, "file"))
            .unwrap();
        ctx.add_context_update(UpdateType::MESSAGE, json!("from sync code"), None)
            .unwrap();
        ctx.track_file_operation("out.csv", "write", "task")
            .unwrap();
        Err("sync body failed")
    });
    assert!(matches!(result, Err(ScopeError::Body { .. })));
    assert_eq!(entries(&closed), vec!["file", "conn"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let history = runtime.block_on(store.load(&chat("sync"))).unwrap();
    assert!(history.iter().any(|u| u.data == json!("from sync code")));
    assert_eq!(history.last().unwrap().update_type, UpdateType::ERROR);

    // A panic in the blocking body also cleans up, then propagates.
    let closed_on_panic = log();
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        let _ = task_context_blocking(init("sync-panic"), store.clone(), |ctx| {
            ctx.add_resource("conn", sync_resource(&closed_on_panic, "conn"))
                .unwrap();
            panic!("sync panic");
            #[allow(unreachable_code)]
            Ok::<(), ContextError>(())
        });
    }));
    assert!(panicked.is_err());
    assert_eq!(entries(&closed_on_panic), vec!["conn"]);
    let history = runtime.block_on(store.load(&chat("sync-panic"))).unwrap();
    assert_eq!(history.last().unwrap().data["message"], "sync panic");
}

#[tokio::test]
async fn the_blocking_scope_refuses_to_block_an_async_runtime() {
    let store = Instrumented::new();
    let result = task_context_blocking(init("c"), store, |_| Ok::<_, ContextError>(()));
    match result {
        Err(ScopeError::Open(ContextError::BlockingInsideRuntime)) => {}
        other => panic!("expected BlockingInsideRuntime, got {other:?}"),
    }
}

#[tokio::test]
async fn dropping_an_unclosed_context_closes_its_resources() {
    let closed = log();
    let count = Arc::new(AtomicUsize::new(0));
    {
        let ctx = TaskContext::detached(init("c"));
        let count = count.clone();
        ctx.add_resource(
            "a",
            on_close("A", move || {
                count.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            }),
        )
        .await
        .unwrap();
        ctx.add_resource("b", async_resource(&closed, "b"))
            .await
            .unwrap();
    }
    for _ in 0..100 {
        if count.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(entries(&closed), vec!["b"]);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

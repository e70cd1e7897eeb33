"""Times the SPEC §8 AIECS workloads on the original Python code (aiecs 2.2.0).

Run by `cargo xtask bench`:

    python3 aiecs_baseline.py AIECS_WHEEL OUT_JSON [--quick]

Only `aiecs/domain/task/task_context.py` is taken from the wheel (next to it, as
`task_context.py`). It needs only the standard library, so it is loaded on its own with importlib
(importing the `aiecs` package would pull in its heavy dependencies). Every workload mirrors the Rust bench in
`crates/taskctx/benches/targets.rs` (same update shape, same sizes); `docs/benchmarks.md` defines
them. Each figure is the median of several runs (`--quick`: fewer). Scaling points that would take
the original too long are skipped and listed under "skipped" with the reason.
"""

import asyncio
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import zipfile

N = 100_000


def data(i, distinct=None):
    """The payload of update i: a chat message; `distinct` folds it onto fewer values."""
    k = i if distinct is None else i % distinct
    return f"message number {k}"


def load_module(wheel):
    path = os.path.join(os.path.dirname(os.path.abspath(wheel)), "task_context.py")
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("aiecs/domain/task/task_context.py")
    with open(path, "wb") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("aiecs_task_context", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_time(fn, runs, setup=None):
    """Median wall time (s) of `fn(state)` over `runs` runs; `setup()` runs untimed before each."""
    times = []
    for _ in range(runs):
        state = setup() if setup else None
        t0 = time.perf_counter()
        fn(state)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fresh_context(tc, task_dir, chat, updates=None):
    ctx = tc.TaskContext({"chat_id": chat}, task_dir=task_dir)
    if updates is not None:
        ctx.context_history = list(updates)
    return ctx


def make_updates(tc, n, distinct=None):
    now = time.time()
    return [tc.ContextUpdate(now + i * 1e-6, "message", data(i, distinct), {}) for i in range(n)]


def save(ctx):
    asyncio.run(ctx._save_context_history())


def a1(tc, task_dir, runs):
    def setup():
        return fresh_context(tc, task_dir, "a1"), [data(i) for i in range(N)]

    def run(state):
        ctx, payloads = state
        for d in payloads:
            ctx.add_context_update("message", d)

    return median_time(run, runs, setup) / N


def optimise_time(tc, task_dir, n, runs):
    base = make_updates(tc, n, distinct=n // 2)
    ctx = fresh_context(tc, task_dir, "opt")

    def setup():
        ctx.context_history = list(base)
        return ctx

    # A budget no history reaches: only deduplication removes entries (50 % of them).
    t = median_time(lambda c: c.optimize_context(max_size=10**15), runs, setup)
    assert len(ctx.context_history) == n // 2, len(ctx.context_history)
    return t


def save_time(tc, task_dir, n, runs):
    ctx = fresh_context(tc, task_dir, f"save-{n}", make_updates(tc, n))
    return median_time(lambda _: save(ctx), runs)


def load_time(tc, task_dir, n, runs):
    chat = f"load-{n}"
    ctx = fresh_context(tc, task_dir, chat, make_updates(tc, n))
    save(ctx)

    def run(_):
        loaded = tc.TaskContext({"chat_id": chat}, task_dir=task_dir)
        assert len(loaded.context_history) == n

    return median_time(run, runs)


def a5(tc, task_dir, n=2000):
    """n x (add + save) on one context; returns total seconds and per-operation seconds."""
    ctx = fresh_context(tc, task_dir, "a5")
    per_op = []

    async def body():
        for i in range(n):
            t0 = time.perf_counter()
            ctx.add_context_update("message", data(i))
            await ctx._save_context_history()
            per_op.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    asyncio.run(body())
    total = time.perf_counter() - t0
    tenth = n // 10
    first, last = sum(per_op[:tenth]), sum(per_op[-tenth:])
    return total, last / first


def a6_run(tc, task_dir, contexts=10_000, updates=10):
    kept = []
    for c in range(contexts):
        ctx = tc.TaskContext({"chat_id": f"a6-{c}"}, task_dir=task_dir)
        for j in range(updates):
            ctx.add_context_update("message", data(c * updates + j))
        kept.append(ctx)
    return kept


def a6(tc, task_dir, runs):
    t = median_time(lambda _: a6_run(tc, task_dir), runs)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = a6_run(tc, task_dir)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_context = (after - before) / len(kept)
    del kept
    return t, per_context


def main():
    path, out = sys.argv[1], sys.argv[2]
    quick = "--quick" in sys.argv[3:]
    runs = 3 if quick else 5
    tc = load_module(path)
    # The original calls logger.debug on every update; as in a default deployment (root logger at
    # WARNING) nothing is emitted, but the f-string is still built.
    task_dir = tempfile.mkdtemp(prefix="aiecs-bench-")
    results = {}
    skipped = []
    try:
        results["A1"] = {"per_update_s": a1(tc, task_dir, runs)}
        results["A2"] = {"s": optimise_time(tc, task_dir, N, runs)}
        results["A3"] = {"s": save_time(tc, task_dir, N, runs)}
        results["A4"] = {"s": load_time(tc, task_dir, N, runs)}
        total, ratio = a5(tc, task_dir)
        results["A5"] = {"s": total, "last_to_first_tenth": ratio}
        t, per_context = a6(tc, task_dir, runs)
        results["A6"] = {"s": t, "bytes_per_context": per_context}

        sizes = [1_000, 10_000, 100_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
        scaling = {"save": {}, "load": {}, "optimise": {}, "add": {}}
        for n in sizes:
            r = 1 if n >= 1_000_000 else (2 if quick else 3)
            scaling["add"][n] = a1_scaled(tc, task_dir, n, r)
            scaling["save"][n] = save_time(tc, task_dir, n, r)
            scaling["load"][n] = load_time(tc, task_dir, n, r)
            scaling["optimise"][n] = optimise_time(tc, task_dir, n, r)
        if quick:
            skipped.append("1M-update scaling points: left out by --quick")
        results["scaling"] = scaling
    finally:
        shutil.rmtree(task_dir, ignore_errors=True)
    results["skipped"] = skipped
    results["python"] = platform.python_version()
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


def a1_scaled(tc, task_dir, n, runs):
    def setup():
        return fresh_context(tc, task_dir, "add"), [data(i) for i in range(n)]

    def run(state):
        ctx, payloads = state
        for d in payloads:
            ctx.add_context_update("message", d)

    return median_time(run, runs, setup)


if __name__ == "__main__":
    main()

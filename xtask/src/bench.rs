//! `cargo xtask bench`: the SPEC §8 targets, measured on taskctx and on the original AIECS code
//! in one run, printed as one table with ratios, and written with the machine's description and
//! the scaling plots into `docs/benchmarks.md` and `docs/benchmarks/`.
//!
//! Steps: download the `aiecs==2.2.0` wheel once into `target/aiecs/` (pip), time the original
//! with `xtask/bench/aiecs_baseline.py`, run the `targets` and `memory` benches of the `taskctx`
//! crate, read criterion's medians (`target/criterion/**/new/estimates.json`) and the benches'
//! own JSON (`target/taskctx-bench/`), then report. When pip, PyPI or Python is unavailable the
//! original's column says "not run" instead of failing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::root;

const AIECS_WHEEL: &str = "aiecs-2.2.0-py3-none-any.whl";
const RESULTS_START: &str = "<!-- bench:results:start -->";
const RESULTS_END: &str = "<!-- bench:results:end -->";
const MACHINE_START: &str = "<!-- bench:machine:start -->";
const MACHINE_END: &str = "<!-- bench:machine:end -->";

struct Options {
    quick: bool,
    python: bool,
    /// Report the results of the last run again (table, docs, plots) without measuring.
    report_only: bool,
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut options = Options {
        quick: false,
        python: true,
        report_only: false,
    };
    for arg in args {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--no-original" => options.python = false,
            "--report-only" => options.report_only = true,
            other => bail!(
                "bench: unknown argument `{other}` (expected --quick, --no-original, --report-only)"
            ),
        }
    }
    let target = target_dir();
    let out = target.join("taskctx-bench");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let criterion_dir = target.join("criterion");
    let run_file = out.join("run.json");
    let (machine, quick, elapsed, original) = if options.report_only {
        let run = read_json(&run_file)?;
        let original = match read_json(&out.join("aiecs.json")) {
            Ok(value) => Original::Ran(value),
            Err(e) => Original::NotRun(format!("{e:#}")),
        };
        (
            Machine::from_json(&run["machine"]),
            run["quick"].as_bool().unwrap_or(false),
            run["elapsed_s"].as_f64().unwrap_or(0.0),
            original,
        )
    } else {
        let started = Instant::now();
        let machine = Machine::describe();
        let original = measure(&options, &target, &out, &criterion_dir)?;
        let elapsed = started.elapsed().as_secs_f64();
        let run = serde_json::json!({
            "machine": machine.to_json(),
            "quick": options.quick,
            "elapsed_s": elapsed,
        });
        fs::write(&run_file, run.to_string())
            .with_context(|| format!("writing {}", run_file.display()))?;
        (machine, options.quick, elapsed, original)
    };

    let results = Results {
        criterion: read_criterion(&criterion_dir)?,
        extras: read_json(&out.join("extras.json"))?,
        memory: read_json(&out.join("memory.json"))?,
        original,
    };
    let rows = rows(&results);
    let table = render_text(&rows);
    println!("\n{}", machine.one_line());
    println!("{}", results.original.status_line());
    println!("\n{table}");
    println!(
        "cargo xtask bench{} took {:.0} s",
        if quick { " --quick" } else { "" },
        elapsed
    );

    let docs = root().join("docs");
    let plots = docs.join("benchmarks");
    fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    plot::history(&plots.join("history-scaling.svg"), &results)?;
    plot::store(&plots.join("store-scaling.svg"), &results)?;
    let markdown = render_markdown(&rows, &results, &machine, quick, elapsed);
    write_between(
        &docs.join("benchmarks.md"),
        MACHINE_START,
        MACHINE_END,
        &machine.markdown(),
    )?;
    write_between(
        &docs.join("benchmarks.md"),
        RESULTS_START,
        RESULTS_END,
        &markdown,
    )?;
    println!("wrote docs/benchmarks.md and docs/benchmarks/{{history,store}}-scaling.svg");
    Ok(())
}

/// Times the original and runs both benches; the original's figures or why there are none.
fn measure(
    options: &Options,
    target: &Path,
    out: &Path,
    criterion_dir: &Path,
) -> anyhow::Result<Original> {
    let previous = out.join("aiecs.json");
    if previous.exists() {
        fs::remove_file(&previous).with_context(|| format!("removing {}", previous.display()))?;
    }
    let original = if options.python {
        run_original(target, out, options.quick)
    } else {
        Original::NotRun("--no-original".to_owned())
    };

    // Stale results of an earlier run must not stand in for a bench that did not run now, and
    // stores an interrupted run left behind only take disk space.
    for stale in [
        criterion_dir.to_path_buf(),
        target.join("bench-scratch"),
        out.join("extras.json"),
        out.join("memory.json"),
    ] {
        if stale.is_dir() {
            fs::remove_dir_all(&stale).with_context(|| format!("removing {}", stale.display()))?;
        } else if stale.exists() {
            fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    let out_str = out.display().to_string();
    let mut env = vec![("TASKCTX_BENCH_OUT", out_str.as_str())];
    if options.quick {
        env.push(("TASKCTX_BENCH_QUICK", "1"));
    }
    cargo_env(&["bench", "-p", "taskctx", "--bench", "targets"], &env)?;
    cargo_env(&["bench", "-p", "taskctx", "--bench", "memory"], &env)?;

    Ok(original)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Runs cargo in the workspace root like [`crate::cargo`], with extra environment variables.
fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    println!("\n==> cargo {}", args.join(" "));
    let started = Instant::now();
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    println!(
        "<== cargo {} ({:.1}s)",
        args.first().copied().unwrap_or(""),
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The original's figures, or why there are none.
enum Original {
    Ran(Value),
    NotRun(String),
}

impl Original {
    fn get(&self, pointer: &str) -> Option<f64> {
        match self {
            Original::Ran(value) => value.pointer(pointer).and_then(Value::as_f64),
            Original::NotRun(_) => None,
        }
    }

    fn status_line(&self) -> String {
        match self {
            Original::Ran(value) => format!(
                "original: AIECS 2.2.0 `task_context.py` on Python {}",
                value["python"].as_str().unwrap_or("?")
            ),
            Original::NotRun(why) => format!("original: not run ({why})"),
        }
    }
}

/// Downloads the wheel if needed and times the original; any failure becomes "not run".
fn run_original(target: &Path, out: &Path, quick: bool) -> Original {
    let python = std::env::var("TASKCTX_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let dir = target.join("aiecs");
    let wheel = dir.join(AIECS_WHEEL);
    if !wheel.exists() {
        println!(
            "\n==> downloading aiecs==2.2.0 (once) into {}",
            dir.display()
        );
        let status = Command::new(&python)
            .args(["-m", "pip", "download", "aiecs==2.2.0", "--no-deps", "-d"])
            .arg(&dir)
            .status();
        match status {
            Ok(s) if s.success() && wheel.exists() => {}
            Ok(s) => {
                let why = format!(
                    "`{python} -m pip download aiecs==2.2.0` failed ({s}); is PyPI reachable?"
                );
                eprintln!("xtask: {why} The original's column will say \"not run\".");
                return Original::NotRun(why);
            }
            Err(e) => {
                let why = format!("cannot run `{python}`: {e}");
                eprintln!("xtask: {why} The original's column will say \"not run\".");
                return Original::NotRun(why);
            }
        }
    }
    let script = root().join("xtask/bench/aiecs_baseline.py");
    let json = out.join("aiecs.json");
    println!(
        "\n==> timing the original (AIECS 2.2.0) with {}{}",
        script.display(),
        if quick { " --quick" } else { "" }
    );
    let started = Instant::now();
    let mut command = Command::new(&python);
    command.arg(&script).arg(&wheel).arg(&json);
    if quick {
        command.arg("--quick");
    }
    let status = command.status();
    println!("<== original ({:.1}s)", started.elapsed().as_secs_f64());
    match status {
        Ok(s) if s.success() => match read_json(&json) {
            Ok(value) => Original::Ran(value),
            Err(e) => Original::NotRun(format!("{e:#}")),
        },
        Ok(s) => Original::NotRun(format!("the baseline script failed ({s})")),
        Err(e) => Original::NotRun(format!("cannot run `{python}`: {e}")),
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Criterion's median (seconds per iteration) of every bench, keyed `group/bench`.
fn read_criterion(dir: &Path) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut medians = BTreeMap::new();
    let groups = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for group in groups {
        let group = group?.path();
        let Ok(benches) = fs::read_dir(&group) else {
            continue;
        };
        for bench in benches {
            let bench = bench?.path();
            let estimates = bench.join("new/estimates.json");
            if !estimates.exists() {
                continue;
            }
            let value = read_json(&estimates)?;
            let Some(ns) = value
                .pointer("/median/point_estimate")
                .and_then(Value::as_f64)
            else {
                bail!("{} has no median", estimates.display());
            };
            let name = |p: &Path| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            medians.insert(format!("{}/{}", name(&group), name(&bench)), ns * 1e-9);
        }
    }
    Ok(medians)
}

/// Everything one run measured.
pub(crate) struct Results {
    criterion: BTreeMap<String, f64>,
    extras: Value,
    memory: Value,
    original: Original,
}

impl Results {
    fn bench(&self, key: &str) -> Option<f64> {
        self.criterion.get(key).copied()
    }

    fn extra(&self, pointer: &str) -> Option<f64> {
        self.extras.pointer(pointer).and_then(Value::as_f64)
    }

    /// A scaling series: size → seconds.
    pub(crate) fn series(&self, family: &str, name: &str) -> Vec<(f64, f64)> {
        series_of(self.extras.get(family).and_then(|f| f.get(name)))
    }

    /// A scaling series of the original.
    pub(crate) fn original_series(&self, name: &str) -> Vec<(f64, f64)> {
        match &self.original {
            Original::Ran(value) => series_of(value.pointer(&format!("/scaling/{name}"))),
            Original::NotRun(_) => Vec::new(),
        }
    }
}

fn series_of(value: Option<&Value>) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(n, s)| Some((n.parse::<f64>().ok()?, s.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// One line of the results table.
struct Row {
    id: &'static str,
    workload: String,
    backend: &'static str,
    original: String,
    taskctx: String,
    ratio: String,
    target: String,
    met: &'static str,
}

const N: f64 = 100_000.0;

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "—",
    }
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "—".to_owned(), |r| format!("{r:.1}×"))
}

pub(crate) fn time_text(seconds: f64) -> String {
    let abs = seconds.abs();
    if abs >= 1.0 {
        format!("{seconds:.2} s")
    } else if abs >= 1e-3 {
        format!("{:.1} ms", seconds * 1e3)
    } else if abs >= 1e-6 {
        format!("{:.2} µs", seconds * 1e6)
    } else {
        format!("{:.0} ns", seconds * 1e9)
    }
}

fn opt_time(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "not run".to_owned(), time_text)
}

/// A row whose target is "≥ `factor`× faster than the original" (`judged` false: reported only).
fn faster_row(
    id: &'static str,
    workload: &str,
    backend: &'static str,
    original: Option<f64>,
    ours: Option<f64>,
    factor: f64,
    judged: bool,
) -> Row {
    let ratio = original.zip(ours).map(|(o, t)| o / t);
    Row {
        id,
        workload: workload.to_owned(),
        backend,
        original: opt_time(original),
        taskctx: opt_time(ours),
        ratio: ratio_text(ratio),
        target: if judged {
            format!("≥ {factor:.0}×")
        } else {
            "(reported)".to_owned()
        },
        met: if judged {
            met(ratio.map(|x| x >= factor))
        } else {
            "—"
        },
    }
}

/// A row against ROMA's SPEC §8 figure `spec`.
fn roma_row(
    id: &'static str,
    workload: &str,
    backend: &'static str,
    spec: f64,
    ours: Option<f64>,
    target: String,
    ok: Option<bool>,
) -> Row {
    Row {
        id,
        workload: workload.to_owned(),
        backend,
        original: format!("{} (SPEC)", time_text(spec)),
        taskctx: opt_time(ours),
        ratio: ratio_text(ours.map(|t| spec / t)),
        target,
        met: met(ok),
    }
}

fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let aiecs = |p: &str| r.original.get(p);
    rows.push(faster_row(
        "A1",
        "100k add_context_update, per update",
        "memory",
        aiecs("/A1/per_update_s"),
        r.bench("A1_add_context_update_100k/memory").map(|s| s / N),
        20.0,
        true,
    ));
    rows.push(Row {
        id: "A1",
        workload: "floor: one wall-clock read (SystemTime::now)".to_owned(),
        backend: "—",
        original: "—".to_owned(),
        taskctx: opt_time(r.extra("/floors/clock_s")),
        ratio: "—".to_owned(),
        target: "(floor)".to_owned(),
        met: "—",
    });
    rows.push(Row {
        id: "A1",
        workload: "floor: push onto a bare Vec with that clock read".to_owned(),
        backend: "—",
        original: "—".to_owned(),
        taskctx: opt_time(r.extra("/floors/vec_push_s")),
        ratio: "—".to_owned(),
        target: "(floor)".to_owned(),
        met: "—",
    });
    rows.push(faster_row(
        "A2",
        "optimise 100k updates, 50 % duplicates",
        "memory",
        aiecs("/A2/s"),
        r.bench("A2_optimise_100k_half_duplicates/memory"),
        20.0,
        true,
    ));
    for backend in ["memory", "fs", "sled"] {
        rows.push(faster_row(
            "A3",
            "persist 100k: replace (full rewrite, durable)",
            backend,
            aiecs("/A3/s"),
            r.bench(&format!("A3_persist_100k_replace/{backend}")),
            20.0,
            backend != "memory",
        ));
    }
    for backend in ["memory", "fs", "sled"] {
        rows.push(faster_row(
            "A3",
            "persist 100k: buffered save (one append, durable)",
            backend,
            aiecs("/A3/s"),
            r.bench(&format!("A3_persist_100k_save/{backend}")),
            20.0,
            false,
        ));
    }
    for backend in ["memory", "fs", "sled"] {
        rows.push(faster_row(
            "A4",
            "load 100k (open a context)",
            backend,
            aiecs("/A4/s"),
            r.bench(&format!("A4_load_100k/{backend}")),
            5.0,
            true,
        ));
    }
    for backend in ["memory", "fs", "sled"] {
        rows.push(faster_row(
            "A5",
            "2,000 × (add + save), write-through",
            backend,
            aiecs("/A5/s"),
            r.bench(&format!("A5_add_and_save_2000/{backend}")),
            20.0,
            backend != "memory",
        ));
    }
    for backend in ["memory", "fs", "sled"] {
        let ratio = r.extra(&format!("/a5/{backend}/last_to_first_tenth"));
        rows.push(Row {
            id: "A5",
            workload: "last tenth ÷ first tenth of the 2,000".to_owned(),
            backend,
            original: aiecs("/A5/last_to_first_tenth")
                .map_or("not run".to_owned(), |x| format!("{x:.2}")),
            taskctx: ratio.map_or("not run".to_owned(), |x| format!("{x:.2}")),
            ratio: "—".to_owned(),
            target: "≤ 1.5".to_owned(),
            met: met(ratio.map(|x| x <= 1.5)),
        });
    }
    rows.push(Row {
        id: "A5",
        workload: "floor: 2,000 × (write + fdatasync of one line)".to_owned(),
        backend: "—",
        original: "—".to_owned(),
        taskctx: opt_time(r.extra("/floors/fsync_s").map(|f| f * 2000.0)),
        ratio: "—".to_owned(),
        target: "(floor)".to_owned(),
        met: "—",
    });
    rows.push(faster_row(
        "A6",
        "10k contexts × 10 updates",
        "memory",
        aiecs("/A6/s"),
        r.bench("A6_10k_contexts_x10/memory"),
        10.0,
        true,
    ));
    let per_context = r.memory.get("a6_bytes_per_context").and_then(Value::as_f64);
    rows.push(Row {
        id: "A6",
        workload: "memory per context (10 updates)".to_owned(),
        backend: "memory",
        original: aiecs("/A6/bytes_per_context").map_or("not run".to_owned(), bytes_text),
        taskctx: per_context.map_or("not run".to_owned(), bytes_text),
        ratio: ratio_text(
            aiecs("/A6/bytes_per_context")
                .zip(per_context)
                .map(|(o, t)| o / t),
        ),
        target: "≤ 2 kB".to_owned(),
        met: met(per_context.map(|b| b <= 2000.0)),
    });

    // ROMA cannot be installed here: its SPEC §8 figures are the reference.
    let r1 = r.bench("R1_insert_100k/memory_put").map(|s| s / N);
    rows.push(roma_row(
        "R1",
        "insert 100k records, per record (put)",
        "memory",
        12.5e-6,
        r1,
        "≥ 10×".into(),
        r1.map(|t| 12.5e-6 / t >= 10.0),
    ));
    let many = r.bench("R1_insert_100k/memory_put_many").map(|s| s / N);
    rows.push(roma_row(
        "R1",
        "insert 100k records, per record (put_many of 1,000)",
        "memory",
        12.5e-6,
        many,
        "(reported)".into(),
        None,
    ));
    for backend in ["fs", "sled"] {
        let t = r.extra(&format!("/r1_fill_s/{backend}")).map(|s| s / N);
        rows.push(roma_row(
            "R1",
            "insert 100k, per record (put_many of 1,000, one run, durable)",
            backend,
            12.5e-6,
            t,
            "(reported)".into(),
            None,
        ));
    }
    let per_get = |threads: u32| {
        r.bench(&format!("R2_1M_random_gets/memory_{threads}_thread"))
            .map(|s| s / 1e6)
    };
    let (g1, g2) = (per_get(1), per_get(2));
    rows.push(roma_row(
        "R2",
        "1M random gets, 1 thread, per get",
        "memory",
        275e-9,
        g1,
        "≥ 5×".into(),
        g1.map(|t| 275e-9 / t >= 5.0),
    ));
    rows.push(roma_row(
        "R2",
        "1M random gets, 2 threads, per get (wall)",
        "memory",
        275e-9,
        g2,
        "≥ 5×".into(),
        g2.map(|t| 275e-9 / t >= 5.0),
    ));
    let speedup = g1.zip(g2).map(|(a, b)| a / b);
    rows.push(Row {
        id: "R2",
        workload: "thread scaling: 2-thread throughput ÷ 1-thread".to_owned(),
        backend: "memory",
        original: "1.0 (SPEC: none)".to_owned(),
        taskctx: speedup.map_or("not run".to_owned(), |s| format!("{s:.2}")),
        ratio: "—".to_owned(),
        target: "scales (≥ 1.5)".to_owned(),
        met: met(speedup.map(|s| s >= 1.5)),
    });
    rows.push(Row {
        id: "R2",
        workload: "floor: plain HashMap get + Arc clone, same ids".to_owned(),
        backend: "—",
        original: "—".to_owned(),
        taskctx: opt_time(r.extra("/floors/hashmap_get_s")),
        ratio: "—".to_owned(),
        target: "(floor)".to_owned(),
        met: "—",
    });
    for backend in ["memory", "fs", "sled"] {
        let t = r.bench(&format!("R3_children_100k/{backend}"));
        rows.push(roma_row(
            "R3",
            "children of a parent, 100k records",
            backend,
            3.9e-3,
            t,
            "≥ 1000×".into(),
            t.map(|t| 3.9e-3 / t >= 1000.0),
        ));
    }
    for backend in ["memory", "fs", "sled"] {
        let flat = growth(&r.series("store_scaling", &format!("children/{backend}")));
        rows.push(Row {
            id: "R3",
            workload: "children: cost at largest size ÷ at 1k".to_owned(),
            backend,
            original: "linear (full scan)".to_owned(),
            taskctx: flat.map_or("not run".to_owned(), |(g, n)| {
                format!("{g:.2} (1k → {})", size_text(n))
            }),
            ratio: "—".to_owned(),
            target: "flat (≤ 2)".to_owned(),
            met: met(flat.map(|(g, _)| g <= 2.0)),
        });
    }
    let p50 = r.extra("/r4/p50_s");
    rows.push(roma_row(
        "R4",
        "planning context of a leaf, 100k tree, p50 of single builds",
        "memory",
        27e-6,
        p50,
        "≤ 27 µs".into(),
        p50.map(|t| t <= 27e-6),
    ));
    let median = r.bench("R4_planning_context_100k/memory");
    rows.push(roma_row(
        "R4",
        "same, criterion median of means",
        "memory",
        27e-6,
        median,
        "(reported)".into(),
        None,
    ));
    let unmemoised = r.extra("/r4/unmemoised_p50_s");
    rows.push(roma_row(
        "R4",
        "same, per-record memos off (every text redacted and counted), p50",
        "memory",
        27e-6,
        unmemoised,
        "(reported)".into(),
        None,
    ));
    let hit = r.extra("/r4/cache_hit_p50_s");
    rows.push(roma_row(
        "R4",
        "same, built-context cache on (a hit), p50",
        "memory",
        27e-6,
        hit,
        "(reported)".into(),
        None,
    ));
    let per_record = r.memory.get("r1_bytes_per_record").and_then(Value::as_f64);
    rows.push(Row {
        id: "R1",
        workload: "memory per record (memory store)".to_owned(),
        backend: "memory",
        original: "—".to_owned(),
        taskctx: per_record.map_or("not run".to_owned(), bytes_text),
        ratio: "—".to_owned(),
        target: "(reported)".to_owned(),
        met: "—",
    });
    rows
}

/// The cost at the largest measured size divided by the cost at the smallest, and that size.
fn growth(series: &[(f64, f64)]) -> Option<(f64, f64)> {
    let (first, last) = (series.first()?, series.last()?);
    Some((last.1 / first.1, last.0))
}

pub(crate) fn size_text(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.0}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn bytes_text(bytes: f64) -> String {
    if bytes >= 1000.0 {
        format!("{:.2} kB", bytes / 1000.0)
    } else {
        format!("{bytes:.0} B")
    }
}

const HEADERS: [&str; 8] = [
    "id", "workload", "backend", "original", "taskctx", "ratio", "target", "met?",
];

fn cells(row: &Row) -> [&str; 8] {
    [
        row.id,
        &row.workload,
        row.backend,
        &row.original,
        &row.taskctx,
        &row.ratio,
        &row.target,
        row.met,
    ]
}

fn render_text(rows: &[Row]) -> String {
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(cells(row)) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 8]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = w - cell.chars().count();
            // Numbers right-aligned, words left-aligned.
            if (3..=5).contains(&i) {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(HEADERS);
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    for row in rows {
        out.push('\n');
        out.push_str(&line(cells(row)));
    }
    out
}

fn render_markdown(
    rows: &[Row],
    results: &Results,
    machine: &Machine,
    quick: bool,
    elapsed: f64,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured by `cargo xtask bench{}` on {} (load average at start {}; the run took {:.0} s). \
         The {}.\n",
        if quick { " --quick" } else { "" },
        machine.date,
        machine.load,
        elapsed,
        results.original.status_line(),
    );
    let _ = writeln!(md, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(HEADERS.len()));
    for row in rows {
        let _ = writeln!(md, "| {} |", cells(row).join(" | "));
    }
    md
}

/// Replaces the text between two marker lines of `path` (appending both markers if missing).
fn write_between(path: &Path, start: &str, end: &str, body: &str) -> anyhow::Result<()> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let replaced = match (text.find(start), text.find(end)) {
        (Some(s), Some(e)) if s < e => {
            format!("{}{start}\n{body}{}", &text[..s], &text[e..])
        }
        _ => format!("{text}\n{start}\n{body}{end}\n"),
    };
    fs::write(path, replaced).with_context(|| format!("writing {}", path.display()))
}

/// What the numbers were measured on.
struct Machine {
    cpu: String,
    cores: usize,
    memory: String,
    kernel: String,
    rustc: String,
    python: String,
    date: String,
    load: String,
}

impl Machine {
    fn describe() -> Self {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
        let memory = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or_else(
                || "unknown".to_owned(),
                |kb| format!("{:.1} GiB", kb / 1048576.0),
            );
        let output = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| {
                    let mut s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                    if s.is_empty() {
                        s = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                    }
                    s
                })
                .unwrap_or_else(|| "unknown".to_owned())
        };
        let python = std::env::var("TASKCTX_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            rustc: output("rustc", &["-V"]),
            python: output(&python, &["--version"]),
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            load: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    fn to_json(&self) -> Value {
        serde_json::json!({
            "cpu": self.cpu, "cores": self.cores, "memory": self.memory, "kernel": self.kernel,
            "rustc": self.rustc, "python": self.python, "date": self.date, "load": self.load,
        })
    }

    fn from_json(value: &Value) -> Self {
        let text = |key: &str| value[key].as_str().unwrap_or("unknown").to_owned();
        Self {
            cpu: text("cpu"),
            cores: value["cores"].as_u64().map_or(0, |c| c as usize),
            memory: text("memory"),
            kernel: text("kernel"),
            rustc: text("rustc"),
            python: text("python"),
            date: text("date"),
            load: text("load"),
        }
    }

    fn one_line(&self) -> String {
        format!(
            "{} · {} · {} cores · {} · Linux {} · {} · {} · load at start {}",
            self.date,
            self.cpu,
            self.cores,
            self.memory,
            self.kernel,
            self.rustc,
            self.python,
            self.load
        )
    }

    fn markdown(&self) -> String {
        format!(
            "| | |\n|---|---|\n| date | {} |\n| CPU | {} ({} cores) |\n| memory | {} |\n\
             | kernel | Linux {} |\n| rustc | {} |\n| Python | {} |\n| load average at start \
             (1, 5, 15 min) | {} |\n",
            self.date,
            self.cpu,
            self.cores,
            self.memory,
            self.kernel,
            self.rustc,
            self.python,
            self.load
        )
    }
}

/// The scaling plots: one SVG per family (history length, store size), one log-log panel per
/// operation, a line per backend and the original's points where it has them.
mod plot {
    use std::path::Path;

    use anyhow::anyhow;
    use plotters::prelude::*;

    use super::{Results, size_text};

    const MEMORY: RGBColor = RGBColor(31, 119, 180);
    const FS: RGBColor = RGBColor(230, 120, 10);
    const SLED: RGBColor = RGBColor(44, 160, 44);
    const ORIGINAL: RGBColor = RGBColor(214, 39, 40);

    struct Line {
        color: RGBColor,
        original: bool,
        points: Vec<(f64, f64)>,
    }

    struct Panel {
        title: &'static str,
        lines: Vec<Line>,
    }

    fn backends(r: &Results, family: &str, op: &str) -> Vec<Line> {
        [("memory", MEMORY), ("fs", FS), ("sled", SLED)]
            .into_iter()
            .map(|(backend, color)| Line {
                color,
                original: false,
                points: r.series(family, &format!("{op}/{backend}")),
            })
            .filter(|l| !l.points.is_empty())
            .collect()
    }

    fn aiecs(r: &Results, name: &str) -> Line {
        Line {
            color: ORIGINAL,
            original: true,
            points: r.original_series(name),
        }
    }

    fn roma(seconds: f64) -> Line {
        Line {
            color: ORIGINAL,
            original: true,
            points: vec![(100_000.0, seconds)],
        }
    }

    pub(super) fn history(path: &Path, r: &Results) -> anyhow::Result<()> {
        let with = |mut lines: Vec<Line>, extra: Line| {
            lines.push(extra);
            lines
        };
        let panels = vec![
            Panel {
                title: "add N updates (persistence off)",
                lines: with(backends(r, "history_scaling", "add"), aiecs(r, "add")),
            },
            Panel {
                title: "append N updates as one batch (durable)",
                lines: backends(r, "history_scaling", "append"),
            },
            Panel {
                title: "save 1 new update onto N (AIECS: full rewrite)",
                lines: with(
                    backends(r, "history_scaling", "save_tail"),
                    aiecs(r, "save"),
                ),
            },
            Panel {
                title: "replace N (full rewrite, durable)",
                lines: with(backends(r, "history_scaling", "replace"), aiecs(r, "save")),
            },
            Panel {
                title: "load N (open a context)",
                lines: with(backends(r, "history_scaling", "load"), aiecs(r, "load")),
            },
            Panel {
                title: "optimise N (50 % duplicates)",
                lines: with(
                    backends(r, "history_scaling", "optimise"),
                    aiecs(r, "optimise"),
                ),
            },
        ];
        draw(
            path,
            "taskctx: cost per operation against history length (log-log)",
            "history length (updates)",
            panels,
            3,
            "AIECS 2.2.0 (Python, same run)",
        )
    }

    pub(super) fn store(path: &Path, r: &Results) -> anyhow::Result<()> {
        let with = |mut lines: Vec<Line>, extra: Line| {
            lines.push(extra);
            lines
        };
        let panels = vec![
            Panel {
                title: "get one record (random id)",
                lines: with(backends(r, "store_scaling", "get"), roma(275e-9)),
            },
            Panel {
                title: "children of a parent (10 children)",
                lines: with(backends(r, "store_scaling", "children"), roma(3.9e-3)),
            },
            Panel {
                title: "planning context of a leaf (full build)",
                lines: with(backends(r, "store_scaling", "context_build"), roma(27e-6)),
            },
        ];
        draw(
            path,
            "taskctx: cost per operation against store size (log-log)",
            "records in the store",
            panels,
            3,
            "ROMA (SPEC figure, at 100k)",
        )
    }

    /// The smallest and largest value, widened to whole decades.
    fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
        let (lo, hi) = values
            .filter(|v| *v > 0.0 && v.is_finite())
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if lo > hi {
            return (1.0, 10.0);
        }
        let lo = 10f64.powf(lo.log10().floor());
        let hi = 10f64.powf(hi.log10().ceil());
        if hi <= lo { (lo, lo * 10.0) } else { (lo, hi) }
    }

    /// Axis ticks without trailing zeros: `100 µs`, `2.5 ms`.
    fn tick(seconds: f64) -> String {
        let (value, unit) = if seconds >= 1.0 {
            (seconds, "s")
        } else if seconds >= 1e-3 {
            (seconds * 1e3, "ms")
        } else if seconds >= 1e-6 {
            (seconds * 1e6, "µs")
        } else {
            (seconds * 1e9, "ns")
        };
        if (value - value.round()).abs() < 1e-6 * value.max(1.0) {
            format!("{value:.0} {unit}")
        } else {
            format!("{value:.1} {unit}")
        }
    }

    fn draw(
        path: &Path,
        title: &str,
        x_desc: &str,
        panels: Vec<Panel>,
        columns: usize,
        original_label: &str,
    ) -> anyhow::Result<()> {
        let rows = panels.len().div_ceil(columns);
        let size = (560 * columns as u32, 90 + 430 * rows as u32);
        let root = SVGBackend::new(path, size).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let (header, body) = root.split_vertically(90);
        header
            .draw_text(
                title,
                &("sans-serif", 24).into_font().color(&BLACK),
                (20, 14),
            )
            .map_err(|e| fail(&e))?;
        // One legend for every panel: the colours mean the same everywhere.
        let entries = [
            ("taskctx memory", MEMORY, false),
            ("taskctx fs", FS, false),
            ("taskctx sled", SLED, false),
            (original_label, ORIGINAL, true),
        ];
        let mut x = 24;
        for (label, color, original) in entries {
            let y = 62;
            header
                .draw(&PathElement::new(
                    vec![(x, y), (x + 28, y)],
                    color.stroke_width(3),
                ))
                .map_err(|e| fail(&e))?;
            if original {
                header
                    .draw(&TriangleMarker::new((x + 14, y), 6, color.filled()))
                    .map_err(|e| fail(&e))?;
            } else {
                header
                    .draw(&Circle::new((x + 14, y), 4, color.filled()))
                    .map_err(|e| fail(&e))?;
            }
            header
                .draw_text(
                    label,
                    &("sans-serif", 16).into_font().color(&BLACK),
                    (x + 36, y - 9),
                )
                .map_err(|e| fail(&e))?;
            x += 44 + 9 * label.chars().count() as i32;
        }
        let areas = body.split_evenly((rows, columns));
        for (area, panel) in areas.iter().zip(panels) {
            let points = || panel.lines.iter().flat_map(|l| l.points.iter());
            let (x0, x1) = decades(points().map(|p| p.0));
            let (y0, y1) = decades(points().map(|p| p.1));
            let mut chart = ChartBuilder::on(area)
                .caption(panel.title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(75)
                .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
                .map_err(|e| fail(&e))?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc("time per operation")
                .x_label_formatter(&|x| size_text(*x))
                .y_label_formatter(&|y| tick(*y))
                .x_labels(6)
                .y_labels(8)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 14))
                .light_line_style(WHITE.mix(0.0))
                .bold_line_style(BLACK.mix(0.12))
                .draw()
                .map_err(|e| fail(&e))?;
            for line in panel.lines {
                let color = line.color;
                let style = color.stroke_width(if line.original { 2 } else { 3 });
                let original = line.original;
                chart
                    .draw_series(LineSeries::new(line.points.clone(), style))
                    .map_err(|e| fail(&e))?;
                if original {
                    chart
                        .draw_series(
                            line.points
                                .iter()
                                .map(|p| TriangleMarker::new(*p, 6, color.filled())),
                        )
                        .map_err(|e| fail(&e))?;
                } else {
                    chart
                        .draw_series(
                            line.points
                                .iter()
                                .map(|p| Circle::new(*p, 4, color.filled())),
                        )
                        .map_err(|e| fail(&e))?;
                }
            }
        }
        root.present().map_err(|e| fail(&e))?;
        Ok(())
    }
}

//! `cargo xtask`: the project's development tasks, in plain Rust so they run wherever cargo does.
//!
//! - `cargo xtask ci`: format check, clippy with warnings denied on every target, every test of
//!   every crate (unit, integration, conformance per adapter, doc tests), and a short crash run.
//! - `cargo xtask crash [--cycles N] [--adapter fs|sled]`: kill -9 loops against the durable
//!   adapters; every acknowledged write must survive, exactly once and in order.
// A task runner talks to its user on stdout/stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod crash;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context as _, bail};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("crash") => crash::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => {
            eprintln!("xtask: unknown task `{other}`");
            print_help();
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask <task>\n\n\
         tasks:\n  \
         ci      fmt check, clippy -D warnings (all targets), all tests of every crate incl. doc\n          \
                 tests, and a short crash run (20 cycles per durable adapter)\n  \
         crash   kill -9 loops against fs and sled [--cycles N (default 200)] [--adapter fs|sled]\n  \
         bench   SPEC §8 targets vs the original AIECS code, one table; updates docs/benchmarks.md\n          \
                 and its plots [--quick (a few minutes)] [--no-original (skip Python)]"
    );
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs `cargo` with `args` in the workspace root, echoing the command and its duration.
pub(crate) fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    println!("\n==> cargo {}", args.join(" "));
    let started = Instant::now();
    let status = Command::new(&cargo)
        .args(args)
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

fn ci() -> anyhow::Result<()> {
    let started = Instant::now();
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["test", "--workspace", "--all-features", "--no-fail-fast"])?;
    crash::run(&["--cycles".to_owned(), "20".to_owned(), "--debug".to_owned()])?;
    println!("\nci passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

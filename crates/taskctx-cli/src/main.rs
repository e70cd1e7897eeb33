//! The `taskctx` binary: parses the command line, runs one command, and on failure prints one
//! clear line on stderr with exit code 1 (runtime error) or 2 (usage error).
// Printing is this crate's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod commands;
mod failure;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::failure::exit_code;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    install_panic_hook();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("taskctx: error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let line = format!("{error:#}").replace('\n', " ");
            eprintln!("taskctx: error: {line}");
            ExitCode::from(exit_code(&error))
        }
    }
}

/// Whether the command failed only because whoever read its output stopped reading.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A panic is a bug, but the user still gets one line, not a backtrace (unless they ask for one
/// with RUST_BACKTRACE).
fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "taskctx: internal error: {message}{place} (this is a bug; set RUST_BACKTRACE=1 for details)"
        );
    }));
}

/// Logs go to stderr. RUST_LOG wins; else TASKCTX_LOG_LEVEL / AIECS_LOG_LEVEL; else warnings
/// only, so command output stays clean.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        let level = ["TASKCTX_LOG_LEVEL", "AIECS_LOG_LEVEL"]
            .iter()
            .find_map(|name| std::env::var(name).ok())
            .and_then(|value| value.parse::<taskctx::LogLevel>().ok())
            .map_or("warn", taskctx::LogLevel::as_filter);
        EnvFilter::new(level)
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

//! One module per command group; `run` dispatches and opens the store the command needs.

mod context;
mod demo;
mod demo_plan;
mod history;
mod store;
mod tasks;

use anyhow::Context as _;
use taskctx::{Config, Stores};

use crate::cli::{Cli, Command};

/// What every command needs: where the store is, and how to print.
pub(crate) struct Env {
    pub(crate) store_url: String,
    pub(crate) json: bool,
}

impl Env {
    /// Opens the store (creating it if it does not exist yet).
    pub(crate) async fn open(&self) -> anyhow::Result<Stores> {
        taskctx::open(&self.store_url)
            .await
            .with_context(|| format!("opening store {}", self.store_url))
    }
}

/// Runs the parsed command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let store_url = cli
        .store
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| taskctx::default_store_url(&config));
    let env = Env {
        store_url,
        json: cli.json,
    };
    match cli.command {
        Command::Demo => demo::run(&env).await,
        Command::History(command) => history::run(&env, command).await,
        Command::Tasks(command) => tasks::run(&env, command).await,
        Command::Context(command) => context::run(&env, command).await,
        Command::Stats => store::stats(&env).await,
        Command::Health => store::health(&env).await,
    }
}

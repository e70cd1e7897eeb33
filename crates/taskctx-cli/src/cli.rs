//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// taskctx: task context for AI-agent systems — histories, task records, context building.
#[derive(Debug, Parser)]
#[command(name = "taskctx", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Store URL: memory:, fs:PATH or sled:PATH [default: sled:./tasks/taskctx.sled, or under
    /// AIECS_TASK_DIR / TASKCTX_TASK_DIR]
    #[arg(long, global = true, env = "TASKCTX_STORE", value_name = "URL")]
    pub(crate) store: Option<String>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a realistic agent session against the store and show what taskctx keeps.
    Demo,
    /// Inspect and edit chat histories.
    #[command(subcommand)]
    History(HistoryCommand),
    /// Import, inspect and delete task records.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Build the context an agent should see for a task.
    #[command(subcommand)]
    Context(ContextCommand),
    /// Totals of the store.
    Stats,
    /// Check that the store opens and every history and record reads back.
    Health,
}

#[derive(Debug, Subcommand)]
pub(crate) enum HistoryCommand {
    /// List chats with their entry counts and last update.
    List,
    /// Show a chat's history.
    Show {
        /// The chat id.
        chat: String,
        /// Show only the last N entries.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
    },
    /// Append an update (or, with --stdin, one update per JSON line).
    Append(AppendArgs),
    /// Remove duplicates, then the oldest entries beyond a size budget.
    Optimize {
        /// The chat id.
        chat: String,
        /// The budget: characters of each entry's data as canonical JSON, or tokens with --tokens.
        #[arg(long, value_name = "N")]
        max_size: usize,
        /// Count the budget in tokens (o200k_base) instead of characters.
        #[arg(long)]
        tokens: bool,
    },
    /// Keep only the updates stamped at or before a time.
    Truncate {
        /// The chat id.
        chat: String,
        /// Seconds since the Unix epoch, or an ISO-8601 date-time.
        #[arg(long, value_name = "TIME")]
        after: String,
    },
    /// Delete a chat's history.
    Delete {
        /// The chat id.
        chat: String,
    },
    /// Import AIECS `context_history_{chat}.json` files (or every such file in a directory).
    Import {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Replace chats that already have a history (by default they are refused, never merged).
        #[arg(long)]
        replace: bool,
    },
    /// Export a chat's history.
    Export {
        /// The chat id.
        chat: String,
        /// `aiecs`: the JSON array AIECS's TaskContext loads; `jsonl`: one update per line.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write to this file (atomically) instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Formats `history export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExportFormat {
    /// The AIECS `context_history_{chat}.json` format.
    Aiecs,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Debug, Args)]
pub(crate) struct AppendArgs {
    /// The chat id.
    pub(crate) chat: String,
    /// The update type (message, metadata, resource, file_operation, model_usage, error, or any
    /// other non-empty kind).
    #[arg(
        long = "type",
        value_name = "TYPE",
        required_unless_present = "stdin",
        conflicts_with = "stdin"
    )]
    pub(crate) update_type: Option<String>,
    /// The update's data, as JSON.
    #[arg(
        long,
        value_name = "JSON",
        required_unless_present = "stdin",
        conflicts_with = "stdin"
    )]
    pub(crate) data: Option<String>,
    /// The update's metadata, as a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "stdin")]
    pub(crate) metadata: Option<String>,
    /// Read updates as JSON lines ({"update_type", "data", "metadata", "timestamp"?}) and print
    /// each one's sequence number once it is durable.
    #[arg(long)]
    pub(crate) stdin: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// Import task records from a JSON array or JSON lines (ROMA field names accepted).
    Import {
        /// The file.
        file: PathBuf,
    },
    /// Show one task record.
    Show {
        /// The task id.
        id: String,
    },
    /// Draw the task tree under ROOT (or under every root).
    Tree {
        /// The task to start from.
        root: Option<String>,
        /// How to draw it.
        #[arg(long, value_enum, default_value_t = TreeFormat::Text)]
        format: TreeFormat,
    },
    /// Delete a task record (and, with --subtree, all its descendants).
    Delete {
        /// The task id.
        id: String,
        /// Also delete every descendant.
        #[arg(long)]
        subtree: bool,
    },
}

/// Formats `tasks tree` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TreeFormat {
    /// An indented tree for the terminal.
    Text,
    /// A Mermaid flowchart.
    Mermaid,
    /// A Graphviz digraph.
    Dot,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ContextCommand {
    /// Build a task's context (the text an agent sees, within a token budget).
    Build {
        /// The task id.
        task_id: String,
        /// default, planning, execution, aggregation, atomization or modification.
        #[arg(long = "type", value_name = "TYPE")]
        context_type: String,
        /// The total token budget [default: 8000].
        #[arg(long, value_name = "N")]
        budget_tokens: Option<usize>,
        /// The most items [default: 10 for execution].
        #[arg(long, value_name = "N")]
        max_items: Option<usize>,
    },
}

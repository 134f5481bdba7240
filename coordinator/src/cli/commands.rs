//! The command lines of `kiln models` and `kiln data` (clap), and what runs each: the
//! registry's printing in `models`, `export` and `drift`, the dataset versions' in `data`.

use std::path::PathBuf;

use clap::Subcommand;

use super::data::{self, StoreArg};
use super::error::CliError;
use super::{drift, export, models};

/// `kiln models …`.
#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Every model with its version count, newest version and aliases (or just NAME).
    List {
        /// One model's name.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
    /// A version with its lineage and metrics.
    Show {
        /// NAME@N, NAME@ALIAS or NAME (the newest).
        reference: String,
        /// Print the version's record as JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
    /// Point ALIAS of NAME at VERSION (refused if another move comes first).
    Alias {
        /// The model.
        name: String,
        /// The alias, e.g. production.
        alias: String,
        /// The version it should hold.
        version: u64,
        /// Why, for the history.
        #[arg(long)]
        reason: Option<String>,
        /// Print the move as JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
    /// Move ALIAS of NAME back to the version that held it before its latest move.
    Rollback {
        /// The model.
        name: String,
        /// The alias.
        alias: String,
        /// Print the move as JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
    /// Write a version's weights as model.safetensors and config.json into DIR.
    Export {
        /// NAME@N, NAME@ALIAS or NAME (the newest).
        reference: String,
        /// Directory to write into (created if missing; the two files are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Worker binary that offers the model's kind (default: the kiln-worker beside kiln,
        /// or KILN_WORKER_BIN).
        #[arg(long, value_name = "PATH")]
        worker: Option<PathBuf>,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
    /// A version's predictions on a split of the dataset it trained on.
    Predict {
        /// NAME@N, NAME@ALIAS or NAME (the newest).
        reference: String,
        /// Which samples: validation, train or all.
        #[arg(long, default_value = "validation", value_parser = ["validation", "train", "all"])]
        split: String,
        /// Worker binary that offers the model's kind (default: the kiln-worker beside kiln,
        /// or KILN_WORKER_BIN).
        #[arg(long, value_name = "PATH")]
        worker: Option<PathBuf>,
        /// Print every sample's row, label, prediction and logits as JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
    /// Drift of a served model's live inputs from its training inputs: per feature, the
    /// reference and live mean and standard deviation, PSI, KS, and whether it drifted.
    ///
    /// Asks the `kiln serve` that serves REFERENCE: --server, else the one `kiln apply` runs
    /// for the model from the configuration directory (-C), else http://127.0.0.1:8080.
    Drift {
        /// NAME@ALIAS, NAME@N or NAME, as the server was started with.
        reference: String,
        /// The server's URL (or HOST:PORT).
        #[arg(long, value_name = "URL", env = "KILN_SERVE_URL")]
        server: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Configuration directory whose applied model server to ask without --server.
        #[arg(short = 'C', long = "dir", value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Every move of the aliases of NAME (or of NAME@ALIAS only): when, from, to, who, why.
    History {
        /// NAME or NAME@ALIAS.
        target: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
}

/// Where `kiln data` finds the object store.
#[derive(clap::Args)]
pub struct Store {
    /// Storage URL (`file:///…`, or a plain path). Default: the `storage.url` of the
    /// configuration in the directory (-C).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Configuration directory whose storage to use without --store.
    #[arg(short = 'C', long = "dir", value_name = "DIR", default_value = ".")]
    dir: PathBuf,
}

impl Store {
    /// Where the command finds the store.
    pub fn arg(&self) -> StoreArg<'_> {
        StoreArg {
            url: self.store.as_deref(),
            dir: &self.dir,
        }
    }
}

/// `kiln data …`.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Make a file or directory an immutable, content-addressed version NAME@N.
    ///
    /// Files are stored once by SHA-256; only those the store lacks are uploaded. Content
    /// that a version of NAME already holds makes no new version.
    Push {
        /// The file or directory.
        path: PathBuf,
        /// The dataset's name.
        #[arg(long)]
        name: String,
        /// The label column of a CSV file (default: a column named `label`, else the last).
        #[arg(long)]
        label: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
    /// List the datasets, or the versions of one.
    List {
        /// A dataset's name: list its versions.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
    /// Show a version: its files, format, samples, label and feature statistics.
    Show {
        /// NAME@N or NAME@latest.
        reference: String,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
    /// Write a version's files into a directory, each verified against its hash.
    Pull {
        /// NAME@N or NAME@latest.
        reference: String,
        /// Where to write (files already there with the same content are kept).
        #[arg(value_name = "DIR")]
        target: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: Store,
    },
}

/// Runs `kiln data …`.
pub async fn data(command: DataCommand) -> Result<(), CliError> {
    match command {
        DataCommand::Push {
            path,
            name,
            label,
            json,
            store,
        } => data::push(&store.arg(), &path, &name, label.as_deref(), json).await,
        DataCommand::List { name, json, store } => {
            data::list(&store.arg(), name.as_deref(), json).await
        }
        DataCommand::Show {
            reference,
            json,
            store,
        } => data::show(&store.arg(), &reference, json).await,
        DataCommand::Pull {
            reference,
            target,
            json,
            store,
        } => data::pull(&store.arg(), &reference, &target, json).await,
    }
}

/// Runs `kiln models …`.
pub async fn models(command: ModelsCommand) -> Result<(), CliError> {
    match command {
        ModelsCommand::List { name, json, store } => {
            models::list(&store.arg(), name.as_deref(), json).await
        }
        ModelsCommand::Show {
            reference,
            json,
            store,
        } => models::show(&store.arg(), &reference, json).await,
        ModelsCommand::Alias {
            name,
            alias,
            version,
            reason,
            json,
            store,
        } => {
            models::alias(
                &store.arg(),
                &name,
                &alias,
                version,
                reason.as_deref(),
                json,
            )
            .await
        }
        ModelsCommand::Rollback {
            name,
            alias,
            json,
            store,
        } => models::rollback(&store.arg(), &name, &alias, json).await,
        ModelsCommand::History {
            target,
            json,
            store,
        } => models::history(&store.arg(), &target, json).await,
        ModelsCommand::Drift {
            reference,
            server,
            json,
            dir,
        } => drift::drift(&reference, server.as_deref(), &dir, json).await,
        ModelsCommand::Export {
            reference,
            out,
            worker,
            json,
            store,
        } => export::export(&store.arg(), &reference, &out, worker.as_ref(), json).await,
        ModelsCommand::Predict {
            reference,
            split,
            worker,
            json,
            store,
        } => export::predict(&store.arg(), &reference, &split, worker.as_ref(), json).await,
    }
}

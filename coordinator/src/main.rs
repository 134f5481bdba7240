//! `kiln`: declare clusters and training jobs in HCL, run them, watch them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kiln_coordinator::cli::commands::{self, DataCommand, ModelsCommand, Store};
use kiln_coordinator::cli::{self, CliError};
use kiln_coordinator::cli::{bench, infra};
use kiln_coordinator::control::LeaseConfig;
use kiln_iac::spec::StateSpec;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Distributed training orchestrator with infrastructure-as-code"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which coordinator a client command talks to.
#[derive(clap::Args)]
struct Remote {
    /// Coordinator URL, or several comma-separated (coordinators on etcd: the leader among
    /// them is found). Default: the coordinator `kiln apply` started from the configuration
    /// directory (-C), else http://127.0.0.1:7070.
    #[arg(long, env = "KILN_COORDINATOR")]
    coordinator: Option<String>,
    /// Configuration directory whose applied coordinator to use.
    #[arg(short = 'C', long = "dir", value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    #[command(flatten)]
    token: TokenFile,
}

impl Remote {
    fn target(&self) -> Result<cli::Target, CliError> {
        cli::target(
            self.coordinator.as_deref(),
            &self.token.flags(),
            &self.dir,
            None,
            &self.dir.join(cli::DEFAULT_STATE_DIR),
        )
    }
}

/// What a client command presents and trusts.
#[derive(clap::Args)]
struct TokenFile {
    /// File holding the coordinator's client token. Default: KILN_TOKEN, else the token the
    /// coordinator wrote into its state directory (`client-token`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The CA certificate (PEM) an https:// coordinator's certificate is verified against.
    /// Default: the cluster's `coordinator { tls { ca_file } }` where the command knows it.
    #[arg(long, value_name = "FILE", env = "KILN_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
}

impl TokenFile {
    fn flags(&self) -> cli::ClientFlags {
        cli::ClientFlags {
            token_file: self.token_file.clone(),
            ca_file: self.tls_ca_file.clone(),
        }
    }
}

/// Makes a panic of `println!` into a closed stdout end the process quietly (exit 0); every
/// other panic reports as before.
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        report(info);
    }));
}

/// Values for the configuration's `variable` blocks.
#[derive(clap::Args)]
struct Vars {
    /// Set a variable: NAME=VALUE (an HCL expression, or a plain string). Repeatable; wins over
    /// --var-file, KILN_VAR_NAME and defaults.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = kiln_iac::parse_var_arg)]
    vars: Vec<(String, String)>,
    /// An HCL file of `name = value` lines. Repeatable; later files win.
    #[arg(long = "var-file", value_name = "FILE")]
    var_files: Vec<PathBuf>,
}

impl Vars {
    fn options(self) -> kiln_iac::LoadOptions {
        kiln_iac::LoadOptions {
            vars: self.vars,
            var_files: self.var_files,
            catalog: Some(std::sync::Arc::new(cli::BinaryCatalog::default())),
            ..kiln_iac::LoadOptions::from_env()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a job end to end on the embedded default: coordinator, local workers, follow.
    ///
    /// Ctrl-C, SIGTERM and SIGHUP cancel the job and stop the cluster. A job an earlier `kiln
    /// up` of the same state left unfinished (it died) is marked failed, and named.
    Up {
        /// Configuration directory (all its *.hcl files).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Job to run when the configuration declares several.
        #[arg(long)]
        job: Option<String>,
        /// Resume this failed or cancelled job (an id such as quickstart-3) from its last
        /// committed checkpoint instead of submitting a new one.
        #[arg(long, value_name = "JOB_ID")]
        resume: Option<String>,
        #[command(flatten)]
        vars: Vars,
    },
    /// Check every HCL file of a directory without running anything.
    Validate {
        /// Configuration directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Print the diagnostics as JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        vars: Vars,
    },
    /// Rewrite the HCL files of a directory in canonical layout, keeping comments.
    ///
    /// Changes only layout (indentation, spacing around `=` and aligned `=`, blank lines,
    /// trailing whitespace), never a value, a string or a comment's text. Prints each file it
    /// rewrites. A directory with a syntax error is reported and left untouched.
    Fmt {
        /// Configuration directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Change nothing: print a diff of each file that is not in canonical layout and exit
        /// with code 2 if there is any.
        #[arg(long)]
        check: bool,
    },
    /// Run a standalone coordinator: on an embedded state, or one of several on etcd that elect
    /// a leader.
    Coordinator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// Directory of the embedded state.
        #[arg(long, default_value = ".kiln/state", conflicts_with = "etcd")]
        state: PathBuf,
        /// Keep the state in etcd instead, at these client endpoints (comma-separated,
        /// `host:port` or `http://host:port`): coordinators on the same etcd and prefix elect
        /// one leader; the others stand by.
        #[arg(long, value_delimiter = ',')]
        etcd: Vec<String>,
        /// The key prefix of the state in etcd.
        #[arg(long, default_value = "/kiln/", requires = "etcd")]
        etcd_prefix: String,
        /// The election lease on etcd: a standby succeeds a leader that died within this
        /// (whole seconds).
        #[arg(long, default_value = "3s", value_parser = whole_seconds, requires = "etcd")]
        election_ttl: Duration,
        /// File holding the join token; without it a token is generated into the state
        /// directory (required with --etcd).
        #[arg(long)]
        join_token_file: Option<PathBuf>,
        /// File holding the token client commands must present; without it a token is
        /// generated into the state directory as `client-token` (required with --etcd).
        #[arg(long)]
        client_token_file: Option<PathBuf>,
        /// URL workers and clients should use, when it differs from the listen address.
        #[arg(long)]
        advertise: Option<String>,
        /// Serve gRPC over TLS with this certificate (PEM; `kiln tls init` makes one).
        #[arg(long, value_name = "FILE", requires = "tls_key_file")]
        tls_cert_file: Option<PathBuf>,
        /// The private key of --tls-cert-file (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
        tls_key_file: Option<PathBuf>,
        /// Write the coordinator's URL to this file once it accepts connections.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Address of the HTTP listener beside gRPC: Prometheus metrics (/metrics), the
        /// dashboard (/) and its JSON API (/api/…). It has no credentials: keep it on
        /// loopback or behind a proxy that has them. Port 0: any free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        http_listen: SocketAddr,
        /// Write the HTTP listener's URL to this file (before --ready-file).
        #[arg(long, value_name = "FILE")]
        http_ready_file: Option<PathBuf>,
        /// How often workers renew their lease, e.g. 500ms, 1s.
        #[arg(long, default_value = "1s", value_parser = duration)]
        heartbeat_interval: Duration,
        /// A worker silent this long is declared dead (longer than --heartbeat-interval).
        #[arg(long, default_value = "3s", value_parser = duration)]
        lease_ttl: Duration,
    },
    /// Submit the jobs of an HCL file (or directory) to a running coordinator.
    Submit {
        /// HCL file or configuration directory.
        path: PathBuf,
        /// Submit only this job.
        #[arg(long)]
        job: Option<String>,
        /// Follow the job until it ends; exit 0 only if it succeeds. Ctrl-C stops following
        /// and leaves the job running.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        vars: Vars,
        /// Coordinator URL, or several comma-separated. Default: the coordinator `kiln
        /// apply` started for the job's cluster (an error if it no longer runs), else
        /// http://127.0.0.1:7070.
        #[arg(long, env = "KILN_COORDINATOR")]
        coordinator: Option<String>,
        #[command(flatten)]
        token: TokenFile,
    },
    /// Show one job, or all jobs.
    Status {
        /// Job id.
        job: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Follow the job (its events, progress and summary) until it ends; Ctrl-C stops
        /// following and leaves it running.
        #[arg(short, long, conflicts_with = "json")]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// The lines a job's workers logged (every generation's), each tagged with its
    /// generation, rank and node.
    Logs {
        /// Job id.
        job: String,
        /// Only this rank's lines.
        #[arg(long)]
        rank: Option<u32>,
        /// Go on printing new lines, across restarts, until the job has ended.
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a pending or running job.
    Cancel {
        /// Job id.
        job: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Restart a failed or cancelled job from its last committed checkpoint.
    Resume {
        /// Job id.
        job: String,
        /// Resume from this checkpoint step instead of the last one.
        #[arg(long, value_name = "STEP")]
        from: Option<u64>,
        /// Follow the job until it ends; exit 0 only if it succeeds. Ctrl-C stops following
        /// and leaves the job running.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show what `apply` would change: refresh the recorded resources, diff them against the
    /// configuration.
    Plan {
        /// Configuration directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Save the plan; `kiln apply FILE` then applies exactly it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print the plan as JSON (the changes with their before and after).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        vars: Vars,
    },
    /// Create, update or replace the clusters' coordinators and nodes to match the
    /// configuration (or a saved plan).
    Apply {
        /// Configuration directory, or a plan file from `kiln plan --out`.
        #[arg(default_value = ".")]
        target: PathBuf,
        /// Apply without asking for confirmation.
        #[arg(long)]
        auto_approve: bool,
        #[command(flatten)]
        vars: Vars,
    },
    /// Stop every resource the state records.
    Destroy {
        /// Configuration directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Destroy without asking for confirmation.
        #[arg(long)]
        auto_approve: bool,
    },
    /// List the resources the state records and whether each still runs.
    State {
        /// Configuration directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Print the resources as JSON, each with whether it still runs.
        #[arg(long)]
        json: bool,
    },
    /// Dataset versions in the object store: push, list, show, pull.
    #[command(subcommand)]
    Data(DataCommand),
    /// The model registry: versions with lineage and metrics, aliases with their history.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Measure kiln's building blocks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Certificates for a coordinator that serves TLS.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Print a shell completion script: `kiln completions bash > /etc/bash_completion.d/kiln`,
    /// `kiln completions zsh > ~/.zfunc/_kiln`, `kiln completions fish >
    /// ~/.config/fish/completions/kiln.fish`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Serve a registered model over the Open Inference Protocol (V2) on HTTP.
    ///
    /// NAME@ALIAS (or NAME, the newest) is watched: when it moves, the new version is loaded
    /// beside the old one and swapped in without failing a request. Requests from concurrent
    /// clients are batched. See docs/serving.md.
    Serve {
        /// NAME@ALIAS, NAME@N or NAME (the newest).
        reference: String,
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Most rows one forward pass takes from concurrent requests (1: no batching).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
        max_batch_size: u32,
        /// How long a batch waits for more requests once it has one (0ms: it takes what is
        /// queued and never waits; e.g. 2ms trades latency for larger batches).
        #[arg(long, default_value = "0ms", value_parser = duration)]
        max_delay: Duration,
        /// How often a served alias is looked up again.
        #[arg(long, default_value = "2s", value_parser = duration)]
        watch_interval: Duration,
        /// Write the server's URL to FILE once it listens.
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
        /// Worker binary that offers the model's kind (default: the kiln-worker beside kiln,
        /// or KILN_WORKER_BIN).
        #[arg(long, value_name = "PATH")]
        worker: Option<PathBuf>,
        #[command(flatten)]
        drift: Drift,
        #[command(flatten)]
        store: Store,
    },
}

/// How `kiln serve` watches its inputs for drift.
#[derive(clap::Args)]
struct Drift {
    /// A feature whose population stability index (live window against the training
    /// inputs) reaches this has drifted.
    #[arg(long, default_value_t = 0.2, value_name = "PSI")]
    psi_threshold: f64,
    /// The most recent inputs (rows) compared with the training inputs.
    #[arg(long, default_value_t = 1000, value_name = "ROWS")]
    drift_window: usize,
    /// Inputs the window must hold before drift is judged.
    #[arg(long, default_value_t = 200, value_name = "ROWS")]
    drift_min_samples: usize,
    /// Do not watch the inputs for drift.
    #[arg(long, conflicts_with_all = ["psi_threshold", "drift_window", "drift_min_samples"])]
    no_drift: bool,
}

impl Drift {
    fn settings(&self) -> Option<kiln_versions::drift::Settings> {
        (!self.no_drift).then_some(kiln_versions::drift::Settings {
            psi_threshold: self.psi_threshold,
            window: self.drift_window,
            min_samples: self.drift_min_samples,
        })
    }
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Make a cluster's CA and a coordinator certificate signed by it, in DIR (files 0600;
    /// nothing existing is overwritten). The certificate names localhost, 127.0.0.1, ::1 and
    /// every --host.
    Init {
        /// Directory to write ca.pem, ca-key.pem, coordinator.pem and coordinator-key.pem.
        dir: PathBuf,
        /// Another name the coordinator is reached by (DNS name or IP address). Repeatable.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// Machine-readable output: the files and names.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ring all-reduce bandwidth between worker processes on this machine.
    Allreduce(bench::AllreduceArgs),
    /// What checkpoints cost training: background uploads vs blocking saves, and throughput.
    Checkpoint(bench::CheckpointArgs),
    /// How many simulated workers heartbeating at 1 Hz one coordinator holds (embedded or
    /// etcd state): heartbeat latency percentiles per count.
    ControlPlane(cli::load::ControlPlaneArgs),
}

/// Parses `500ms`, `2s`, `1m30s`, as in HCL.
fn duration(text: &str) -> Result<Duration, String> {
    kiln_iac::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration such as 500ms, 2s or 1m30s"))
}

/// A duration of whole seconds, at least one: an etcd lease's TTL.
fn whole_seconds(text: &str) -> Result<Duration, String> {
    let d = duration(text)?;
    if d.subsec_nanos() != 0 || d.is_zero() {
        return Err(format!(
            "{text:?} is not a whole number of seconds (etcd leases are granted in seconds), such as 2s or 5s"
        ));
    }
    Ok(d)
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Rust ignores SIGPIPE, so a listing printed into a closed pipe (`kiln models list | head`)
    // panics in `println!`; such a read-only command ends quietly instead, as other Unix tools
    // do. SIGPIPE itself stays ignored: these commands also write to sockets, and a peer that
    // closes one (a TLS port spoken to in plaintext) must give an error, not a silent death.
    if matches!(
        cli.command,
        Command::Data(_)
            | Command::Models(_)
            | Command::Status { .. }
            | Command::Logs { .. }
            | Command::State { .. }
            | Command::Completions { .. }
    ) {
        quiet_on_closed_stdout();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kiln")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(CliError::INFRA);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up {
                dir,
                job,
                resume,
                vars,
            } => cli::up(&dir, job.as_deref(), &vars.options(), resume.as_deref())
                .await
                .map(drop),
            Command::Validate { dir, json, vars } => cli::validate(&dir, &vars.options(), json),
            Command::Fmt { dir, check } => cli::fmt(&dir, check),
            Command::Coordinator {
                listen,
                state,
                etcd,
                etcd_prefix,
                election_ttl,
                join_token_file,
                client_token_file,
                advertise,
                tls_cert_file,
                tls_key_file,
                ready_file,
                http_listen,
                http_ready_file,
                heartbeat_interval,
                lease_ttl,
            } => {
                let state = if etcd.is_empty() {
                    StateSpec::Embedded { path: state }
                } else {
                    StateSpec::Etcd {
                        endpoints: etcd,
                        prefix: etcd_prefix,
                    }
                };
                cli::coordinator(cli::CoordinatorOptions {
                    listen,
                    state,
                    election_ttl,
                    join_token_file,
                    client_token_file,
                    advertise,
                    tls: tls_cert_file.zip(tls_key_file),
                    ready_file,
                    http_listen,
                    http_ready_file,
                    lease: LeaseConfig {
                        heartbeat_interval,
                        ttl: lease_ttl,
                    },
                })
                .await
            }
            Command::Submit {
                path,
                job,
                follow,
                vars,
                coordinator,
                token,
            } => cli::submit(
                coordinator.as_deref(),
                &token.flags(),
                &path,
                job.as_deref(),
                &vars.options(),
                follow,
            )
            .await
            .map(drop),
            Command::Status {
                job,
                json,
                follow,
                remote,
            } => match remote.target() {
                Ok(target) => cli::status(&target, job.as_deref(), json, follow).await,
                Err(e) => Err(e),
            },
            Command::Logs {
                job,
                rank,
                follow,
                json,
                remote,
            } => match remote.target() {
                Ok(target) => cli::logs::logs(&target, &job, rank, follow, json).await,
                Err(e) => Err(e),
            },
            Command::Cancel { job, remote } => match remote.target() {
                Ok(target) => cli::cancel(&target, &job).await,
                Err(e) => Err(e),
            },
            Command::Resume {
                job,
                from,
                follow,
                remote,
            } => match remote.target() {
                Ok(target) => cli::resume(&target, &job, from, follow).await,
                Err(e) => Err(e),
            },
            Command::Plan {
                dir,
                out,
                json,
                vars,
            } => infra::plan(&dir, &vars.options(), out.as_deref(), json),
            Command::Apply {
                target,
                auto_approve,
                vars,
            } => infra::apply(&target, &vars.options(), auto_approve).await,
            Command::Destroy { dir, auto_approve } => infra::destroy(&dir, auto_approve).await,
            Command::State { dir, json } => infra::show(&dir, json),
            Command::Serve {
                reference,
                listen,
                max_batch_size,
                max_delay,
                watch_interval,
                ready_file,
                worker,
                drift,
                store,
            } => cli::inference::serve(
                &store.arg(),
                &cli::inference::ServeOptions {
                    reference: &reference,
                    listen: &listen,
                    max_batch_size,
                    max_delay,
                    watch_interval,
                    ready_file: ready_file.as_deref(),
                    worker: worker.as_ref(),
                    drift: drift.settings(),
                },
            ),
            Command::Data(command) => commands::data(command).await,
            Command::Completions { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut std::io::stdout());
                Ok(())
            }
            Command::Tls(TlsCommand::Init { dir, hosts, json }) => {
                cli::tls::init(&dir, &hosts, json)
            }
            Command::Models(command) => commands::models(command).await,
            Command::Bench(BenchCommand::Allreduce(args)) => cli::worker_binary()
                .and_then(|bin| bench::allreduce(&args, &bin).map_err(CliError::infra)),
            Command::Bench(BenchCommand::ControlPlane(args)) => cli::load::control_plane(&args)
                .await
                .map_err(CliError::infra),
            Command::Bench(BenchCommand::Checkpoint(args)) => cli::worker_binary()
                .and_then(|bin| bench::checkpoint(&args, &bin).map_err(CliError::infra)),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Diagnostics render themselves in full; other errors get their cause chain.
            match e.error() {
                Some(error) if error.is::<kiln_iac::Diagnostics>() => eprintln!("{error}"),
                Some(_) => eprintln!("error: {e}"),
                None => {}
            }
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}

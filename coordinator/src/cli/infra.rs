//! `kiln plan / apply / destroy / state`: the configuration's clusters as declared
//! infrastructure, Terraform-style.
//!
//! What exists is recorded in a state store of its own, `<config dir>/.kiln/infra/state.redb`
//! (separate from the coordinators' job state, which a running coordinator holds open): every
//! resource with its provider handle, a `serial` that grows with every write and a `lineage`
//! that names this state for good. Commands open the database only for a moment, so several
//! can take turns; an operation that changes things holds a lock record naming its holder,
//! and every state write checks that it still holds that lock.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use kiln_iac::LoadOptions;
use kiln_iac::plan::{self, Action, Change, Plan, Recorded, ResourceKind};
use kiln_iac::provider::{AnyProvider, ApplyContext, Provider};
use kiln_iac::spec::Config;
use serde::{Deserialize, Serialize};

use super::common::{load, random_token, worker_binary, write_atomically};
use super::error::{CliError, ResultExt};
use crate::state::{EmbeddedStore, StateError, StateStore};

const STATE_KEY: &str = "infra/state";
const LOCK_KEY: &str = "infra/lock";
/// How long a command waits for another one's brief hold on the database file.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Version of the plan file format.
const PLAN_FORMAT: u32 = 1;
/// How long a destroyed process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What exists, as last recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InfraState {
    lineage: String,
    serial: u64,
    resources: Vec<Recorded>,
}

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LockInfo {
    id: String,
    operation: String,
    pid: u32,
    host: String,
    user: String,
    since_unix_ms: u64,
}

impl LockInfo {
    fn describe(&self) -> String {
        let age = unix_ms().saturating_sub(self.since_unix_ms) / 1000;
        format!(
            "`kiln {}` (pid {} on {}, user {}) for {age}s",
            self.operation, self.pid, self.host, self.user
        )
    }

    /// Held by a process of this host that no longer runs.
    fn is_stale(&self) -> bool {
        self.host == hostname()
            && rustix::process::Pid::from_raw(self.pid as i32)
                .is_some_and(|pid| rustix::process::test_kill_process(pid).is_err())
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The infrastructure state of one configuration directory.
struct Infra {
    dir: PathBuf,
}

/// The held lock; released on drop.
struct LockGuard<'a> {
    infra: &'a Infra,
    lock: Vec<u8>,
}

fn state_err(e: StateError) -> CliError {
    CliError::infra(e)
}

impl Infra {
    fn of(config_dir: &Path) -> Self {
        Self {
            dir: config_dir.join(".kiln").join("infra"),
        }
    }

    /// Whether anything was ever planned or applied here: commands that only look (`state`,
    /// `destroy`, client commands finding a coordinator) must not create the state.
    fn exists(&self) -> bool {
        self.dir.join("state.redb").is_file()
    }

    /// Opens the database, waiting while another command has it open.
    fn open(&self) -> Result<EmbeddedStore, CliError> {
        let deadline = Instant::now() + OPEN_TIMEOUT;
        loop {
            match EmbeddedStore::open(&self.dir) {
                Err(StateError::Locked(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other.map_err(state_err),
            }
        }
    }

    fn read(&self) -> Result<InfraState, CliError> {
        let store = self.open()?;
        loop {
            if let Some(bytes) = store.get(STATE_KEY).map_err(state_err)? {
                return serde_json::from_slice(&bytes)
                    .with_context(|| format!("the state in {} is unreadable", self.dir.display()))
                    .infra();
            }
            // A new state gets its lineage once, so that plans made before the first apply
            // match it.
            let fresh = InfraState {
                lineage: random_token(),
                serial: 0,
                resources: Vec::new(),
            };
            let bytes = serde_json::to_vec(&fresh).infra()?;
            let created = store
                .write_if(&[(STATE_KEY, None)], &[(STATE_KEY, Some(&bytes))])
                .map_err(state_err)?;
            if created.is_ok() {
                return Ok(fresh);
            }
        }
    }

    /// Takes the lock for `operation`, or says who holds it. A lock left by a process of
    /// this host that no longer runs is taken over.
    fn lock(&self, operation: &str) -> Result<LockGuard<'_>, CliError> {
        let info = LockInfo {
            id: random_token(),
            operation: operation.to_owned(),
            pid: std::process::id(),
            host: hostname(),
            user: std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
            since_unix_ms: unix_ms(),
        };
        let lock = serde_json::to_vec(&info).infra()?;
        let store = self.open()?;
        let held = match store
            .write_if(&[(LOCK_KEY, None)], &[(LOCK_KEY, Some(&lock))])
            .map_err(state_err)?
        {
            Ok(()) => return Ok(LockGuard { infra: self, lock }),
            Err(held) => held.unwrap_or_default(),
        };
        let holder: Option<LockInfo> = serde_json::from_slice(&held).ok();
        match holder {
            Some(holder) if holder.is_stale() => {
                eprintln!(
                    "kiln: taking over the lock left by {} (that process is gone)",
                    holder.describe()
                );
                match store
                    .write_if(&[(LOCK_KEY, Some(&held))], &[(LOCK_KEY, Some(&lock))])
                    .map_err(state_err)?
                {
                    Ok(()) => Ok(LockGuard { infra: self, lock }),
                    Err(_) => Err(locked(self, "another command took it first")),
                }
            }
            Some(holder) => Err(locked(self, &holder.describe())),
            None => Err(locked(self, "an unreadable lock record")),
        }
    }
}

fn locked(infra: &Infra, holder: &str) -> CliError {
    CliError::infra(anyhow!(
        "the state in {} is locked by {holder}; wait for it to finish",
        infra.dir.display()
    ))
}

impl LockGuard<'_> {
    /// Writes `state`, provided the lock is still ours.
    fn save(&self, state: &InfraState) -> Result<(), CliError> {
        let bytes = serde_json::to_vec(state).infra()?;
        let store = self.infra.open()?;
        store
            .write_if(
                &[(LOCK_KEY, Some(&self.lock))],
                &[(STATE_KEY, Some(&bytes))],
            )
            .map_err(state_err)?
            .map_err(|_| {
                CliError::infra(anyhow!(
                    "lost the lock on {} while applying; the last change is not recorded",
                    self.infra.dir.display()
                ))
            })
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let released = self.infra.open().and_then(|store| {
            store
                .write_if(&[(LOCK_KEY, Some(&self.lock))], &[(LOCK_KEY, None)])
                .map_err(state_err)
        });
        if let Err(e) = released {
            eprintln!("kiln: could not release the state lock: {e}");
        }
    }
}

/// Refreshes `state` through `provider` and diffs it against `config`.
fn make_plan(provider: &AnyProvider, config: &Config, state: &InfraState) -> Plan {
    let observed = provider.refresh(&state.resources);
    Plan {
        lineage: state.lineage.clone(),
        serial: state.serial,
        changes: provider.plan(&plan::desired(config), &observed),
    }
}

/// A saved plan: the plan and the configuration directory it applies to.
#[derive(Serialize, Deserialize)]
struct PlanFile {
    format: u32,
    dir: PathBuf,
    plan: Plan,
}

/// `kiln plan DIR [--out FILE] [--json]`.
pub fn plan(
    dir: &Path,
    vars: &LoadOptions,
    out: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    let config = load(dir, vars)?;
    let infra = Infra::of(&config.dir);
    let plan = make_plan(&AnyProvider::new(), &config, &infra.read()?);
    if json {
        let (add, change, destroy) = plan.counts();
        let mut shown = serde_json::to_value(&plan).infra()?;
        shown["add"] = add.into();
        shown["change"] = change.into();
        shown["destroy"] = destroy.into();
        println!("{shown}");
    } else {
        println!("{plan}");
    }
    if let Some(out) = out {
        let file = PlanFile {
            format: PLAN_FORMAT,
            dir: config.dir.clone(),
            plan,
        };
        let json = serde_json::to_vec_pretty(&file).infra()?;
        write_atomically(out, &json)
            .with_context(|| format!("writing the plan to {}", out.display()))
            .infra()?;
        println!(
            "\nSaved the plan to {}; `kiln apply {}` applies exactly these changes.",
            out.display(),
            out.display()
        );
    }
    Ok(())
}

/// `kiln apply DIR | PLANFILE [--auto-approve]`.
pub async fn apply(target: &Path, vars: &LoadOptions, auto_approve: bool) -> Result<(), CliError> {
    let mut provider = AnyProvider::new();
    if target.is_file() {
        let file: PlanFile = std::fs::read(target)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Ok(serde_json::from_slice(&bytes)?))
            .with_context(|| format!("{} is not a kiln plan file", target.display()))
            .bad_input()?;
        if file.format != PLAN_FORMAT {
            return Err(CliError::bad_input(anyhow!(
                "{} has plan format {}, this kiln reads {PLAN_FORMAT}",
                target.display(),
                file.format
            )));
        }
        let infra = Infra::of(&file.dir);
        let guard = infra.lock("apply")?;
        let mut state = infra.read()?;
        if (state.lineage.as_str(), state.serial) != (file.plan.lineage.as_str(), file.plan.serial)
        {
            return Err(CliError::bad_input(anyhow!(
                "the plan in {} is stale: it was made at state serial {}, and the state is at serial {} now; run `kiln plan` again",
                target.display(),
                file.plan.serial,
                state.serial
            )));
        }
        println!("{}", file.plan);
        return execute(
            &mut provider,
            &file.plan,
            &mut state,
            &guard,
            &file.dir,
            "Apply",
        )
        .await;
    }
    let config = load(target, vars)?;
    let infra = Infra::of(&config.dir);
    let guard = infra.lock("apply")?;
    let mut state = infra.read()?;
    let plan = make_plan(&provider, &config, &state);
    println!("{plan}");
    if plan.changes.is_empty() {
        return Ok(());
    }
    confirm(auto_approve, "Apply these changes?")?;
    execute(
        &mut provider,
        &plan,
        &mut state,
        &guard,
        &config.dir,
        "Apply",
    )
    .await
}

/// The configuration directory `dir` (which must exist, though its configuration need not
/// load) and its infrastructure state.
fn infra_of(dir: &Path) -> Result<(PathBuf, Infra), CliError> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot read {}", dir.display()))
        .bad_input()?;
    let infra = Infra::of(&dir);
    Ok((dir, infra))
}

/// `kiln destroy DIR [--auto-approve]`: stops everything the state records. The configuration
/// is not needed (it may be broken or gone).
pub async fn destroy(dir: &Path, auto_approve: bool) -> Result<(), CliError> {
    let (dir, infra) = infra_of(dir)?;
    if !infra.exists() {
        println!(
            "no state in {}: nothing was applied there, nothing to destroy",
            dir.display()
        );
        return Ok(());
    }
    let mut provider = AnyProvider::new();
    let guard = infra.lock("destroy")?;
    let mut state = infra.read()?;
    let plan = Plan {
        lineage: state.lineage.clone(),
        serial: state.serial,
        changes: plan::destroy_all(&provider.refresh(&state.resources)),
    };
    println!("{plan}");
    if plan.changes.is_empty() {
        return Ok(());
    }
    confirm(auto_approve, "Destroy all of these resources?")?;
    execute(&mut provider, &plan, &mut state, &guard, &dir, "Destroy").await
}

/// Asks on the terminal; only `yes` goes on. Without a terminal, only `--auto-approve` does.
fn confirm(auto_approve: bool, question: &str) -> Result<(), CliError> {
    if auto_approve {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::bad_input(anyhow!(
            "no terminal to confirm on; review the plan and pass --auto-approve"
        )));
    }
    print!("\n{question} Only 'yes' is accepted: ");
    std::io::stdout().flush().infra()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).infra()?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(CliError::job_failed(anyhow!(
            "cancelled; nothing was changed"
        )))
    }
}

/// Applies `plan` change by change, recording the state after each one, so that a failure or
/// a crash part-way leaves a state that says what exists.
async fn execute(
    provider: &mut AnyProvider,
    plan: &Plan,
    state: &mut InfraState,
    guard: &LockGuard<'_>,
    config_dir: &Path,
    what: &str,
) -> Result<(), CliError> {
    let cx = ApplyContext {
        kiln_bin: std::env::current_exe().infra()?,
        worker_bin: worker_binary()?,
        log_dir: config_dir.join(".kiln").join("logs"),
        grace: STOP_GRACE,
    };
    println!();
    for change in &plan.changes {
        let started = Instant::now();
        let record = provider
            .apply(change, &state.resources, &cx)
            .await
            .with_context(|| format!("{} failed", verb(change)))
            .infra();
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                println!("{}: failed", change.address);
                return Err(e);
            }
        };
        state.resources.retain(|r| r.address != change.address);
        let detail = record.as_ref().map(describe).unwrap_or_default();
        state.resources.extend(record);
        state.resources.sort_by(|a, b| a.address.cmp(&b.address));
        state.serial += 1;
        guard.save(state)?;
        println!(
            "{}: {} in {:.1}s{detail}",
            change.address,
            done(change.action),
            started.elapsed().as_secs_f64()
        );
    }
    let (add, change, destroy) = plan.counts();
    println!(
        "\n{what} complete: {add} added, {change} changed, {destroy} destroyed (state serial {}).",
        state.serial
    );
    for coordinator in state
        .resources
        .iter()
        .filter(|r| matches!(r.address.kind, ResourceKind::Coordinator { .. }))
    {
        let cluster = &coordinator.address.cluster;
        if let Some(url) = coordinator.handle.get("url").and_then(|u| u.as_str()) {
            println!("cluster {cluster}: coordinator at {url}");
        }
        if let Some(url) = coordinator.handle.get("http_url").and_then(|u| u.as_str()) {
            println!("cluster {cluster}: dashboard and metrics at {url}");
        }
    }
    for server in &state.resources {
        if let (ResourceKind::Server { job }, Some(url), Some(model)) = (
            &server.address.kind,
            server.handle.get("url").and_then(|u| u.as_str()),
            server.attrs.get("model").and_then(|m| m.as_str()),
        ) {
            println!("job {job}: {model} served at {url}");
        }
    }
    Ok(())
}

/// The URL of a running model server that `kiln apply` started from the configuration in
/// `config_dir` for model `model`; `None` when there is none.
pub(crate) fn applied_server(config_dir: &Path, model: &str) -> Option<String> {
    let infra = Infra::of(config_dir);
    if !infra.exists() {
        return None;
    }
    let serves = |r: &Recorded| {
        let named = r.attrs.get("model").and_then(|m| m.as_str());
        matches!(r.address.kind, ResourceKind::Server { .. })
            && named.is_some_and(|m| m.split('@').next() == Some(model))
    };
    let servers: Vec<Recorded> = infra
        .read()
        .ok()?
        .resources
        .into_iter()
        .filter(serves)
        .collect();
    AnyProvider::new()
        .refresh(&servers)
        .into_iter()
        .filter(|o| o.gone.is_none())
        .find_map(|o| Some(o.recorded.handle.get("url")?.as_str()?.to_owned()))
}

fn verb(change: &Change) -> String {
    let verb = match change.action {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Replace => "replacing",
        Action::Delete => "destroying",
    };
    format!("{verb} {}", change.address)
}

fn done(action: Action) -> &'static str {
    match action {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Replace => "replaced",
        Action::Delete => "destroyed",
    }
}

/// ` (pid N, http://...)`, ` (pid N on HOST)`, ` (Slurm job N)` for a record's handle.
fn describe(record: &Recorded) -> String {
    let text = |name| record.handle.get(name).and_then(|v| v.as_str());
    let pid = record.handle.get("pid").map(|p| match text("host") {
        Some(host) => format!("pid {p} on {host}"),
        None => format!("pid {p}"),
    });
    let job = text("job_id").map(|id| format!("Slurm job {id}"));
    let url = text("url").map(str::to_owned);
    let parts: Vec<String> = pid.into_iter().chain(job).chain(url).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// A coordinator `kiln apply` recorded.
pub(crate) struct AppliedCoordinator {
    /// Its cluster.
    pub(crate) cluster: String,
    /// Where clients reach it.
    pub(crate) url: String,
    /// The file it wrote its client token to.
    pub(crate) client_token_file: Option<PathBuf>,
    /// The CA its certificate is verified against, when it serves TLS.
    pub(crate) ca_file: Option<PathBuf>,
    /// Why it no longer runs; `None` while it does.
    pub(crate) gone: Option<String>,
}

/// The coordinators `kiln apply` started from the configuration in `config_dir`, one per
/// cluster (the URLs of its running replicas, comma-separated), each with whether it still
/// runs; none when nothing was applied there.
pub(crate) fn applied_coordinators(config_dir: &Path) -> Result<Vec<AppliedCoordinator>, CliError> {
    let infra = Infra::of(config_dir);
    if !infra.exists() {
        return Ok(Vec::new());
    }
    let state = infra.read()?;
    let mut clusters: Vec<AppliedCoordinator> = Vec::new();
    for replica in replicas(&state) {
        match clusters.iter_mut().find(|c| c.cluster == replica.cluster) {
            None => clusters.push(replica),
            Some(cluster) => match (&cluster.gone, &replica.gone) {
                // A running replica is reached; gone ones are left out.
                (None, Some(_)) => {}
                (Some(_), None) => *cluster = replica,
                (None, None) => cluster.url = format!("{},{}", cluster.url, replica.url),
                (Some(why), Some(also)) => cluster.gone = Some(format!("{why}; {also}")),
            },
        }
    }
    Ok(clusters)
}

/// Every recorded coordinator replica, refreshed.
fn replicas(state: &InfraState) -> Vec<AppliedCoordinator> {
    AnyProvider::new()
        .refresh(&state.resources)
        .into_iter()
        .filter(|o| matches!(o.recorded.address.kind, ResourceKind::Coordinator { .. }))
        .filter_map(|o| {
            Some(AppliedCoordinator {
                url: o.recorded.handle.get("url")?.as_str()?.to_owned(),
                client_token_file: o
                    .recorded
                    .handle
                    .get("client_token_file")
                    .and_then(|v| v.as_str())
                    .map(PathBuf::from),
                ca_file: o
                    .recorded
                    .handle
                    .get("ca_file")
                    .and_then(|v| v.as_str())
                    .map(PathBuf::from),
                cluster: o.recorded.address.cluster.clone(),
                gone: o.gone,
            })
        })
        .collect()
}

/// `kiln state DIR [--json]`: what the state records, and whether each resource still exists.
pub fn show(dir: &Path, json: bool) -> Result<(), CliError> {
    let (dir, infra) = infra_of(dir)?;
    if !infra.exists() {
        if json {
            println!(
                "{}",
                serde_json::json!({ "serial": 0, "lineage": null, "resources": [] })
            );
        } else {
            println!("no state in {}: nothing was applied there", dir.display());
        }
        return Ok(());
    }
    let state = infra.read()?;
    let observed = AnyProvider::new().refresh(&state.resources);
    if json {
        let resources: Vec<serde_json::Value> = observed
            .iter()
            .map(|o| {
                serde_json::json!({
                    "address": o.recorded.address.to_string(),
                    "attributes": o.recorded.attrs,
                    "handle": o.recorded.handle,
                    "running": o.gone.is_none(),
                    "gone": o.gone,
                })
            })
            .collect();
        let shown = serde_json::json!({
            "serial": state.serial,
            "lineage": state.lineage,
            "resources": resources,
        });
        println!("{shown}");
        return Ok(());
    }
    println!("state serial {}, lineage {}", state.serial, state.lineage);
    if observed.is_empty() {
        println!("no resources");
        return Ok(());
    }
    for observed in observed {
        let status = match &observed.gone {
            None => "running".to_owned(),
            Some(why) => format!("gone: {why}"),
        };
        println!(
            "{}{}  {status}",
            observed.recorded.address,
            describe(&observed.recorded)
        );
    }
    Ok(())
}

//! `kiln bench control-plane`: how many workers one coordinator holds. Simulated workers (a
//! load generator, not trainers) register, open their assignment stream and heartbeat once a
//! second, as real ones do, against a `kiln coordinator` process started here for each count,
//! on an embedded state or on etcd. Reports the heartbeat latency (p50, p99, max), failed
//! calls, and the coordinator's CPU use, per count.
//!
//! Simulated workers share connections (one per 100), as no host runs thousands of worker
//! processes: the coordinator's cost is its RPCs and leases, which this exercises in full.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_proto::WORKER_SECRET_HEADER;
use kiln_proto::auth::Credential;
use kiln_proto::v1::coordinator_client::CoordinatorClient;
use kiln_proto::v1::{AssignmentsRequest, HeartbeatRequest, RegisterRequest};
use tonic::transport::Channel;

/// Arguments of `kiln bench control-plane`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlPlaneArgs {
    /// Simulated worker counts to measure, in order, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,5000")]
    pub workers: Vec<usize>,
    /// Seconds of heartbeats measured at each count, once every worker has registered.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Run the coordinator on etcd at these endpoints (comma separated) instead of an
    /// embedded state; each count gets a fresh key prefix.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// One JSON object per count instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Simulated workers per connection.
const PER_CONNECTION: usize = 100;
/// Heartbeat period, as the default `heartbeat_interval`.
const PERIOD: Duration = Duration::from_secs(1);

/// What one count measured.
#[derive(Debug, serde::Serialize)]
struct Measured {
    backend: &'static str,
    workers: usize,
    heartbeats: usize,
    failed: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    register_secs: f64,
    coordinator_cpu: f64,
}

/// `kiln bench control-plane`.
pub async fn control_plane(args: &ControlPlaneArgs) -> anyhow::Result<()> {
    let kiln = std::env::current_exe().context("locating the kiln executable")?;
    if !args.json {
        println!(
            "{:<9} {:>7} {:>11} {:>7} {:>8} {:>8} {:>8} {:>10} {:>8}",
            "backend",
            "workers",
            "heartbeats",
            "failed",
            "p50 ms",
            "p99 ms",
            "max ms",
            "register s",
            "cpu"
        );
    }
    for &workers in &args.workers {
        let dir = tempfile::tempdir()?;
        let coordinator = Coordinator::start(&kiln, dir.path(), &args.etcd, workers)?;
        let measured = measure(&coordinator, workers, args).await;
        drop(coordinator);
        let m = measured?;
        if args.json {
            println!("{}", serde_json::to_string(&m)?);
        } else {
            println!(
                "{:<9} {:>7} {:>11} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>10.2} {:>7.0}%",
                m.backend,
                m.workers,
                m.heartbeats,
                m.failed,
                m.p50_ms,
                m.p99_ms,
                m.max_ms,
                m.register_secs,
                m.coordinator_cpu * 100.0
            );
        }
    }
    Ok(())
}

/// A `kiln coordinator` child, killed on drop.
struct Coordinator {
    child: Child,
    url: String,
    token: String,
    backend: &'static str,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coordinator {
    fn start(kiln: &Path, dir: &Path, etcd: &[String], workers: usize) -> anyhow::Result<Self> {
        let token = "bench-join-token".to_owned();
        std::fs::write(dir.join("join-token"), &token)?;
        std::fs::write(dir.join("client-token"), "bench-client-token")?;
        let ready = dir.join("ready");
        let mut cmd = Command::new(kiln);
        cmd.args(["coordinator", "--listen", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .arg("--join-token-file")
            .arg(dir.join("join-token"))
            .arg("--client-token-file")
            .arg(dir.join("client-token"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                dir.join("coordinator.log"),
            )?));
        let backend = if etcd.is_empty() {
            cmd.arg("--state").arg(dir.join("state"));
            "embedded"
        } else {
            let prefix = format!("/kiln-bench-{}-{workers}/", std::process::id());
            cmd.arg("--etcd")
                .arg(etcd.join(","))
                .arg("--etcd-prefix")
                .arg(prefix);
            "etcd"
        };
        let child = cmd.spawn().context("starting kiln coordinator")?;
        let mut coordinator = Self {
            child,
            url: String::new(),
            token,
            backend,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // A leader on etcd writes its ready file as a standby, then campaigns: wait for both.
        let log = dir.join("coordinator.log");
        loop {
            let url = std::fs::read_to_string(&ready).unwrap_or_default();
            let leads = backend == "embedded"
                || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("elected leader"));
            if !url.is_empty() && leads {
                coordinator.url = url.trim().to_owned();
                return Ok(coordinator);
            }
            if let Some(status) = coordinator.child.try_wait()? {
                bail!(
                    "kiln coordinator exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("kiln coordinator did not start in 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// User plus system CPU seconds of the coordinator so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

async fn measure(
    coordinator: &Coordinator,
    workers: usize,
    args: &ControlPlaneArgs,
) -> anyhow::Result<Measured> {
    let connections = workers.div_ceil(PER_CONNECTION);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            kiln_proto::transport::endpoint(&coordinator.url, None)?
                .connect()
                .await
                .with_context(|| format!("connecting to {}", coordinator.url))?,
        );
    }
    let failed = Arc::new(AtomicU64::new(0));
    // Each worker heartbeats from its registration on, as a real one does (registering
    // thousands takes longer than a lease); the window measured opens one second after the
    // last registration.
    let (window_tx, window) = tokio::sync::watch::channel(None);
    let registering = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for chunk in (0..workers).collect::<Vec<_>>().chunks(256) {
        let calls = chunk.iter().map(|&i| {
            let channel = channels[i % connections].clone();
            register(channel, &coordinator.token, i)
        });
        for (worker, &i) in futures::future::join_all(calls)
            .await
            .into_iter()
            .zip(chunk)
        {
            // Heartbeats are spread over the period, as independent workers' are.
            let first = tokio::time::Instant::now() + PERIOD.mul_f64(i as f64 / workers as f64);
            tasks.push(tokio::spawn(heartbeats(
                worker?,
                first,
                window.clone(),
                failed.clone(),
            )));
        }
    }
    let register_secs = registering.elapsed().as_secs_f64();
    let start = tokio::time::Instant::now() + Duration::from_secs(1);
    let end = start + Duration::from_secs(args.seconds);
    window_tx.send_replace(Some((start, end)));
    tokio::time::sleep_until(start).await;
    let cpu_before = (Instant::now(), coordinator.cpu_seconds());
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let cpu = (coordinator.cpu_seconds() - cpu_before.1) / cpu_before.0.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d: &Duration| d.as_secs_f64() * 1e3)
    };
    Ok(Measured {
        backend: coordinator.backend,
        workers,
        heartbeats: latencies.len(),
        failed: failed.load(Ordering::Relaxed),
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        register_secs,
        coordinator_cpu: cpu,
    })
}

/// A registered simulated worker: its client (carrying its secret), id and open stream.
struct Simulated {
    client: kiln_proto::auth::Client,
    id: String,
    _stream: tonic::Streaming<kiln_proto::v1::WorkerCommand>,
}

async fn register(channel: Channel, token: &str, i: usize) -> anyhow::Result<Simulated> {
    let response = CoordinatorClient::new(channel.clone())
        .register(RegisterRequest {
            join_token: token.to_owned(),
            collective_addr: "127.0.0.1:9".into(),
            node_name: format!("sim-{i}"),
            pid: std::process::id(),
            model_kinds: vec!["mlp".into()],
            ..RegisterRequest::default()
        })
        .await
        .with_context(|| format!("registering simulated worker {i}"))?
        .into_inner();
    let secret = Credential::new(
        WORKER_SECRET_HEADER,
        &response.worker_secret,
        "worker secret",
    )?;
    let mut client = CoordinatorClient::with_interceptor(channel, secret);
    let stream = client
        .assignments(AssignmentsRequest {
            worker_id: response.worker_id.clone(),
        })
        .await
        .with_context(|| format!("opening simulated worker {i}'s stream"))?
        .into_inner();
    Ok(Simulated {
        client,
        id: response.worker_id,
        _stream: stream,
    })
}

/// Heartbeats once a period from `first` until the window measured ends; returns the
/// latencies of those sent inside it (`window`: its start and end, once known).
async fn heartbeats(
    mut worker: Simulated,
    first: tokio::time::Instant,
    window: tokio::sync::watch::Receiver<Option<(tokio::time::Instant, tokio::time::Instant)>>,
    failed: Arc<AtomicU64>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut ticker = tokio::time::interval_at(first, PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let at = ticker.tick().await;
        let window = *window.borrow();
        if window.is_some_and(|(_, end)| at >= end) {
            return latencies;
        }
        let sent = Instant::now();
        let request = HeartbeatRequest {
            worker_id: worker.id.clone(),
        };
        let ok = worker.client.heartbeat(request).await.is_ok();
        if window.is_some_and(|(start, _)| at >= start) {
            if ok {
                latencies.push(sent.elapsed());
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

//! `kiln bench allreduce`: measures the workers' ring all-reduce with real processes on this
//! machine, the way `nccl-tests` measures NCCL. `kiln bench checkpoint`: what checkpoints cost
//! the training loop, background uploads against blocking saves of the same state, and the
//! throughput with checkpoints against none ([`checkpoint`]).
//!
//! This module owns the benchmark's processes and its report: it starts one
//! `kiln-worker bench-allreduce` per rank, brokers the exchange of ring addresses over their
//! standard streams, collects rank 0's timings (one JSON line per size) and prints a table.
//! The children are killed and reaped on every way out, errors included. It does not link the
//! worker (no Burn in the CLI): the all-reduce and its timing loop live in the worker binary.
//!
//! The checkpoint benchmark is one `kiln-worker bench-checkpoint` process that trains and
//! prints its timings as one JSON line; this module summarises them.
//!
//! Bandwidths follow NCCL's definitions: algbw = bytes / time, and busbw = algbw · 2(n-1)/n,
//! the rate each rank's link must sustain, comparable across rank counts. GB is 10⁹ bytes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use kiln_proto::bench::{CheckpointBenchResult, RunKind, RunResult, SizeResult};

/// Arguments of `kiln bench allreduce`.
#[derive(clap::Args, Debug, Clone)]
pub struct AllreduceArgs {
    /// Number of ranks (worker processes) in the ring, 2 to 1024.
    #[arg(long, default_value_t = 2, value_parser = parse_ranks)]
    pub ranks: u32,
    /// Buffer sizes to measure, comma separated, with an optional B, KiB, MiB or GiB suffix;
    /// each a whole number of f32s.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_size,
        default_value = "1MiB,16MiB,64MiB,256MiB"
    )]
    pub sizes: Vec<u64>,
    /// Timed iterations per size.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Untimed warm-up iterations per size.
    #[arg(long, default_value_t = 3)]
    pub warmup: u32,
    /// Gives up (and kills the workers) if the whole benchmark takes longer, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print the results as JSON (one object) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses a byte size such as `4096`, `512KiB`, `64MiB` or `1GiB` (binary units), which must
/// be a positive whole number of f32s.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: expected a number such as 64MiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            let hint = match other.to_ascii_lowercase().as_str() {
                "k" | "kb" | "kib" => " (did you mean `KiB`?)",
                "m" | "mb" | "mib" => " (did you mean `MiB`?)",
                "g" | "gb" | "gib" => " (did you mean `GiB`?)",
                _ => "",
            };
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use B, KiB, MiB or GiB{hint}"
            ));
        }
    };
    let bytes = number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes == 0 {
        return Err("a size must be positive".to_owned());
    }
    if !bytes.is_multiple_of(4) {
        return Err(format!(
            "`{text}` is {bytes} bytes, not a whole number of f32s (4 bytes each)"
        ));
    }
    Ok(bytes)
}

/// Writes `bytes` in the largest binary unit that divides it, e.g. `64 MiB` or `1000 B`.
pub fn format_size(bytes: u64) -> String {
    [("GiB", 30), ("MiB", 20), ("KiB", 10)]
        .into_iter()
        .find(|&(_, shift)| bytes >= 1 << shift && bytes.is_multiple_of(1 << shift))
        .map_or_else(
            || format!("{bytes} B"),
            |(unit, shift)| format!("{} {unit}", bytes >> shift),
        )
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Row {
    size_bytes: u64,
    median_s: f64,
    min_s: f64,
    max_s: f64,
    algbw_gbps: f64,
    busbw_gbps: f64,
}

impl Row {
    fn new(result: &SizeResult) -> anyhow::Result<Self> {
        let mut times = result.times_s.clone();
        ensure!(
            !times.is_empty() && times.iter().all(|t| t.is_finite() && *t > 0.0),
            "rank 0 reported unusable timings for {} bytes",
            result.size_bytes
        );
        times.sort_by(f64::total_cmp);
        let mid = times.len() / 2;
        let median_s = if times.len() % 2 == 1 {
            times[mid]
        } else {
            (times[mid - 1] + times[mid]) / 2.0
        };
        let algbw_gbps = result.size_bytes as f64 / median_s / 1e9;
        let n = result.ranks as f64;
        Ok(Self {
            size_bytes: result.size_bytes,
            median_s,
            min_s: times[0],
            max_s: times[times.len() - 1],
            algbw_gbps,
            busbw_gbps: algbw_gbps * 2.0 * (n - 1.0) / n,
        })
    }
}

fn render_table(ranks: u32, iters: u32, warmup: u32, rows: &[Row]) -> String {
    let mut out = format!(
        "ring all-reduce (mean), {ranks} rank(s), median of {iters} iterations after {warmup} \
         warm-up; GB = 1e9 bytes\n{:>10} {:>11} {:>9} {:>9} {:>11} {:>11}\n",
        "size", "median ms", "min ms", "max ms", "algbw GB/s", "busbw GB/s"
    );
    for row in rows {
        out.push_str(&format!(
            "{:>10} {:>11.3} {:>9.3} {:>9.3} {:>11.3} {:>11.3}\n",
            format_size(row.size_bytes),
            row.median_s * 1e3,
            row.min_s * 1e3,
            row.max_s * 1e3,
            row.algbw_gbps,
            row.busbw_gbps
        ));
    }
    out
}

/// The benchmark's worker processes and the threads reading their stdout; dropping it kills
/// and reaps the processes, then joins the threads (whose pipes the deaths close).
struct Workers {
    children: Vec<Child>,
    readers: Vec<JoinHandle<()>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            // Fails only if it already exited, which `wait` then collects.
            let _ = child.kill();
            let _ = child.wait();
        }
        // A reader ends when its pipe closes, which a worker's own child could delay: give
        // them a moment, and leave any that are still blocked to end with their pipe.
        let grace = Instant::now() + Duration::from_secs(1);
        while Instant::now() < grace && !self.readers.iter().all(JoinHandle::is_finished) {
            thread::sleep(Duration::from_millis(10));
        }
        for reader in self.readers.drain(..) {
            if reader.is_finished() {
                let _ = reader.join();
            } else {
                tracing::debug!("a worker's stdout is still open after it was killed");
            }
        }
    }
}

impl Workers {
    /// Waits for every worker to exit until `deadline`, and fails unless all succeeded.
    fn wait_all(&mut self, deadline: Instant) -> anyhow::Result<()> {
        for (rank, child) in self.children.iter_mut().enumerate() {
            let status = wait_until(child, deadline)
                .with_context(|| format!("waiting for rank {rank}"))?
                .ok_or_else(|| anyhow!("rank {rank} did not exit before the deadline"))?;
            ensure!(status.success(), "rank {rank} failed: {status}");
        }
        Ok(())
    }

    /// Why the benchmark cannot go on after rank `rank` closed its stdout early.
    fn early_exit(&mut self, rank: usize) -> anyhow::Error {
        let deadline = Instant::now() + Duration::from_secs(5);
        match wait_until(&mut self.children[rank], deadline) {
            Ok(Some(status)) => anyhow!("rank {rank} exited early: {status}"),
            _ => anyhow!("rank {rank} closed its stdout early"),
        }
    }
}

/// Polls `child` until it exits or `deadline` passes (`None`).
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

enum Event {
    Line(usize, String),
    Closed(usize),
}

/// `--ranks`: a ring of one rank moves nothing, so its "bandwidth" would measure a copy.
fn parse_ranks(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(1) => Err(
            "one rank moves no data (its all-reduce is a local copy); measure 2 to 1024 ranks"
                .to_owned(),
        ),
        Ok(n @ 2..=1024) => Ok(n),
        _ => Err(format!("{text:?} is not a rank count from 2 to 1024")),
    }
}

/// Runs the all-reduce benchmark with `worker_bin` (the `kiln-worker` executable) and prints
/// the table on stdout.
pub fn allreduce(args: &AllreduceArgs, worker_bin: &Path) -> anyhow::Result<()> {
    ensure!(!args.sizes.is_empty(), "no sizes to measure");
    let ranks = args.ranks as usize;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let sizes = args
        .sizes
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");

    let (events, inbox) = mpsc::channel();
    let mut workers = Workers {
        children: Vec::with_capacity(ranks),
        readers: Vec::with_capacity(ranks),
    };
    let mut stdins: Vec<ChildStdin> = Vec::with_capacity(ranks);
    for rank in 0..ranks {
        let mut child = Command::new(worker_bin)
            .arg("bench-allreduce")
            .args(["--rank", &rank.to_string()])
            .args(["--world-size", &ranks.to_string()])
            .args(["--sizes", &sizes])
            .args(["--iters", &args.iters.to_string()])
            .args(["--warmup", &args.warmup.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} for rank {rank}", worker_bin.display()))?;
        let stdout = child.stdout.take();
        stdins.extend(child.stdin.take());
        workers.children.push(child);
        let stdout = stdout.ok_or_else(|| anyhow!("rank {rank} has no stdout pipe"))?;
        let events = events.clone();
        let reader = thread::Builder::new()
            .name(format!("bench-rank-{rank}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if events.send(Event::Line(rank, line)).is_err() {
                        return;
                    }
                }
                let _ = events.send(Event::Closed(rank));
            })
            .context("starting a reader thread")?;
        workers.readers.push(reader);
    }
    drop(events);
    ensure!(stdins.len() == ranks, "a worker has no stdin pipe");

    let next_event = |what: &str| -> anyhow::Result<Event> {
        let left = deadline.saturating_duration_since(Instant::now());
        inbox
            .recv_timeout(left)
            .map_err(|_| anyhow!("timed out after {}s waiting for {what}", args.timeout_secs))
    };

    // Every rank's first line is its ring address.
    let mut addrs: Vec<Option<SocketAddr>> = vec![None; ranks];
    while addrs.iter().any(Option::is_none) {
        match next_event("the workers' addresses")? {
            Event::Line(rank, line) if addrs[rank].is_none() => {
                let addr = line
                    .trim()
                    .parse()
                    .with_context(|| format!("rank {rank} printed {line:?}, not an address"))?;
                addrs[rank] = Some(addr);
            }
            Event::Line(rank, line) => bail!("rank {rank} printed {line:?} before the ring formed"),
            Event::Closed(rank) => return Err(workers.early_exit(rank)),
        }
    }
    let peers = addrs
        .iter()
        .flatten()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for (rank, mut stdin) in stdins.into_iter().enumerate() {
        writeln!(stdin, "{peers}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("sending the peer list to rank {rank}"))?;
    }

    let mut rows = Vec::with_capacity(args.sizes.len());
    loop {
        match next_event("the results")? {
            Event::Line(0, line) => {
                let result: SizeResult = serde_json::from_str(&line)
                    .with_context(|| format!("rank 0 printed {line:?}, not a result"))?;
                rows.push(Row::new(&result)?);
            }
            Event::Line(rank, line) => tracing::warn!(rank, %line, "unexpected output"),
            Event::Closed(0) => break,
            Event::Closed(_) => {}
        }
    }
    workers.wait_all(deadline)?;
    ensure!(
        rows.len() == args.sizes.len(),
        "rank 0 reported {} of {} sizes",
        rows.len(),
        args.sizes.len()
    );
    let text = if args.json {
        serde_json::json!({
            "ranks": args.ranks,
            "iters": args.iters,
            "warmup": args.warmup,
            "sizes": rows,
        })
        .to_string()
            + "\n"
    } else {
        render_table(args.ranks, args.iters, args.warmup, &rows)
    };
    print_out(&text)
}

fn print_out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("printing the results")
}

/// Arguments of `kiln bench checkpoint`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckpointArgs {
    /// Hidden layer widths of the MLP (64 inputs, 10 classes), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1024,1024")]
    pub hidden: Vec<u32>,
    /// Samples per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// Optimizer steps per training run.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Checkpoint every this many steps in the runs that checkpoint.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub every: u32,
    /// Runs of each kind (none, async, sync), interleaved.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeats: u32,
    /// Gives up (and kills the worker) if the whole benchmark takes longer, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
    /// Print the results as JSON (one object) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The runs of one kind, summarised.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct KindSummary {
    runs: usize,
    checkpoints: usize,
    /// Median over every checkpoint of every run.
    median_stall_s: f64,
    max_stall_s: f64,
    /// Median over the runs.
    samples_per_sec: f64,
    waits: u32,
}

impl KindSummary {
    fn new(result: &CheckpointBenchResult, kind: RunKind) -> anyhow::Result<Self> {
        let runs: Vec<&RunResult> = result.runs.iter().filter(|r| r.kind == kind).collect();
        ensure!(!runs.is_empty(), "the worker reported no {kind:?} run");
        let stalls: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.stalls_s.iter().copied())
            .collect();
        let rates: Vec<f64> = runs.iter().map(|r| r.samples_per_sec).collect();
        ensure!(
            rates.iter().all(|r| r.is_finite() && *r > 0.0)
                && stalls.iter().all(|s| s.is_finite() && *s >= 0.0),
            "the worker reported unusable timings for {kind:?} runs"
        );
        Ok(Self {
            runs: runs.len(),
            checkpoints: stalls.len(),
            median_stall_s: median(&stalls).unwrap_or(0.0),
            max_stall_s: stalls.iter().copied().fold(0.0, f64::max),
            samples_per_sec: median(&rates).unwrap_or(0.0),
            waits: runs.iter().map(|r| r.checkpoint_waits).sum(),
        })
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

fn render_checkpoint_table(
    hidden: &[u32],
    result: &CheckpointBenchResult,
) -> anyhow::Result<String> {
    let none = KindSummary::new(result, RunKind::None)?;
    let background = KindSummary::new(result, RunKind::Async)?;
    let blocking = KindSummary::new(result, RunKind::Sync)?;
    let widths = hidden
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("-");
    let mut out = format!(
        "checkpoints of an MLP 64-{widths}-10 ({} parameters, {:.1} MiB per checkpoint), batch \
         {}, {} steps per run, every {} steps, {} run(s) of each kind, interleaved\n\
         {:<26} {:>11} {:>15} {:>12} {:>10} {:>6}\n",
        result.params,
        result.checkpoint_bytes as f64 / f64::from(1 << 20),
        result.batch_size,
        result.steps,
        result.every,
        none.runs,
        "",
        "checkpoints",
        "median stall ms",
        "max stall ms",
        "samples/s",
        "waits"
    );
    for (name, kind) in [
        ("none", &none),
        ("async (background upload)", &background),
        ("sync (blocking save)", &blocking),
    ] {
        out.push_str(&format!(
            "{name:<26} {:>11} {:>15.3} {:>12.3} {:>10.1} {:>6}\n",
            kind.checkpoints,
            kind.median_stall_s * 1e3,
            kind.max_stall_s * 1e3,
            kind.samples_per_sec,
            kind.waits
        ));
    }
    let ratio = if blocking.median_stall_s > 0.0 {
        background.median_stall_s / blocking.median_stall_s
    } else {
        f64::NAN
    };
    out.push_str(&format!(
        "median stall per checkpoint, async / sync: {ratio:.4} (goal <= 0.05)\n\
         throughput loss with checkpoints every {} steps vs none, median of {} rounds (min, \
         max):\n",
        result.every, none.runs
    ));
    for (name, kind, goal) in [
        ("async", RunKind::Async, " (goal <= 1 %)"),
        ("sync", RunKind::Sync, ""),
    ] {
        let (median, min, max) = paired_loss(result, kind)?;
        out.push_str(&format!(
            "  {name:<5} {median:>6.2} % ({min:.2}, {max:.2}){goal}\n"
        ));
    }
    Ok(out)
}

/// The throughput loss of `kind` against the run without checkpoints of the same round, in
/// percent: median, min and max over the rounds. Pairing by round cancels the machine's slow
/// drift, which on a shared machine is larger than the effect measured.
fn paired_loss(result: &CheckpointBenchResult, kind: RunKind) -> anyhow::Result<(f64, f64, f64)> {
    let rate = |kind: RunKind, repeat: u32| {
        result
            .runs
            .iter()
            .find(|r| r.kind == kind && r.repeat == repeat)
            .map(|r| r.samples_per_sec)
    };
    let losses: Vec<f64> = result
        .runs
        .iter()
        .filter(|r| r.kind == kind)
        .filter_map(|r| Some((1.0 - r.samples_per_sec / rate(RunKind::None, r.repeat)?) * 100.0))
        .collect();
    let median = median(&losses)
        .ok_or_else(|| anyhow!("no round has both a {kind:?} run and one without checkpoints"))?;
    let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
    let max = losses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok((median, min, max))
}

/// Runs the checkpoint benchmark with `worker_bin` (the `kiln-worker` executable) and prints
/// the table on stdout.
pub fn checkpoint(args: &CheckpointArgs, worker_bin: &Path) -> anyhow::Result<()> {
    ensure!(!args.hidden.is_empty(), "no hidden layers");
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let hidden = args
        .hidden
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut child = Command::new(worker_bin)
        .arg("bench-checkpoint")
        .args(["--hidden", &hidden])
        .args(["--batch-size", &args.batch_size.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--every", &args.every.to_string()])
        .args(["--repeats", &args.repeats.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", worker_bin.display()))?;
    let stdout = child.stdout.take();
    let mut workers = Workers {
        children: vec![child],
        readers: Vec::new(),
    };
    let mut stdout = stdout.ok_or_else(|| anyhow!("the worker has no stdout pipe"))?;
    let (output, inbox) = mpsc::channel();
    workers.readers.push(
        thread::Builder::new()
            .name("bench-checkpoint".into())
            .spawn(move || {
                let mut text = String::new();
                let _ = output.send(stdout.read_to_string(&mut text).map(|_| text));
            })
            .context("starting a reader thread")?,
    );
    let text = inbox
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .map_err(|_| anyhow!("timed out after {}s", args.timeout_secs))?
        .context("reading the worker's output")?;
    workers.wait_all(deadline)?;
    let line = text
        .lines()
        .last()
        .ok_or_else(|| anyhow!("the worker printed no result"))?;
    let result: CheckpointBenchResult = serde_json::from_str(line)
        .with_context(|| format!("the worker printed {line:?}, not a result"))?;
    let text = if args.json {
        serde_json::json!({
            "params": result.params,
            "checkpoint_bytes": result.checkpoint_bytes,
            "batch_size": result.batch_size,
            "steps": result.steps,
            "every": result.every,
            "none": KindSummary::new(&result, RunKind::None)?,
            "background": KindSummary::new(&result, RunKind::Async)?,
            "blocking": KindSummary::new(&result, RunKind::Sync)?,
        })
        .to_string()
            + "\n"
    } else {
        render_checkpoint_table(&args.hidden, &result)?
    };
    print_out(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64B"), Ok(64));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size(" 16MiB "), Ok(16 << 20));
        assert_eq!(parse_size("256 MiB"), Ok(256 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    }

    #[test]
    fn rejects_bad_sizes_with_a_reason() {
        let err = |text| parse_size(text).expect_err(text);
        assert!(err("").contains("not a size"));
        assert!(err("MiB").contains("not a size"));
        assert!(err("0MiB").contains("positive"));
        assert!(err("6B").contains("whole number of f32s"));
        assert!(err("64MB").contains("did you mean `MiB`"));
        assert!(err("1mib").contains("did you mean `MiB`"));
        assert!(err("3TiB").contains("unknown unit"));
        assert!(err("99999999999999GiB").contains("too large"));
    }

    #[test]
    fn formats_sizes_in_the_largest_exact_unit() {
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(256 << 20), "256 MiB");
        assert_eq!(format_size(3 << 30), "3 GiB");
        assert_eq!(format_size(1536), "1536 B");
        assert_eq!(format_size(1000), "1000 B");
    }

    #[test]
    fn default_sizes_parse() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: AllreduceArgs,
        }
        let cli = Cli::try_parse_from(["kiln"]).expect("defaults parse");
        assert_eq!(cli.args.sizes, [1 << 20, 16 << 20, 64 << 20, 256 << 20]);
        assert_eq!(
            (cli.args.ranks, cli.args.iters, cli.args.warmup),
            (2, 20, 3)
        );
        let cli = Cli::try_parse_from(["kiln", "--ranks", "3", "--sizes", "4KiB,8MiB"])
            .expect("explicit sizes parse");
        assert_eq!(cli.args.sizes, [4 << 10, 8 << 20]);
        assert!(Cli::try_parse_from(["kiln", "--ranks", "0"]).is_err());
        let one = Cli::try_parse_from(["kiln", "--ranks", "1"])
            .err()
            .expect("one rank is refused");
        assert!(one.to_string().contains("moves no data"), "{one}");
    }

    #[test]
    fn rows_use_the_median_and_nccl_bus_bandwidth() {
        let result = SizeResult {
            size_bytes: 1_000_000_000,
            ranks: 4,
            times_s: vec![4.0, 1.0, 2.0, 3.0],
        };
        let row = Row::new(&result).expect("row");
        assert_eq!(row.median_s, 2.5);
        assert_eq!((row.min_s, row.max_s), (1.0, 4.0));
        assert!((row.algbw_gbps - 0.4).abs() < 1e-12);
        assert!((row.busbw_gbps - 0.6).abs() < 1e-12);
        let single = SizeResult {
            ranks: 1,
            times_s: vec![1.0],
            ..result
        };
        assert_eq!(Row::new(&single).expect("row").busbw_gbps, 0.0);
        let empty = SizeResult {
            times_s: Vec::new(),
            ..single
        };
        assert!(Row::new(&empty).is_err());
    }

    #[test]
    fn table_lists_every_size() {
        let rows = [
            Row {
                size_bytes: 1 << 20,
                median_s: 0.001,
                min_s: 0.0009,
                max_s: 0.002,
                algbw_gbps: 1.048_576,
                busbw_gbps: 1.048_576,
            },
            Row {
                size_bytes: 64 << 20,
                median_s: 0.05,
                min_s: 0.04,
                max_s: 0.06,
                algbw_gbps: 1.342,
                busbw_gbps: 1.342,
            },
        ];
        let table = render_table(2, 20, 3, &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].contains("2 rank(s)"));
        assert!(lines[1].contains("busbw GB/s"));
        assert!(lines[2].trim_start().starts_with("1 MiB") && lines[2].contains("1.049"));
        assert!(lines[3].trim_start().starts_with("64 MiB") && lines[3].contains("50.000"));
    }

    #[test]
    fn checkpoint_table_compares_medians() {
        let run = |kind, repeat, samples_per_sec, stalls_s: &[f64], checkpoint_waits| RunResult {
            kind,
            repeat,
            samples_per_sec,
            stalls_s: stalls_s.to_vec(),
            checkpoint_waits,
        };
        let result = CheckpointBenchResult {
            params: 1_126_410,
            checkpoint_bytes: 13 << 20,
            steps: 200,
            every: 100,
            batch_size: 64,
            runs: vec![
                run(RunKind::None, 0, 1000.0, &[], 0),
                run(RunKind::Async, 0, 995.0, &[0.001, 0.002, 0.3], 1),
                run(RunKind::Sync, 0, 900.0, &[0.2, 0.25], 0),
                run(RunKind::Async, 1, 990.0, &[0.003, 0.2], 0),
                run(RunKind::Sync, 1, 909.0, &[0.2, 0.2], 0),
                run(RunKind::None, 1, 1010.0, &[], 0),
            ],
        };
        let background = KindSummary::new(&result, RunKind::Async).expect("summary");
        assert_eq!(
            (background.runs, background.checkpoints, background.waits),
            (2, 5, 1)
        );
        assert_eq!(background.median_stall_s, 0.003);
        assert_eq!(background.max_stall_s, 0.3);
        assert_eq!(background.samples_per_sec, 992.5);

        let table = render_checkpoint_table(&[1024, 1024], &result).expect("table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 9, "{table}");
        assert!(lines[0].contains("64-1024-1024-10") && lines[0].contains("13.0 MiB"));
        assert!(lines[2].starts_with("none") && lines[2].contains("1005.0"));
        assert!(lines[3].starts_with("async") && lines[3].contains("3.000"));
        assert!(lines[4].starts_with("sync") && lines[4].contains("200.000"));
        // 0.003 / 0.2.
        assert!(lines[5].ends_with("0.0150 (goal <= 0.05)"), "{}", lines[5]);
        assert!(lines[6].contains("median of 2 rounds"), "{}", lines[6]);
        // Round 0: 1 - 995/1000, round 1: 1 - 990/1010; sync loses 10 % in both.
        assert_eq!(lines[7], "  async   1.24 % (0.50, 1.98) (goal <= 1 %)");
        assert_eq!(lines[8], "  sync   10.00 % (10.00, 10.00)");

        let missing = CheckpointBenchResult {
            runs: result.runs[..2].to_vec(),
            ..result
        };
        assert!(render_checkpoint_table(&[8], &missing).is_err());
    }
}

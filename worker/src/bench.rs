//! The worker side of `kiln bench allreduce`: one rank of a [`RingCollective`] benchmark,
//! run as `kiln-worker bench-allreduce`.
//!
//! The coordinator starts one process per rank and talks to each over its standard streams:
//! the process binds its ring listener, prints the address as one line on stdout, reads the
//! comma-separated addresses of all ranks (in rank order) as one line from stdin, and joins the
//! ring. For every size it runs a small all-reduce (so the ranks start together), the warm-up
//! iterations, and the timed ones; rank 0 then prints one JSON line per size on stdout
//! ([`SizeResult`]). Timings are rank 0's wall time around each call. Logs go to stderr.
//!
//! This module does not compute bandwidths or print tables: the coordinator does.

use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::collective::{Collective, RingCollective, RingOptions};

/// Arguments of `kiln-worker bench-allreduce`.
#[derive(clap::Args, Debug, Clone)]
pub struct AllreduceBenchArgs {
    /// This process's rank, in `0..world-size`.
    #[arg(long)]
    pub rank: usize,
    /// Number of ranks.
    #[arg(long)]
    pub world_size: usize,
    /// Buffer sizes to measure, in bytes (multiples of 4), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub sizes: Vec<usize>,
    /// Timed iterations per size.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Untimed iterations per size before the timed ones.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Address to bind the ring listener to.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// How long to wait for the other ranks to join the ring, in seconds.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout_secs: u64,
    /// Reduce-scatter receive chunk, in bytes (default: the ring's default).
    #[arg(long)]
    pub chunk_bytes: Option<usize>,
    /// SO_SNDBUF/SO_RCVBUF for the ring sockets, in bytes (default: kernel autotuning).
    #[arg(long)]
    pub socket_buffer_bytes: Option<usize>,
    /// How long to retry the sockets before sleeping, in microseconds (default: the ring's).
    #[arg(long)]
    pub spin_us: Option<u64>,
}

/// What rank 0 prints for one size: one JSON object per line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SizeResult {
    /// Buffer size in bytes.
    pub size_bytes: usize,
    /// Number of ranks.
    pub ranks: usize,
    /// Wall time of each timed iteration on rank 0, in seconds.
    pub times_s: Vec<f64>,
}

/// Runs one rank of the all-reduce benchmark; see the [module documentation](self).
pub fn run_allreduce_rank(args: AllreduceBenchArgs) -> anyhow::Result<()> {
    ensure!(args.world_size >= 1, "--world-size must be at least 1");
    ensure!(
        args.rank < args.world_size,
        "--rank {} is not below --world-size {}",
        args.rank,
        args.world_size
    );
    ensure!(args.iters >= 1, "--iters must be at least 1");
    if let Some(bad) = args.sizes.iter().find(|&&size| !size.is_multiple_of(4)) {
        bail!("size {bad} is not a whole number of f32s (a multiple of 4 bytes)");
    }

    let listener = TcpListener::bind(args.bind)
        .with_context(|| format!("binding the ring listener on {}", args.bind))?;
    let addr = listener
        .local_addr()
        .context("reading the listener address")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{addr}").context("printing the listener address")?;
    stdout.flush().context("printing the listener address")?;

    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the peer list from stdin")?;
    let peers = line
        .trim()
        .split(',')
        .map(|peer| {
            peer.trim()
                .parse::<SocketAddr>()
                .with_context(|| format!("peer address {peer:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(
        peers.len() == args.world_size,
        "got {} peer addresses for a world of {}",
        peers.len(),
        args.world_size
    );
    ensure!(
        peers[args.rank] == addr,
        "peer list has {} for rank {}, but this rank listens on {addr}",
        peers[args.rank],
        args.rank
    );

    let mut options = RingOptions::default().with_socket_buffer_bytes(args.socket_buffer_bytes);
    if let Some(chunk) = args.chunk_bytes {
        options = options.with_chunk_bytes(chunk);
    }
    if let Some(spin) = args.spin_us {
        options = options.with_spin(Duration::from_micros(spin));
    }
    // The session only has to tell this ring from strangers on the same ports, and every rank
    // must derive the same one: the peer list is what they share.
    let session = peers.iter().fold(args.world_size as u64, |acc, peer| {
        acc.rotate_left(17) ^ u64::from(peer.port())
    });
    let mut ring = RingCollective::connect_with_options(
        &listener,
        args.rank,
        &peers,
        session,
        Duration::from_secs(args.connect_timeout_secs),
        options,
    )
    .context("joining the benchmark ring")?;
    tracing::info!(rank = args.rank, world = args.world_size, "ring connected");

    for &size in &args.sizes {
        let times = measure(&mut ring, size / 4, args.warmup, args.iters)
            .with_context(|| format!("all-reduce of {size} bytes"))?;
        if args.rank == 0 {
            let result = SizeResult {
                size_bytes: size,
                ranks: args.world_size,
                times_s: times,
            };
            let json = serde_json::to_string(&result).context("encoding a result")?;
            writeln!(stdout, "{json}").context("printing a result")?;
            stdout.flush().context("printing a result")?;
        }
    }
    Ok(())
}

/// Times `iters` all-reduces of `elems` floats after `warmup` untimed ones, and checks the
/// result: every rank starts with `rank + 1` everywhere, so every element ends as the mean of
/// `1..=world`.
fn measure(
    ring: &mut RingCollective,
    elems: usize,
    warmup: usize,
    iters: usize,
) -> anyhow::Result<Vec<f64>> {
    let world = ring.world_size();
    let mut buf = vec![(ring.rank() + 1) as f32; elems];
    // Opens the size with every rank present, so the first timed call does not also measure
    // the slowest rank's allocation.
    ring.all_reduce_mean(&mut [0.0])?;
    for _ in 0..warmup {
        ring.all_reduce_mean(&mut buf)?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        ring.all_reduce_mean(&mut buf)?;
        times.push(start.elapsed().as_secs_f64());
    }
    let expected = (world + 1) as f32 / 2.0;
    if let Some((i, x)) = buf
        .iter()
        .enumerate()
        .find(|(_, x)| (**x - expected).abs() > 1e-4 * expected)
    {
        bail!("wrong result: element {i} is {x}, expected {expected}");
    }
    Ok(times)
}

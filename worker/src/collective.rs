//! Gradient all-reduce between the ranks of one job: the [`Collective`] trait the training
//! loop calls once per step, and [`RingCollective`], a ring all-reduce over plain TCP.
//!
//! This module owns the ring's connection set-up (handshake, session filtering), the
//! reduce-scatter/all-gather data path, its timeouts, and aborting it from another thread. It
//! does not own rank assignment or peer discovery (the assignment says who is where), nor the
//! listener's lifetime: the worker binds one listener at start and hands it to every
//! [`RingCollective::connect`], across jobs and generations.
//!
//! # Algorithm
//!
//! The buffer is split into `world` contiguous segments whose sizes differ by at most one
//! element ([`segment`]). A reduce-scatter of `world - 1` steps leaves rank `r` with the sum of
//! segment `r + 1`, scaled by `1 / world` as its last step adds (for a world that is not a power
//! of two this may differ from dividing the sum by one ulp); an all-gather of `world - 1` steps
//! then circulates the finished segments. Each rank sends `2 (world - 1) / world` of the buffer,
//! which is optimal for bandwidth. In each step a rank sends the outgoing segment to rank `r + 1`
//! while it receives the incoming one from rank `r - 1`, concurrently: doing one after the other
//! would deadlock once a segment outgrows the socket buffers. The concurrency is an event loop
//! on non-blocking sockets in the calling thread (`epoll` through `mio`), writing whatever the
//! successor's connection accepts and reading whatever the predecessor's has (spinning
//! briefly, [`RingOptions::spin`], before it sleeps), rather than a
//! sender thread per step: it costs no thread start per step (which dominated small
//! all-reduces) and leaves one runnable thread per rank, which matters when ranks share a
//! few cores. The reduce-scatter reads in chunks ([`RingOptions::chunk_bytes`]) into a scratch
//! buffer and adds each chunk as it completes; the all-gather reads straight into the caller's
//! buffer. Every rank ends with bit-identical values: each element is computed once, by the
//! rank owning its segment, and copied everywhere else.
//!
//! # Wire format
//!
//! Integers and floats are little-endian. A connection opens with a 32-byte hello from the
//! connecting rank (`r`) to its successor (`r + 1`), which answers with its own hello as the
//! acknowledgement:
//!
//! | bytes  | field                                   |
//! |--------|-----------------------------------------|
//! | 0..8   | magic `KILNRING`                        |
//! | 8..12  | protocol version (`u32`, currently 1)   |
//! | 12..16 | world size (`u32`)                      |
//! | 16..20 | sender's rank (`u32`)                   |
//! | 20..24 | reserved, zero                          |
//! | 24..32 | session (`u64`)                         |
//!
//! Each all-reduce then sends a 16-byte header (element count `u64`, sequence number `u64`,
//! counting this ring's all-reduces from zero), followed by the segments as raw `f32`s.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

// The data path sends the in-memory representation of `f32` as is.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "the ring wire format is little-endian f32"
);

const MAGIC: [u8; 8] = *b"KILNRING";
const PROTOCOL_VERSION: u32 = 1;
const HELLO_LEN: usize = 32;
const HEADER_LEN: usize = 16;
/// Pause between attempts to reach a successor that is not listening or not accepting yet.
const DIAL_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// Poll interval of the accept loop while nothing is happening.
const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// An all-reduce over the ranks of one job.
///
/// Every rank must make the same sequence of calls with buffers of the same length.
pub trait Collective: Send {
    /// This process's rank, in `0..world_size()`.
    fn rank(&self) -> usize;

    /// Number of ranks taking part.
    fn world_size(&self) -> usize;

    /// Element-wise mean over all ranks, in place. Every rank calls it with the same length.
    ///
    /// On error the collective is unusable (every later call fails too): the caller tears the
    /// job's ring down and builds a new one.
    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError>;
}

/// What a ring was doing with a peer when something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerOp {
    /// Connecting to the successor (rank + 1) and exchanging hellos.
    Connect,
    /// Waiting for the predecessor (rank - 1) to connect.
    Accept,
    /// Sending data to the successor.
    Send,
    /// Receiving data from the predecessor.
    Receive,
}

impl std::fmt::Display for PeerOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerOp::Connect => "connecting to",
            PeerOp::Accept => "accepting a connection from",
            PeerOp::Send => "sending to",
            PeerOp::Receive => "receiving from",
        })
    }
}

/// Why a collective operation failed.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum CollectiveError {
    /// The arguments cannot describe a ring (rank out of range, no peers).
    #[error("invalid ring configuration: {0}")]
    InvalidConfig(String),
    /// A socket operation with a peer failed: it closed the connection, reset it, or is gone.
    #[error("{op} rank {peer_rank} ({peer_addr}) failed")]
    PeerIo {
        /// What we were doing.
        op: PeerOp,
        /// The peer's rank.
        peer_rank: usize,
        /// The peer's ring listener address.
        peer_addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// A peer made no progress for too long: the connect deadline passed, or a single read or
    /// write blocked longer than the operation timeout.
    #[error("timed out after {after:?} {op} rank {peer_rank} ({peer_addr})")]
    Timeout {
        /// What we were doing.
        op: PeerOp,
        /// The peer's rank.
        peer_rank: usize,
        /// The peer's ring listener address.
        peer_addr: SocketAddr,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// The successor answered the hello with something that is not a matching hello.
    #[error("handshake with rank {peer_rank} ({peer_addr}) failed: {reason}")]
    HandshakeMismatch {
        /// The peer's rank.
        peer_rank: usize,
        /// The peer's ring listener address.
        peer_addr: SocketAddr,
        /// What did not match.
        reason: String,
    },
    /// [`AbortHandle::abort`] was called.
    #[error("all-reduce aborted")]
    Aborted,
    /// The predecessor called the all-reduce with a buffer of another length.
    #[error(
        "all-reduce length mismatch: this rank has {local} elements, rank {peer_rank} has {peer}"
    )]
    LengthMismatch {
        /// This rank's element count.
        local: usize,
        /// The predecessor's rank.
        peer_rank: usize,
        /// The predecessor's element count.
        peer: u64,
    },
    /// The predecessor is at another all-reduce of the sequence (a rank skipped a call).
    #[error(
        "all-reduce out of step: this rank is at call {local}, rank {peer_rank} at call {peer}"
    )]
    OutOfStep {
        /// This rank's call number.
        local: u64,
        /// The predecessor's rank.
        peer_rank: usize,
        /// The predecessor's call number.
        peer: u64,
    },
    /// An earlier operation on this ring failed; the ring must be rebuilt.
    #[error("ring is unusable after an earlier failure; reconnect")]
    Broken,
    /// The event loop's poller could not be set up or waited on.
    #[error("ring event loop failed")]
    Poll(#[source] io::Error),
}

/// Tuning knobs of a [`RingCollective`]; [`Default`] suits loopback and datacenter networks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RingOptions {
    /// Longest an all-reduce may go without sending or receiving a byte before it fails with
    /// [`CollectiveError::Timeout`]: what bounds the wait on a hung peer. A peer that dies is
    /// noticed at once (end of file or reset), not after this.
    pub op_timeout: Duration,
    /// Reduce-scatter receive granularity, in bytes: small enough for the scratch chunk to
    /// stay in cache while it is added, large enough to keep system calls few. On loopback,
    /// 32–64 KiB beat 16 KiB and 128 KiB–1 MiB (`docs/benchmarks.md`).
    pub chunk_bytes: usize,
    /// `SO_SNDBUF`/`SO_RCVBUF` for the ring sockets; `None` leaves the kernel's autotuning,
    /// which on Linux also grows past `net.core.{w,r}mem_max`.
    pub socket_buffer_bytes: Option<usize>,
    /// How long a step keeps retrying its sockets after the last byte moved before it sleeps
    /// in `epoll`. A short spin saves the sleep and wake-up (an inter-processor interrupt, a
    /// VM exit on virtual machines) that would otherwise separate most packets; it burns at
    /// most this much CPU per wait. Zero sleeps at once.
    pub spin: Duration,
}

impl Default for RingOptions {
    fn default() -> Self {
        Self {
            op_timeout: Duration::from_secs(30),
            chunk_bytes: 64 << 10,
            socket_buffer_bytes: None,
            spin: Duration::from_micros(20),
        }
    }
}

impl RingOptions {
    /// Sets [`RingOptions::op_timeout`].
    #[must_use]
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }

    /// Sets [`RingOptions::chunk_bytes`] (rounded up to whole `f32`s).
    #[must_use]
    pub fn with_chunk_bytes(mut self, chunk_bytes: usize) -> Self {
        self.chunk_bytes = chunk_bytes;
        self
    }

    /// Sets [`RingOptions::spin`].
    #[must_use]
    pub fn with_spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Sets [`RingOptions::socket_buffer_bytes`].
    #[must_use]
    pub fn with_socket_buffer_bytes(mut self, bytes: Option<usize>) -> Self {
        self.socket_buffer_bytes = bytes;
        self
    }
}

/// The range of `buf[..len]` that segment `index` of `world` covers.
///
/// Segments are contiguous, in order, cover `0..len`, and their lengths differ by at most one
/// (the first `len % world` are one longer).
pub fn segment(len: usize, world: usize, index: usize) -> Range<usize> {
    debug_assert!(index < world, "segment {index} of {world}");
    let base = len / world;
    let extra = len % world;
    let start = index * base + index.min(extra);
    let size = base + usize::from(index < extra);
    start..start + size
}

/// Cancels a [`RingCollective`] from another thread.
///
/// Aborting shuts the ring's sockets down: an all-reduce blocked in them returns
/// [`CollectiveError::Aborted`] at once, the neighbours see the connection close, and every
/// later call fails. Aborting twice, or after the ring is dropped, does nothing more.
#[derive(Debug, Clone)]
pub struct AbortHandle {
    inner: Arc<AbortInner>,
}

#[derive(Debug)]
struct AbortInner {
    aborted: AtomicBool,
    /// Clones of the ring's sockets (same file descriptions), so shutting them down here
    /// unblocks the thread using them.
    sockets: Vec<TcpStream>,
}

impl AbortHandle {
    fn new(sockets: Vec<TcpStream>) -> Self {
        Self {
            inner: Arc::new(AbortInner {
                aborted: AtomicBool::new(false),
                sockets,
            }),
        }
    }

    /// Aborts the ring; see [`AbortHandle`].
    pub fn abort(&self) {
        self.inner.aborted.store(true, Ordering::SeqCst);
        for socket in &self.inner.sockets {
            // Already shut down or closed by the peer: nothing left to unblock.
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Whether [`AbortHandle::abort`] has been called.
    pub fn is_aborted(&self) -> bool {
        self.inner.aborted.load(Ordering::SeqCst)
    }
}

/// A ring all-reduce over TCP; see the [module documentation](self).
#[derive(Debug)]
pub struct RingCollective {
    rank: usize,
    world: usize,
    /// `None` for a world of one, which needs no sockets.
    links: Option<Links>,
    abort: AbortHandle,
    /// Set once an operation failed: the ring may be out of step and must not be reused.
    broken: bool,
    seq: u64,
    chunk_elems: usize,
    scratch: Vec<f32>,
}

/// The two connections of a rank, to its successor and from its predecessor (non-blocking),
/// and the poller that waits on them.
#[derive(Debug)]
struct Links {
    next: mio::net::TcpStream,
    next_rank: usize,
    next_addr: SocketAddr,
    prev: mio::net::TcpStream,
    prev_rank: usize,
    prev_addr: SocketAddr,
    op_timeout: Duration,
    spin: Duration,
    poll: mio::Poll,
    events: mio::Events,
}

const NEXT: mio::Token = mio::Token(0);
const PREV: mio::Token = mio::Token(1);

impl Links {
    /// Shuts both connections down so the neighbours stop waiting for data that will never
    /// come.
    fn shutdown(&self) {
        let _ = self.next.shutdown(Shutdown::Both);
        let _ = self.prev.shutdown(Shutdown::Both);
    }

    fn send_error(&self, source: io::Error) -> CollectiveError {
        peer_error(
            PeerOp::Send,
            self.next_rank,
            self.next_addr,
            self.op_timeout,
            source,
        )
    }

    fn recv_error(&self, source: io::Error) -> CollectiveError {
        peer_error(
            PeerOp::Receive,
            self.prev_rank,
            self.prev_addr,
            self.op_timeout,
            source,
        )
    }
}

fn peer_error(
    op: PeerOp,
    peer_rank: usize,
    peer_addr: SocketAddr,
    after: Duration,
    source: io::Error,
) -> CollectiveError {
    match source.kind() {
        // What a blocking socket with SO_RCVTIMEO/SO_SNDTIMEO reports when the timeout expires
        // (handshake), and what the event loop reports when a peer makes no progress.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CollectiveError::Timeout {
            op,
            peer_rank,
            peer_addr,
            after,
        },
        _ => CollectiveError::PeerIo {
            op,
            peer_rank,
            peer_addr,
            source,
        },
    }
}

/// The hello both ends of a ring connection send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hello {
    world: u32,
    rank: u32,
    session: u64,
}

impl Hello {
    fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.world.to_le_bytes());
        out[16..20].copy_from_slice(&self.rank.to_le_bytes());
        out[24..32].copy_from_slice(&self.session.to_le_bytes());
        out
    }

    /// Decodes a hello, or says why the bytes are not one of ours.
    fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Self, String> {
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if bytes[0..8] != MAGIC {
            return Err("not a kiln ring hello (bad magic)".to_owned());
        }
        let version = u32_at(8);
        if version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {version}, expected {PROTOCOL_VERSION}"
            ));
        }
        let mut session = [0u8; 8];
        session.copy_from_slice(&bytes[24..32]);
        Ok(Self {
            world: u32_at(12),
            rank: u32_at(16),
            session: u64::from_le_bytes(session),
        })
    }

    /// Why `self` is not the hello `expected`, if it is not.
    fn mismatch(&self, expected: &Self) -> Option<String> {
        if self.session != expected.session {
            Some(format!(
                "session {:#018x}, expected {:#018x}",
                self.session, expected.session
            ))
        } else if self.world != expected.world {
            Some(format!(
                "world size {}, expected {}",
                self.world, expected.world
            ))
        } else if self.rank != expected.rank {
            Some(format!(
                "sender rank {}, expected {}",
                self.rank, expected.rank
            ))
        } else {
            None
        }
    }
}

fn to_u32(value: usize, what: &str) -> Result<u32, CollectiveError> {
    u32::try_from(value)
        .map_err(|_| CollectiveError::InvalidConfig(format!("{what} {value} too large")))
}

impl RingCollective {
    /// Joins the ring `session` as `rank`, with the default [`RingOptions`].
    ///
    /// `listener` is this process's long-lived ring listener (bound once at worker start and
    /// reused across jobs/generations). `peers[i]` is rank i's listener address. `session`
    /// identifies this ring (e.g. hash of job id + generation): connections whose handshake
    /// carries another session or an unexpected sender rank are dropped and accepting
    /// continues. Connects to rank+1 (retrying until `timeout` while it isn't listening yet)
    /// and accepts from rank-1.
    ///
    /// The listener is switched to non-blocking mode while accepting and back afterwards. With
    /// one peer (world size 1) nothing is connected and the listener is not touched.
    pub fn connect(
        listener: &TcpListener,
        rank: usize,
        peers: &[SocketAddr],
        session: u64,
        timeout: Duration,
    ) -> Result<Self, CollectiveError> {
        Self::connect_with_options(
            listener,
            rank,
            peers,
            session,
            timeout,
            RingOptions::default(),
        )
    }

    /// [`RingCollective::connect`] with explicit [`RingOptions`].
    #[tracing::instrument(level = "debug", skip(listener, peers, options), fields(world = peers.len()))]
    pub fn connect_with_options(
        listener: &TcpListener,
        rank: usize,
        peers: &[SocketAddr],
        session: u64,
        timeout: Duration,
        options: RingOptions,
    ) -> Result<Self, CollectiveError> {
        let world = peers.len();
        if rank >= world {
            return Err(CollectiveError::InvalidConfig(format!(
                "rank {rank} is not below the world size {world}"
            )));
        }
        if options.op_timeout.is_zero() {
            return Err(CollectiveError::InvalidConfig(
                "the operation timeout must not be zero".to_owned(),
            ));
        }
        let chunk_elems = options.chunk_bytes.div_ceil(size_of::<f32>()).max(1);
        if world == 1 {
            return Ok(Self {
                rank,
                world,
                links: None,
                abort: AbortHandle::new(Vec::new()),
                broken: false,
                seq: 0,
                chunk_elems,
                scratch: Vec::new(),
            });
        }

        let deadline = Instant::now() + timeout;
        let next_rank = (rank + 1) % world;
        let prev_rank = (rank + world - 1) % world;
        let ours = Hello {
            world: to_u32(world, "world size")?,
            rank: to_u32(rank, "rank")?,
            session,
        };
        let from_prev = Hello {
            rank: to_u32(prev_rank, "rank")?,
            ..ours
        };
        let from_next = Hello {
            rank: to_u32(next_rank, "rank")?,
            ..ours
        };
        let next_addr = peers[next_rank];
        let prev_addr = peers[prev_rank];

        // Dial first: the hello then waits in the successor's backlog even if it is not
        // accepting yet, and no rank ever waits for its successor before accepting, so the
        // ring cannot deadlock on itself.
        let mut next = dial(next_addr, next_rank, &ours, deadline, timeout)?;
        let prev = accept_prev(
            listener, prev_rank, prev_addr, &ours, &from_prev, deadline, timeout,
        )?;
        loop {
            match read_ack(&mut next, &from_next, deadline) {
                Ok(()) => break,
                Err(AckError::Closed(_)) if Instant::now() < deadline => {
                    // The successor dropped us: it was still accepting for another session.
                    tracing::debug!(rank, next_rank, %next_addr, "successor closed before acknowledging, redialling");
                    thread::sleep(
                        DIAL_BACKOFF_MAX.min(deadline.saturating_duration_since(Instant::now())),
                    );
                    next = dial(next_addr, next_rank, &ours, deadline, timeout)?;
                }
                Err(AckError::Closed(source)) => {
                    return Err(peer_error(
                        PeerOp::Connect,
                        next_rank,
                        next_addr,
                        timeout,
                        source,
                    ));
                }
                Err(AckError::Mismatch(reason)) => {
                    return Err(CollectiveError::HandshakeMismatch {
                        peer_rank: next_rank,
                        peer_addr: next_addr,
                        reason,
                    });
                }
            }
        }

        for (stream, peer_rank, peer_addr, op) in [
            (&next, next_rank, next_addr, PeerOp::Connect),
            (&prev, prev_rank, prev_addr, PeerOp::Accept),
        ] {
            configure_stream(stream, &options)
                .map_err(|source| peer_error(op, peer_rank, peer_addr, timeout, source))?;
        }
        // Clones share the connections (and their non-blocking mode): the abort handle shuts
        // the same sockets down.
        let clones = [&next, &prev]
            .into_iter()
            .zip([
                (next_rank, next_addr, PeerOp::Connect),
                (prev_rank, prev_addr, PeerOp::Accept),
            ])
            .map(|(stream, (peer_rank, peer_addr, op))| {
                stream
                    .try_clone()
                    .map_err(|source| peer_error(op, peer_rank, peer_addr, timeout, source))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut next = mio::net::TcpStream::from_std(next);
        let mut prev = mio::net::TcpStream::from_std(prev);
        let poll = mio::Poll::new().map_err(CollectiveError::Poll)?;
        poll.registry()
            .register(&mut next, NEXT, mio::Interest::WRITABLE)
            .and_then(|()| {
                poll.registry()
                    .register(&mut prev, PREV, mio::Interest::READABLE)
            })
            .map_err(CollectiveError::Poll)?;
        tracing::debug!(rank, world, session, "ring connected");
        Ok(Self {
            rank,
            world,
            links: Some(Links {
                next,
                next_rank,
                next_addr,
                prev,
                prev_rank,
                prev_addr,
                op_timeout: options.op_timeout,
                spin: options.spin,
                poll,
                events: mio::Events::with_capacity(4),
            }),
            abort: AbortHandle::new(clones),
            broken: false,
            seq: 0,
            chunk_elems,
            scratch: Vec::new(),
        })
    }

    /// A handle another thread can use to abort: shuts the sockets down so a blocked
    /// all-reduce returns `Aborted`/an error at once.
    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    fn ring_all_reduce(
        &mut self,
        links: &mut Links,
        buf: &mut [f32],
    ) -> Result<(), CollectiveError> {
        let (world, rank) = (self.world, self.rank);
        let seq = self.seq;
        self.seq += 1;
        exchange_header(links, buf.len(), seq)?;
        if buf.is_empty() {
            return Ok(());
        }
        let largest = segment(buf.len(), world, 0).len();
        let scratch_len = self.chunk_elems.min(largest);
        if self.scratch.len() < scratch_len {
            self.scratch.resize(scratch_len, 0.0);
        }

        // Reduce-scatter: at step s rank r passes on segment r - s, which it has just added
        // its predecessor's partial sum into (or, at s = 0, its own data). The last step
        // completes segment r + 1, which is scaled to the mean as its chunks arrive.
        let scale = 1.0 / world as f32;
        for step in 0..world - 1 {
            let send = segment(buf.len(), world, (rank + world - step) % world);
            let recv = segment(buf.len(), world, (rank + 2 * world - step - 1) % world);
            let (send, recv) = disjoint(buf, send, recv);
            let last = step == world - 2;
            let mut sink = Accumulate {
                dst: recv,
                done: 0,
                scratch: &mut self.scratch,
                filled: 0,
                scale: last.then_some(scale),
            };
            transfer(links, bytemuck::cast_slice(send), &mut sink)?;
        }
        // All-gather: at step s rank r passes on segment r + 1 - s, finished by itself (s = 0)
        // or received at the previous step, and receives segment r - s in place.
        for step in 0..world - 1 {
            let send = segment(buf.len(), world, (rank + 1 + world - step) % world);
            let recv = segment(buf.len(), world, (rank + world - step) % world);
            let (send, recv) = disjoint(buf, send, recv);
            let mut sink = Overwrite {
                dst: bytemuck::cast_slice_mut(recv),
                done: 0,
            };
            transfer(links, bytemuck::cast_slice(send), &mut sink)?;
        }
        Ok(())
    }
}

impl Collective for RingCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        if self.abort.is_aborted() {
            return Err(CollectiveError::Aborted);
        }
        if self.broken {
            return Err(CollectiveError::Broken);
        }
        let Some(mut links) = self.links.take() else {
            // The mean of one rank's values is those values.
            return Ok(());
        };
        let result = self.ring_all_reduce(&mut links, buf);
        if let Err(error) = &result {
            self.broken = true;
            // Tell the neighbours now rather than when the ring is dropped.
            links.shutdown();
            tracing::debug!(rank = self.rank, world = self.world, seq = self.seq - 1, %error, "all-reduce failed");
        }
        self.links = Some(links);
        match result {
            Err(_) if self.abort.is_aborted() => Err(CollectiveError::Aborted),
            other => other,
        }
    }
}

/// Returns `buf[send]` and `buf[recv]`, two non-overlapping ranges.
fn disjoint(buf: &mut [f32], send: Range<usize>, recv: Range<usize>) -> (&[f32], &mut [f32]) {
    debug_assert!(send.end <= recv.start || recv.end <= send.start);
    if send.start < recv.start {
        let (low, high) = buf.split_at_mut(recv.start);
        (&low[send], &mut high[..recv.len()])
    } else {
        let (low, high) = buf.split_at_mut(send.start);
        (&high[..send.len()], &mut low[recv])
    }
}

/// Sends this rank's header to the successor and checks the predecessor's against it.
fn exchange_header(links: &mut Links, len: usize, seq: u64) -> Result<(), CollectiveError> {
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&(len as u64).to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    let mut theirs = [0u8; HEADER_LEN];
    transfer(
        links,
        &header,
        &mut Overwrite {
            dst: &mut theirs,
            done: 0,
        },
    )?;
    let (their_len, their_seq) = theirs.split_at(8);
    let their_len = u64::from_le_bytes(their_len.try_into().unwrap_or_default());
    let their_seq = u64::from_le_bytes(their_seq.try_into().unwrap_or_default());
    if their_seq != seq {
        return Err(CollectiveError::OutOfStep {
            local: seq,
            peer_rank: links.prev_rank,
            peer: their_seq,
        });
    }
    if their_len != len as u64 {
        return Err(CollectiveError::LengthMismatch {
            local: len,
            peer_rank: links.prev_rank,
            peer: their_len,
        });
    }
    Ok(())
}

/// Where the bytes a step receives go.
trait Sink {
    /// Bytes still to receive.
    fn remaining(&self) -> usize;
    /// Where the next bytes go: not empty while [`Sink::remaining`] is not zero.
    fn space(&mut self) -> &mut [u8];
    /// Takes note that `n` bytes were written to the front of [`Sink::space`].
    fn advance(&mut self, n: usize);
}

/// Receives straight into the destination (all-gather, headers).
struct Overwrite<'a> {
    dst: &'a mut [u8],
    done: usize,
}

impl Sink for Overwrite<'_> {
    fn remaining(&self) -> usize {
        self.dst.len() - self.done
    }

    fn space(&mut self) -> &mut [u8] {
        &mut self.dst[self.done..]
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
    }
}

/// Receives chunk by chunk into a scratch buffer and adds each complete chunk into the
/// destination (reduce-scatter), while it is still in cache.
struct Accumulate<'a> {
    dst: &'a mut [f32],
    /// Elements of `dst` already summed.
    done: usize,
    /// Holds the chunk being received; its length is the chunk size.
    scratch: &'a mut [f32],
    /// Bytes of the current chunk received so far.
    filled: usize,
    /// Multiplies the sums by this as they are made: the step that completes a segment turns
    /// it into the mean without another pass over memory.
    scale: Option<f32>,
}

impl Accumulate<'_> {
    /// Elements in the chunk being received.
    fn chunk_len(&self) -> usize {
        self.scratch.len().min(self.dst.len() - self.done)
    }
}

impl Sink for Accumulate<'_> {
    fn remaining(&self) -> usize {
        (self.dst.len() - self.done) * size_of::<f32>() - self.filled
    }

    fn space(&mut self) -> &mut [u8] {
        let len = self.chunk_len();
        &mut bytemuck::cast_slice_mut(&mut self.scratch[..len])[self.filled..]
    }

    fn advance(&mut self, n: usize) {
        self.filled += n;
        let len = self.chunk_len();
        if self.filled < len * size_of::<f32>() {
            return;
        }
        let src = &self.scratch[..len];
        let dst = &mut self.dst[self.done..self.done + len];
        match self.scale {
            None => dst.iter_mut().zip(src).for_each(|(d, s)| *d += *s),
            Some(k) => dst
                .iter_mut()
                .zip(src)
                .for_each(|(d, s)| *d = (*d + *s) * k),
        }
        self.done += len;
        self.filled = 0;
    }
}

/// One ring step: sends `out` to the successor while receiving `sink.remaining()` bytes from
/// the predecessor, both as fast as the two connections allow, until both are done.
fn transfer(links: &mut Links, out: &[u8], sink: &mut impl Sink) -> Result<(), CollectiveError> {
    let mut sent = 0;
    let mut last_progress = Instant::now();
    loop {
        // Readiness is edge-triggered: each direction goes on until it would block (or is done)
        // before the loop may wait.
        let mut progressed = false;
        while sent < out.len() {
            match (&links.next).write(&out[sent..]) {
                Ok(0) => return Err(links.send_error(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    sent += n;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(links.send_error(e)),
            }
        }
        while sink.remaining() > 0 {
            match (&links.prev).read(sink.space()) {
                Ok(0) => return Err(links.recv_error(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => {
                    sink.advance(n);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(links.recv_error(e)),
            }
        }
        if sent == out.len() && sink.remaining() == 0 {
            return Ok(());
        }

        let now = Instant::now();
        if progressed {
            last_progress = now;
        }
        let left = links
            .op_timeout
            .saturating_sub(now.duration_since(last_progress));
        if left.is_zero() {
            let timed_out = io::Error::from(io::ErrorKind::TimedOut);
            return Err(if sink.remaining() > 0 {
                links.recv_error(timed_out)
            } else {
                links.send_error(timed_out)
            });
        }
        if now.duration_since(last_progress) < links.spin {
            std::hint::spin_loop();
            continue;
        }
        match links.poll.poll(&mut links.events, Some(left)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CollectiveError::Poll(e)),
        }
    }
}

fn configure_stream(stream: &TcpStream, options: &RingOptions) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    if let Some(bytes) = options.socket_buffer_bytes {
        let socket = socket2::SockRef::from(stream);
        socket.set_send_buffer_size(bytes)?;
        socket.set_recv_buffer_size(bytes)?;
    }
    Ok(())
}

/// Connects to the successor and sends our hello, retrying while it is not listening yet.
fn dial(
    addr: SocketAddr,
    peer_rank: usize,
    hello: &Hello,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, CollectiveError> {
    let hello = hello.encode();
    let mut backoff = Duration::from_millis(5);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(CollectiveError::Timeout {
                op: PeerOp::Connect,
                peer_rank,
                peer_addr: addr,
                after: timeout,
            });
        }
        let attempt = TcpStream::connect_timeout(&addr, remaining).and_then(|mut stream| {
            stream.set_nodelay(true)?;
            stream.set_write_timeout(Some(remaining))?;
            stream.write_all(&hello)?;
            Ok(stream)
        });
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(error) => {
                tracing::trace!(peer_rank, %addr, %error, "successor not reachable yet");
            }
        }
        thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
        backoff = (backoff * 2).min(DIAL_BACKOFF_MAX);
    }
}

enum AckError {
    /// The connection closed or failed: the successor may have dropped it as stale.
    Closed(io::Error),
    /// The successor answered, but not with the matching hello.
    Mismatch(String),
}

fn read_ack(stream: &mut TcpStream, expected: &Hello, deadline: Instant) -> Result<(), AckError> {
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream
        .set_read_timeout(Some(remaining))
        .map_err(AckError::Closed)?;
    let mut bytes = [0u8; HELLO_LEN];
    stream.read_exact(&mut bytes).map_err(AckError::Closed)?;
    let ack = Hello::decode(&bytes).map_err(AckError::Mismatch)?;
    match ack.mismatch(expected) {
        Some(reason) => Err(AckError::Mismatch(reason)),
        None => Ok(()),
    }
}

/// An accepted connection whose hello has not fully arrived.
struct Pending {
    stream: TcpStream,
    from: SocketAddr,
    hello: [u8; HELLO_LEN],
    filled: usize,
}

/// Puts the listener back in blocking mode however accepting ends.
struct NonBlocking<'a>(&'a TcpListener);

impl Drop for NonBlocking<'_> {
    fn drop(&mut self) {
        let _ = self.0.set_nonblocking(false);
    }
}

/// Accepts connections until one carries the predecessor's hello for this session, which is
/// acknowledged and returned. Others (stale sessions, strangers, silent connections) are
/// dropped; their hellos are read without blocking, so none can hold up the real one.
fn accept_prev(
    listener: &TcpListener,
    prev_rank: usize,
    prev_addr: SocketAddr,
    ours: &Hello,
    expected: &Hello,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, CollectiveError> {
    let accept_error = |source| peer_error(PeerOp::Accept, prev_rank, prev_addr, timeout, source);
    listener.set_nonblocking(true).map_err(accept_error)?;
    let _restore = NonBlocking(listener);
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        let mut progressed = false;
        loop {
            match listener.accept() {
                Ok((stream, from)) => {
                    stream.set_nonblocking(true).map_err(accept_error)?;
                    pending.push(Pending {
                        stream,
                        from,
                        hello: [0; HELLO_LEN],
                        filled: 0,
                    });
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The connection went away before we got to it.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => return Err(accept_error(e)),
            }
        }

        let mut i = 0;
        while i < pending.len() {
            let conn = &mut pending[i];
            match conn.stream.read(&mut conn.hello[conn.filled..]) {
                Ok(0) => {
                    tracing::debug!(from = %conn.from, "ring connection closed before its hello");
                }
                Ok(n) => {
                    progressed = true;
                    conn.filled += n;
                    if conn.filled < HELLO_LEN {
                        continue;
                    }
                    let verdict = Hello::decode(&conn.hello)
                        .and_then(|hello| hello.mismatch(expected).map_or(Ok(()), Err));
                    match verdict {
                        Ok(()) => {
                            let mut stream = pending.swap_remove(i).stream;
                            stream.set_nonblocking(false).map_err(accept_error)?;
                            stream
                                .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
                                .map_err(accept_error)?;
                            stream.write_all(&ours.encode()).map_err(accept_error)?;
                            return Ok(stream);
                        }
                        Err(reason) => {
                            tracing::debug!(from = %conn.from, %reason, "dropping ring connection");
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    i += 1;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(from = %conn.from, error = %e, "ring connection failed before its hello");
                }
            }
            // Dropped: closed, failed, or not for us.
            pending.swap_remove(i);
            progressed = true;
        }

        if Instant::now() >= deadline {
            return Err(CollectiveError::Timeout {
                op: PeerOp::Accept,
                peer_rank: prev_rank,
                peer_addr: prev_addr,
                after: timeout,
            });
        }
        if !progressed {
            thread::sleep(ACCEPT_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn segments_partition_the_buffer(len in 0usize..10_000, world in 1usize..64) {
            let mut expected_start = 0;
            let sizes: Vec<usize> = (0..world)
                .map(|i| {
                    let range = segment(len, world, i);
                    assert_eq!(range.start, expected_start, "segments are contiguous and ordered");
                    expected_start = range.end;
                    range.len()
                })
                .collect();
            prop_assert_eq!(expected_start, len);
            let (min, max) = (sizes.iter().min().copied(), sizes.iter().max().copied());
            prop_assert!(max.unwrap_or(0) - min.unwrap_or(0) <= 1);
        }
    }

    proptest! {
        /// However the kernel splits the stream, every element is summed (and scaled) once.
        #[test]
        fn accumulate_sums_whatever_the_read_sizes(
            len in 0usize..300,
            chunk in 1usize..40,
            reads in prop::collection::vec(1usize..50, 1..16),
            scale in prop::option::of(Just(0.25f32)),
        ) {
            let start: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let incoming: Vec<f32> = (0..len).map(|i| (3 * i) as f32 + 0.5).collect();
            let bytes: &[u8] = bytemuck::cast_slice(&incoming);
            let mut dst = start.clone();
            let mut scratch = vec![0.0f32; chunk];
            let mut sink = Accumulate {
                dst: &mut dst,
                done: 0,
                scratch: &mut scratch,
                filled: 0,
                scale,
            };
            let mut fed = 0;
            let mut reads = reads.iter().copied().cycle();
            while sink.remaining() > 0 {
                prop_assert_eq!(sink.remaining(), bytes.len() - fed);
                let space = sink.space();
                prop_assert!(!space.is_empty());
                let n = reads.next().unwrap_or(1).min(space.len());
                space[..n].copy_from_slice(&bytes[fed..fed + n]);
                sink.advance(n);
                fed += n;
            }
            prop_assert_eq!(fed, bytes.len());
            for i in 0..len {
                let sum = start[i] + incoming[i];
                prop_assert_eq!(dst[i], scale.map_or(sum, |k| sum * k));
            }
        }
    }

    #[test]
    fn overwrite_fills_the_destination_in_order() {
        let mut dst = [0u8; 5];
        let mut sink = Overwrite {
            dst: &mut dst,
            done: 0,
        };
        sink.space()[..2].copy_from_slice(b"ab");
        sink.advance(2);
        assert_eq!(sink.remaining(), 3);
        sink.space().copy_from_slice(b"cde");
        sink.advance(3);
        assert_eq!(sink.remaining(), 0);
        assert_eq!(&dst, b"abcde");
    }

    #[test]
    fn hello_round_trips_and_reports_mismatches() {
        let hello = Hello {
            world: 4,
            rank: 3,
            session: 0xdead_beef_0123_4567,
        };
        let decoded = Hello::decode(&hello.encode());
        assert_eq!(decoded, Ok(hello));
        let other = Hello {
            session: 1,
            ..hello
        };
        assert!(
            other
                .mismatch(&hello)
                .is_some_and(|r| r.contains("session"))
        );
        let other = Hello { rank: 2, ..hello };
        assert!(other.mismatch(&hello).is_some_and(|r| r.contains("rank")));
        assert_eq!(hello.mismatch(&hello), None);
        let mut garbage = hello.encode();
        garbage[0] = b'X';
        assert!(Hello::decode(&garbage).is_err());
    }

    #[test]
    fn disjoint_returns_both_ranges_in_either_order() {
        let mut buf: Vec<f32> = (0..10u8).map(f32::from).collect();
        let (send, recv) = disjoint(&mut buf, 0..3, 5..9);
        assert_eq!(send, &[0.0, 1.0, 2.0]);
        assert_eq!(recv, &[5.0, 6.0, 7.0, 8.0]);
        let (send, recv) = disjoint(&mut buf, 7..10, 2..4);
        assert_eq!(send, &[7.0, 8.0, 9.0]);
        assert_eq!(recv, &[2.0, 3.0]);
        let (send, recv) = disjoint(&mut buf, 4..4, 4..4);
        assert!(send.is_empty() && recv.is_empty());
    }

    #[test]
    fn world_of_one_is_a_no_op() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut ring = RingCollective::connect(&listener, 0, &[addr], 7, Duration::from_secs(1))
            .expect("world of one needs no peers");
        let mut buf = vec![1.5f32, -2.0, 3.25];
        ring.all_reduce_mean(&mut buf).expect("no-op");
        assert_eq!(buf, [1.5, -2.0, 3.25]);
        assert_eq!((ring.rank(), ring.world_size()), (0, 1));
    }

    #[test]
    fn rank_out_of_range_is_rejected() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let err = RingCollective::connect(&listener, 2, &[addr, addr], 7, Duration::from_secs(1));
        assert!(matches!(err, Err(CollectiveError::InvalidConfig(_))));
    }
}

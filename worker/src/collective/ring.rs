//! [`RingCollective`], a ring all-reduce over plain TCP.
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

use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::thread;
use std::time::{Duration, Instant};

use super::handshake::{AckError, DIAL_BACKOFF_MAX, Hello, accept_prev, dial, read_ack, to_u32};
use super::transfer::{
    Accumulate, Links, NEXT, Overwrite, PREV, configure_stream, disjoint, exchange_header, transfer,
};
use super::{AbortHandle, Collective, CollectiveError, PeerOp, peer_error};

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
            configure_stream(stream, options.socket_buffer_bytes)
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

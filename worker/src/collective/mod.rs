//! Gradient all-reduce between the ranks of one job: the [`Collective`] trait the training
//! loop calls once per step, its errors, and the [`AbortHandle`] that stops a collective
//! from another thread. The transports are the modules beside it: [`ring`], a ring
//! all-reduce over plain TCP (its connection set-up in `handshake`, its data path in
//! `transfer`), and the face of collectives that reduce device memory ([`DeviceReduce`]):
//! `nccl` (the `cuda` feature), NCCL on the GPU, with `nccl_lib`, which finds NCCL's library.
//!
//! Rank assignment and peer discovery are not this module's (the assignment says who is
//! where), nor the listener's lifetime: the worker binds one listener at start and hands it
//! to every [`ring::RingCollective::connect`], across jobs and generations.

mod handshake;
#[cfg(feature = "cuda")]
pub mod nccl;
#[cfg(any(test, feature = "cuda"))]
pub mod nccl_lib;
pub mod ring;
mod transfer;

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// An all-reduce of a tensor where it lives, for collectives that reduce device memory
/// (NCCL): the gradients never travel through the host.
pub trait DeviceReduce<B: burn::tensor::backend::Backend>: Send {
    /// Element-wise mean over all ranks of `flat`, a contiguous 1-D tensor of the same length
    /// on every rank.
    fn all_reduce_mean(
        &mut self,
        flat: burn::tensor::Tensor<B, 1>,
    ) -> Result<burn::tensor::Tensor<B, 1>, CollectiveError>;
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
    /// A device collective (NCCL) or its CUDA stream failed, or its library is missing.
    #[error("{0}")]
    Device(String),
    /// A device collective's call did not complete in time; its communicator was aborted.
    #[error("{what} did not complete within {after:?}; the NCCL communicator was aborted")]
    DeviceTimeout {
        /// The call.
        what: String,
        /// The limit that was exceeded.
        after: Duration,
    },
}

/// Cancels a [`ring::RingCollective`] from another thread.
///
/// Aborting a [`ring::RingCollective`] shuts its sockets down: an all-reduce blocked in them
/// returns [`CollectiveError::Aborted`] at once, the neighbours see the connection close, and
/// every later call fails. Aborting twice, or after the ring is dropped, does nothing more.
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

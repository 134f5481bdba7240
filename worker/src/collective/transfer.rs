//! The ring's data path: the two non-blocking connections of a rank and the event loop that
//! sends one segment while it receives another, reducing or overwriting as bytes arrive.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::{CollectiveError, PeerOp, peer_error};

// The data path sends the in-memory representation of `f32` as is.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "the ring wire format is little-endian f32"
);

pub(super) const HEADER_LEN: usize = 16;

/// The two connections of a rank, to its successor and from its predecessor (non-blocking),
/// and the poller that waits on them.
#[derive(Debug)]
pub(super) struct Links {
    pub(super) next: mio::net::TcpStream,
    pub(super) next_rank: usize,
    pub(super) next_addr: SocketAddr,
    pub(super) prev: mio::net::TcpStream,
    pub(super) prev_rank: usize,
    pub(super) prev_addr: SocketAddr,
    pub(super) op_timeout: Duration,
    pub(super) spin: Duration,
    pub(super) poll: mio::Poll,
    pub(super) events: mio::Events,
}

pub(super) const NEXT: mio::Token = mio::Token(0);
pub(super) const PREV: mio::Token = mio::Token(1);

impl Links {
    /// Shuts both connections down so the neighbours stop waiting for data that will never
    /// come.
    pub(super) fn shutdown(&self) {
        let _ = self.next.shutdown(Shutdown::Both);
        let _ = self.prev.shutdown(Shutdown::Both);
    }

    pub(super) fn send_error(&self, source: io::Error) -> CollectiveError {
        peer_error(
            PeerOp::Send,
            self.next_rank,
            self.next_addr,
            self.op_timeout,
            source,
        )
    }

    pub(super) fn recv_error(&self, source: io::Error) -> CollectiveError {
        peer_error(
            PeerOp::Receive,
            self.prev_rank,
            self.prev_addr,
            self.op_timeout,
            source,
        )
    }
}

/// Makes a ring connection ready for the event loop: non-blocking, no Nagle delay, and the
/// socket buffers asked for.
pub(super) fn configure_stream(
    stream: &TcpStream,
    socket_buffer_bytes: Option<usize>,
) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    if let Some(bytes) = socket_buffer_bytes {
        let socket = socket2::SockRef::from(stream);
        socket.set_send_buffer_size(bytes)?;
        socket.set_recv_buffer_size(bytes)?;
    }
    Ok(())
}

/// Returns `buf[send]` and `buf[recv]`, two non-overlapping ranges.
pub(super) fn disjoint(
    buf: &mut [f32],
    send: Range<usize>,
    recv: Range<usize>,
) -> (&[f32], &mut [f32]) {
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
pub(super) fn exchange_header(
    links: &mut Links,
    len: usize,
    seq: u64,
) -> Result<(), CollectiveError> {
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
pub(super) trait Sink {
    /// Bytes still to receive.
    fn remaining(&self) -> usize;
    /// Where the next bytes go: not empty while [`Sink::remaining`] is not zero.
    fn space(&mut self) -> &mut [u8];
    /// Takes note that `n` bytes were written to the front of [`Sink::space`].
    fn advance(&mut self, n: usize);
}

/// Receives straight into the destination (all-gather, headers).
pub(super) struct Overwrite<'a> {
    pub(super) dst: &'a mut [u8],
    pub(super) done: usize,
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
pub(super) struct Accumulate<'a> {
    pub(super) dst: &'a mut [f32],
    /// Elements of `dst` already summed.
    pub(super) done: usize,
    /// Holds the chunk being received; its length is the chunk size.
    pub(super) scratch: &'a mut [f32],
    /// Bytes of the current chunk received so far.
    pub(super) filled: usize,
    /// Multiplies the sums by this as they are made: the step that completes a segment turns
    /// it into the mean without another pass over memory.
    pub(super) scale: Option<f32>,
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
pub(super) fn transfer(
    links: &mut Links,
    out: &[u8],
    sink: &mut impl Sink,
) -> Result<(), CollectiveError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
}

//! Setting up a ring connection: dialing the successor, accepting the predecessor among
//! stray connections, and the hello both ends exchange (see the wire format in [`super::ring`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::{CollectiveError, PeerOp, peer_error};

pub(super) const MAGIC: [u8; 8] = *b"KILNRING";
pub(super) const PROTOCOL_VERSION: u32 = 1;
pub(super) const HELLO_LEN: usize = 32;
/// Pause between attempts to reach a successor that is not listening or not accepting yet.
pub(super) const DIAL_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// Poll interval of the accept loop while nothing is happening.
pub(super) const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// The hello both ends of a ring connection send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hello {
    pub(super) world: u32,
    pub(super) rank: u32,
    pub(super) session: u64,
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

pub(super) fn to_u32(value: usize, what: &str) -> Result<u32, CollectiveError> {
    u32::try_from(value)
        .map_err(|_| CollectiveError::InvalidConfig(format!("{what} {value} too large")))
}

/// Connects to the successor and sends our hello, retrying while it is not listening yet.
pub(super) fn dial(
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

pub(super) enum AckError {
    /// The connection closed or failed: the successor may have dropped it as stale.
    Closed(io::Error),
    /// The successor answered, but not with the matching hello.
    Mismatch(String),
}

pub(super) fn read_ack(
    stream: &mut TcpStream,
    expected: &Hello,
    deadline: Instant,
) -> Result<(), AckError> {
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
pub(super) struct Pending {
    pub(super) stream: TcpStream,
    pub(super) from: SocketAddr,
    pub(super) hello: [u8; HELLO_LEN],
    pub(super) filled: usize,
}

/// Puts the listener back in blocking mode however accepting ends.
pub(super) struct NonBlocking<'a>(&'a TcpListener);

impl Drop for NonBlocking<'_> {
    fn drop(&mut self) {
        let _ = self.0.set_nonblocking(false);
    }
}

/// Accepts connections until one carries the predecessor's hello for this session, which is
/// acknowledged and returned. Others (stale sessions, strangers, silent connections) are
/// dropped; their hellos are read without blocking, so none can hold up the real one.
pub(super) fn accept_prev(
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
}

//! The TCP ring all-reduce over real loopback sockets, one thread per rank: results against a
//! serial mean, failure and abort paths, and the handshake's filtering of strangers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use kiln_worker::collective::ring::{RingCollective, RingOptions, segment};
use kiln_worker::collective::{Collective, CollectiveError, PeerOp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a failure may take to reach the other ranks; generous for a loaded 2-core machine,
/// far below the 30 s operation timeout that would end a hang anyway.
const FAILURE_BOUND: Duration = Duration::from_secs(10);

fn bind(world: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let listeners: Vec<TcpListener> = (0..world)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a ring listener"))
        .collect();
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr().expect("listener address"))
        .collect();
    (listeners, addrs)
}

/// Connects a ring of `world` ranks, one thread each, and returns what `body` returns per rank.
fn with_ring<T: Send>(
    world: usize,
    session: u64,
    body: impl Fn(RingCollective) -> T + Sync,
) -> Vec<T> {
    let (listeners, addrs) = bind(world);
    with_ring_on(&listeners, &addrs, session, &RingOptions::default(), body)
}

/// [`with_ring`] on given listeners, with given options.
fn with_ring_on<T: Send>(
    listeners: &[TcpListener],
    addrs: &[SocketAddr],
    session: u64,
    options: &RingOptions,
    body: impl Fn(RingCollective) -> T + Sync,
) -> Vec<T> {
    let world = listeners.len();
    thread::scope(|scope| {
        let handles: Vec<_> = listeners
            .iter()
            .enumerate()
            .map(|(rank, listener)| {
                let body = &body;
                scope.spawn(move || {
                    let ring = RingCollective::connect_with_options(
                        listener,
                        rank,
                        addrs,
                        session,
                        CONNECT_TIMEOUT,
                        options.clone(),
                    )
                    .unwrap_or_else(|e| panic!("rank {rank} failed to connect: {e:?}"));
                    assert_eq!((ring.rank(), ring.world_size()), (rank, world));
                    body(ring)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread panicked"))
            .collect()
    })
}

fn random_inputs(world: usize, len: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..world)
        .map(|_| (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect()
}

/// Checks every rank's result against the serial mean (computed in f64), within the error
/// bound of summing `world` f32s in any order, and that all ranks agree to the bit.
fn check_results(inputs: &[Vec<f32>], results: &[Vec<f32>]) {
    let world = inputs.len();
    let len = inputs[0].len();
    for (rank, result) in results.iter().enumerate() {
        assert_eq!(result.len(), len, "rank {rank} result length");
        for i in 0..len {
            let exact: f64 = inputs.iter().map(|x| f64::from(x[i])).sum::<f64>() / world as f64;
            let magnitude: f64 = inputs.iter().map(|x| f64::from(x[i]).abs()).sum::<f64>();
            let tolerance = f64::from(f32::EPSILON) * (magnitude + exact.abs()) + 1e-30;
            let got = f64::from(result[i]);
            assert!(
                (got - exact).abs() <= tolerance,
                "world {world}, len {len}: rank {rank} element {i} is {got}, serial mean {exact}"
            );
        }
    }
    let first: Vec<u32> = results[0].iter().map(|x| x.to_bits()).collect();
    for (rank, result) in results.iter().enumerate().skip(1) {
        let bits: Vec<u32> = result.iter().map(|x| x.to_bits()).collect();
        assert!(
            bits == first,
            "rank {rank} differs from rank 0 (world {world}, len {len})"
        );
    }
}

/// A hello as the wire format in `collective`'s documentation describes it.
fn hello(world: u32, rank: u32, session: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[0..8].copy_from_slice(b"KILNRING");
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    out[12..16].copy_from_slice(&world.to_le_bytes());
    out[16..20].copy_from_slice(&rank.to_le_bytes());
    out[24..32].copy_from_slice(&session.to_le_bytes());
    out
}

#[test]
fn mean_matches_serial_mean_for_worlds_one_to_five() {
    for world in 1..=5 {
        // One ring per world, reused for every length: successive calls must stay in step.
        let lengths = [0, 1, world - 1, world + 1, 2 * world + 1, 4099, 1, 0];
        let inputs: Vec<Vec<Vec<f32>>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| random_inputs(world, len, (world * 100 + i) as u64))
            .collect();
        let results = with_ring(world, 0x5eed + world as u64, |mut ring| {
            let rank = ring.rank();
            inputs
                .iter()
                .map(|per_rank| {
                    let mut buf = per_rank[rank].clone();
                    ring.all_reduce_mean(&mut buf).expect("all-reduce");
                    buf
                })
                .collect::<Vec<_>>()
        });
        for (call, per_rank) in inputs.iter().enumerate() {
            let got: Vec<Vec<f32>> = results.iter().map(|r| r[call].clone()).collect();
            check_results(per_rank, &got);
        }
    }
}

#[test]
fn large_buffers_match_serial_mean() {
    const LEN: usize = 10_000_000;
    for world in [2, 3] {
        let inputs = random_inputs(world, LEN, world as u64);
        let results = with_ring(world, 0xb16, |mut ring| {
            let mut buf = inputs[ring.rank()].clone();
            ring.all_reduce_mean(&mut buf).expect("all-reduce");
            buf
        });
        check_results(&inputs, &results);
    }
}

#[test]
fn many_successive_all_reduces_on_one_ring() {
    let world = 3;
    let rounds: Vec<Vec<Vec<f32>>> = (0..25)
        .map(|round| random_inputs(world, 1000 + round * 7919, round as u64))
        .collect();
    let results = with_ring(world, 0x51cc, |mut ring| {
        let rank = ring.rank();
        rounds
            .iter()
            .map(|inputs| {
                let mut buf = inputs[rank].clone();
                ring.all_reduce_mean(&mut buf).expect("all-reduce");
                buf
            })
            .collect::<Vec<_>>()
    });
    for (round, inputs) in rounds.iter().enumerate() {
        let got: Vec<Vec<f32>> = results.iter().map(|r| r[round].clone()).collect();
        check_results(inputs, &got);
    }
}

#[test]
fn rank_that_leaves_after_the_handshake_fails_the_others_promptly() {
    let world = 4;
    let leaver = 3;
    let outcomes = with_ring(world, 0x1ea7e, |mut ring| {
        if ring.rank() == leaver {
            return None;
        }
        let mut buf = vec![1.0f32; 1 << 20];
        let start = Instant::now();
        let result = ring.all_reduce_mean(&mut buf);
        Some((result, start.elapsed()))
    });
    for (rank, outcome) in outcomes.into_iter().enumerate() {
        let Some((result, elapsed)) = outcome else {
            continue;
        };
        assert!(
            elapsed < FAILURE_BOUND,
            "rank {rank} took {elapsed:?} to notice"
        );
        match result {
            // The leaver's successor reads the end of its connection first.
            Err(CollectiveError::PeerIo {
                op: PeerOp::Receive,
                peer_rank,
                ..
            }) if rank == 0 => assert_eq!(peer_rank, leaver),
            Err(_) if rank != 0 => {}
            other => panic!("rank {rank}: expected a peer error, got {other:?}"),
        }
    }
}

#[test]
fn peer_closing_halfway_through_a_segment_is_an_error() {
    const LEN: usize = 1 << 20;
    let session = 0x4a1f_u64;
    let (listeners, addrs) = bind(2);
    thread::scope(|scope| {
        // Rank 1 is played by hand, following the documented wire format.
        scope.spawn(|| {
            let mut to_next = TcpStream::connect(addrs[0]).expect("dial rank 0");
            to_next.write_all(&hello(2, 1, session)).expect("hello");
            let (mut from_prev, _) = listeners[1].accept().expect("accept rank 0");
            let mut theirs = [0u8; 32];
            from_prev.read_exact(&mut theirs).expect("rank 0's hello");
            assert_eq!(theirs, hello(2, 0, session));
            from_prev.write_all(&hello(2, 1, session)).expect("ack");
            to_next.read_exact(&mut theirs).expect("rank 0's ack");
            assert_eq!(theirs, hello(2, 0, session));

            let mut header = [0u8; 16];
            header[0..8].copy_from_slice(&(LEN as u64).to_le_bytes());
            to_next.write_all(&header).expect("header");
            let half = segment(LEN, 2, 1).len() / 2;
            to_next
                .write_all(&vec![0u8; half * 4])
                .expect("half a segment");
            // Dropping both streams closes them mid-step.
        });

        let mut ring = RingCollective::connect(&listeners[0], 0, &addrs, session, CONNECT_TIMEOUT)
            .expect("connect to the hand-played peer");
        let mut buf = vec![1.0f32; LEN];
        let start = Instant::now();
        let result = ring.all_reduce_mean(&mut buf);
        assert!(
            start.elapsed() < FAILURE_BOUND,
            "took {:?}",
            start.elapsed()
        );
        assert!(
            matches!(result, Err(CollectiveError::PeerIo { peer_rank: 1, .. })),
            "expected a peer error, got {result:?}"
        );
        assert!(matches!(
            ring.all_reduce_mean(&mut buf),
            Err(CollectiveError::Broken)
        ));
    });
}

#[test]
fn abort_unblocks_a_blocked_all_reduce() {
    let both_done = std::sync::Barrier::new(2);
    let outcomes = with_ring(2, 0xab0e7, |mut ring| {
        let mut buf = vec![1.0f32; 1 << 16];
        if ring.rank() == 1 {
            // Never joins the first all-reduce, so rank 0 blocks in it until aborted.
            both_done.wait();
            let start = Instant::now();
            let late = ring.all_reduce_mean(&mut buf);
            return (late.map_err(|e| e.to_string()), start.elapsed());
        }
        let handle = ring.abort_handle();
        let aborter = thread::spawn(move || {
            // Not waiting for a condition: the abort is correct whenever it lands, this only
            // makes it land while rank 0 is blocked, most of the time.
            thread::sleep(Duration::from_millis(100));
            handle.abort();
        });
        let start = Instant::now();
        let result = ring.all_reduce_mean(&mut buf);
        let elapsed = start.elapsed();
        aborter.join().expect("aborter");
        assert!(
            matches!(result, Err(CollectiveError::Aborted)),
            "got {result:?}"
        );
        assert!(
            matches!(
                ring.all_reduce_mean(&mut buf),
                Err(CollectiveError::Aborted)
            ),
            "an aborted ring stays aborted"
        );
        assert!(ring.abort_handle().is_aborted());
        both_done.wait();
        (Ok(()), elapsed)
    });
    let (_, aborted_after) = &outcomes[0];
    assert!(
        *aborted_after < FAILURE_BOUND,
        "abort took {aborted_after:?}"
    );
    let (late, late_after) = &outcomes[1];
    assert!(late.is_err(), "the aborted rank's peer must fail too");
    assert!(*late_after < FAILURE_BOUND, "peer took {late_after:?}");
}

#[test]
fn hung_peer_times_out() {
    let op_timeout = Duration::from_millis(300);
    let (listeners, addrs) = bind(2);
    let options = RingOptions::default().with_op_timeout(op_timeout);
    let rank0_done = std::sync::Barrier::new(2);
    let outcomes = with_ring_on(&listeners, &addrs, 0x4e6, &options, |mut ring| {
        if ring.rank() == 1 {
            // Alive but silent: keeps its sockets open and never calls.
            rank0_done.wait();
            return None;
        }
        let start = Instant::now();
        let result = ring.all_reduce_mean(&mut [1.0; 1000]);
        rank0_done.wait();
        Some((result, start.elapsed()))
    });
    let Some((result, elapsed)) = &outcomes[0] else {
        panic!("rank 0 reports");
    };
    assert!(
        matches!(
            result,
            Err(CollectiveError::Timeout {
                op: PeerOp::Receive,
                peer_rank: 1,
                ..
            })
        ),
        "got {result:?}"
    );
    assert!(
        *elapsed >= op_timeout && *elapsed < FAILURE_BOUND,
        "took {elapsed:?}"
    );
}

#[test]
fn length_mismatch_is_reported_on_both_sides() {
    let outcomes = with_ring(2, 0x1e6, |mut ring| {
        let mut buf = vec![0.5f32; 10 + ring.rank()];
        ring.all_reduce_mean(&mut buf)
    });
    assert!(matches!(
        outcomes[0],
        Err(CollectiveError::LengthMismatch {
            local: 10,
            peer_rank: 1,
            peer: 11
        })
    ));
    assert!(matches!(
        outcomes[1],
        Err(CollectiveError::LengthMismatch {
            local: 11,
            peer_rank: 0,
            peer: 10
        })
    ));
}

#[test]
fn strangers_and_stale_sessions_are_ignored() {
    let session = 0x600d;
    let (listeners, addrs) = bind(2);

    // A ring of an earlier generation that never completed: its hello to rank 1 stays in the
    // listener's backlog.
    let stale =
        RingCollective::connect(&listeners[0], 0, &addrs, 0x01d, Duration::from_millis(300));
    assert!(
        matches!(
            stale,
            Err(CollectiveError::Timeout {
                op: PeerOp::Accept,
                ..
            })
        ),
        "got {stale:?}"
    );

    let connect = |addr: SocketAddr, bytes: &[u8]| {
        let mut stream = TcpStream::connect(addr).expect("connect a stranger");
        stream.write_all(bytes).expect("stranger writes");
        stream
    };
    let mut strangers = vec![
        connect(addrs[0], &hello(2, 1, 0x01d)),
        connect(addrs[1], &hello(2, 1, session)), // rank 1 expects rank 0, not itself
        connect(addrs[0], &hello(3, 1, session)), // another world size
        connect(addrs[0], &[b'x'; 40]),
    ];
    // Silent and half-sent hellos stay open while the ring connects: they must not hold it up.
    let _silent = connect(addrs[1], &[]);
    let _partial = connect(addrs[0], &hello(2, 1, session)[..10]);

    let inputs = random_inputs(2, 777, 9);
    let results = with_ring_on(
        &listeners,
        &addrs,
        session,
        &RingOptions::default(),
        |mut ring| {
            let mut buf = inputs[ring.rank()].clone();
            ring.all_reduce_mean(&mut buf).expect("all-reduce");
            buf
        },
    );
    check_results(&inputs, &results);

    // The strangers were hung up on, not acknowledged.
    for stranger in &mut strangers {
        stranger
            .set_read_timeout(Some(FAILURE_BOUND))
            .expect("set timeout");
        let mut reply = [0u8; 32];
        match stranger.read(&mut reply) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("a stranger got {n} bytes of reply"),
        }
    }
}

#[test]
fn connect_times_out_when_the_successor_is_not_listening() {
    let (listeners, mut addrs) = bind(2);
    // Free the port of rank 1: dialling it is refused until the deadline.
    addrs[1] = {
        let gone = TcpListener::bind("127.0.0.1:0").expect("bind");
        gone.local_addr().expect("address")
    };
    let start = Instant::now();
    let result = RingCollective::connect(&listeners[0], 0, &addrs, 1, Duration::from_millis(300));
    assert!(
        matches!(
            result,
            Err(CollectiveError::Timeout {
                op: PeerOp::Connect,
                peer_rank: 1,
                ..
            })
        ),
        "got {result:?}"
    );
    assert!(start.elapsed() < FAILURE_BOUND);
}

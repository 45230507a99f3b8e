//! Peer connections on loopback: handshakes and refusals, bad bytes,
//! restarts, order, and the send-queue bound.

mod common;

use std::time::Duration;

use common::*;
use futures_lite::AsyncWriteExt;
use synod_net::{Inbox, NodeId, PeerAddr, RefuseReason, Secret, SendError, Transport, KIND_HELLO};
use synod_wal::frame::FRAME_HEADER_BYTES;

fn body(i: u64) -> Vec<u8> {
    let mut b = i.to_le_bytes().to_vec();
    b.resize(8 + (i % 40) as usize, i as u8);
    b
}

/// Receives `n` frames from `from`, checking they are 0..n in order.
async fn expect_in_order(inbox: &mut Inbox, from: u64, first: u64, n: u64) {
    for i in first..first + n {
        let m = inbox.recv().await.unwrap();
        assert_eq!((m.from, m.kind), (NodeId(from), 3));
        assert_eq!(m.body.as_ref(), &body(i)[..], "frame {i} from {from}");
    }
}

#[test]
fn handshake_succeeds_and_frames_flow_both_ways_in_order() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let (t1, mut in1) = Transport::start(config(1, &nodes)).unwrap();
        let (t2, mut in2) = Transport::start(config(2, &nodes)).unwrap();
        for i in 0..2000 {
            t1.send_wait(NodeId(2), 3, &body(i)).await.unwrap();
            t2.send_wait(NodeId(1), 3, &body(i)).await.unwrap();
        }
        expect_in_order(&mut in2, 1, 0, 2000).await;
        expect_in_order(&mut in1, 2, 0, 2000).await;
        let (c1, c2) = (t1.counters(), t2.counters());
        assert_eq!((c1.handshakes_ok, c2.handshakes_ok), (1, 1));
        assert_eq!((c1.frames_sent, c2.frames_received), (2000, 2000));
        assert!(t1.is_connected(NodeId(2)) && t2.is_connected(NodeId(1)));
        assert_eq!(c1.refused, [0; RefuseReason::ALL.len()]);
    });
}

/// A peer named by a host name is dialed at the address the name has at
/// the moment; a name that does not resolve is a failed dial, counted and
/// retried like a refused connection, never a reason not to start.
#[test]
fn peers_named_by_host_name_are_resolved_at_each_dial() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let named = |(id, addr): (u64, std::net::SocketAddr)| {
            let name: PeerAddr = format!("localhost:{}", addr.port()).parse().unwrap();
            (NodeId(id), name)
        };
        let mut c1 = config(1, &nodes);
        c1.peers = nodes.iter().copied().map(named).collect();
        let (t1, _in1) = Transport::start(c1).unwrap();
        let (_t2, mut in2) = Transport::start(config(2, &nodes)).unwrap();
        t1.send_wait(NodeId(2), 3, &body(0)).await.unwrap();
        expect_in_order(&mut in2, 1, 0, 1).await;

        let mut c3 = config(3, &[(3, free_addr())]);
        let nowhere = "no-such-host.invalid:7001".parse().unwrap();
        c3.peers.push((NodeId(4), nowhere));
        let (t3, _in3) = Transport::start(c3).unwrap();
        wait_until("two failed dials", || {
            t3.counters().refused(RefuseReason::Io) >= 2
        })
        .await;
        assert!(!t3.is_connected(NodeId(4)));
    });
}

/// A node added while both run: each side learns of the other only then
/// (the lower id dials once it knows the higher), a stranger before that
/// is refused, and adding it again changes nothing.
#[test]
fn a_peer_added_at_run_time_is_dialed_and_accepted() {
    run(|| async {
        let (a1, a2, a5) = (free_addr(), free_addr(), free_addr());
        let (t1, _in1) = Transport::start(config(1, &[(1, a1), (2, a2)])).unwrap();
        let (t5, mut in5) = Transport::start(config(5, &[(5, a5)])).unwrap();
        assert!(matches!(
            t1.send(NodeId(5), 3, &body(0)),
            Err(SendError::UnknownPeer(_))
        ));
        // Node 5 knows node 1 first; its dials are not its to make (1 < 5),
        // and node 1 refuses nothing it has not been told of yet.
        assert_eq!(t5.add_peer(NodeId(1), PeerAddr::from(a1)), Ok(true));
        assert_eq!(t1.add_peer(NodeId(5), PeerAddr::from(a5)), Ok(true));
        assert_eq!(t1.add_peer(NodeId(5), PeerAddr::from(a1)), Ok(false));
        assert!(t1.add_peer(NodeId(1), PeerAddr::from(a1)).is_err());
        for i in 0..100 {
            t1.send_wait(NodeId(5), 3, &body(i)).await.unwrap();
        }
        expect_in_order(&mut in5, 1, 0, 100).await;
        assert!(t1.is_connected(NodeId(5)) && t5.is_connected(NodeId(1)));
    });
}

/// Body `i` of the mixed stream: small, or up to 60 KiB (above and below
/// the sizes sent from the caller's buffer and read into a buffer of their own).
fn mixed_body(i: u64) -> Vec<u8> {
    let len = match i % 4 {
        0 => (i % 50) as usize,
        1 => 4000 + (i as usize * 37) % 300,
        _ => 9000 + (i as usize * 7919) % 52_000,
    };
    let mut b = vec![i as u8; len];
    if len >= 8 {
        b[..8].copy_from_slice(&i.to_le_bytes());
    }
    b
}

#[test]
fn large_frames_shared_or_copied_flow_in_order_with_small_ones() {
    mixed_frames_flow_in_order(false);
}

#[test]
fn encrypted_frames_shared_or_copied_flow_in_order() {
    mixed_frames_flow_in_order(true);
}

fn mixed_frames_flow_in_order(encrypt: bool) {
    run(move || async move {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let (mut c1, mut c2) = (config(1, &nodes), config(2, &nodes));
        c1.peer_queue_bytes_max = 256 << 10;
        (c1.encrypt, c2.encrypt) = (encrypt, encrypt);
        let (t1, _in1) = Transport::start(c1).unwrap();
        let (_t2, mut in2) = Transport::start(c2).unwrap();
        let frames = 400;
        let receiving = async {
            for i in 0..frames {
                let m = in2.recv().await.unwrap();
                assert_eq!(m.seq, i);
                assert_eq!(m.body.as_ref(), &mixed_body(i)[..], "frame {i}");
            }
        };
        let sending = async {
            for i in 0..frames {
                let body = mixed_body(i);
                if i % 3 == 0 {
                    t1.send_wait(NodeId(2), 3, &body).await.unwrap();
                } else {
                    t1.send_bytes_wait(NodeId(2), 3, body.into()).await.unwrap();
                }
                assert!(t1.queued_bytes(NodeId(2)).unwrap() <= 256 << 10);
            }
        };
        futures_lite::future::zip(sending, receiving).await;
        let c1 = t1.counters();
        assert_eq!((c1.frames_sent, c1.frames_dropped), (frames, 0));
    });
}

/// Starts 1 (dialer, `dialer` config tweak) and 2 (acceptor) and waits for
/// the acceptor to count `acceptor_reason` and the dialer `dialer_reason`.
fn refused(
    tweak: fn(&mut synod_net::PeerConfig),
    acceptor_reason: RefuseReason,
    dialer_reason: RefuseReason,
) {
    run(move || async move {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let mut c1 = config(1, &nodes);
        tweak(&mut c1);
        let (t1, _in1) = Transport::start(c1).unwrap();
        let (t2, _in2) = Transport::start(config(2, &nodes)).unwrap();
        wait_until("refusals", || {
            t2.counters().refused(acceptor_reason) >= 2 && t1.counters().refused(dialer_reason) >= 2
        })
        .await;
        assert!(!t1.is_connected(NodeId(2)) && !t2.is_connected(NodeId(1)));
        assert_eq!(t2.counters().handshakes_ok, 0);
        // Backpressure still works while the peer refuses us.
        t1.send(NodeId(2), 3, b"queued").unwrap();
        assert!(t1.queued_bytes(NodeId(2)).unwrap() > 0);
    });
}

#[test]
fn wrong_secret_is_refused_by_the_acceptor_as_bad_proof() {
    refused(
        |c| c.secret = Secret::new([9u8; 32]),
        RefuseReason::BadProof,
        RefuseReason::Io,
    );
}

#[test]
fn wrong_cluster_is_refused() {
    refused(
        |c| c.cluster_id = 8,
        RefuseReason::WrongCluster,
        RefuseReason::Io,
    );
}

#[test]
fn another_compat_is_refused() {
    refused(
        |c| c.compat = 0x0001_0000_0000_1000,
        RefuseReason::Incompatible,
        RefuseReason::Io,
    );
}

#[test]
fn a_peer_that_encrypts_and_one_that_does_not_are_refused() {
    refused(
        |c| c.encrypt = true,
        RefuseReason::Incompatible,
        RefuseReason::Io,
    );
}

#[test]
fn wrong_core_is_refused() {
    refused(|c| c.core = 1, RefuseReason::WrongCore, RefuseReason::Io);
}

#[test]
fn unknown_node_is_refused() {
    // Node 2 knows nodes 1 and 2 only; node 0 dials it claiming to be 0.
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let (t2, _in2) = Transport::start(config(2, &nodes)).unwrap();
        let stranger = [(0, free_addr()), (2, nodes[1].1)];
        let (t0, _in0) = Transport::start(config(0, &stranger)).unwrap();
        wait_until("refusal", || {
            t2.counters().refused(RefuseReason::UnknownNode) >= 1
                && t0.counters().refused(RefuseReason::Io) >= 1
        })
        .await;
        assert!(!t0.is_connected(NodeId(2)));
    });
}

#[test]
fn a_misaddressed_dial_is_refused() {
    // Node 1 thinks node 2 lives where node 3 listens.
    run(|| async {
        let addr = free_addr();
        let (t3, _in3) = Transport::start(config(3, &[(1, free_addr()), (3, addr)])).unwrap();
        let (t1, _in1) = Transport::start(config(1, &[(1, free_addr()), (2, addr)])).unwrap();
        wait_until("refusal", || {
            t3.counters().refused(RefuseReason::UnknownNode) >= 1
        })
        .await;
        assert!(!t1.is_connected(NodeId(2)));
    });
}

/// A hand-driven acceptor that does not know the secret: the dialer refuses
/// its WELCOME.
#[test]
fn an_acceptor_without_the_secret_is_refused_by_the_dialer() {
    run(|| async {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nodes = [(1, free_addr()), (2, listener.local_addr().unwrap())];
        let (t1, _in1) = Transport::start(config(1, &nodes)).unwrap();
        let mut stream = listener.accept().await.unwrap();
        let mut reader = synod_net::FrameReader::new(256);
        let hello = read_frame(&mut stream, &mut reader).await;
        let hello = synod_net::handshake::Hello::decode(&hello.body).unwrap();
        let challenge = synod_net::handshake::Challenge {
            cluster_id: 7,
            compat: 0,
            encrypt: false,
            acceptor: NodeId(2),
            core: 0,
            nonce: synod_net::handshake::nonce(),
        };
        let out = frame(synod_net::KIND_CHALLENGE, 0, &challenge.encode());
        stream.write_all(&out).await.unwrap();
        let proof = read_frame(&mut stream, &mut reader).await;
        assert_eq!(proof.kind, synod_net::KIND_PROOF);
        let forged = frame(synod_net::KIND_WELCOME, 0, &[0u8; 32]);
        stream.write_all(&forged).await.unwrap();
        wait_until("refusal", || {
            t1.counters().refused(RefuseReason::BadProof) >= 1
        })
        .await;
        assert_eq!(hello.dialer, NodeId(1));
        assert!(!t1.is_connected(NodeId(2)));
    });
}

/// Node 2 talks to a real node 3 throughout; a hand-driven node 1 misbehaves.
/// After each bad stream, node 2 has closed only that connection and still
/// exchanges frames with node 3.
#[test]
fn bad_bytes_close_only_that_connection() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr()), (3, free_addr())];
        let (t2, mut in2) = Transport::start(config(2, &nodes)).unwrap();
        let (t3, _in3) = Transport::start(config(3, &nodes)).unwrap();
        let addr2 = nodes[1].1;
        let good = frame(3, 0, &body(0));
        let mut bad_checksum = good.clone();
        bad_checksum[FRAME_HEADER_BYTES + 1] ^= 0x10;
        let mut oversized = frame(3, 0, b"x");
        oversized[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let truncated = good[..good.len() - 5].to_vec();
        let reserved = frame(KIND_HELLO, 0, b"again?");
        let cases: [(&str, Vec<u8>, u64); 5] = [
            ("garbage", vec![0x5a; 100], 1),
            ("bad checksum", bad_checksum, 1),
            ("oversized length", oversized, 1),
            ("reserved kind", reserved, 1),
            ("truncated then closed", truncated, 0),
        ];
        let mut closes = 0;
        for (i, (what, bytes, bad)) in cases.into_iter().enumerate() {
            let mut raw = raw_dial(addr2, 1, 2).await;
            wait_until("connected", || t2.is_connected(NodeId(1))).await;
            let sealed = raw.sealed(&[(3, 0, &body(0))]);
            raw.stream.write_all(&sealed).await.unwrap();
            raw.stream.write_all(&bytes).await.unwrap();
            if bad == 0 {
                raw.stream.close().await.unwrap();
            }
            // The good frame before the bad bytes is delivered.
            let m = in2.recv().await.unwrap();
            assert_eq!(
                (m.from, m.body.as_ref()),
                (NodeId(1), &body(0)[..]),
                "{what}"
            );
            wait_until(what, || !t2.is_connected(NodeId(1))).await;
            closes += bad;
            assert_eq!(t2.counters().bad_frame_closes, closes, "{what}");
            // Node 2 still serves node 3.
            t3.send_wait(NodeId(2), 3, &body(i as u64)).await.unwrap();
            let m = in2.recv().await.unwrap();
            assert_eq!(
                (m.from, m.body.as_ref()),
                (NodeId(3), &body(i as u64)[..]),
                "{what}"
            );
        }
        // Garbage before any handshake is a refusal, not a frame close.
        let mut raw = glommio::net::TcpStream::connect(addr2).await.unwrap();
        raw.write_all(&[0xff; 64]).await.unwrap();
        wait_until("malformed", || {
            t2.counters().refused(RefuseReason::Malformed) >= 1
        })
        .await;
        assert!(t2.is_connected(NodeId(3)));
    });
}

/// An attacker on the path who let the handshake through cannot rewrite,
/// replay or drop what follows: a batch whose MAC fails is not delivered,
/// and the connection closes (the frames before it were).
#[test]
fn frames_altered_replayed_or_dropped_after_the_handshake_are_refused() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let (t2, mut in2) = Transport::start(config(2, &nodes)).unwrap();
        let addr2 = nodes[1].1;
        let accept = b"ACCEPT slot 7: PAYLOAD-ORIGINAL".to_vec();
        for (i, what) in ["altered", "replayed", "dropped"].into_iter().enumerate() {
            let mut raw = raw_dial(addr2, 1, 2).await;
            wait_until("connected", || t2.is_connected(NodeId(1))).await;
            let first = raw.sealed(&[(3, 0, &body(i as u64))]);
            let second = raw.sealed(&[(3, 1, &accept)]);
            let second = match what {
                // Its CRC recomputed, as an attacker would.
                "altered" => recrc(&second, |body| body[20] ^= 0x01),
                "replayed" => first.clone(),
                // The second batch never arrives; the third does.
                _ => raw.sealed(&[(3, 2, &accept)]),
            };
            raw.stream.write_all(&first).await.unwrap();
            raw.stream.write_all(&second).await.unwrap();
            // In order: had the tampered frame of the case before been
            // delivered, it would come first.
            let m = in2.recv().await.unwrap();
            assert_eq!(m.body.as_ref(), &body(i as u64)[..], "{what}");
            wait_until(what, || !t2.is_connected(NodeId(1))).await;
            assert_eq!(t2.counters().bad_frame_closes, i as u64 + 1, "{what}");
        }
        let mut raw = raw_dial(addr2, 1, 2).await;
        let last = raw.sealed(&[(3, 0, &body(99))]);
        raw.stream.write_all(&last).await.unwrap();
        let m = in2.recv().await.unwrap();
        assert_eq!(
            m.body.as_ref(),
            &body(99)[..],
            "nothing tampered came before"
        );
    });
}

/// `frames` with the body of the first rewritten by `edit` and its CRC
/// recomputed (the rest, the MAC frame among them, as they were).
fn recrc(frames: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let (h, body, used) = synod_wal::frame::decode_frame(frames).unwrap();
    let mut body = body.to_vec();
    edit(&mut body);
    let mut out = frame(h.kind, h.seq, &body);
    out.extend_from_slice(&frames[used..]);
    out
}

/// Strangers holding connections open without a handshake take a bounded
/// number of places; beyond it a connection is closed at accept and
/// counted `Busy`, and once their handshakes time out the real peer joins.
#[test]
fn handshakes_in_progress_are_bounded() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let (t2, mut in2) = Transport::start(config(2, &nodes)).unwrap();
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(glommio::net::TcpStream::connect(nodes[1].1).await.unwrap());
        }
        let mut extra = glommio::net::TcpStream::connect(nodes[1].1).await.unwrap();
        let mut buf = [0u8; 8];
        assert!(matches!(
            futures_lite::AsyncReadExt::read(&mut extra, &mut buf).await,
            Ok(0) | Err(_)
        ));
        wait_until("busy", || t2.counters().refused(RefuseReason::Busy) >= 1).await;
        let (t1, _in1) = Transport::start(config(1, &nodes)).unwrap();
        t1.send_wait(NodeId(2), 3, &body(7)).await.unwrap();
        let m = in2.recv().await.unwrap();
        assert_eq!((m.from, m.body.as_ref()), (NodeId(1), &body(7)[..]));
        drop(silent);
    });
}

#[test]
fn an_unanswered_handshake_times_out() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let (t2, _in2) = Transport::start(config(2, &nodes)).unwrap();
        let _silent = glommio::net::TcpStream::connect(nodes[1].1).await.unwrap();
        wait_until("timeout", || {
            t2.counters().refused(RefuseReason::Timeout) >= 1
        })
        .await;
    });
}

#[test]
fn restarted_peers_reconnect_and_resume() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let (t1, in1) = Transport::start(config(1, &nodes)).unwrap();
        let (t2, mut in2) = Transport::start(config(2, &nodes)).unwrap();
        t1.send_wait(NodeId(2), 3, &body(0)).await.unwrap();
        expect_in_order(&mut in2, 1, 0, 1).await;

        // The acceptor restarts: the dialer backs off and reconnects.
        t2.shutdown().await;
        drop(in2);
        wait_until("1 notices", || !t1.is_connected(NodeId(2))).await;
        let (t2, mut in2) = Transport::start(config(2, &nodes)).unwrap();
        wait_until("reconnect", || t1.is_connected(NodeId(2))).await;
        for i in 1..100 {
            t1.send_wait(NodeId(2), 3, &body(i)).await.unwrap();
        }
        expect_in_order(&mut in2, 1, 1, 99).await;

        // The dialer restarts: its new connection replaces the old one.
        t1.shutdown().await;
        drop(in1);
        let (t1, mut in1) = Transport::start(config(1, &nodes)).unwrap();
        wait_until("reconnect", || {
            t1.is_connected(NodeId(2)) && t2.is_connected(NodeId(1))
        })
        .await;
        t2.send_wait(NodeId(1), 3, &body(7)).await.unwrap();
        expect_in_order(&mut in1, 2, 7, 1).await;
        assert!(t2.counters().handshakes_ok >= 2);
    });
}

#[test]
fn a_peer_port_already_taken_is_refused_even_to_a_reuseport_socket() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let (_t1, _in1) = Transport::start(config(1, &nodes)).unwrap();
        // A second transport on the same port (a node started twice).
        let at_once = |me| {
            let mut config = config(me, &nodes);
            config.bind_busy_wait = Duration::ZERO;
            config
        };
        let second = Transport::start(at_once(1)).err().expect("refused");
        assert!(
            matches!(&second, synod_net::TransportError::Bind { addr, source }
                if *addr == nodes[0].1 && source.kind() == std::io::ErrorKind::AddrInUse),
            "{second}"
        );
        // Nor can a socket that asks to share the port (SO_REUSEPORT, as
        // glommio's own bind does) join it and take half its connections.
        assert!(glommio::net::TcpListener::bind(nodes[0].1).is_err());
        // The other way round: a port shared that way is refused too.
        let shared = glommio::net::TcpListener::bind(nodes[1].1).unwrap();
        assert!(Transport::start(at_once(2)).is_err());
        assert!(synod_net::check_unclaimed(nodes[1].1, Duration::ZERO).is_err());
        drop(shared);
        synod_net::check_unclaimed(nodes[1].1, Duration::ZERO).expect("free again");
        let (_t2, _in2) = Transport::start(config(2, &nodes)).unwrap();
    });
}

#[test]
fn a_port_held_a_moment_longer_is_waited_for() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        // As a process just killed holds its listeners until its io_uring
        // is torn down: the port frees itself a little later.
        let held = std::net::TcpListener::bind(nodes[0].1).unwrap();
        let freed = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let (_t1, _in1) = Transport::start(config(1, &nodes)).expect("bound once free");
        freed.join().unwrap();
    });
}

/// Node 2 does not read its inbox; node 1 sends as fast as `send` lets it.
/// The queue never exceeds its bound, `send` says QueueFull, and once node 2
/// reads, every accepted frame arrives, in order.
#[test]
fn the_send_queue_bound_holds_under_a_slow_reader() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let mut c1 = config(1, &nodes);
        c1.peer_queue_bytes_max = 64 << 10;
        c1.frame_body_bytes_max = 16 << 10;
        let mut c2 = config(2, &nodes);
        c2.inbox_batches_max = 1;
        let (t1, _in1) = Transport::start(c1).unwrap();
        let (_t2, mut in2) = Transport::start(c2).unwrap();
        wait_until("connected", || t1.is_connected(NodeId(2))).await;
        // Shared bodies (not copied) count against the bound like copied ones.
        let big = bytes::Bytes::from(vec![1u8; 5000]);
        let (mut accepted, mut full) = (0u64, 0u64);
        let start = std::time::Instant::now();
        while full < 200 && start.elapsed() < Duration::from_secs(5) {
            let sent = if accepted % 2 == 0 {
                t1.send(NodeId(2), 3, &big)
            } else {
                t1.send_bytes(NodeId(2), 3, big.clone())
            };
            match sent {
                Ok(()) => accepted += 1,
                Err(SendError::QueueFull {
                    queued_bytes,
                    limit_bytes,
                    ..
                }) => {
                    assert!(queued_bytes <= limit_bytes);
                    full += 1;
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => panic!("{e}"),
            }
            assert!(t1.queued_bytes(NodeId(2)).unwrap() <= 64 << 10);
        }
        assert_eq!(full, 200, "the queue never filled");
        assert_eq!(t1.counters().queue_full, full);
        for seq in 0..accepted {
            let m = in2.recv().await.unwrap();
            assert_eq!((m.seq, m.body.len()), (seq, 5000));
        }
        wait_until("drained", || t1.queued_bytes(NodeId(2)) == Some(0)).await;
    });
}

#[test]
fn a_dead_peer_does_not_block_the_others() {
    run(|| async {
        // Node 2 is configured but never started.
        let nodes = [(1, free_addr()), (2, free_addr()), (3, free_addr())];
        let mut c1 = config(1, &nodes);
        c1.peer_queue_bytes_max = 64 << 10;
        c1.frame_body_bytes_max = 16 << 10;
        let (t1, _in1) = Transport::start(c1).unwrap();
        let (_t3, mut in3) = Transport::start(config(3, &nodes)).unwrap();
        let mut to_dead = 0;
        for i in 0..1000 {
            if t1.send(NodeId(2), 3, &body(i)).is_ok() {
                to_dead += 1;
            }
            t1.send_wait(NodeId(3), 3, &body(i)).await.unwrap();
        }
        expect_in_order(&mut in3, 1, 0, 1000).await;
        assert!(to_dead < 1000, "the dead peer's queue must fill");
        assert!(t1.queued_bytes(NodeId(2)).unwrap() <= 64 << 10);
        assert!(t1.counters().refused(RefuseReason::Io) >= 1);
    });
}

#[test]
fn sends_are_checked() {
    run(|| async {
        let nodes = [(1, free_addr()), (2, free_addr())];
        let (t1, _in1) = Transport::start(config(1, &nodes)).unwrap();
        assert_eq!(
            t1.send(NodeId(9), 3, b""),
            Err(SendError::UnknownPeer(NodeId(9)))
        );
        assert_eq!(
            t1.send(NodeId(1), 3, b""),
            Err(SendError::UnknownPeer(NodeId(1)))
        );
        assert_eq!(
            t1.send(NodeId(2), KIND_HELLO, b""),
            Err(SendError::ReservedKind(KIND_HELLO))
        );
        let too_big = vec![0; (64 << 10) + 1];
        assert!(matches!(
            t1.send(NodeId(2), 3, &too_big),
            Err(SendError::TooLarge { .. })
        ));
        let mut bad = config(1, &nodes);
        bad.backoff_min = Duration::ZERO;
        assert!(Transport::start(bad).is_err());
    });
}

//! An attacker between the replicas, after the handshake: proxies on every
//! link rewrite the first Accepts they see (the CRC recomputed, as an
//! attacker would), replay one and drop one. The per-batch MAC refuses
//! each, the links reset, Paxos resends, and every replica ends with the
//! values the clients were acknowledged, in the same order, and none of
//! the attacker's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/client.rs"]
mod support;

use support::{client, SYNOD};
use synod_bench::local::{Layout, LocalCluster};
use synod_net::FrameReader;
use synod_wal::frame::{encode_frame, FRAME_BODY_BYTES_MAX};

const ORIGINAL: &[u8] = b"PAYLOAD-ORIGINAL";
const TAMPERED: &[u8] = b"PAYLOAD-TAMPERED";

/// Frames carrying a value this proxy has tampered with so far; it
/// tampers with the first three (alter, replay, drop) and passes the rest.
struct Tamperer {
    done: AtomicU32,
    /// Frame bytes it passed on.
    forwarded: AtomicU64,
}

impl Tamperer {
    /// What to send for `frame`'s body: the frames' bytes, in order.
    fn forward(&self, kind: u16, seq: u64, body: &[u8]) -> Vec<u8> {
        self.forwarded
            .fetch_add(body.len() as u64, Ordering::SeqCst);
        let mut out = Vec::new();
        let carries = body.windows(ORIGINAL.len()).any(|w| w == ORIGINAL);
        let turn = if carries {
            self.done.fetch_add(1, Ordering::SeqCst)
        } else {
            u32::MAX
        };
        match turn {
            0 => {
                let mut altered = body.to_vec();
                let at = altered
                    .windows(ORIGINAL.len())
                    .position(|w| w == ORIGINAL)
                    .unwrap();
                altered[at..at + TAMPERED.len()].copy_from_slice(TAMPERED);
                encode_frame(kind, seq, &altered, &mut out).unwrap();
            }
            1 => {
                encode_frame(kind, seq, body, &mut out).unwrap();
                encode_frame(kind, seq, body, &mut out).unwrap();
            }
            2 => {}
            _ => {
                encode_frame(kind, seq, body, &mut out).unwrap();
            }
        }
        out
    }
}

/// A proxy in front of `upstream` that tampers with both directions.
fn tampering_proxy(upstream: SocketAddr, tamperer: Arc<Tamperer>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for downstream in listener.incoming().flatten() {
            let Ok(up) = TcpStream::connect(upstream) else {
                continue;
            };
            let (down2, up2) = (downstream.try_clone().unwrap(), up.try_clone().unwrap());
            let t = tamperer.clone();
            std::thread::spawn(move || pump(downstream, up, &t));
            let t = tamperer.clone();
            std::thread::spawn(move || pump(up2, down2, &t));
        }
    });
    addr
}

/// Frames from `from` to `to`, through the tamperer, until either closes.
fn pump(mut from: TcpStream, mut to: TcpStream, tamperer: &Tamperer) {
    let mut reader = FrameReader::new(FRAME_BODY_BYTES_MAX);
    loop {
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    let bytes = tamperer.forward(frame.kind, frame.seq, &frame.body);
                    if to.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match from.read(reader.read_space()) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
            Ok(n) => reader.filled(n),
        }
    }
}

/// A 3-node cluster (nodes started with `flags`) whose every link passes a
/// tampering proxy, after 20 appends carrying `ORIGINAL` were acknowledged:
/// the cluster, its proxies, its client addresses and the appended values.
fn appends_through_proxies(
    dir: &std::path::Path,
    flags: &[&str],
) -> (LocalCluster, Vec<Arc<Tamperer>>, Vec<String>, Vec<String>) {
    let mut layout = Layout::loopback(3).unwrap();
    let tamperers: Vec<Arc<Tamperer>> = (0..3)
        .map(|_| {
            Arc::new(Tamperer {
                done: AtomicU32::new(0),
                forwarded: AtomicU64::new(0),
            })
        })
        .collect();
    // The lower id dials: every link passes a proxy.
    for (t, (low, high)) in [(0, 1), (0, 2), (1, 2)].into_iter().enumerate() {
        layout.dialed[low][high] = tampering_proxy(layout.listen[high], tamperers[t].clone());
    }
    let flags: Vec<String> = flags.iter().map(ToString::to_string).collect();
    let cluster = LocalCluster::start_laid_out(SYNOD.as_ref(), &layout, 1, dir, &flags).unwrap();
    let addrs: Vec<String> = cluster
        .client_addrs
        .iter()
        .map(ToString::to_string)
        .collect();
    let lines: Vec<String> = (0..20)
        .map(|i| format!("append {}-{i:02}", std::str::from_utf8(ORIGINAL).unwrap()))
        .collect();
    let replies = client(&["--cluster", &addrs.join(","), "--timeout", "20"], &lines);
    assert!(replies.iter().all(|r| r["ok"] == true), "{replies:?}");
    let values = lines
        .iter()
        .map(|l| l["append ".len()..].to_string())
        .collect();
    (cluster, tamperers, addrs, values)
}

#[test]
fn encrypted_links_never_show_a_value_to_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, tamperers, addrs, values) =
        appends_through_proxies(dir.path(), &["--encrypt-peers"]);
    let forwarded: u64 = tamperers
        .iter()
        .map(|t| t.forwarded.load(Ordering::SeqCst))
        .sum();
    let shown: u32 = tamperers
        .iter()
        .map(|t| t.done.load(Ordering::SeqCst))
        .sum();
    assert!(forwarded > 0, "nothing crossed the proxies");
    assert_eq!(shown, 0, "a proxy saw a value in the clear");
    every_replica_holds(&addrs, &values);
}

#[test]
fn rewritten_replayed_and_dropped_accepts_never_reach_a_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, tamperers, addrs, expected) = appends_through_proxies(dir.path(), &[]);
    let tampered: u32 = tamperers
        .iter()
        .map(|t| t.done.load(Ordering::SeqCst).min(3))
        .sum();
    assert!(tampered >= 3, "the attack never happened ({tampered})");

    every_replica_holds(&addrs, &expected);
    let logs: String = cluster
        .logs
        .iter()
        .map(|log| std::fs::read_to_string(log).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("unauthenticated frames"),
        "no link was reset for a bad MAC:\n{logs}"
    );
}

/// Waits until every replica's log holds exactly `expected`, in order;
/// fails at once if one holds the attacker's value.
fn every_replica_holds(addrs: &[String], expected: &[String]) {
    for addr in addrs {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let read = client(&["--node", addr], &["read 0 100".into()]);
            let entries: Vec<String> = read[0]["entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| e["data"].as_str().unwrap_or_default().to_string())
                .collect();
            assert!(
                !entries.iter().any(|e| e.contains("TAMPERED")),
                "{addr} applied the attacker's value: {entries:?}"
            );
            if entries == expected {
                break;
            }
            assert!(Instant::now() < deadline, "{addr}: {entries:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

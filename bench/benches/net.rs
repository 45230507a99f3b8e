//! Transport benches over loopback: small-frame rate (16-byte bodies) and
//! bulk bandwidth (64 KiB bodies), one way, node 1 → node 2, each node on
//! its own glommio executor and thread; and the round trip of one 16-byte
//! frame that node 2 sends straight back (one in flight). Run by `bench/net-baseline.sh`
//! beside iperf3; CI runs them once in test mode.
//!
//! `bulk_64KiB` hands the body over as `Bytes` (`send_bytes`: written from
//! the caller's buffer, as the engine sends); `bulk_64KiB_copied` through
//! `send(&[u8])`, which copies it into the queue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use synod_net::{NodeId, PeerConfig, Secret, SendError, Transport};

/// Per executor: the transport needs no registered buffers; keep it small.
const IO_MEMORY_BYTES: usize = 1 << 20;
const BULK_BODY_BYTES: usize = 64 << 10;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn config(me: u64, nodes: &[(NodeId, SocketAddr)]) -> PeerConfig {
    let listen = nodes.iter().find(|(id, _)| id.0 == me).expect("listed").1;
    let mut c = PeerConfig::new(1, NodeId(me), Secret::new([5; 32]), listen, nodes.to_vec());
    c.frame_body_bytes_max = BULK_BODY_BYTES as u32;
    c.peer_queue_bytes_max = 4 << 20;
    c
}

/// Node 2 on its own thread: reads its inbox forever, counting frames.
fn spawn_receiver(nodes: Vec<(NodeId, SocketAddr)>) -> Arc<AtomicU64> {
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    // Never joined: the thread ends with the bench process.
    let _receiver = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .name("net-bench-receiver")
        .spawn(move || async move {
            let (_t2, mut inbox) = Transport::start(config(2, &nodes)).expect("node 2");
            while let Some(batch) = inbox.recv_batch().await {
                count.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        })
        .expect("receiver thread");
    received
}

struct Pair {
    ex: LocalExecutor,
    sender: Transport,
    received: Arc<AtomicU64>,
}

fn pair() -> Pair {
    let nodes = vec![(NodeId(1), free_addr()), (NodeId(2), free_addr())];
    let received = spawn_receiver(nodes.clone());
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .make()
        .expect("sender executor");
    let sender = ex.run(async {
        let (t1, _inbox) = Transport::start(config(1, &nodes)).expect("node 1");
        while !t1.is_connected(NodeId(2)) {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        t1
    });
    Pair {
        ex,
        sender,
        received,
    }
}

/// How a bench hands its body to the transport.
#[derive(Clone, Copy)]
enum Body<'a> {
    /// `send(&[u8])`: copied into the queue.
    Copied(&'a [u8]),
    /// `send_bytes(Bytes)`: a reference (count) per frame.
    Shared(&'a Bytes),
}

impl Pair {
    /// Sends `frames` bodies and returns the time until node 2 has them all.
    fn one_way(&self, frames: u64, body: Body<'_>) -> Duration {
        let t = &self.sender;
        self.ex.run(async {
            let target = self.received.load(Ordering::Relaxed) + frames;
            let start = Instant::now();
            for _ in 0..frames {
                let sent = match body {
                    Body::Copied(b) => t.send(NodeId(2), 1, b),
                    Body::Shared(b) => t.send_bytes(NodeId(2), 1, b.clone()),
                };
                match sent {
                    Ok(()) => {}
                    Err(SendError::QueueFull { .. }) => {
                        // Backpressure: wait for the writer to make room.
                        let waited = match body {
                            Body::Copied(b) => t.send_wait(NodeId(2), 1, b).await,
                            Body::Shared(b) => t.send_bytes_wait(NodeId(2), 1, b.clone()).await,
                        };
                        waited.expect("send");
                    }
                    Err(e) => panic!("send: {e}"),
                }
            }
            while self.received.load(Ordering::Relaxed) < target {
                glommio::timer::sleep(Duration::from_micros(50)).await;
            }
            start.elapsed()
        })
    }
}

fn small_frames(c: &mut Criterion) {
    let pair = pair();
    let mut group = c.benchmark_group("net");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(10));
    let body = [3u8; 16];
    group.bench_function("small_frames_16B", |b| {
        b.iter_custom(|iters| pair.one_way(iters, Body::Copied(&body)))
    });
    group.finish();
}

fn bulk(c: &mut Criterion) {
    let pair = pair();
    let mut group = c.benchmark_group("net");
    group.throughput(Throughput::Bytes(BULK_BODY_BYTES as u64));
    group.measurement_time(Duration::from_secs(10));
    let body = Bytes::from(vec![9u8; BULK_BODY_BYTES]);
    group.bench_function("bulk_64KiB", |b| {
        b.iter_custom(|iters| pair.one_way(iters, Body::Shared(&body)))
    });
    group.bench_function("bulk_64KiB_copied", |b| {
        b.iter_custom(|iters| pair.one_way(iters, Body::Copied(&body)))
    });
    group.finish();
}

/// Node 2 on its own thread: sends every frame it gets back to its sender.
fn spawn_echo(nodes: Vec<(NodeId, SocketAddr)>) {
    // Never joined: the thread ends with the bench process.
    let _echo = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .name("net-bench-echo")
        .spawn(move || async move {
            let (t2, mut inbox) = Transport::start(config(2, &nodes)).expect("node 2");
            while let Some(m) = inbox.recv().await {
                t2.send_bytes_wait(m.from, m.kind, m.body)
                    .await
                    .expect("echo");
            }
        })
        .expect("echo thread");
}

fn round_trip(c: &mut Criterion) {
    let nodes = vec![(NodeId(1), free_addr()), (NodeId(2), free_addr())];
    spawn_echo(nodes.clone());
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .make()
        .expect("sender executor");
    let (t1, mut inbox) = ex.run(async {
        let (t1, inbox) = Transport::start(config(1, &nodes)).expect("node 1");
        while !t1.is_connected(NodeId(2)) {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        (t1, inbox)
    });
    let mut group = c.benchmark_group("net");
    group.measurement_time(Duration::from_secs(10));
    let body = [3u8; 16];
    group.bench_function("round_trip_16B", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let start = Instant::now();
                for _ in 0..iters {
                    t1.send_wait(NodeId(2), 1, &body).await.expect("send");
                    let echoed = inbox.recv().await.expect("echo");
                    assert_eq!(&echoed.body[..], &body[..]);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    // The transport's tasks belong to the executor: drop it in there.
    ex.run(async move { drop((t1, inbox)) });
}

criterion_group!(benches, small_frames, bulk, round_trip);
criterion_main!(benches);

//! End to end on one machine: three in-process replicas of one group over
//! loopback TCP, each with its WAL on disk (fsync on), driven through the
//! embedding API. Measures propose → applied at the leader with one command
//! in flight: the latency a client of an idle cluster sees, less its own
//! network hop.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_executor::block_on;
use synod_engine::protocol::{GroupId, NodeId};
use synod_engine::runtime::node::{Node, NodeHandle, NodeOptions};
use synod_engine::runtime::{Applying, Capture, ProposeOutcome, StateMachine};

/// Applies nothing: the bench measures the log, not a state machine.
struct Discard;

impl StateMachine for Discard {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        vec![Bytes::new(); commands.len()]
    }
    fn query(&self, _: &[u8]) -> Bytes {
        Bytes::new()
    }
    fn snapshot(&self) -> Capture {
        Capture::encoded(Bytes::new())
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start_cluster(dir: &std::path::Path) -> (Vec<Node>, NodeHandle) {
    let peers: Vec<(NodeId, SocketAddr)> = (1..=3).map(|id| (NodeId(id), free_addr())).collect();
    let nodes: Vec<Node> = peers
        .iter()
        .map(|(id, listen)| {
            let data_dir = dir.join(format!("node-{}", id.0));
            let options = NodeOptions {
                secret: Some(b"the e2e bench's secret, 16+ bytes".to_vec()),
                ..NodeOptions::new(*id, *listen, peers.clone(), data_dir)
            };
            Node::start(options, |_| Discard).expect("node starts")
        })
        .collect();
    let command = Bytes::from_static(&[7; 16]);
    for _ in 0..1_000 {
        for node in &nodes {
            let handle = node.handle();
            if let ProposeOutcome::Applied { .. } =
                block_on(handle.propose(GroupId(0), command.clone()))
            {
                return (nodes, handle);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no leader within 10 s");
}

fn propose_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, leader) = start_cluster(dir.path());
    let command = Bytes::from_static(&[7; 16]);
    let mut group = c.benchmark_group("e2e");
    group.sample_size(20);
    group.bench_function("propose_commit_16B_1_inflight", |b| {
        b.iter(|| {
            let outcome = block_on(leader.propose(GroupId(0), command.clone()));
            assert!(
                matches!(outcome, ProposeOutcome::Applied { .. }),
                "{outcome:?}"
            );
        })
    });
    group.finish();
    for node in nodes {
        node.shutdown().unwrap();
    }
}

criterion_group!(benches, propose_commit);
criterion_main!(benches);

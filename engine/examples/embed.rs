//! Embedding synod: three replicas of a counter in one process, driven from
//! plain threads. Run with `cargo run -p synod-engine --example embed`.
//!
//! A real deployment runs one `Node` per machine; only the addresses and
//! data directories change.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bytes::Bytes;
use futures_executor::block_on;
use futures_util::{FutureExt, StreamExt};
use synod_engine::protocol::{GroupId, LogIndex, NodeId};
use synod_engine::runtime::node::{Node, NodeOptions};
use synod_engine::runtime::{Applying, Capture, ProposeOutcome, ReadOutcome, StateMachine};

/// The state machine: a counter that each command adds to.
#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        commands
            .iter()
            .map(|c| {
                let add = c.data.try_into().map(u64::from_le_bytes).unwrap_or(0);
                self.0 += add;
                Bytes::copy_from_slice(&self.0.to_le_bytes())
            })
            .collect()
    }

    fn query(&self, _query: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_le_bytes())
    }

    /// Eight bytes: small enough to encode on the core. A large state
    /// would capture a cheap clone here and encode it in
    /// `Capture::deferred`, off the core.
    fn snapshot(&self) -> Capture {
        Capture::encoded(Bytes::copy_from_slice(&self.0.to_le_bytes()))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let bytes = snapshot.try_into().map_err(|_| "not 8 bytes".to_string())?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let peers: Vec<(NodeId, SocketAddr)> = (1..=3).map(|id| (NodeId(id), free_addr())).collect();
    let nodes = peers
        .iter()
        .map(|(id, listen)| {
            Node::start(
                // The defaults' 1 MiB of io_memory per node lets three
                // nodes in one process share the 8 MiB memlock limit.
                NodeOptions {
                    secret: Some(b"an example secret, 16+ bytes".to_vec()),
                    ..NodeOptions::new(
                        *id,
                        *listen,
                        peers.clone(),
                        dir.path().join(format!("node-{}", id.0)),
                    )
                },
                |_group| Counter::default(),
            )
        })
        .collect::<Result<Vec<Node>, _>>()?;
    let handles: Vec<_> = nodes.iter().map(Node::handle).collect();
    let group = GroupId(0);

    // Any node takes proposals; only the leader accepts them, so try each.
    let add = |n: u64| -> (u64, u64) {
        loop {
            for handle in &handles {
                let data = Bytes::copy_from_slice(&n.to_le_bytes());
                if let ProposeOutcome::Applied { index, reply } =
                    block_on(handle.propose(group, data))
                {
                    return (index.0, u64::from_le_bytes(reply[..].try_into().unwrap()));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut commits = block_on(handles[2].subscribe(group, LogIndex(0)))?;
    for n in 1..=10 {
        let (index, total) = add(n);
        println!("added {n:2} at index {index}: counter = {total}");
    }
    let ReadOutcome::Value(value) = block_on(handles[0].read_local(group, Bytes::new())) else {
        panic!("node 1 answers local reads");
    };
    println!("node 1 reads {}", u64::from_le_bytes(value[..].try_into()?));
    let streamed = std::iter::from_fn(|| commits.next().now_or_never().flatten()).count();
    println!("node 3 streamed {streamed} commits");
    for node in nodes {
        node.shutdown()?;
    }
    Ok(())
}

//! The protocol core alone: a 3-replica in-memory cluster in one thread, no
//! I/O, 16-byte commands proposed in chunks until every replica applied them.
//!
//! The same workload also runs through OmniPaxos 0.2 and raft-rs 0.7, each
//! with its own in-memory storage, as baselines. Every case builds a fresh
//! cluster per iteration and checks at the end that all three replicas hold
//! the same log with every command in it.

use std::collections::VecDeque;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use omnipaxos::macros::Entry;
use omnipaxos::messages::Message as OmniMessage;
use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use raft::prelude::{ConfState, Entry as RaftEntry, EntryType, Message as RaftMessage};
use raft::storage::MemStorage;
use raft::{Config as RaftConfig, RawNode, StateRole};
use synod_bench::inmem::InMemoryCluster;
use synod_engine::protocol::{ClientId, Command};

const COMMANDS_PER_ITER: u64 = 65_536;

/// Bound on tick-and-deliver rounds while electing or waiting for followers
/// to learn the commit point; each normally takes a handful.
const MAX_ROUNDS: usize = 1_000;

/// The 16 bytes of command `i`, the same in every system.
fn payload(i: u64) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&i.to_le_bytes());
    bytes[8..].copy_from_slice(&i.to_le_bytes());
    bytes
}

fn commands(n: u64) -> Vec<Command> {
    (0..n)
        .map(|i| Command {
            client: ClientId(0),
            seq: i,
            data: Bytes::copy_from_slice(&payload(i)),
        })
        .collect()
}

/// An OmniPaxos log entry: the 16 command bytes, inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Entry)]
struct OmniCommand([u8; 16]);

type OmniServer = OmniPaxos<OmniCommand, MemoryStorage<OmniCommand>>;

/// Three OmniPaxos servers in one thread; messages are delivered in rounds
/// (take every server's outgoing messages, hand each to its destination).
struct OmniPaxosCluster {
    servers: Vec<OmniServer>,
    leader: usize,
    in_flight: Vec<OmniMessage<OmniCommand>>,
}

impl OmniPaxosCluster {
    /// Three servers with default settings; ticks until all follow one leader
    /// that is in its accept phase.
    fn new() -> OmniPaxosCluster {
        let cluster_config = ClusterConfig {
            configuration_id: 1,
            nodes: vec![1, 2, 3],
            ..Default::default()
        };
        let servers = (1..=3)
            .map(|pid| {
                let server_config = ServerConfig {
                    pid,
                    ..Default::default()
                };
                cluster_config
                    .clone()
                    .build_for_server(server_config, MemoryStorage::default())
                    .expect("valid config")
            })
            .collect();
        let mut cluster = OmniPaxosCluster {
            servers,
            leader: 0,
            in_flight: Vec::new(),
        };
        cluster.elect();
        cluster
    }

    /// Ballot leader election runs on ticks; ticking stops once elected, so
    /// no timer fires while commands are measured.
    fn elect(&mut self) {
        for _ in 0..MAX_ROUNDS {
            self.servers.iter_mut().for_each(OmniServer::tick);
            self.deliver_all();
            let first = self.servers[0].get_current_leader();
            if let Some((leader, true)) = first {
                if self.servers.iter().all(|s| s.get_current_leader() == first) {
                    self.leader = leader as usize - 1;
                    return;
                }
            }
        }
        panic!("OmniPaxos elected no leader");
    }

    /// Appends each command at the leader (OmniPaxos has no batch append; it
    /// coalesces them into one AcceptDecide per follower until the messages
    /// are taken), then delivers until quiet.
    fn propose(&mut self, commands: &[OmniCommand]) {
        let leader = &mut self.servers[self.leader];
        for command in commands {
            leader.append(*command).expect("the leader accepts appends");
        }
        self.deliver_all();
    }

    /// Delivers messages until no server has anything to send.
    fn deliver_all(&mut self) {
        loop {
            for server in &mut self.servers {
                server.take_outgoing_messages(&mut self.in_flight);
            }
            if self.in_flight.is_empty() {
                return;
            }
            for message in self.in_flight.drain(..) {
                let to = message.get_receiver() as usize - 1;
                self.servers[to].handle_incoming(message);
            }
        }
    }

    /// Runs until every server has decided `total` entries.
    fn wait_decided(&mut self, total: usize) {
        for _ in 0..MAX_ROUNDS {
            if self.servers.iter().all(|s| s.get_decided_idx() == total) {
                return;
            }
            // Resends anything a follower is missing, should it come to that.
            self.servers.iter_mut().for_each(OmniServer::tick);
            self.deliver_all();
        }
        panic!("OmniPaxos servers did not all decide {total} entries");
    }

    /// Whether every server's log is `total` decided entries, the same on all.
    fn decided_logs_agree(&self, total: usize) -> bool {
        let decided = |server: &OmniServer| -> Option<Vec<OmniCommand>> {
            server
                .read_entries(0..total)?
                .into_iter()
                .map(|entry| match entry {
                    LogEntry::Decided(command) => Some(command),
                    _ => None,
                })
                .collect()
        };
        let first = decided(&self.servers[0]);
        first.as_ref().is_some_and(|log| log.len() == total)
            && self.servers[1..].iter().all(|s| decided(s) == first)
    }
}

/// Three raft-rs nodes in one thread with `MemStorage`: each Ready is
/// persisted at once, its messages queued in order and its committed entries
/// applied, and the queue is drained until no node has anything to do.
struct RaftCluster {
    nodes: Vec<RawNode<MemStorage>>,
    mailbox: VecDeque<RaftMessage>,
    /// Command entries applied by each node, in order (the leader's empty
    /// entry of its term is left out).
    applied: Vec<Vec<RaftEntry>>,
}

impl RaftCluster {
    /// Three nodes; node 1 campaigns and leads.
    fn new() -> RaftCluster {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let nodes = (1..=3)
            .map(|id| {
                // Defaults, except appends may carry many entries (the default
                // 0 sends one entry per message) and appends queued for the
                // same follower are merged: the batching OmniPaxos and synod
                // do too.
                let config = RaftConfig {
                    id,
                    max_size_per_msg: 1 << 20,
                    batch_append: true,
                    ..Default::default()
                };
                let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], [])));
                RawNode::new(&config, storage, &logger).expect("valid config")
            })
            .collect();
        let mut cluster = RaftCluster {
            nodes,
            mailbox: VecDeque::new(),
            applied: vec![Vec::new(); 3],
        };
        cluster.nodes[0].campaign().expect("node 1 campaigns");
        cluster.run_until_quiet();
        assert_eq!(
            cluster.nodes[0].raft.state,
            StateRole::Leader,
            "node 1 leads"
        );
        cluster
    }

    /// Proposes each command at the leader (`RawNode` takes one entry per
    /// proposal), then runs until quiet.
    fn propose(&mut self, commands: &[[u8; 16]]) {
        for command in commands {
            self.nodes[0]
                .propose(Vec::new(), command.to_vec())
                .expect("the leader accepts proposals");
        }
        self.run_until_quiet();
    }

    /// Handles Readies and delivers messages until neither is left.
    fn run_until_quiet(&mut self) {
        loop {
            let mut busy = false;
            for node in 0..self.nodes.len() {
                if self.nodes[node].has_ready() {
                    self.handle_ready(node);
                    busy = true;
                }
            }
            while let Some(message) = self.mailbox.pop_front() {
                let to = message.to as usize - 1;
                self.nodes[to].step(message).expect("a valid message");
                busy = true;
            }
            if !busy {
                return;
            }
        }
    }

    /// One turn of the Ready loop, in the order raft-rs documents.
    fn handle_ready(&mut self, node: usize) {
        let RaftCluster {
            nodes,
            mailbox,
            applied,
        } = self;
        let raw = &mut nodes[node];
        let applied = &mut applied[node];
        let store = raw.store().clone();
        let mut ready = raw.ready();
        assert!(ready.snapshot().is_empty(), "no snapshots here");
        mailbox.extend(ready.take_messages());
        apply(applied, ready.take_committed_entries());
        store
            .wl()
            .append(ready.entries())
            .expect("in-memory append");
        if let Some(hard_state) = ready.hs() {
            store.wl().set_hardstate(hard_state.clone());
        }
        mailbox.extend(ready.take_persisted_messages());
        let mut light = raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().set_commit(commit);
        }
        mailbox.extend(light.take_messages());
        apply(applied, light.take_committed_entries());
        raw.advance_apply();
    }

    /// Runs until every node applied `total` commands; followers learn the
    /// last commit index from the leader's next append or heartbeat.
    fn wait_applied(&mut self, total: usize) {
        for _ in 0..MAX_ROUNDS {
            if self.applied.iter().all(|log| log.len() == total) {
                return;
            }
            self.nodes[0].tick();
            self.run_until_quiet();
        }
        panic!("raft nodes did not all apply {total} entries");
    }

    /// Whether every node applied the same entries (index, term and data).
    fn applied_logs_agree(&self) -> bool {
        self.applied.iter().all(|log| *log == self.applied[0])
    }
}

/// Keeps the command entries of `committed`, skipping a new leader's empty one.
fn apply(applied: &mut Vec<RaftEntry>, committed: Vec<RaftEntry>) {
    applied.extend(committed.into_iter().filter(|entry| {
        entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty()
    }));
}

fn commit_16b_3_replicas(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_16b_3_replicas");
    group.sample_size(10);
    for chunk in [1u64, 64, 1024] {
        let per_iter = if chunk == 1 {
            COMMANDS_PER_ITER / 16
        } else {
            COMMANDS_PER_ITER
        };
        group.throughput(Throughput::Elements(per_iter));
        let total = per_iter as usize;

        let all = commands(per_iter);
        group.bench_with_input(BenchmarkId::new("synod", chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut cluster = InMemoryCluster::new(3, |_| {});
                for slice in all.chunks(chunk as usize) {
                    cluster.propose(slice);
                }
                cluster.wait_applied(per_iter);
                assert!(cluster.logs_agree(), "replica logs differ");
                assert_eq!(cluster.applied(), [per_iter; 3]);
            });
        });

        let all: Vec<OmniCommand> = (0..per_iter).map(|i| OmniCommand(payload(i))).collect();
        group.bench_with_input(BenchmarkId::new("omnipaxos", chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut cluster = OmniPaxosCluster::new();
                for slice in all.chunks(chunk as usize) {
                    cluster.propose(slice);
                }
                cluster.wait_decided(total);
                assert!(cluster.decided_logs_agree(total), "decided logs differ");
            });
        });

        let all: Vec<[u8; 16]> = (0..per_iter).map(payload).collect();
        group.bench_with_input(BenchmarkId::new("raft-rs", chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut cluster = RaftCluster::new();
                for slice in all.chunks(chunk as usize) {
                    cluster.propose(slice);
                }
                cluster.wait_applied(total);
                assert!(cluster.applied_logs_agree(), "applied logs differ");
            });
        });
    }
    group.finish();
}

criterion_group!(benches, commit_16b_3_replicas);
criterion_main!(benches);

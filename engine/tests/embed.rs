//! The embedding API end to end: three `Node`s in one process with an
//! embedder's own state machine, driven from plain threads.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "support/ports.rs"]
mod ports;
#[path = "support/sum.rs"]
mod sum;

use bytes::Bytes;
use futures_executor::block_on;
use futures_util::{FutureExt, StreamExt};
use ports::free_ports;
use sum::Sum;
use synod_engine::protocol::{ClientId, GroupId, LogIndex, NodeId, Slot};
use synod_engine::runtime::client_port::{ClientGroups, ClientReply, ClientService, LocalGroup};
use synod_engine::runtime::group::{
    ChangeError, CommitStream, Committed, MemberChange, SubscribeError,
};
use synod_engine::runtime::node::{Node, NodeHandle, NodeOptions};
use synod_engine::runtime::snapshot::SnapshotPolicy;
use synod_engine::runtime::{
    Applying, Capture, ProposeOutcome, ReadOutcome, StateMachine, StatusView,
};

/// A client port that answers every frame with an empty reply: for tests
/// that need the port open, not used.
struct Unanswering;

impl ClientService for Unanswering {
    type Forwarded = ();

    async fn answer(&self, _: &ClientGroups<'_, ()>, _: u16, _: &[u8]) -> ClientReply {
        ClientReply {
            kind: 1,
            body: Vec::new(),
        }
    }

    async fn answer_forwarded(&self, _: LocalGroup<'_>, _: ()) -> ClientReply {
        ClientReply {
            kind: 1,
            body: Vec::new(),
        }
    }
}

fn options(dir: &Path, id: NodeId, peers: &[(NodeId, SocketAddr)]) -> NodeOptions {
    let listen = peers.iter().find(|(p, _)| *p == id).unwrap().1;
    let data_dir = dir.join(format!("node-{}", id.0));
    NodeOptions {
        groups: 2,
        cores: 2,
        secret: Some(b"a test secret of 16 bytes or more".to_vec()),
        cluster_id: 9,
        tick: Duration::from_millis(2),
        io_memory_bytes: 512 << 10,
        snapshot: SnapshotPolicy {
            every_slots: 25,
            ..SnapshotPolicy::default()
        },
        commit_history_bytes: 1 << 20,
        ..NodeOptions::new(id, listen, peers.to_vec(), data_dir)
    }
}

/// Peer addresses with a free port after each (two cores each).
fn peers() -> Vec<(NodeId, SocketAddr)> {
    (1..=3).map(|id| (NodeId(id), free_ports(2))).collect()
}

fn start(dir: &Path, peers: &[(NodeId, SocketAddr)]) -> Vec<Node> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    peers
        .iter()
        .map(|(id, _)| Node::start(options(dir, *id, peers), |_| Sum::default()).unwrap())
        .collect()
}

fn add(handles: &[NodeHandle], group: GroupId, client: u64, seq: u64, n: u64) -> (LogIndex, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for handle in handles {
            let data = Bytes::copy_from_slice(&n.to_le_bytes());
            let outcome = block_on(handle.propose_session(group, ClientId(client), seq, data));
            if let ProposeOutcome::Applied { index, reply } = outcome {
                return (index, u64::from_le_bytes(reply[..].try_into().unwrap()));
            }
        }
        assert!(Instant::now() < deadline, "no leader took the proposal");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_sum(handles: &[NodeHandle], group: GroupId) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for handle in handles {
            if let ReadOutcome::Value(v) = block_on(handle.read(group, Bytes::new())) {
                return u64::from_le_bytes(v[..].try_into().unwrap());
            }
        }
        assert!(Instant::now() < deadline, "no leader answered the read");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn threads_propose_read_and_stream_commits_across_cores_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let peers = peers();
    let nodes = start(dir.path(), &peers);
    let handles: Vec<NodeHandle> = nodes.iter().map(Node::handle).collect();
    let mut stream = block_on(handles[2].subscribe(GroupId(1), LogIndex(0))).expect("group 1");
    assert_eq!(
        block_on(handles[0].subscribe(GroupId(2), LogIndex(0))).err(),
        Some(SubscribeError::NoGroup(2))
    );

    // Four threads, two per group (group g on core g of every node).
    let workers: Vec<_> = (0..4u64)
        .map(|client| {
            let handles = handles.clone();
            std::thread::spawn(move || {
                let group = GroupId((client % 2) as u32);
                (1..=40).for_each(|seq| {
                    add(&handles, group, client + 1, seq, seq);
                });
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let per_group = 2 * (1..=40u64).sum::<u64>();
    assert_eq!(read_sum(&handles, GroupId(0)), per_group);
    assert_eq!(read_sum(&handles, GroupId(1)), per_group);

    // A retry of a session's last command gets the first answer again and
    // is not applied again.
    let first = add(&handles, GroupId(1), 9, 1, 5);
    assert_eq!(first.1, per_group + 5);
    assert_eq!(add(&handles, GroupId(1), 9, 1, 5), first);
    assert_eq!(read_sum(&handles, GroupId(1)), per_group + 5);

    // Node 3 streamed group 1's commands in log order, each once.
    let seen = entries(&mut stream, 81);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "log order");
    assert_eq!(seen.iter().map(|(_, n)| n).sum::<u64>(), per_group + 5);
    // A subscription from an index already applied replays the history
    // first: the same entries, from where it asked.
    let from = LogIndex(seen[40].0);
    let mut late = block_on(handles[2].subscribe(GroupId(1), from)).expect("kept");
    assert_eq!(entries(&mut late, 41), seen[40..]);

    for node in nodes {
        node.shutdown().unwrap();
    }
    // Everything comes back from the snapshots and the WALs.
    let nodes = start(dir.path(), &peers);
    let handles: Vec<NodeHandle> = nodes.iter().map(Node::handle).collect();
    assert_eq!(read_sum(&handles, GroupId(0)), per_group);
    assert_eq!(read_sum(&handles, GroupId(1)), per_group + 5);
    // The history is in memory: after a restart it starts at the state
    // recovered, and an older index is refused with where to start.
    let status = block_on(handles[2].status(GroupId(1))).expect("running");
    assert!(status.next_index > LogIndex(0));
    // The configuration reads as the three voters, no change under way.
    let view = block_on(handles[2].membership(GroupId(1))).expect("running");
    let voters: Vec<NodeId> = view.in_force.voter_ids().collect();
    assert_eq!(voters, [NodeId(1), NodeId(2), NodeId(3)]);
    assert_eq!(view.next, None);
    match block_on(handles[2].subscribe(GroupId(1), LogIndex(0))) {
        Err(SubscribeError::Compacted { first }) => assert!(first <= status.next_index),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("entries from before the restart were streamed"),
    }
    for node in nodes {
        node.shutdown().unwrap();
    }
}

/// The next `n` entries of `stream` as (index, value), within 10 s.
fn entries(stream: &mut CommitStream, n: usize) -> Vec<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < n {
        match stream.next().now_or_never() {
            Some(Some(Committed::Entry { index, data })) => {
                seen.push((index.0, u64::from_le_bytes(data[..].try_into().unwrap())));
            }
            Some(Some(Committed::Snapshot { .. })) => {}
            Some(None) => panic!("the stream ended after {seen:?}"),
            None => {
                assert!(Instant::now() < deadline, "stalled after {seen:?}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    seen
}

/// Every node's status of `group`, once each has a snapshot covering all
/// it applied.
fn settled(handles: &[NodeHandle], group: GroupId) -> Vec<StatusView> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views: Vec<StatusView> = handles
            .iter()
            .map(|h| block_on(h.status(group)).expect("running"))
            .collect();
        // Every node at the same slot, all of it in its snapshot (a
        // follower yet to hear of the last commit would settle early).
        if views.iter().all(|v| {
            v.applied > Slot(0) && v.snapshot == v.applied && v.applied == views[0].applied
        }) {
            return views;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot of everything: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_restart_from_a_snapshot_of_every_applied_slot_counts_them_applied() {
    let dir = tempfile::tempdir().unwrap();
    let peers = peers();
    let clients: Vec<SocketAddr> = peers.iter().map(|_| free_ports(1)).collect();
    // With client ports too: a node restarted in the same process must find
    // its client port free again.
    let start_snapshotting_every_slot = || -> Vec<Node> {
        peers
            .iter()
            .zip(&clients)
            .map(|((id, _), client)| {
                let options = NodeOptions {
                    snapshot: SnapshotPolicy {
                        every_slots: 1,
                        ..SnapshotPolicy::default()
                    },
                    ..options(dir.path(), *id, &peers)
                };
                Node::start_with_client_port(options, |_| Sum::default(), *client, Unanswering)
                    .unwrap()
            })
            .collect()
    };
    let nodes = start_snapshotting_every_slot();
    let handles: Vec<NodeHandle> = nodes.iter().map(Node::handle).collect();
    for seq in 1..=5 {
        add(&handles, GroupId(0), 1, seq, seq);
    }
    let before = settled(&handles, GroupId(0));
    for node in nodes {
        node.shutdown().unwrap();
    }
    // Nothing beyond the snapshot is replayed, yet all of it is applied:
    // a leader that thought otherwise served reads from a state it took
    // for older than its commit point.
    let nodes = start_snapshotting_every_slot();
    let handles: Vec<NodeHandle> = nodes.iter().map(Node::handle).collect();
    for (handle, was) in handles.iter().zip(&before) {
        let now = block_on(handle.status(GroupId(0))).expect("running");
        assert_eq!((now.applied, now.snapshot), (was.applied, was.snapshot));
    }
    assert_eq!(read_sum(&handles, GroupId(0)), 15);
    assert_eq!(add(&handles, GroupId(0), 1, 6, 6).1, 21);
    for node in nodes {
        node.shutdown().unwrap();
    }
}

#[test]
fn proposals_without_a_session_made_at_once_are_each_told_their_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(dir.path(), &peers());
    let handles: Vec<NodeHandle> = nodes.iter().map(Node::handle).collect();
    add(&handles, GroupId(0), 1, 1, 0);
    let leader = handles
        .iter()
        .find(|h| block_on(h.status(GroupId(0))).is_some_and(|s| s.leading))
        .expect("a leader")
        .clone();
    // Each thread adds 1, 2, 3, ... and so knows, from the sum it is
    // answered, whether the answer is its own: the sums of proposals
    // before it are smaller, and every value is added once.
    let threads: Vec<JoinHandle<Vec<(LogIndex, u64, u64)>>> = (0..8)
        .map(|t| {
            let leader = leader.clone();
            std::thread::spawn(move || {
                (0..40u64)
                    .map(|i| {
                        let n = t * 1000 + i + 1;
                        let data = Bytes::copy_from_slice(&n.to_le_bytes());
                        match block_on(leader.propose(GroupId(0), data)) {
                            ProposeOutcome::Applied { index, reply } => {
                                (index, u64::from_le_bytes(reply[..].try_into().unwrap()), n)
                            }
                            other => panic!("proposal {n}: {other:?}"),
                        }
                    })
                    .collect()
            })
        })
        .collect();
    let mut answers: Vec<(LogIndex, u64, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("every proposal applied"))
        .collect();
    answers.sort();
    let indexes: BTreeSet<LogIndex> = answers.iter().map(|(index, ..)| *index).collect();
    assert_eq!(indexes.len(), answers.len(), "two proposals told one index");
    // Each answer is its own: the sum it was told grew by its own value
    // since the answer before it in log order (the first one's since 0).
    let mut before = 0;
    for (index, sum, n) in &answers {
        assert_eq!(sum - before, *n, "the answer at {index:?} is another's");
        before = *sum;
    }
    let total: u64 = (0..8u64)
        .flat_map(|t| (0..40u64).map(move |i| t * 1000 + i + 1))
        .sum();
    assert_eq!(answers.last().map(|a| a.1), Some(total));
    assert_eq!(read_sum(&handles, GroupId(0)), total);
    for node in nodes {
        node.shutdown().unwrap();
    }
}

#[test]
fn a_leader_that_loses_its_majority_answers_what_it_had_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start(dir.path(), &peers());
    let handles: Vec<NodeHandle> = nodes.iter().map(Node::handle).collect();
    add(&handles, GroupId(0), 1, 1, 1);
    let leading = |h: &NodeHandle| block_on(h.status(GroupId(0))).is_some_and(|s| s.leading);
    let at = handles.iter().position(leading).expect("a leader");
    let leader = nodes.remove(at);
    for follower in nodes {
        follower.shutdown().unwrap();
    }
    // The slot can no longer be chosen by this leader; once it notices it
    // has no majority it steps down, and the proposal waiting on the slot
    // is answered rather than left waiting for ever (a refusal: it had
    // stepped down already when the proposal came).
    let handle = leader.handle();
    let outcome = within(30, move || {
        let data = Bytes::copy_from_slice(&5u64.to_le_bytes());
        block_on(handle.propose_session(GroupId(0), ClientId(1), 2, data))
    });
    assert!(
        matches!(
            outcome,
            ProposeOutcome::InDoubt { .. } | ProposeOutcome::Refused(_)
        ),
        "{outcome:?}"
    );
    leader.shutdown().unwrap();
}

#[test]
fn options_that_contradict_each_other_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let peers = peers();
    let base = options(dir.path(), NodeId(1), &peers);
    let cases = [
        (
            NodeOptions {
                cores: 3,
                ..base.clone()
            },
            "at most groups",
        ),
        (
            NodeOptions {
                cores: 0,
                ..base.clone()
            },
            "cores must be",
        ),
        (
            NodeOptions {
                groups: 0,
                ..base.clone()
            },
            "groups must be",
        ),
        (
            NodeOptions {
                peers: vec![(NodeId(1), "127.0.0.1:65535".parse().unwrap())],
                ..base.clone()
            },
            "need ports",
        ),
        (
            NodeOptions {
                snapshot: SnapshotPolicy {
                    write_floor_bytes_per_sec: 0,
                    ..SnapshotPolicy::default()
                },
                ..base.clone()
            },
            "snapshot_write_floor must be positive",
        ),
        (
            NodeOptions {
                peers: [peers[0], (NodeId(2), peers[0].1), peers[2]]
                    .map(|(id, addr)| (id, addr.into()))
                    .to_vec(),
                ..base.clone()
            },
            "share the address",
        ),
        (
            NodeOptions {
                listen: "127.0.0.1:1".parse().unwrap(),
                ..base.clone()
            },
            "the peer list names it at",
        ),
    ];
    for (options, expected) in cases {
        let error = Node::start(options, |_| Sum::default())
            .err()
            .expect("refused");
        assert!(error.to_string().contains(expected), "{error}");
    }
    // The client port already bound by someone else.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let error = Node::start_with_client_port(base, |_| Sum::default(), addr, Unanswering)
        .err()
        .expect("refused");
    assert!(error.to_string().contains("client port"), "{error}");
    assert!(
        std::error::Error::source(&error).is_some(),
        "the cause is kept: {error:?}"
    );
    assert!(!dir.path().join("node-1").exists(), "nothing was created");
}

/// Sums, but takes its snapshots with its own capture (one that fails).
struct SnapshotsBy(Sum, Box<dyn Fn() -> Capture>);

impl SnapshotsBy {
    fn new(capture: impl Fn() -> Capture + 'static) -> SnapshotsBy {
        SnapshotsBy(Sum::default(), Box::new(capture))
    }
}

impl StateMachine for SnapshotsBy {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        self.0.apply(commands)
    }
    fn query(&self, query: &[u8]) -> Bytes {
        self.0.query(query)
    }
    fn snapshot(&self) -> Capture {
        (self.1)()
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.0.restore(snapshot)
    }
}

#[test]
fn a_snapshot_that_cannot_be_encoded_is_tried_again_only_when_due_again() {
    let dir = tempfile::tempdir().unwrap();
    let peers = peers();
    let captures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let nodes: Vec<Node> = peers
        .iter()
        .map(|(id, _)| {
            let options = NodeOptions {
                groups: 1,
                cores: 1,
                snapshot: SnapshotPolicy {
                    every_slots: 4,
                    ..SnapshotPolicy::default()
                },
                ..options(dir.path(), *id, &peers)
            };
            let captures = captures.clone();
            // Too large for a snapshot frame; each try counted.
            Node::start(options, move |_| {
                let captures = captures.clone();
                SnapshotsBy::new(move || {
                    captures.fetch_add(1, Ordering::Relaxed);
                    Capture::deferred(|| Bytes::from(vec![7u8; 65 << 20]))
                })
            })
            .unwrap()
        })
        .collect();
    let handles: Vec<NodeHandle> = nodes.iter().map(Node::handle).collect();
    for seq in 1..=6 {
        add(&handles, GroupId(0), 1, seq, seq);
    }
    // Ticks go on applying nothing; a failed try must not come due again
    // on each (it did: tens of tries a second per node).
    std::thread::sleep(Duration::from_secs(2));
    let tried = captures.load(Ordering::Relaxed);
    // About 8 slots (the proposals and the leader's opening no-op; another
    // election adds one): at most 2 or 3 tries per node, due every 4.
    assert!((1..=9).contains(&tried), "{tried} captures");
    assert_eq!(read_sum(&handles, GroupId(0)), 21, "the group goes on");
    for node in nodes {
        node.shutdown().unwrap();
    }
}

/// Waits until some node's group 0 has stopped, then shuts every node
/// down; the errors they stopped with.
fn errors_once_one_stops(nodes: Vec<Node>) -> Vec<String> {
    let handles: Vec<NodeHandle> = nodes.iter().map(Node::handle).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while handles.iter().all(|h| {
        let h = h.clone();
        within(10, move || block_on(h.status(GroupId(0)))).is_some()
    }) {
        assert!(Instant::now() < deadline, "no node stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    within(30, move || {
        nodes
            .into_iter()
            .filter_map(|node| node.shutdown().err())
            .map(|error| error.to_string())
            .collect()
    })
}

/// `f`'s result, or a failure if it takes over `seconds` (a hang).
fn within<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result
        .recv_timeout(Duration::from_secs(seconds))
        .expect("no answer: it hangs")
}

/// Proposes `n` to group 0 of every node as `(client, seq)` until `done`;
/// proposals to a stopped node are answered, so this cannot hang.
fn keep_proposing(handles: Vec<NodeHandle>, n: u64, done: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seq = 0;
        while !done.load(Ordering::Relaxed) {
            seq += 1;
            for handle in &handles {
                let data = Bytes::copy_from_slice(&n.to_le_bytes());
                let _ = block_on(handle.propose_session(GroupId(0), ClientId(1), seq, data));
            }
        }
    })
}

#[test]
fn a_panic_while_encoding_a_snapshot_stops_the_node_with_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let peers = peers();
    let nodes: Vec<Node> = peers
        .iter()
        .map(|(id, _)| {
            let options = NodeOptions {
                snapshot: SnapshotPolicy {
                    every_slots: 3,
                    ..SnapshotPolicy::default()
                },
                ..options(dir.path(), *id, &peers)
            };
            Node::start(options, |_| {
                SnapshotsBy::new(|| {
                    Capture::deferred(|| panic!("the embedder's snapshot encoding failed"))
                })
            })
            .unwrap()
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let proposer = keep_proposing(nodes.iter().map(Node::handle).collect(), 1, done.clone());
    let errors = errors_once_one_stops(nodes);
    done.store(true, Ordering::Relaxed);
    proposer.join().unwrap();
    assert!(!errors.is_empty(), "a node stopped on an error");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("snapshot thread panicked")),
        "{errors:?}"
    );
}

/// Its `apply` panics on the command 13.
#[derive(Default)]
struct Unlucky(Sum);

impl StateMachine for Unlucky {
    fn apply(&mut self, commands: &[Applying<'_>]) -> Vec<Bytes> {
        assert!(
            commands.iter().all(|c| c.data != 13u64.to_le_bytes()),
            "the embedder's state machine cannot apply 13"
        );
        self.0.apply(commands)
    }
    fn query(&self, query: &[u8]) -> Bytes {
        self.0.query(query)
    }
    fn snapshot(&self) -> Capture {
        self.0.snapshot()
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.0.restore(snapshot)
    }
}

#[test]
fn a_panic_in_the_state_machine_stops_the_node_with_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let peers = peers();
    let nodes: Vec<Node> = peers
        .iter()
        .map(|(id, _)| {
            Node::start(options(dir.path(), *id, &peers), |_| Unlucky::default()).unwrap()
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let proposer = keep_proposing(nodes.iter().map(Node::handle).collect(), 13, done.clone());
    let errors = errors_once_one_stops(nodes);
    done.store(true, Ordering::Relaxed);
    proposer.join().unwrap();
    assert!(!errors.is_empty(), "a node stopped on an error");
    assert!(
        errors.iter().all(|e| e.contains("group 0")
            && e.contains("panicked: the embedder's state machine cannot apply 13")),
        "{errors:?}"
    );
}

/// The node that leads `group`, among `handles`, within 20 s.
fn leader_of(handles: &[NodeHandle], group: GroupId) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (i, handle) in handles.iter().enumerate() {
            if block_on(handle.status(group)).is_some_and(|s| s.leading) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running group gains a node it was not started with and loses one of
/// its first: node 4 starts knowing only where the others are, is added as
/// a voter (a learner until caught up), node 1 is removed, and the group
/// goes on with 2, 3 and 4, every command counted once on node 4.
#[test]
fn a_new_node_is_added_and_an_old_one_removed_while_the_group_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut peers = peers();
    let mut nodes = start(dir.path(), &peers);
    let mut handles: Vec<NodeHandle> = nodes.iter().map(Node::handle).collect();
    let group = GroupId(0);
    let mut sum = 0;
    for seq in 1..=20 {
        add(&handles, group, 7, seq, seq);
        sum += seq;
    }
    peers.push((NodeId(4), free_ports(2)));
    let mut joining = options(dir.path(), NodeId(4), &peers);
    joining.join = true;
    let fourth = Node::start(joining, |_| Sum::default()).unwrap();
    handles.push(fourth.handle());
    let addr = peers[3].1.to_string();

    let within = Duration::from_secs(20);
    let add_four = MemberChange::Add {
        id: NodeId(4),
        addr: addr.clone(),
        voter: true,
    };
    let leader = leader_of(&handles, group);
    let view = block_on(handles[leader].change_members(group, add_four, within)).unwrap();
    let voters: Vec<u64> = view.in_force.voter_ids().map(|id| id.0).collect();
    assert_eq!(voters, [1, 2, 3, 4]);
    let four = view.in_force.members().iter().find(|m| m.id == NodeId(4));
    assert_eq!(four.unwrap().addr, addr);
    // A follower refuses to change anything.
    let follower = (leader + 1) % 3;
    let refused =
        block_on(handles[follower].change_members(group, MemberChange::Remove(NodeId(1)), within));
    assert!(
        matches!(refused, Err(ChangeError::NotLeader { .. })),
        "{refused:?}"
    );

    let leader = leader_of(&handles, group);
    let removed = MemberChange::Remove(NodeId(1));
    let view = block_on(handles[leader].change_members(group, removed, within)).unwrap();
    let voters: Vec<u64> = view.in_force.voter_ids().map(|id| id.0).collect();
    assert_eq!(voters, [2, 3, 4], "in force once it returns");

    // Node 1 goes for good; the others carry on, node 4 among them.
    drop(handles.remove(0));
    nodes.remove(0).shutdown().unwrap();
    for seq in 21..=40 {
        add(&handles, group, 7, seq, seq);
        sum += seq;
    }
    assert_eq!(read_sum(&handles, group), sum);
    let four = handles.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = block_on(four.membership(group)).expect("running");
        let status = block_on(four.status(group)).expect("running");
        if view.in_force.voter_ids().map(|id| id.0).eq([2, 3, 4]) && status.applied.0 >= 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 behind: {status:?} {view:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for node in nodes.into_iter().chain([fourth]) {
        node.shutdown().unwrap();
    }
}

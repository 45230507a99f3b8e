//! The runtime end to end on one glommio executor: three replicas of one
//! group, each with its own WAL on disk, linked in-process through the wire
//! codec; a small KV store on top (support/kv.rs).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

#[path = "support/kv.rs"]
mod kv;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use synod_engine::protocol::{ClientId, Command, Config, GroupId, NodeId, Refusal};
use synod_engine::runtime::codec::{BatchLimits, PeerFrame};
use synod_engine::runtime::group::{start_group, GroupError};
use synod_engine::runtime::metrics::GroupMetrics;
use synod_engine::runtime::snapshot::{
    decode_chunk, decode_wanted, SnapshotPolicy, KIND_SNAPSHOT_CHUNK, KIND_SNAPSHOT_WANTED,
};
use synod_engine::runtime::snapshot_file::snapshot_path;
use synod_engine::runtime::{
    GroupHandle, GroupOptions, GroupStatus, PeerLink, ProposeOutcome, ReadOutcome,
};
use synod_wal::WalConfig;

use kv::{encode_value, put, value_of, TestKv};

/// Within the 8 MiB memlock limit even with test binaries running in parallel.
const IO_MEMORY_BYTES: usize = 1 << 20;

type Handles = Rc<RefCell<HashMap<NodeId, GroupHandle>>>;

/// Decodes every message as the transport would, then hands it over,
/// after `delay` if it is not zero (a slow network, in order).
struct Loopback {
    from: NodeId,
    handles: Handles,
    delay: Duration,
    chunks: Rc<Chunks>,
}

/// Snapshot chunks sent between replicas, counted; those numbered in
/// `lost` are lost on the way, as a dropped connection loses them.
#[derive(Default)]
struct Chunks {
    sent: Cell<u64>,
    lost: Cell<(u64, u64)>,
    asks: Cell<u64>,
}

impl PeerLink for Loopback {
    fn send_frame(&self, to: NodeId, kind: u16, body: Bytes) -> bool {
        let handles = self.handles.borrow();
        let Some(handle) = handles.get(&to) else {
            return false;
        };
        if kind == KIND_SNAPSHOT_CHUNK {
            let (_, chunk) = decode_chunk(&body).expect("peers send valid chunks");
            // Counted once taken: a chunk refused by a full queue is sent
            // again by the sender, and counts then.
            let number = self.chunks.sent.get();
            let (first_lost, end_lost) = self.chunks.lost.get();
            let taken = (first_lost..end_lost).contains(&number)
                || handle.try_deliver_chunk(self.from, chunk);
            if taken {
                self.chunks.sent.set(number + 1);
            }
            return taken;
        }
        if kind == KIND_SNAPSHOT_WANTED {
            let (_, upto, offset) = decode_wanted(&body).expect("peers send valid asks");
            self.chunks.asks.set(self.chunks.asks.get() + 1);
            return handle.try_deliver_wanted(self.from, upto, offset);
        }
        let limits = BatchLimits {
            batch_bytes_max: 256 << 10,
            command_bytes_max: 64 << 10,
        };
        let frame =
            PeerFrame::decode(body, self.from, to, limits).expect("peers send valid frames");
        if self.delay.is_zero() {
            return handle.try_deliver(frame);
        }
        let (handle, delay) = (handle.clone(), self.delay);
        glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            handle.try_deliver(frame);
        })
        .detach();
        true
    }
}

struct Cluster {
    dir: std::path::PathBuf,
    /// One-way delay of every peer message.
    delay: Duration,
    metrics: RefCell<HashMap<NodeId, GroupMetrics>>,
    policy: SnapshotPolicy,
    handles: Handles,
    statuses: RefCell<HashMap<NodeId, Rc<GroupStatus>>>,
    chunks: Rc<Chunks>,
}

const MEMBERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

async fn start(dir: &Path) -> Cluster {
    start_with(dir, SnapshotPolicy::default()).await
}

async fn start_with(dir: &Path, policy: SnapshotPolicy) -> Cluster {
    start_delayed(dir, policy, Duration::ZERO).await
}

async fn start_delayed(dir: &Path, policy: SnapshotPolicy, delay: Duration) -> Cluster {
    let cluster = Cluster::new(dir, policy, delay);
    for id in MEMBERS {
        cluster.start_node(id).await;
    }
    cluster
}

impl Cluster {
    /// No replica started yet.
    fn new(dir: &Path, policy: SnapshotPolicy, delay: Duration) -> Cluster {
        Cluster {
            dir: dir.to_path_buf(),
            delay,
            metrics: RefCell::default(),
            policy,
            handles: Rc::default(),
            statuses: RefCell::default(),
            chunks: Rc::default(),
        }
    }

    fn wal_dir(&self, id: NodeId) -> std::path::PathBuf {
        self.dir.join(format!("n{}", id.0))
    }

    async fn start_node(&self, id: NodeId) {
        self.try_start_node(id).await.expect("group starts");
    }

    async fn try_start_node(&self, id: NodeId) -> Result<(), GroupError> {
        let metrics = GroupMetrics::default();
        self.metrics.borrow_mut().insert(id, metrics.clone());
        let mut config = Config::new(id, MEMBERS.to_vec());
        config.batch_bytes_max = 256 << 10;
        config.command_bytes_max = 64 << 10;
        if !self.delay.is_zero() {
            // Timeouts well above the slow network's round trip: two round
            // trips are this many ticks of 2 ms.
            let two_rounds_ticks = (4 * self.delay.as_millis() / 2) as u32;
            config.election_timeout_ticks = 5 * two_rounds_ticks;
            config.resend_ticks = 2 * two_rounds_ticks;
        }
        let options = GroupOptions {
            config,
            wal_dir: self.wal_dir(id),
            wal: WalConfig {
                write_bytes_max: 64 << 10,
                segment_bytes_max: 1 << 20,
                frame_body_bytes_max: 512 << 10,
                fsync: true,
            },
            tick: Duration::from_millis(2),
            snapshot: self.policy,
            metrics: metrics.clone(),
            rejoin: false,
            commit_history_bytes: 0,
        };
        let link = Rc::new(Loopback {
            from: id,
            handles: self.handles.clone(),
            delay: self.delay,
            chunks: self.chunks.clone(),
        });
        let (handle, status, task) =
            start_group(options, GroupId(0), TestKv::default(), link).await?;
        glommio::spawn_local(async move {
            if let Err(error) = task.await {
                panic!("group stopped: {error}");
            }
        })
        .detach();
        self.handles.borrow_mut().insert(id, handle);
        self.statuses.borrow_mut().insert(id, status);
        Ok(())
    }

    /// Stops one replica; its WAL and snapshot stay on disk.
    async fn stop_node(&self, id: NodeId) {
        let handle = self.handles.borrow_mut().remove(&id).expect("running");
        self.statuses.borrow_mut().remove(&id);
        handle.stop().await;
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }

    fn status(&self, id: NodeId) -> Rc<GroupStatus> {
        self.statuses.borrow()[&id].clone()
    }

    async fn leader(&self) -> NodeId {
        for _ in 0..2_000 {
            let leaders: Vec<NodeId> = self
                .statuses
                .borrow()
                .iter()
                .filter(|(_, s)| s.leading.get())
                .map(|(id, _)| *id)
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        panic!("no leader within 10 s");
    }

    fn handle(&self, id: NodeId) -> GroupHandle {
        self.handles.borrow()[&id].clone()
    }

    async fn stop(self) {
        let handles: Vec<GroupHandle> = self.handles.borrow_mut().drain().map(|(_, h)| h).collect();
        for handle in handles {
            handle.stop().await;
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
}

fn run<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .spawn(test)
        .expect("executor starts")
        .join()
        .expect("test panicked");
}

#[test]
fn three_replicas_commit_serve_reads_and_recover_from_their_wals() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cluster = start(dir.path()).await;
        let leader = cluster.leader().await;
        let handle = cluster.handle(leader);
        let mut last = None;
        for i in 0..100u64 {
            let outcome = handle
                .propose(ClientId(1), i + 1, put(&format!("k{i}"), &format!("v{i}")))
                .await;
            let ProposeOutcome::Applied { index, reply } = outcome else {
                panic!("proposal {i}: {outcome:?}")
            };
            assert_eq!(value_of(&reply), None);
            assert!(last.is_none_or(|l| index > l), "indexes rise");
            last = Some(index);
        }
        // A retry of the last command is answered from the session, not re-applied.
        let retry = handle.propose(ClientId(1), 100, put("k99", "v99")).await;
        assert!(
            matches!(retry, ProposeOutcome::Applied { index, .. } if Some(index) == last),
            "{retry:?}"
        );

        let follower = NodeId(if leader.0 == 1 { 2 } else { 1 });
        let refused = cluster
            .handle(follower)
            .propose(ClientId(2), 1, put("x", "y"))
            .await;
        assert_eq!(
            refused,
            ProposeOutcome::Refused(Refusal::NotLeader(Some(leader)))
        );

        let read = handle.read(Bytes::from_static(b"k42")).await;
        assert_eq!(read, ReadOutcome::Value(encode_value(Some(b"v42"))));
        cluster.stop().await;

        // Everything acknowledged survives a restart of every replica.
        let cluster = start(dir.path()).await;
        let leader = cluster.leader().await;
        let handle = cluster.handle(leader);
        for key in ["k0", "k42", "k99"] {
            let read = handle.read(Bytes::copy_from_slice(key.as_bytes())).await;
            let expected = format!("v{}", &key[1..]).into_bytes();
            assert_eq!(
                read,
                ReadOutcome::Value(encode_value(Some(&expected))),
                "{key}"
            );
        }
        cluster.stop().await;
    });
}

/// Snapshot every 20 slots, keep 5 below: small enough that a short test
/// compacts many times and fills WAL segments of 1 MiB.
const OFTEN: SnapshotPolicy = SnapshotPolicy {
    every_slots: 20,
    every_bytes: u64::MAX,
    keep_slots: 5,
    write_pace: 0,
    write_floor_bytes_per_sec: 0,
};

/// Waits up to 10 s for `condition` (snapshots are written off the core, so
/// they land a little after the apply that triggered them).
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..2_000 {
        if condition() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    panic!("not within 10 s: {what}");
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

async fn put_all(handle: &GroupHandle, client: u64, range: std::ops::Range<u64>) {
    for i in range {
        let outcome = handle
            .propose(
                ClientId(client),
                i + 1,
                put(&format!("k{i}"), &format!("v{i}")),
            )
            .await;
        assert!(
            matches!(outcome, ProposeOutcome::Applied { .. }),
            "proposal {i}: {outcome:?}"
        );
    }
}

async fn get(handle: &GroupHandle, key: &str, local: bool) -> Option<Vec<u8>> {
    let query = Bytes::copy_from_slice(key.as_bytes());
    let outcome = if local {
        handle.read_local(query).await
    } else {
        handle.read(query).await
    };
    let ReadOutcome::Value(bytes) = outcome else {
        panic!("read {key}: {outcome:?}")
    };
    value_of(&bytes)
}

#[test]
fn snapshots_bound_the_wal_and_a_restart_recovers_from_them() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cluster = start_with(dir.path(), OFTEN).await;
        let leader = cluster.leader().await;
        let handle = cluster.handle(leader);
        // About 3,000 slots of 1 KiB values: some 3 MiB of accepted values,
        // four segments of 1 MiB without compaction; with it, one or two stay.
        let value = "x".repeat(1000);
        for i in 0..3_000u64 {
            let outcome = handle
                .propose(ClientId(1), i + 1, put(&format!("k{}", i % 50), &value))
                .await;
            assert!(
                matches!(outcome, ProposeOutcome::Applied { .. }),
                "{i}: {outcome:?}"
            );
        }
        put_all(&handle, 2, 0..10).await;
        for id in MEMBERS {
            let status = cluster.status(id);
            eventually("every replica snapshots past slot 2,900", || {
                status.snapshot.get().0 > 2_900
            })
            .await;
            // Segments go once the snapshot is durable: one or two stay.
            let wal_dir = cluster.wal_dir(id);
            eventually("the WAL shrinks to 2 MiB", || {
                dir_bytes(&wal_dir) <= 2 << 20
            })
            .await;
        }
        cluster.stop().await;

        // A restart starts from the snapshot and replays the WAL above it.
        let cluster = start_with(dir.path(), OFTEN).await;
        let leader = cluster.leader().await;
        let handle = cluster.handle(leader);
        for i in 0..10 {
            assert_eq!(
                get(&handle, &format!("k{i}"), false).await,
                Some(format!("v{i}").into_bytes())
            );
        }
        // Sessions survive in the snapshot: the retry is answered, not applied.
        let retry = handle
            .propose(ClientId(1), 3_000, put("k49", "changed"))
            .await;
        assert!(matches!(retry, ProposeOutcome::Applied { .. }), "{retry:?}");
        assert_eq!(get(&handle, "k49", false).await, Some(value.into_bytes()));
        cluster.stop().await;

        // Half a replica's state, as a copy of some of its files leaves it:
        // a compacted WAL without its snapshot, or a snapshot without its
        // WAL. Either would start an acceptor that forgot its promises; each
        // is refused, by name, and nothing is touched.
        let cluster = Cluster::new(dir.path(), OFTEN, Duration::ZERO);
        let without_snapshot = snapshot_path(&cluster.wal_dir(NodeId(2)));
        std::fs::remove_file(&without_snapshot).unwrap();
        let error = cluster
            .try_start_node(NodeId(2))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is missing") && error.contains("--rejoin"),
            "{error}"
        );
        let without_wal = cluster.wal_dir(NodeId(3));
        std::fs::remove_dir_all(&without_wal).unwrap();
        let error = cluster
            .try_start_node(NodeId(3))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("no WAL"), "{error}");
        assert!(!without_wal.exists(), "the refused start created a WAL");
    });
}

#[test]
fn a_replica_behind_the_compaction_point_catches_up_by_snapshot() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cluster = start_with(dir.path(), OFTEN).await;
        let leader = cluster.leader().await;
        let handle = cluster.handle(leader);
        put_all(&handle, 1, 0..10).await;
        let lagging = MEMBERS.into_iter().find(|id| *id != leader).unwrap();
        cluster.stop_node(lagging).await;
        put_all(&handle, 1, 10..200).await;
        let status = cluster.status(leader);
        eventually("the leader's snapshot reaches slot 180", || {
            status.snapshot.get().0 >= 180
        })
        .await;

        // Its WAL ends near slot 10; the leader kept only from about 175.
        cluster.start_node(lagging).await;
        let status = cluster.status(lagging);
        for _ in 0..1_000 {
            if status.applied.get().0 >= 200 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            status.snapshots_installed.get(),
            1,
            "caught up by one snapshot"
        );
        assert!(
            status.applied.get().0 >= 200,
            "applied {:?}",
            status.applied.get()
        );
        let caught_up = cluster.handle(lagging);
        for i in [0, 57, 199] {
            assert_eq!(
                get(&caught_up, &format!("k{i}"), true).await,
                Some(format!("v{i}").into_bytes())
            );
        }

        // The installed snapshot is durable: a restart of that replica alone
        // resumes from it.
        cluster.stop_node(lagging).await;
        cluster.start_node(lagging).await;
        let restarted = cluster.handle(lagging);
        assert_eq!(get(&restarted, "k150", true).await, Some(b"v150".to_vec()));
        cluster.stop().await;
    });
}

/// A snapshot of many chunks whose middle is lost on the way (a dropped
/// connection) is not sent again from the start: the replica asks for the
/// rest from where what it holds ends, and installs it whole.
#[test]
fn a_snapshot_of_many_chunks_goes_on_from_where_a_lost_stretch_began() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        // One snapshot, at slot 150 or so: no newer one comes due while
        // the transfer runs.
        let once = SnapshotPolicy {
            every_slots: 150,
            ..OFTEN
        };
        let cluster = start_with(dir.path(), once).await;
        let leader = cluster.leader().await;
        let handle = cluster.handle(leader);
        let lagging = MEMBERS.into_iter().find(|id| *id != leader).unwrap();
        cluster.stop_node(lagging).await;
        // About 6 MiB of state, 4.7 MiB of it in the snapshot.
        let value = "x".repeat(32 << 10);
        for i in 0..200u64 {
            let outcome = handle
                .propose(ClientId(1), i + 1, put(&format!("k{i}"), &value))
                .await;
            assert!(
                matches!(outcome, ProposeOutcome::Applied { .. }),
                "{outcome:?}"
            );
        }
        let status = cluster.status(leader);
        eventually("the leader's snapshot", || status.snapshot.get().0 >= 150).await;
        let file = std::fs::metadata(snapshot_path(&cluster.wal_dir(leader))).unwrap();
        let chunks = file.len().div_ceil(256 << 10);
        assert!(chunks > 13, "{chunks} chunks");

        let before = cluster.chunks.sent.get();
        cluster.chunks.lost.set((before + 10, before + 13));
        cluster.start_node(lagging).await;
        let status = cluster.status(lagging);
        eventually("the lagging replica installs the snapshot", || {
            status.applied.get().0 >= 200
        })
        .await;
        let installed = status.snapshots_installed.get();
        let sent = cluster.chunks.sent.get() - before;
        let asks = cluster.chunks.asks.get();
        // Every chunk, and from the first lost one on again (three fewer
        // if the ask caught the sender right after the lost ones), not all
        // of them twice.
        assert_eq!(installed, 1);
        let again = chunks - 10;
        assert!(
            (chunks + 3..=chunks + again).contains(&sent),
            "{sent} chunks sent of {chunks}"
        );
        assert!(asks >= 1, "the gap was asked for");
        let caught_up = cluster.handle(lagging);
        assert_eq!(
            get(&caught_up, "k199", true).await.map(|v| v.len()),
            Some(value.len())
        );
        cluster.stop().await;
    });
}

/// The leader's pipeline window as it measured it, once 640 proposals
/// have been applied with 32 in flight, on a network of one-way `delay`.
async fn window_after_load(delay: Duration) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_delayed(dir.path(), SnapshotPolicy::default(), delay).await;
    let leader = cluster.leader().await;
    let handle = cluster.handle(leader);
    let tasks: Vec<_> = (0..32u64)
        .map(|client| {
            let handle = handle.clone();
            glommio::spawn_local(async move {
                for seq in 1..=20u64 {
                    let outcome = handle
                        .propose(ClientId(client + 1), seq, put(&format!("k{client}"), "v"))
                        .await;
                    assert!(
                        matches!(outcome, ProposeOutcome::Applied { .. }),
                        "{outcome:?}"
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let window = cluster.metrics.borrow()[&leader].pipeline_window.get();
    cluster.stop().await;
    window
}

#[test]
fn the_pipeline_window_opens_on_a_slow_network_and_closes_on_a_fast_one() {
    run(|| async {
        let pipeline_max = i64::from(Config::new(NodeId(1), MEMBERS.to_vec()).pipeline_max);
        // Rounds of 100 ms and more against syncs of a millisecond or so:
        // the window opens to keep the disks busy.
        let slow = window_after_load(Duration::from_millis(50)).await;
        // Rounds about as long as a sync: a few slots.
        let fast = window_after_load(Duration::ZERO).await;
        assert!(
            (16..=pipeline_max).contains(&slow),
            "slow network: window {slow}"
        );
        assert!(
            fast >= 2 && fast * 4 <= slow,
            "fast network: window {fast}, slow {slow}"
        );
    });
}

/// A request queued twice at once (a retry while the first sending still
/// waits) must not be taken as one request of twice the size: each fits a
/// slot, so neither may be refused as too large, and it applies once.
#[test]
fn a_request_queued_twice_at_once_is_not_refused_as_one_too_large() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cluster = start(dir.path()).await;
        let handle = cluster.handle(cluster.leader().await);
        // More than half of a slot's 4,096 commands: two would not fit one.
        let request: Vec<Command> = (1..=3_000u64)
            .map(|seq| Command {
                client: ClientId(7),
                seq,
                data: put(&format!("k{seq}"), "v"),
            })
            .collect();
        let (first, retry) = futures_util::join!(
            handle.propose_many(request.clone()),
            handle.propose_many(request.clone())
        );
        // The retry took over the first sending's waits.
        assert!(
            first
                .iter()
                .all(|o| *o == ProposeOutcome::Stopped
                    || matches!(o, ProposeOutcome::Applied { .. })),
            "{:?}",
            &first[..3]
        );
        let indexes: Vec<_> = retry
            .iter()
            .map(|o| match o {
                ProposeOutcome::Applied { index, .. } => *index,
                other => panic!("the retry: {other:?}"),
            })
            .collect();
        assert!(
            indexes.windows(2).all(|w| w[1].0 == w[0].0 + 1),
            "one slot, in order"
        );
        assert_eq!(get(&handle, "k3000", false).await, Some(b"v".to_vec()));
        cluster.stop().await;
    });
}

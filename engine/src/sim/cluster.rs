//! A whole cluster in one thread: replicas, their disks, the network and the
//! clients, every choice drawn from one seeded RNG.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::checker::{node_id, Checker, Violation};
use super::client::SimClient;
use super::disk::SimDisk;
use super::network::{Links, NetworkFaults};
use crate::protocol::{
    Action, Actions, Ballot, ClientId, Command, Config, DurableState, Envelope, Input, LogIndex,
    NodeId, ReadId, Replica, Reply, SessionOutcome, Sessions, Slot, SyncId, Write,
};

/// Simulator time units in one protocol tick. Messages and syncs take a few
/// units, so they interleave finely with ticks.
pub const TICK_UNITS: u64 = 10;

/// How a cluster is built.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Replicas.
    pub nodes: usize,
    /// Drives every random choice.
    pub seed: u64,
    /// Network fault rates.
    pub network: NetworkFaults,
    /// Largest fsync latency, in time units (syncs complete in order).
    pub fsync_units_max: u64,
    /// Adjusts each replica's config.
    pub tune: fn(&mut Config),
    /// Messages wait in a pool for the test to deliver them by hand, and
    /// syncs complete at once.
    pub manual: bool,
    /// Record a line per event.
    pub trace: bool,
    /// Replicas started at creation; the rest wait for `start`.
    pub started: usize,
    /// Each tick, each replica's pipeline window changes with probability
    /// 1/20 to a random size (as the runtime's latency-driven window does).
    pub vary_pipeline_window: bool,
    /// Client sessions each replica keeps (the runtime's bound is
    /// `SESSIONS_MAX`; a small one makes evictions and expired sessions).
    pub sessions_max: usize,
    /// Each replica snapshots its state machine once this many slots have
    /// committed since its last snapshot, then drops its log below the
    /// snapshot (but `snapshot_keep_slots`) and the disk writes a restart
    /// no longer needs, as the runtime does; a peer behind the compaction
    /// point is sent the snapshot. `None`: never.
    pub snapshot_every_slots: Option<u64>,
    /// Slots kept in memory below a snapshot, for peers a little behind.
    pub snapshot_keep_slots: u64,
    /// Deliberately broken rules, for tests of the checkers.
    #[cfg(test)]
    pub(crate) faults: crate::protocol::TestFaults,
    /// A replica whose disk was wiped restarts as if new instead of
    /// rejoining (what an operator who forgets `--rejoin` does), for tests
    /// that prove the checker sees the harm.
    #[cfg(test)]
    pub(crate) wiped_restart_unsafely: bool,
    /// After a snapshot, the disk drops every write before the capture,
    /// accepts of slots above the snapshot included.
    #[cfg(test)]
    pub(crate) snapshot_cut_unsafely: bool,
    /// Snapshots sent to peers lose their last applied command.
    #[cfg(test)]
    pub(crate) snapshot_sent_short: bool,
}

impl ClusterOptions {
    /// A fault-free cluster of `nodes`, all started.
    pub fn new(nodes: usize, seed: u64) -> ClusterOptions {
        ClusterOptions {
            nodes,
            seed,
            network: NetworkFaults::none(),
            fsync_units_max: 2,
            tune: |_| {},
            manual: false,
            trace: false,
            started: nodes,
            vary_pipeline_window: false,
            sessions_max: crate::protocol::SESSIONS_MAX,
            snapshot_every_slots: None,
            snapshot_keep_slots: 0,
            #[cfg(test)]
            faults: crate::protocol::TestFaults::default(),
            #[cfg(test)]
            wiped_restart_unsafely: false,
            #[cfg(test)]
            snapshot_cut_unsafely: false,
            #[cfg(test)]
            snapshot_sent_short: false,
        }
    }
}

/// A command as a replica's state machine applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Its log index.
    pub index: LogIndex,
    /// Its session.
    pub client: ClientId,
    /// Its sequence.
    pub seq: u64,
    /// Its bytes.
    pub data: Bytes,
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Times a replica finished Phase 1 as leader.
    pub elections: u64,
    /// Crashes, partitions, cuts and clogs injected.
    pub faults: u64,
    /// Messages sent.
    pub messages: u64,
    /// Messages lost (dropped, cut off, or addressed to a dead node).
    pub dropped: u64,
    /// Linearizable reads served (and checked).
    pub reads: u64,
    /// Disks lost (each replica then rebuilt from its peers).
    pub disk_losses: u64,
    /// Commands refused because their session had been evicted.
    pub expired: u64,
    /// Snapshots replicas took of their own state machine.
    pub snapshots_taken: u64,
    /// Snapshots replicas installed from a peer.
    pub snapshots_installed: u64,
}

/// A replica's durable snapshot: its state machine (the applied commands
/// and the session table) as of every slot below `upto`.
#[derive(Clone, Debug)]
struct SimSnapshot {
    upto: Slot,
    /// The log index of the first command at `upto`.
    next_index: LogIndex,
    /// The promise floor once the writes below it are gone.
    promised: Ballot,
    applied: Vec<Applied>,
    sessions: Sessions<LogIndex>,
}

struct SimNode {
    replica: Option<Replica>,
    paused: bool,
    disk: SimDisk,
    incarnation: u64,
    /// When the last scheduled sync completes (syncs finish in order).
    sync_free_at: u64,
    applied: Vec<Applied>,
    sessions: Sessions<LogIndex>,
    /// The log index of the next command to apply.
    next_index: LogIndex,
    /// The latest durable snapshot; the disk holds the writes after it.
    snapshot: Option<SimSnapshot>,
    /// A snapshot is being written (its `SnapshotSaved` is scheduled).
    saving: bool,
    /// Commands proposed here whose client waits for this node's answer.
    waiting: BTreeSet<(ClientId, u64)>,
    was_leading: bool,
    /// Rebuilding after disk loss, as the runtime's marker file records it:
    /// `Some(n)` once rejoined, until the first `n` writes (the joining
    /// promise among them) are durable. A crash before that rebuilds again.
    rebuilding: Option<Option<usize>>,
}

enum Event {
    Tick,
    Deliver(Envelope),
    DeliverSnapshot {
        to: usize,
        snapshot: Box<SimSnapshot>,
    },
    /// A snapshot file written and synced (lost if the node crashed first).
    SnapshotSaved {
        node: usize,
        incarnation: u64,
        snapshot: Box<SimSnapshot>,
        captured_at: usize,
    },
    SyncDone {
        node: usize,
        incarnation: u64,
        sync: SyncId,
    },
}

struct Scheduled {
    time: u64,
    order: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.order) == (other.time, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.order).cmp(&(self.time, self.order))
    }
}

/// The simulated cluster.
pub struct Cluster {
    options: ClusterOptions,
    configs: Vec<Config>,
    nodes: Vec<SimNode>,
    events: BinaryHeap<Scheduled>,
    order: u64,
    now: u64,
    rng: ChaCha8Rng,
    /// Which links are up.
    pub links: Links,
    network: NetworkFaults,
    checker: Checker,
    clients: Vec<SimClient>,
    /// Messages waiting for manual delivery.
    pool: Vec<Envelope>,
    acked: Vec<(ClientId, u64, LogIndex)>,
    stats: Stats,
    trace: Vec<String>,
    next_client: u64,
    /// Reads in flight, with how many acknowledgements preceded each.
    reads: BTreeMap<ReadId, usize>,
    next_read: u64,
}

impl Cluster {
    /// Builds the cluster and starts the first `options.started` replicas.
    pub fn new(options: ClusterOptions) -> Cluster {
        let members: Vec<NodeId> = (0..options.nodes).map(node_id).collect();
        let configs = members
            .iter()
            .map(|id| {
                let mut config = Config::new(*id, members.clone());
                config.seed = options.seed;
                (options.tune)(&mut config);
                config
            })
            .collect();
        let nodes = (0..options.nodes)
            .map(|_| SimNode {
                replica: None,
                paused: false,
                disk: SimDisk::default(),
                incarnation: 0,
                sync_free_at: 0,
                applied: Vec::new(),
                sessions: sim_sessions(options.sessions_max),
                next_index: LogIndex(0),
                snapshot: None,
                saving: false,
                waiting: BTreeSet::new(),
                was_leading: false,
                rebuilding: None,
            })
            .collect();
        let mut cluster = Cluster {
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            links: Links::new(options.nodes),
            network: options.network,
            checker: Checker::new(options.nodes),
            configs,
            nodes,
            events: BinaryHeap::new(),
            order: 0,
            now: 0,
            clients: Vec::new(),
            pool: Vec::new(),
            acked: Vec::new(),
            stats: Stats::default(),
            trace: Vec::new(),
            next_client: 1,
            reads: BTreeMap::new(),
            next_read: 1,
            options,
        };
        for node in 0..cluster.options.started {
            cluster.start(node);
        }
        if !cluster.options.manual {
            cluster.schedule(TICK_UNITS, Event::Tick);
        }
        cluster
    }

    /// Writes placed on a replica's disk before it first starts.
    pub fn preload(&mut self, node: usize, writes: Vec<Write>) {
        assert!(self.nodes[node].replica.is_none(), "preload before start");
        for write in writes {
            self.checker.on_write_issued(node, &write);
            self.nodes[node].disk.append(write);
        }
        let durable = self.nodes[node].disk.crash(usize::MAX);
        let writes = self.nodes[node].disk.writes()[durable].to_vec();
        self.checker.on_durable(node, &writes);
    }

    /// Starts (or restarts) replica `node` from what its disk holds; one
    /// whose rebuild was cut short by a crash goes on rebuilding.
    pub fn start(&mut self, node: usize) {
        let rebuilding = self.nodes[node].rebuilding.is_some();
        if rebuilding {
            self.nodes[node].rebuilding = Some(None);
        }
        self.start_as(node, rebuilding);
    }

    /// Destroys the disk of crashed replica `node` and starts it rebuilding
    /// from its peers ([`Replica::rejoining`]).
    pub fn wipe_and_rejoin(&mut self, node: usize) {
        assert!(self.nodes[node].replica.is_none(), "wipe a crashed node");
        self.nodes[node].disk = SimDisk::default();
        self.nodes[node].snapshot = None;
        self.nodes[node].rebuilding = Some(None);
        self.stats.disk_losses += 1;
        self.checker.on_disk_lost(node);
        self.note(|| format!("disk of n{} lost", node + 1));
        #[cfg(test)]
        if self.options.wiped_restart_unsafely {
            self.start_as(node, false);
            return;
        }
        self.start_as(node, true);
    }

    /// The seed the cluster was built from.
    pub fn seed(&self) -> u64 {
        self.options.seed
    }

    /// Whether some replica, up or down, is still rebuilding after losing
    /// its disk.
    pub fn any_rebuilding(&self) -> bool {
        self.nodes.iter().any(|n| n.rebuilding.is_some())
    }

    fn start_as(&mut self, node: usize, rejoining: bool) {
        let snapshot = self.nodes[node].snapshot.clone();
        let base = snapshot.as_ref().map_or_else(DurableState::default, |s| {
            DurableState::from_snapshot(s.upto, s.next_index, s.promised)
        });
        let state = base.replay_onto(self.nodes[node].disk.writes());
        self.checker.on_restart(node, &state);
        let config = self.configs[node].clone();
        #[allow(unused_mut)]
        let mut replica = if rejoining {
            Replica::rejoining(config, state)
        } else {
            Replica::new(config, state)
        }
        .expect("valid sim config");
        #[cfg(test)]
        replica.set_test_faults(self.options.faults);
        // The state machine is memory: rebuild it from the snapshot and the
        // slots the replica's commit record says are chosen after it, as
        // the runtime does.
        let committed: Vec<(LogIndex, crate::protocol::Batch)> = replica
            .committed()
            .map(|(_, index, batch)| (index, batch.clone()))
            .collect();
        let n = &mut self.nodes[node];
        n.replica = Some(replica);
        n.paused = false;
        n.incarnation += 1;
        n.saving = false;
        match snapshot {
            Some(snapshot) => {
                n.applied = snapshot.applied;
                n.sessions = snapshot.sessions;
                n.next_index = snapshot.next_index;
            }
            None => {
                n.applied.clear();
                n.sessions = sim_sessions(self.options.sessions_max);
                n.next_index = LogIndex(0);
            }
        }
        n.waiting.clear();
        n.was_leading = false;
        for (index, batch) in committed {
            self.apply(node, index, &batch);
        }
        self.note(|| format!("start n{}", node + 1));
    }

    /// Power loss on `node`: unsynced writes survive only as a random prefix.
    pub fn crash(&mut self, node: usize) {
        if self.nodes[node].replica.is_none() {
            return;
        }
        let unsynced = self.nodes[node].disk.unsynced();
        let keep = self.rng.random_range(0..=unsynced);
        let n = &mut self.nodes[node];
        n.replica = None;
        let survivors = n.disk.crash(keep);
        let writes = n.disk.writes()[survivors].to_vec();
        self.checker.on_durable(node, &writes);
        self.note(|| {
            format!(
                "crash n{} (kept {keep} of {unsynced} unsynced writes)",
                node + 1
            )
        });
        // A dead process's sockets reset, so its peers' transports notice at
        // once; a power loss or a cut cable tells them nothing.
        if self.rng.random_bool(0.5) {
            let crashed = node_id(node);
            for other in 0..self.nodes.len() {
                let live = other != node && self.nodes[other].replica.is_some();
                if live && !self.nodes[other].paused {
                    self.step(other, Input::PeerUnreachable(crashed));
                }
            }
        }
    }

    /// Freezes `node` (a long GC pause): no ticks, inbound messages lost.
    pub fn pause(&mut self, node: usize) {
        self.nodes[node].paused = true;
    }

    /// Thaws a paused node, its state exactly as it was.
    pub fn resume(&mut self, node: usize) {
        self.nodes[node].paused = false;
    }

    /// Whether `node` is paused.
    pub fn is_paused(&self, node: usize) -> bool {
        self.nodes[node].paused
    }

    /// Runs for `ticks` protocol ticks.
    pub fn run_ticks(&mut self, ticks: u64) {
        let end = self.now + ticks * TICK_UNITS;
        while self.events.peek().is_some_and(|e| e.time <= end) {
            let Scheduled { time, event, .. } = self.events.pop().expect("peeked");
            self.now = time;
            self.handle(event);
        }
        self.now = end;
    }

    /// Runs until `done` holds (checked every tick) or `ticks_max` pass;
    /// returns whether it held.
    pub fn run_until(&mut self, ticks_max: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..ticks_max {
            if done(self) {
                return true;
            }
            self.run_ticks(1);
        }
        done(self)
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.order += 1;
        self.events.push(Scheduled {
            time: self.now + delay,
            order: self.order,
            event,
        });
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick => {
                self.schedule(TICK_UNITS, Event::Tick);
                self.on_tick();
            }
            Event::Deliver(envelope) => self.deliver(envelope),
            Event::DeliverSnapshot { to, snapshot } => self.install_snapshot(to, *snapshot),
            Event::SnapshotSaved {
                node,
                incarnation,
                snapshot,
                captured_at,
            } => {
                if self.nodes[node].incarnation != incarnation || self.nodes[node].replica.is_none()
                {
                    return; // the process died before the file was durable
                }
                if self.nodes[node].paused {
                    // Its loop sees the saved file once it runs again.
                    let event = Event::SnapshotSaved {
                        node,
                        incarnation,
                        snapshot,
                        captured_at,
                    };
                    self.schedule(TICK_UNITS, event);
                    return;
                }
                self.snapshot_saved(node, *snapshot, captured_at);
            }
            Event::SyncDone {
                node,
                incarnation,
                sync,
            } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].replica.is_some()
                {
                    self.complete_sync(node, sync);
                }
            }
        }
    }

    fn on_tick(&mut self) {
        for node in 0..self.nodes.len() {
            if self.is_running(node) {
                if self.options.vary_pipeline_window && self.rng.random_bool(0.05) {
                    let slots = self.rng.random_range(1..=self.configs[node].pipeline_max);
                    if let Some(replica) = self.nodes[node].replica.as_mut() {
                        replica.set_pipeline_window(slots);
                    }
                }
                self.step(node, Input::Tick);
                self.maybe_snapshot(node);
            }
        }
        self.clients_tick();
    }

    /// Whether `node` is started, not crashed and not paused.
    pub fn is_running(&self, node: usize) -> bool {
        self.nodes[node].replica.is_some() && !self.nodes[node].paused
    }

    /// Delivers `envelope` now, unless its addressee is down.
    pub fn deliver(&mut self, envelope: Envelope) {
        let to = envelope.to.0 as usize - 1;
        if !self.is_running(to) {
            self.stats.dropped += 1;
            return;
        }
        self.step(to, Input::Message(envelope));
    }

    /// Feeds one input to `node` and carries out its actions.
    pub fn step(&mut self, node: usize, input: Input) {
        let mut out = Actions::default();
        let trace_input = self.options.trace.then(|| describe_input(&input));
        let replica = self.nodes[node]
            .replica
            .as_mut()
            .expect("step on a running node");
        if let Err(error) = replica.step(input, &mut out) {
            self.checker.fail(
                "peers send only valid messages",
                format!("n{}: {error}", node + 1),
            );
        }
        self.after_step(node, trace_input, out);
    }

    /// Makes `node` take leadership now (election disabled or not).
    pub fn campaign(&mut self, node: usize) {
        let mut out = Actions::default();
        self.nodes[node]
            .replica
            .as_mut()
            .expect("running")
            .campaign(&mut out);
        self.after_step(node, Some("campaign".into()), out);
    }

    fn after_step(&mut self, node: usize, trace_input: Option<String>, mut out: Actions) {
        if let Some(input) = trace_input {
            let status = self.nodes[node].replica.as_ref().map(Replica::status);
            self.note(|| {
                format!(
                    "n{} <- {input} => {} actions; {status:?}",
                    node + 1,
                    out.len()
                )
            });
        }
        let leading = self.nodes[node]
            .replica
            .as_ref()
            .is_some_and(|r| r.status().leading);
        if leading && !self.nodes[node].was_leading {
            self.stats.elections += 1;
        }
        self.nodes[node].was_leading = leading;
        let actions: Vec<Action> = out.drain().collect();
        for action in actions {
            self.carry_out(node, action);
        }
        let n = &mut self.nodes[node];
        let rejoined = n.replica.as_ref().is_some_and(|r| !r.is_rejoining());
        if rejoined && n.rebuilding == Some(None) {
            n.rebuilding = Some(Some(n.disk.writes().len()));
        }
    }

    fn carry_out(&mut self, node: usize, action: Action) {
        match action {
            Action::Persist(write) => {
                self.checker.on_write_issued(node, &write);
                self.nodes[node].disk.append(write);
            }
            Action::Sync(sync) => self.issue_sync(node, sync),
            Action::Send(envelope) => {
                let before = self.checker.violations().len();
                self.checker.on_send(node, &envelope);
                if self.checker.violations().len() > before {
                    self.note(|| format!("n{} sent {:?}: a violation", node + 1, envelope.msg));
                }
                self.send(envelope);
            }
            Action::Commit {
                slot,
                first_index,
                batch,
            } => {
                self.checker.on_commit(node, slot, &batch);
                self.apply(node, first_index, &batch);
            }
            Action::Reply(reply) => self.on_reply(node, reply),
            Action::SendSnapshot { to } => self.send_snapshot(node, to),
        }
    }

    /// Snapshots `node`'s state machine when enough slots committed since
    /// its last one (the runtime's policy counts bytes; slots suffice here).
    fn maybe_snapshot(&mut self, node: usize) {
        let Some(every) = self.options.snapshot_every_slots else {
            return;
        };
        let n = &self.nodes[node];
        let Some(status) = n.replica.as_ref().map(Replica::status) else {
            return;
        };
        if n.saving {
            return;
        }
        let last = n.snapshot.as_ref().map_or(0, |s| s.upto.0);
        if status.commit.0 < last + every.max(1) {
            return;
        }
        // Every committed slot is applied at once here, so the state
        // machine stands exactly at the commit point.
        let snapshot = SimSnapshot {
            upto: status.commit,
            next_index: n.next_index,
            promised: status.promised,
            applied: n.applied.clone(),
            sessions: n.sessions.clone(),
        };
        let captured_at = n.disk.writes().len();
        self.stats.snapshots_taken += 1;
        self.save_snapshot(node, snapshot, captured_at);
    }

    /// Writes the snapshot file off the replica's loop, as the runtime's
    /// snapshot thread does: it is durable some time later, unless the node
    /// crashes first. No other snapshot is taken or installed meanwhile.
    fn save_snapshot(&mut self, node: usize, snapshot: SimSnapshot, captured_at: usize) {
        let n = &mut self.nodes[node];
        n.saving = true;
        let incarnation = n.incarnation;
        let delay = self.rng.random_range(1..=5 * TICK_UNITS);
        let event = Event::SnapshotSaved {
            node,
            incarnation,
            snapshot: Box::new(snapshot),
            captured_at,
        };
        self.schedule(delay, event);
    }

    /// The runtime's `on_snapshot_saved`: the snapshot is durable, so the
    /// log below it (but the slots kept) and every write a restart no
    /// longer needs go. A restart needs the writes from the first accept of
    /// a slot at or above the snapshot, and every write issued since the
    /// capture (a promise made meanwhile is not in it).
    fn snapshot_saved(&mut self, node: usize, snapshot: SimSnapshot, captured_at: usize) {
        let upto = snapshot.upto;
        let keep_slots = self.options.snapshot_keep_slots;
        let n = &mut self.nodes[node];
        n.saving = false;
        n.snapshot = Some(snapshot);
        let replica = n.replica.as_mut().expect("a running replica snapshots");
        let keep_from = Slot(upto.0.saturating_sub(keep_slots)).min(replica.status().commit);
        if keep_from > replica.log().start() {
            replica.compact(keep_from);
        }
        let first_above = n
            .disk
            .writes()
            .iter()
            .position(|w| matches!(w, Write::Accept { slot, .. } if *slot >= upto));
        let cut = first_above.map_or(captured_at, |first| first.min(captured_at));
        #[cfg(test)]
        let cut = if self.options.snapshot_cut_unsafely {
            captured_at
        } else {
            cut
        };
        let removed = n.disk.remove_before(cut);
        if let Some(Some(joined)) = &mut n.rebuilding {
            *joined = joined.saturating_sub(removed);
        }
        self.note(|| {
            format!(
                "n{} snapshot at {upto:?}; {removed} writes dropped",
                node + 1
            )
        });
    }

    /// Sends `node`'s snapshot to peer `to` over the network.
    fn send_snapshot(&mut self, node: usize, to: NodeId) {
        let Some(snapshot) = self.nodes[node].snapshot.clone() else {
            self.checker.fail(
                "a snapshot is asked of a replica that compacted",
                format!("n{} has none for n{}", node + 1, to.0),
            );
            return;
        };
        #[cfg(test)]
        let snapshot = {
            let mut snapshot = snapshot;
            if self.options.snapshot_sent_short {
                snapshot.applied.pop();
            }
            snapshot
        };
        self.stats.messages += 1;
        let to = to.0 as usize - 1;
        if self.lost_in_transit(node, to) {
            return;
        }
        let delay = self.transit_units(node, to);
        let snapshot = Box::new(snapshot);
        self.schedule(delay, Event::DeliverSnapshot { to, snapshot });
    }

    /// The runtime's `install_snapshot`: a snapshot ahead of what `node`
    /// applied replaces its state machine at once, unless `node` leads
    /// steadily (it holds every chosen slot it needs) or is writing a
    /// snapshot; then it is saved like its own.
    fn install_snapshot(&mut self, node: usize, snapshot: SimSnapshot) {
        if !self.is_running(node) {
            self.stats.dropped += 1;
            return;
        }
        let n = &mut self.nodes[node];
        let replica = n.replica.as_mut().expect("running");
        let status = replica.status();
        if snapshot.upto <= status.commit || status.leading || n.saving {
            return;
        }
        if !replica.install_snapshot(snapshot.upto, snapshot.next_index) {
            self.checker.fail(
                "a snapshot ahead of the commit point installs",
                format!("n{} refused one at {:?}", node + 1, snapshot.upto),
            );
            return;
        }
        // The file doubles as the promise floor: never below our own.
        let snapshot = SimSnapshot {
            promised: snapshot.promised.max(status.promised),
            ..snapshot
        };
        n.applied = snapshot.applied.clone();
        n.sessions = snapshot.sessions.clone();
        n.next_index = snapshot.next_index;
        let captured_at = n.disk.writes().len();
        self.checker.on_snapshot_installed(node, snapshot.upto);
        self.stats.snapshots_installed += 1;
        self.note(|| format!("n{} installed a snapshot at {:?}", node + 1, snapshot.upto));
        self.save_snapshot(node, snapshot, captured_at);
    }

    fn issue_sync(&mut self, node: usize, sync: SyncId) {
        self.nodes[node].disk.sync_issued(sync);
        if self.options.manual {
            self.complete_sync(node, sync);
            return;
        }
        let latency = self
            .rng
            .random_range(1..=self.options.fsync_units_max.max(1));
        let done_at = self.nodes[node].sync_free_at.max(self.now + latency);
        self.nodes[node].sync_free_at = done_at;
        let incarnation = self.nodes[node].incarnation;
        self.schedule(
            done_at - self.now,
            Event::SyncDone {
                node,
                incarnation,
                sync,
            },
        );
    }

    fn complete_sync(&mut self, node: usize, sync: SyncId) {
        let durable = self.nodes[node].disk.sync_done(sync);
        if let Some(Some(joined)) = self.nodes[node].rebuilding {
            if durable.end >= joined {
                self.nodes[node].rebuilding = None;
            }
        }
        let writes = self.nodes[node].disk.writes()[durable].to_vec();
        self.checker.on_durable(node, &writes);
        self.step(node, Input::Persisted(sync));
    }

    fn send(&mut self, envelope: Envelope) {
        self.stats.messages += 1;
        if self.options.manual {
            self.pool.push(envelope);
            return;
        }
        let (from, to) = (envelope.from.0 as usize - 1, envelope.to.0 as usize - 1);
        if self.lost_in_transit(from, to) {
            return;
        }
        let copies = if self.rng.random_bool(self.network.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.transit_units(from, to);
            self.schedule(delay, Event::Deliver(envelope.clone()));
        }
    }

    /// Whether something sent from `from` to `to` now is lost (a cut link,
    /// or the network's loss rate); counts it if so.
    fn lost_in_transit(&mut self, from: usize, to: usize) -> bool {
        let lost = !self.links.is_up(from, to) || self.rng.random_bool(self.network.loss);
        if lost {
            self.stats.dropped += 1;
        }
        lost
    }

    /// Time units until something sent from `from` to `to` now arrives: the
    /// network's delay or a straggler's, and not before a clog lifts.
    fn transit_units(&mut self, from: usize, to: usize) -> u64 {
        let delay = if self.rng.random_bool(self.network.straggler) {
            self.rng
                .random_range(1..=self.network.straggler_units_max.max(1))
        } else {
            self.rng.random_range(
                self.network.delay_min..=self.network.delay_max.max(self.network.delay_min),
            )
        };
        let at = (self.now + delay).max(self.links.clogged_until(from, to));
        at - self.now
    }

    /// Applies a committed batch to `node`'s state machine (a log of applied
    /// commands behind client sessions) and answers waiting clients.
    fn apply(&mut self, node: usize, first_index: LogIndex, batch: &crate::protocol::Batch) {
        let (mut acks, mut expired) = (Vec::new(), Vec::new());
        let n = &mut self.nodes[node];
        n.next_index = LogIndex(first_index.0 + u64::from(batch.len()));
        for (offset, command) in batch.iter().enumerate() {
            let index = LogIndex(first_index.0 + offset as u64);
            let reply = match n.sessions.check(command.client, command.seq, index) {
                SessionOutcome::Fresh => {
                    n.applied.push(Applied {
                        index,
                        client: command.client,
                        seq: command.seq,
                        data: Bytes::copy_from_slice(command.data),
                    });
                    n.sessions.record(command.client, command.seq, index, index);
                    Some(index)
                }
                SessionOutcome::Duplicate { reply, .. } => Some(reply),
                SessionOutcome::Stale => None,
                SessionOutcome::Expired { resume_at } => {
                    if n.waiting.remove(&(command.client, command.seq)) {
                        expired.push((command.client, command.seq, resume_at));
                    }
                    None
                }
            };
            if let Some(index) = reply {
                if n.waiting.remove(&(command.client, command.seq)) {
                    acks.push((command.client, command.seq, index));
                }
            }
        }
        for (client, seq, resume_at) in expired {
            self.stats.expired += 1;
            if let Some(c) = self.clients.iter_mut().find(|c| c.id == client) {
                c.on_expired(seq, resume_at);
            }
        }
        for (client, seq, index) in acks {
            if let Some(c) = self.clients.iter_mut().find(|c| c.id == client) {
                if c.on_acked(seq) {
                    self.acked.push((client, seq, index));
                }
            } else {
                self.acked.push((client, seq, index));
            }
        }
    }

    fn on_reply(&mut self, node: usize, reply: Reply) {
        let tick = self.tick();
        let nodes = self.nodes.len();
        match reply {
            Reply::Refused {
                client,
                seq,
                reason,
            } => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.id == client) {
                    c.on_refused(seq, reason, nodes, tick);
                }
            }
            Reply::ReadReady { id, .. } => self.check_read(node, id),
            Reply::ReadRefused { id, .. } => {
                self.reads.remove(&id);
            }
        }
    }

    /// A read-index read is served from `node`'s state machine now: it must
    /// see every command acknowledged before the read was issued.
    fn check_read(&mut self, node: usize, id: ReadId) {
        let Some(acked_before) = self.reads.remove(&id) else {
            return;
        };
        let applied: BTreeSet<(ClientId, u64)> = self.nodes[node]
            .applied
            .iter()
            .map(|a| (a.client, a.seq))
            .collect();
        let missing = self.acked[..acked_before]
            .iter()
            .find(|(client, seq, _)| !applied.contains(&(*client, *seq)));
        if let Some((client, seq, _)) = missing {
            let detail = format!(
                "n{} served {id:?} without ({client:?}, {seq}), acknowledged before it",
                node + 1
            );
            self.checker
                .fail("reads see every acknowledged write", detail);
        }
        self.stats.reads += 1;
    }

    /// Issues a read at `node`, remembering what had been acknowledged.
    pub fn read(&mut self, node: usize) -> ReadId {
        let id = ReadId(self.next_read);
        self.next_read += 1;
        self.reads.insert(id, self.acked.len());
        if self.is_running(node) {
            self.step(node, Input::Read(id));
        }
        id
    }

    /// The current protocol tick.
    pub fn tick(&self) -> u64 {
        self.now / TICK_UNITS
    }

    /// Adds `count` client sessions issuing `ops` commands each.
    pub fn add_clients(&mut self, count: usize, ops: u32) {
        for _ in 0..count {
            let id = ClientId(self.next_client);
            self.next_client += 1;
            let target = self.rng.random_range(0..self.nodes.len());
            self.clients.push(SimClient::new(id, target, ops));
        }
    }

    fn clients_tick(&mut self) {
        let tick = self.tick();
        let timeout = u64::from(self.configs[0].election_timeout_ticks) * 3;
        for i in 0..self.clients.len() {
            let client = &mut self.clients[i];
            let due = match &client.pending {
                Some(p) if tick >= p.resend_tick => true,
                Some(p) if tick >= p.sent_tick + timeout => {
                    client.target = (client.target + 1) % self.nodes.len();
                    true
                }
                Some(_) => false,
                None if client.ops_left > 0 && self.rng.random_bool(0.2) => {
                    let pending = client.issue(tick).clone();
                    self.checker
                        .on_proposed(client.id, pending.seq, &pending.data);
                    true
                }
                None => false,
            };
            if due {
                self.client_send(i, tick);
            }
            // Reads go to any node: a deposed leader must refuse or confirm.
            if self.clients[i].ops_left > 0 && self.rng.random_bool(0.05) {
                let node = self.rng.random_range(0..self.nodes.len());
                self.read(node);
            }
        }
    }

    fn client_send(&mut self, i: usize, tick: u64) {
        let client = &mut self.clients[i];
        let Some(pending) = &mut client.pending else {
            return;
        };
        pending.sent_tick = tick;
        pending.resend_tick = u64::MAX;
        let command = Command {
            client: client.id,
            seq: pending.seq,
            data: pending.data.clone(),
        };
        let target = client.target;
        if self.is_running(target) {
            self.nodes[target]
                .waiting
                .insert((command.client, command.seq));
            self.step(target, Input::Propose(command));
        }
    }

    /// Proposes one command at `node` on behalf of a fresh one-shot session;
    /// returns the session.
    pub fn propose(&mut self, node: usize, data: &str) -> ClientId {
        let client = ClientId(1_000_000 + self.next_client);
        self.next_client += 1;
        self.checker.on_proposed(client, 1, data.as_bytes());
        self.nodes[node].waiting.insert((client, 1));
        let command = Command {
            client,
            seq: 1,
            data: Bytes::copy_from_slice(data.as_bytes()),
        };
        self.step(node, Input::Propose(command));
        client
    }

    /// Stops clients from issuing new commands (they still retry).
    pub fn stop_new_commands(&mut self) {
        for client in &mut self.clients {
            client.ops_left = 0;
        }
    }

    /// Whether every client has its commands acknowledged.
    pub fn clients_idle(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.pending.is_none() && c.ops_left == 0)
    }

    /// Messages waiting for manual delivery.
    pub fn pool(&self) -> &[Envelope] {
        &self.pool
    }

    /// Delivers (in order) every pooled message matching `pick`; returns how
    /// many. New messages they cause go to the pool.
    pub fn deliver_where(&mut self, mut pick: impl FnMut(&Envelope) -> bool) -> usize {
        let (chosen, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pool)
            .into_iter()
            .partition(|e| pick(e));
        self.pool = rest;
        let count = chosen.len();
        for envelope in chosen {
            self.deliver(envelope);
        }
        count
    }

    /// Drops every pooled message matching `pick`.
    pub fn drop_where(&mut self, mut pick: impl FnMut(&Envelope) -> bool) {
        self.pool.retain(|e| !pick(e));
    }

    /// The replica at `node`, if running or paused.
    pub fn replica(&self, node: usize) -> Option<&Replica> {
        self.nodes[node].replica.as_ref()
    }

    /// The running node that leads with Phase 1 done, if exactly one does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|n| {
                self.is_running(*n)
                    && self.nodes[*n]
                        .replica
                        .as_ref()
                        .is_some_and(|r| r.status().leading)
            })
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// What `node`'s state machine applied, in order.
    pub fn applied(&self, node: usize) -> &[Applied] {
        &self.nodes[node].applied
    }

    /// Commands acknowledged to clients: (session, sequence, log index).
    pub fn acked(&self) -> &[(ClientId, u64, LogIndex)] {
        &self.acked
    }

    /// Run counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counts an injected fault.
    pub fn count_fault(&mut self) {
        self.stats.faults += 1;
    }

    /// Properties found broken.
    pub fn violations(&self) -> &[Violation] {
        self.checker.violations()
    }

    /// The checker, to add end-of-run findings.
    pub fn checker_mut(&mut self) -> &mut Checker {
        &mut self.checker
    }

    /// Slots chosen so far.
    pub fn chosen_slots(&self) -> usize {
        self.checker.chosen_slots()
    }

    /// The seeded RNG, for fault schedules.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Sets the network's fault rates.
    pub fn set_network(&mut self, network: NetworkFaults) {
        self.network = network;
    }

    /// Number of replicas.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The commit point of every running replica.
    pub fn commits(&self) -> Vec<Option<Slot>> {
        (0..self.nodes.len())
            .map(|n| {
                self.is_running(n)
                    .then(|| self.nodes[n].replica.as_ref().map(|r| r.status().commit))
                    .flatten()
            })
            .collect()
    }

    /// Takes the trace recorded so far.
    pub fn take_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.options.trace {
            let now = self.now;
            self.trace.push(format!("{:>8} {}", now, line()));
        }
    }
}

fn describe_input(input: &Input) -> String {
    match input {
        Input::Tick => "tick".into(),
        Input::Message(e) => format!("{} from n{}: {:?}", e.msg.kind(), e.from.0, brief(&e.msg)),
        Input::Propose(c) => format!("propose ({:?}, {})", c.client, c.seq),
        Input::ProposeBatch(cs) => format!("propose {} commands", cs.len()),
        Input::Persisted(s) => format!("persisted {s:?}"),
        Input::Read(id) => format!("read {id:?}"),
        Input::PeerUnreachable(p) => format!("n{} unreachable", p.0),
    }
}

fn brief(msg: &crate::protocol::Message) -> String {
    use crate::protocol::Message as M;
    match msg {
        M::Prepare(m) => format!("ballot {} from {:?}", m.ballot, m.from_slot),
        M::Promise(m) => format!("ballot {} with {} entries", m.ballot, m.entries.len()),
        M::Nack(m) => format!("ballot {} promised {}", m.ballot, m.promised),
        M::Accept(m) => format!(
            "ballot {} {:?} ({} cmds) commit {:?}",
            m.ballot,
            m.slot,
            m.batch.len(),
            m.commit
        ),
        M::Accepted(m) => format!("ballot {} {:?}", m.ballot, m.slot),
        M::Heartbeat(m) => format!("ballot {} commit {:?}", m.ballot, m.commit),
        M::HeartbeatAck(m) => format!("ballot {}", m.ballot),
        M::CatchUpRequest(m) => format!("from {:?}", m.from_slot),
        M::CatchUp(m) => format!("{} entries, commit {:?}", m.entries.len(), m.commit),
        M::Notification(m) => format!("round {} {:?}", m.round, m.state),
        M::Rejoin(m) => format!("floor {:?}", m.floor),
        M::RejoinInfo(m) => format!("promised {} recovery end {:?}", m.promised, m.recovery_end),
    }
}

/// A replica's session table: the simulated clients send one command a
/// request.
fn sim_sessions(sessions_max: usize) -> Sessions<LogIndex> {
    Sessions::with_capacity(sessions_max, 1)
}

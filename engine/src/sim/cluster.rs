//! A whole cluster in one thread: the replicas' group cores (the code the
//! runtime runs), their disks, the network and the clients, every choice
//! drawn from one seeded RNG. This file executes the cores' actions; the
//! clients, reads and network draws are in `traffic.rs`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use synod_wal::Position;

use super::checker::{node_id, Checker, Violation};
use super::client::SimClient;
use super::disk::SimDisk;
use super::machine::{Applied, SimMachine};
use super::network::{Links, NetworkFaults};
pub use super::options::{ClusterOptions, Stats};

mod membership;
use crate::group::snapshot::SnapshotChunk;
use crate::group::{Callers, CoreOptions, GroupAction, GroupCore, GroupInput, Recovery};
use crate::protocol::{
    Ballot, ClientId, Config, Envelope, LogIndex, NodeId, ReadId, Replica, Slot, SyncId, Write,
};

/// Simulator time units in one protocol tick. Messages and syncs take a few
/// units, so they interleave finely with ticks.
pub const TICK_UNITS: u64 = 10;

/// The simulator's callers: a proposal is its client's `(session, seq)`,
/// a read the simulator's own id.
#[derive(Debug)]
pub struct SimCallers;

impl Callers for SimCallers {
    type Proposal = (ClientId, u64);
    type Request = Vec<(ClientId, u64)>;
    type Read = ReadId;
}

pub(super) type Core = GroupCore<SimMachine, SimCallers>;
pub(super) type Actions = Vec<GroupAction<SimCallers>>;

/// The rebuild mark on a replica's disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    None,
    /// Rebuilding: a restart rebuilds again.
    Rebuilding,
    /// Rebuilt: the mark goes once the writes before this are durable.
    Removing(Position),
}

pub(super) struct SimNode {
    pub(super) core: Option<Core>,
    pub(super) paused: bool,
    pub(super) disk: SimDisk,
    pub(super) incarnation: u64,
    /// When the last scheduled sync completes (syncs finish in order).
    sync_free_at: u64,
    /// The durable snapshot file.
    pub(super) snapshot_file: Option<Vec<u8>>,
    mark: Mark,
    was_leading: bool,
    /// Recovery will find a damaged tail cut (`Recovery::tail_cut`).
    tail_cut: bool,
    /// The promise record beside the WAL (`GroupAction::RecordPromise`):
    /// durable when written, lost with the disk, never cut with a tail.
    promise_record: Option<Ballot>,
    /// Its disk was lost and its id retired: it never runs again.
    pub(super) retired: bool,
}

pub(super) enum Event {
    Tick,
    Deliver(Envelope),
    DeliverChunk {
        from: NodeId,
        to: usize,
        chunk: SnapshotChunk,
    },
    /// A receiver's ask for the rest of a snapshot.
    DeliverAsk {
        from: NodeId,
        to: usize,
        upto: Slot,
        offset: u64,
    },
    /// A snapshot file written and synced (lost if the node crashed first).
    SnapshotSaved {
        node: usize,
        incarnation: u64,
        upto: Slot,
        encoded: Bytes,
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
    pub(super) options: ClusterOptions,
    pub(super) configs: Vec<Config>,
    pub(super) nodes: Vec<SimNode>,
    events: BinaryHeap<Scheduled>,
    order: u64,
    pub(super) now: u64,
    pub(super) rng: ChaCha8Rng,
    /// Which links are up.
    pub links: Links,
    pub(super) network: NetworkFaults,
    pub(super) checker: Checker,
    pub(super) clients: Vec<SimClient>,
    /// Messages waiting for manual delivery.
    pub(super) pool: Vec<Envelope>,
    pub(super) acked: Vec<(ClientId, u64, LogIndex)>,
    pub(super) stats: Stats,
    trace: Vec<String>,
    pub(super) next_client: u64,
    /// Reads in flight, with how many acknowledgements preceded each.
    pub(super) reads: BTreeMap<ReadId, usize>,
    pub(super) next_read: u64,
    /// A replica to crash once its step is over (`crash_after_install`).
    #[cfg(test)]
    crash_pending: Option<usize>,
}

impl Cluster {
    /// Builds the cluster and starts the first `options.started` replicas.
    pub fn new(options: ClusterOptions) -> Cluster {
        let members: Vec<NodeId> = (0..options.members).map(node_id).collect();
        let configs = (0..options.nodes)
            .map(|index| {
                let mut config = Config::new(node_id(index), members.clone());
                config.seed = options.seed;
                (options.tune)(&mut config);
                config
            })
            .collect();
        let nodes = (0..options.nodes)
            .map(|_| SimNode {
                core: None,
                paused: false,
                disk: SimDisk::default(),
                incarnation: 0,
                sync_free_at: 0,
                snapshot_file: None,
                mark: Mark::None,
                was_leading: false,
                tail_cut: false,
                promise_record: None,
                retired: false,
            })
            .collect();
        let mut cluster = Cluster {
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            links: Links::new(options.nodes),
            network: options.network,
            checker: Checker::with_voters(options.nodes, options.members),
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
            #[cfg(test)]
            crash_pending: None,
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
        assert!(self.nodes[node].core.is_none(), "preload before start");
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
        self.start_as(node, false);
    }

    /// Destroys the disk of crashed replica `node` and starts it rebuilding
    /// from its peers ([`Replica::rejoining`]).
    pub fn wipe_and_rejoin(&mut self, node: usize) {
        self.wipe(node);
        self.stats.disk_losses += 1;
        #[cfg(test)]
        if self.options.wiped_restart_unsafely {
            self.start_as(node, false);
            return;
        }
        self.start_as(node, true);
    }

    /// Destroys the disk of crashed replica `node`.
    pub(super) fn wipe(&mut self, node: usize) {
        assert!(self.nodes[node].core.is_none(), "wipe a crashed node");
        let n = &mut self.nodes[node];
        n.disk = SimDisk::default();
        n.snapshot_file = None;
        n.mark = Mark::None;
        n.promise_record = None;
        self.checker.on_disk_lost(node);
        self.note(|| format!("disk of n{} lost", node + 1));
    }

    /// Damages the last one to four durable writes of crashed replica
    /// `node` (recovery cuts them, as the WAL cuts a bad tail) and starts it:
    /// it rebuilds from its peers, since what was cut may have counted.
    pub fn damage_tail_and_start(&mut self, node: usize) {
        let frames = self.rng.random_range(1..=4);
        self.cut_tail_and_start(node, frames);
    }

    /// Cuts the last `frames` durable writes of crashed replica `node` as
    /// damaged, and starts it.
    pub fn cut_tail_and_start(&mut self, node: usize, frames: usize) {
        assert!(self.nodes[node].core.is_none(), "damage a crashed node");
        let n = &mut self.nodes[node];
        let cut = n.disk.damage_tail(frames);
        if cut > 0 {
            n.tail_cut = true;
            self.stats.tails_cut += 1;
            let survivors = n.disk.writes().to_vec();
            self.checker.on_tail_cut(node, &survivors);
            self.note(|| format!("damaged tail of n{}: {cut} durable writes cut", node + 1));
        }
        self.start_as(node, false);
    }

    /// Drops crashed replica `node`'s promise record, as on a data
    /// directory from before the record.
    #[cfg(test)]
    pub fn forget_promise_record(&mut self, node: usize) {
        assert!(self.nodes[node].core.is_none(), "a crashed node");
        self.nodes[node].promise_record = None;
    }

    /// Writes on `node`'s disk (durable or not).
    pub fn disk_writes(&self, node: usize) -> usize {
        self.nodes[node].disk.writes().len()
    }

    /// The seed the cluster was built from.
    pub fn seed(&self) -> u64 {
        self.options.seed
    }

    /// Whether some replica, up or down, is still rebuilding after losing
    /// its disk.
    pub fn any_rebuilding(&self) -> bool {
        self.nodes.iter().any(|n| n.mark != Mark::None)
    }

    /// Recovers `node`'s group core from its disk and snapshot file, as
    /// the runtime's `start_group` does from its files.
    fn start_as(&mut self, node: usize, rejoin_if_empty: bool) {
        assert!(!self.nodes[node].retired, "n{} was retired", node + 1);
        let config = self.configs[node].clone();
        // Client-0 numbering apart from the run's draws, so it moves none.
        let anonymous_seq =
            (self.options.seed ^ (node as u64) << 56) + self.nodes[node].incarnation;
        let mut options = CoreOptions::new(config, self.options.snapshot, anonymous_seq);
        options.sessions_max = self.options.sessions_max;
        options.request_commands_max = 1;
        let n = &mut self.nodes[node];
        #[cfg(test)]
        if self.options.record_cut_with_tail && n.tail_cut {
            // The floor is then what the cut WAL still holds.
            n.promise_record = Some(Ballot::ZERO);
        }
        let recovery = Recovery {
            snapshot: n.snapshot_file.clone(),
            writes: n.disk.positioned().map(|(p, w)| (p, w.clone())).collect(),
            wal_next: n.disk.next_position(),
            marked_rebuilding: n.mark != Mark::None,
            rejoin_if_empty,
            tail_cut: std::mem::take(&mut n.tail_cut),
            promise_record: n.promise_record,
        };
        #[cfg(test)]
        let recovery = Recovery {
            tail_cut: recovery.tail_cut && !self.options.trust_cut_tail,
            ..recovery
        };
        #[allow(unused_mut)]
        let mut machine = SimMachine::with_ballast(self.options.snapshot_ballast);
        #[cfg(test)]
        {
            machine.snapshots_short = self.options.snapshots_short;
        }
        let mut out = Vec::new();
        #[allow(unused_mut)]
        let mut core =
            Core::recover(options, machine, recovery, &mut out).expect("a replica's own files");
        #[cfg(test)]
        {
            core.set_test_faults(self.options.faults);
            core.set_faults(self.options.core_faults);
        }
        let replica = core.replica();
        let status = replica.status();
        self.checker
            .on_restart(node, status.promised, replica.log(), status.commit);
        let n = &mut self.nodes[node];
        if out.iter().any(|a| matches!(a, GroupAction::MarkRebuilding)) {
            n.mark = Mark::Rebuilding;
        }
        n.core = Some(core);
        n.paused = false;
        n.incarnation += 1;
        n.was_leading = false;
        self.note(|| format!("start n{}", node + 1));
    }

    /// Power loss on `node`: unsynced writes survive only as a random prefix.
    pub fn crash(&mut self, node: usize) {
        if self.nodes[node].core.is_none() {
            return;
        }
        let unsynced = self.nodes[node].disk.unsynced();
        let keep = self.rng.random_range(0..=unsynced);
        let n = &mut self.nodes[node];
        n.core = None;
        let survivors = n.disk.crash(keep);
        let writes = n.disk.writes()[survivors].to_vec();
        self.checker.on_durable(node, &writes);
        self.settle_mark(node);
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
                let live = other != node && self.nodes[other].core.is_some();
                if live && !self.nodes[other].paused {
                    self.step(other, GroupInput::PeerUnreachable(crashed));
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

    pub(super) fn schedule(&mut self, delay: u64, event: Event) {
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
            Event::DeliverChunk { from, to, chunk } => {
                self.deliver_input(to, GroupInput::SnapshotChunk(from, chunk))
            }
            Event::DeliverAsk {
                from,
                to,
                upto,
                offset,
            } => self.deliver_input(to, GroupInput::SnapshotWanted { from, upto, offset }),
            Event::SnapshotSaved {
                node,
                incarnation,
                upto,
                encoded,
            } => self.snapshot_saved(node, incarnation, upto, encoded),
            Event::SyncDone {
                node,
                incarnation,
                sync,
            } => {
                let n = &self.nodes[node];
                if n.incarnation == incarnation && n.core.is_some() {
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
                    if let Some(core) = self.nodes[node].core.as_mut() {
                        core.set_pipeline_window(slots);
                    }
                }
                self.step(node, GroupInput::Tick);
            }
        }
        self.clients_tick();
    }

    /// Steps `node` with something that came over the network, if it runs.
    fn deliver_input(&mut self, to: usize, input: GroupInput<SimCallers>) {
        if self.is_running(to) {
            self.step(to, input);
        } else {
            self.stats.dropped += 1;
        }
    }

    /// Whether `node` is started, not crashed and not paused.
    pub fn is_running(&self, node: usize) -> bool {
        self.nodes[node].core.is_some() && !self.nodes[node].paused
    }

    /// Delivers `envelope` now, unless its addressee is down.
    pub fn deliver(&mut self, envelope: Envelope) {
        let to = envelope.to.0 as usize - 1;
        if !self.is_running(to) {
            self.stats.dropped += 1;
            return;
        }
        self.step(to, GroupInput::Message(envelope));
    }

    /// Feeds one input to `node`'s group core and carries out its actions.
    pub(super) fn step(&mut self, node: usize, input: GroupInput<SimCallers>) {
        let mut out = Vec::new();
        let trace_input = self.options.trace.then(|| super::trace::describe(&input));
        let core = self.nodes[node]
            .core
            .as_mut()
            .expect("step on a running node");
        if let Err(error) = core.step(input, &mut out) {
            self.checker.fail(
                "peers send only valid messages",
                format!("n{}: {error}", node + 1),
            );
        }
        self.after_step(node, trace_input, out);
        #[cfg(test)]
        if self.crash_pending.take() == Some(node) {
            self.crash(node);
        }
    }

    /// Has leader `node` hand leadership to member `to` (a fault the sweep
    /// draws; the named scenarios call it too).
    pub fn transfer_leadership(&mut self, node: usize, to: usize) {
        self.stats.transfers += 1;
        self.note(|| format!("n{} hands leadership to n{}", node + 1, to + 1));
        self.step(node, GroupInput::TransferLeadership(node_id(to)));
    }

    /// Makes `node` take leadership now (election disabled or not).
    pub fn campaign(&mut self, node: usize) {
        let mut out = Vec::new();
        self.nodes[node]
            .core
            .as_mut()
            .expect("running")
            .campaign(&mut out);
        self.after_step(node, Some("campaign".into()), out);
    }

    fn after_step(&mut self, node: usize, trace_input: Option<String>, out: Actions) {
        if let Some(input) = trace_input {
            let status = self.nodes[node].core.as_ref().map(|c| c.replica().status());
            let count = out.len();
            self.note(|| format!("n{} <- {input} => {count} actions; {status:?}", node + 1));
        }
        let leading = self.nodes[node]
            .core
            .as_ref()
            .is_some_and(|c| c.replica().status().leading);
        if leading && !self.nodes[node].was_leading {
            self.stats.elections += 1;
        }
        self.nodes[node].was_leading = leading;
        for action in out {
            self.carry_out(node, action);
        }
        self.check_schedule(node);
    }

    fn carry_out(&mut self, node: usize, action: GroupAction<SimCallers>) {
        match action {
            GroupAction::Append { position, write } => {
                self.checker.on_write_issued(node, &write);
                let landed = self.nodes[node].disk.append(write);
                assert_eq!(landed, position, "the core counts the disk's writes");
            }
            GroupAction::Sync(sync) => self.issue_sync(node, sync),
            GroupAction::RecordPromise(ballot) => {
                let n = &mut self.nodes[node];
                assert!(
                    n.promise_record.is_none_or(|r| r < ballot),
                    "the record only rises"
                );
                n.promise_record = Some(ballot);
            }
            GroupAction::Send(envelope) => {
                let before = self.checker.violations().len();
                self.checker.on_send(node, &envelope);
                if self.checker.violations().len() > before {
                    self.note(|| format!("n{} sent {:?}: a violation", node + 1, envelope.msg));
                }
                self.send(envelope);
            }
            GroupAction::SendSnapshot {
                to,
                upto,
                encoded,
                start,
            } => self.send_snapshot(node, to, upto, &encoded, start.offset()),
            GroupAction::AskSnapshot { to, upto, offset } => {
                self.stats.snapshot_asks += 1;
                self.ask_snapshot(node, to, upto, offset)
            }
            GroupAction::SaveSnapshot { upto, job, urgent } => {
                if !urgent {
                    self.stats.snapshots_taken += 1;
                }
                self.save_snapshot(node, upto, job);
            }
            GroupAction::RemoveWalBefore(cut) => {
                let removed = self.nodes[node].disk.remove_before(cut);
                self.note(|| format!("n{} dropped {removed} writes before {cut}", node + 1));
            }
            GroupAction::MarkRebuilding => self.nodes[node].mark = Mark::Rebuilding,
            GroupAction::EndRebuild => {
                let n = &mut self.nodes[node];
                n.mark = Mark::Removing(n.disk.next_position());
                self.settle_mark(node);
            }
            GroupAction::Applied { slot, batch, .. } => self.checker.on_commit(node, slot, &batch),
            // The simulator does not stream commits.
            GroupAction::Entry { .. } => {}
            GroupAction::SnapshotInstalled { upto, .. } => {
                self.checker.on_snapshot_installed(node, upto);
                self.stats.snapshots_installed += 1;
                self.note(|| format!("n{} installed a snapshot at {upto:?}", node + 1));
                #[cfg(test)]
                if std::mem::take(&mut self.options.crash_after_install) {
                    self.crash_pending = Some(node);
                }
            }
            GroupAction::Answer(caller, outcome) => self.on_answer(caller, outcome),
            GroupAction::AnswerMany(callers, outcomes) => {
                for (caller, outcome) in callers.into_iter().zip(outcomes) {
                    self.on_answer(caller, outcome);
                }
            }
            GroupAction::AnswerRead(id, outcome) => self.on_read_answer(node, id, outcome),
        }
    }

    /// Removes the rebuild mark once the writes before it are durable.
    fn settle_mark(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if let Mark::Removing(until) = n.mark {
            if n.disk.durable_end() >= until {
                n.mark = Mark::None;
            }
        }
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
        self.settle_mark(node);
        let writes = self.nodes[node].disk.writes()[durable].to_vec();
        self.checker.on_durable(node, &writes);
        self.step(node, GroupInput::Persisted(sync));
    }

    /// The current protocol tick.
    pub fn tick(&self) -> u64 {
        self.now / TICK_UNITS
    }

    /// The replica at `node`, if running or paused.
    pub fn replica(&self, node: usize) -> Option<&Replica> {
        self.nodes[node].core.as_ref().map(|c| c.replica())
    }

    /// The running node that leads with Phase 1 done, if exactly one does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|n| self.is_running(*n) && self.replica(*n).is_some_and(|r| r.status().leading))
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// What `node`'s state machine applied, in order (nothing while it is
    /// down).
    pub fn applied(&self, node: usize) -> &[Applied] {
        self.nodes[node]
            .core
            .as_ref()
            .map_or(&[], |c| c.machine().applied())
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
                    .then(|| self.replica(n).map(|r| r.status().commit))
                    .flatten()
            })
            .collect()
    }

    /// Takes the trace recorded so far.
    pub fn take_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    pub(super) fn note(&mut self, line: impl FnOnce() -> String) {
        if self.options.trace {
            let now = self.now;
            self.trace.push(format!("{:>8} {}", now, line()));
        }
    }
}

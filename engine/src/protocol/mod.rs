//! The sans-IO Multi-Paxos core: a deterministic function of its inputs.
//!
//! ```text
//!             Input                                Actions (in order)
//!   Tick ─────────┐                       ┌──► Persist(Write)   append to the WAL
//!   Message ──────┤     ┌─────────────┐   ├──► Sync(id)          fsync, then feed Persisted(id)
//!   Propose ──────┼────►│   Replica   │───┼──► Send(Envelope)    to a peer
//!   Persisted(id)─┤     │ acceptor    │   ├──► Commit{slot,..}   apply, in slot order
//!   Read ─────────┘     │ proposer    │   ├──► Reply(..)         to a client
//!                       │ learner     │   └──► SendSnapshot{to}
//!                       │ election    │
//!                       └─────────────┘
//! ```
//!
//! No clock, randomness, file or socket enters here: time is `Tick`, jitter
//! comes from `Config::seed`. Durability ordering lives in the replica itself:
//! a Promise or Accepted reports state only once `Persisted` covers the write
//! that made it, so the replica holds such messages back and releases them as
//! `Send` actions from the step that receives the `Persisted`. The leader is an
//! acceptor like any other: its own votes travel the same held path, so it
//! counts itself only after its own write is durable, while its Accepts to the
//! followers leave at once, in parallel with that write. A new ballot's
//! Prepares wait for the proposer's own promise the same way: a ballot that
//! left before a crash is then never issued again after it.

mod acceptor;
mod action;
mod batch;
mod change;
mod config;
mod election;
mod learner;
mod log;
mod membership;
mod message;
mod prepare;
mod proposer;
mod quorum;
mod reads;
mod rejoin;
mod sessions;
mod transfer;
mod types;
mod validate;
mod vote;

use std::collections::VecDeque;

use thiserror::Error;

pub use action::{Action, Actions, Input, Refusal, Reply, Write};
pub use batch::{Batch, BatchBuilder, BatchError, Command, CommandRef, COMMAND_HEADER_BYTES};
pub use change::ChangeRefusal;
pub use config::{Config, ConfigError, MEMBERS_MAX};
pub use log::{Entry, Log};
pub use membership::{
    Member, Membership, MembershipError, Schedule, ADDR_BYTES_MAX, CHANGE_DELAY_SLOTS,
    MEMBERSHIP_CLIENT,
};
pub use message::{
    Accept, Accepted, CatchUp, CatchUpRequest, Envelope, Heartbeat, HeartbeatAck, Message, Nack,
    Notification, PeerState, Prepare, Promise, Rejoin, RejoinInfo, TakeOver,
};
pub use quorum::VoteSet;
pub use sessions::{
    describe_session_bounds, pack_session_bounds, SessionOutcome, SessionRecord, Sessions,
    REQUEST_COMMANDS_MAX, SESSIONS_MAX, SESSION_BOUNDS,
};
pub use types::{Ballot, ClientId, GroupId, LogIndex, NodeId, ReadId, Slot, SyncId};
pub use vote::{Vote, VoteKey};

use election::Looking;
use proposer::Leading;

/// Slots an Accept may reach beyond the end of the acceptor's log; bounds the
/// memory a peer can make it reserve for holes.
pub const SLOTS_AHEAD_MAX: u64 = 1 << 16;

/// Ballot rounds at or above this are refused from peers, so that raising a
/// round never overflows (2^62 elections is beyond any deployment).
pub const ROUND_MAX: u64 = 1 << 62;

/// Why an input was dropped. The replica's state is unchanged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StepError {
    /// The envelope is addressed to another node.
    #[error("message for node {0:?} delivered to this node")]
    WrongAddressee(NodeId),
    /// The sender is not a member, or claims to be this node.
    #[error("message from unknown sender {0:?}")]
    UnknownSender(NodeId),
    /// A ballot that no member can own, or that the sender does not own.
    #[error("{kind} carries an impossible ballot {ballot}")]
    BadBallot {
        /// Message kind.
        kind: &'static str,
        /// The ballot.
        ballot: Ballot,
    },
    /// A slot outside what this replica can hold.
    #[error("{kind} names an impossible slot {slot:?}")]
    BadSlot {
        /// Message kind.
        kind: &'static str,
        /// The slot.
        slot: Slot,
    },
    /// Another field out of range.
    #[error("{kind}: {reason}")]
    BadField {
        /// Message kind.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// `Persisted` for a sync never issued.
    #[error("persisted {0:?} was never issued")]
    UnknownSync(SyncId),
}

/// The acceptor's durable state, rebuilt from its writes after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// Accepted values.
    pub log: Log,
    /// Every slot below is known chosen (and held in `log`, or in a
    /// snapshot below `log.start()`).
    pub commit: Slot,
    /// The log index of the first command at `log.start()`: what the slots
    /// compacted into a snapshot held.
    pub start_index: LogIndex,
    /// The configurations a snapshot recorded for the slots from
    /// `log.start()` on; `None`: the replica's `Config::members` from slot 0.
    pub schedule: Option<Schedule>,
}

impl DurableState {
    /// The state a snapshot leaves: every slot below `upto` chosen and
    /// compacted, the next command at `next_index`, `promised` as recorded.
    pub fn from_snapshot(upto: Slot, next_index: LogIndex, promised: Ballot) -> DurableState {
        DurableState {
            promised,
            log: Log::starting_at(upto),
            commit: upto,
            start_index: next_index,
            schedule: None,
        }
    }

    /// Replays writes in the order they were issued. Accepting a ballot
    /// promises it too, so `promised` is the highest ballot of either kind.
    pub fn replay<'a>(writes: impl IntoIterator<Item = &'a Write>) -> DurableState {
        DurableState::default().replay_onto(writes)
    }

    /// Replays writes onto this state (a snapshot's). Writes for slots the
    /// snapshot covers change nothing: those slots are chosen.
    pub fn replay_onto<'a>(self, writes: impl IntoIterator<Item = &'a Write>) -> DurableState {
        let mut state = self;
        for write in writes {
            match write {
                Write::Promise(ballot) => state.promised = state.promised.max(*ballot),
                Write::Accept { slot, entry } => {
                    state.promised = state.promised.max(entry.ballot);
                    state.log.insert(*slot, entry.clone());
                }
                Write::Commit(slot) => state.commit = state.commit.max(*slot),
            }
        }
        // Writes reach the disk in order, so the entries below a surviving
        // commit record survived too; the check keeps that an invariant.
        let mut held = state.log.start();
        while held < state.commit && state.log.get(held).is_some() {
            held = held.next();
        }
        state.commit = held.max(state.log.start());
        state
    }
}

/// What a replica is doing.
#[derive(Clone, Debug)]
enum Role {
    Looking(Looking),
    Following(Following),
    Leading(Box<Leading>),
    /// Rebuilding after disk loss (`rejoin.rs`): votes for nothing.
    Rejoining(rejoin::Rejoining),
}

#[derive(Clone, Debug)]
struct Following {
    leader: NodeId,
    /// The follower starts looking when `now` passes this.
    silent_until: u64,
    catchup_sent_at: Option<u64>,
    /// The highest commit point the leader has told us.
    leader_commit: Slot,
}

impl Following {
    /// Following `leader`, silent until tick `silent_until`, nothing asked
    /// of it yet.
    fn of(leader: NodeId, silent_until: u64) -> Following {
        Following {
            leader,
            silent_until,
            catchup_sent_at: None,
            leader_commit: Slot(0),
        }
    }
}

/// A public summary of a replica, for status displays and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: NodeId,
    /// Who it believes leads, if anyone.
    pub leader: Option<NodeId>,
    /// Whether it leads and has finished Phase 1.
    pub leading: bool,
    /// Whether it is looking for a leader.
    pub looking: bool,
    /// Whether it is rebuilding after disk loss and votes for nothing.
    pub rejoining: bool,
    /// The highest ballot promised.
    pub promised: Ballot,
    /// Every slot below is chosen and emitted.
    pub commit: Slot,
    /// Log index of the first command of slot `commit`.
    pub commit_index: LogIndex,
    /// Its election round.
    pub election_round: u64,
    /// Slots the leader has in flight beyond the commit point (0 unless
    /// leading): the pipeline's depth.
    pub inflight: u32,
}

/// One member of a Multi-Paxos group: proposer, acceptor and learner at once.
#[derive(Clone, Debug)]
pub struct Replica {
    config: Config,
    /// The configurations of the slots from the commit point on.
    schedule: Schedule,
    /// Every member of those configurations but this replica: where
    /// Prepares, Accepts and heartbeats go.
    peers: Vec<NodeId>,
    /// The voters of the configuration in force at the commit point: who
    /// elects a leader. (Not the newest known: a change chosen but not in
    /// force yet is unknown to the replicas behind it, and a leader must
    /// still be elected to bring it into force.)
    electors: Vec<NodeId>,
    now: u64,
    jitter_state: u64,
    promised: Ballot,
    /// The highest ballot under which anything was accepted (the vote epoch).
    accepted_max: Ballot,
    log: Log,
    commit: Slot,
    /// Where `commit` stood when the current step began.
    commit_at_step_start: Slot,
    commit_index: LogIndex,
    /// Id of the next `Sync` action.
    next_sync: SyncId,
    wrote_this_step: bool,
    /// The sync that covers the latest write.
    last_write_sync: SyncId,
    persisted: SyncId,
    /// Messages reporting state not yet durable, in send order.
    held: VecDeque<(SyncId, Envelope)>,
    /// Election round (ZooKeeper's logical clock).
    round: u64,
    /// The highest ballot round seen in any message.
    round_seen_max: u64,
    /// Slots the leader keeps in flight, at most `config.pipeline_max`:
    /// set from outside from measured latencies (see
    /// `Replica::set_pipeline_window`).
    pipeline_window: u32,
    role: Role,
    #[cfg(test)]
    faults: TestFaults,
}

/// Deliberately broken rules, switched on only by tests that prove the
/// simulator's checkers catch them.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TestFaults {
    /// Send Promise/Accepted before the state they report is durable.
    pub reply_before_persist: bool,
    /// Accept values at ballots below the promise.
    pub accept_below_promise: bool,
    /// Serve reads without confirming leadership with a majority.
    pub read_without_quorum: bool,
}

impl Replica {
    /// A replica resuming from its durable state (default for a new one).
    pub fn new(mut config: Config, durable: DurableState) -> Result<Replica, ConfigError> {
        config.validate()?;
        config.members.sort();
        let first = Membership::voters(&config.members).map_err(|e| ConfigError::Invalid {
            field: "members",
            reason: e.to_string(),
        })?;
        let mut schedule = durable
            .schedule
            .clone()
            .unwrap_or_else(|| Schedule::starting_with(first));
        let accepted_max = durable
            .log
            .entries_from(Slot(0))
            .map(|(_, e)| e.ballot)
            .max()
            .unwrap_or(Ballot::ZERO);
        let commit = durable.commit.max(durable.log.start());
        let commit_index = LogIndex(
            durable.start_index.0
                + (durable.log.start().0..commit.0)
                    .filter_map(|s| durable.log.get(Slot(s)))
                    .map(|e| u64::from(e.batch.len()))
                    .sum::<u64>(),
        );
        for (slot, entry) in durable.log.entries_from(durable.log.start()) {
            if slot >= commit {
                break;
            }
            if let Ok(Some(membership)) = Membership::from_batch(&entry.batch) {
                schedule.chosen(slot, membership);
            }
        }
        schedule.forget_below(commit);
        let mut replica = Replica {
            schedule,
            peers: Vec::new(),
            electors: Vec::new(),
            now: 0,
            jitter_state: config.seed ^ config.id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            promised: durable.promised,
            accepted_max,
            log: durable.log,
            commit,
            commit_at_step_start: commit,
            commit_index,
            next_sync: SyncId(1),
            wrote_this_step: false,
            last_write_sync: SyncId(0),
            persisted: SyncId(0),
            held: VecDeque::new(),
            round: 0,
            round_seen_max: durable.promised.round,
            pipeline_window: config.pipeline_max,
            role: Role::Looking(Looking::idle()),
            config,
            #[cfg(test)]
            faults: TestFaults::default(),
        };
        replica.schedule_changed();
        Ok(replica)
    }

    /// Feeds one input; the resulting actions are appended to `out`. An input
    /// that is refused leaves the replica exactly as it was.
    pub fn step(&mut self, input: Input, out: &mut Actions) -> Result<(), StepError> {
        let result = match input {
            Input::Tick => {
                self.on_tick(out);
                Ok(())
            }
            Input::Message(envelope) => self.on_envelope(envelope, out),
            Input::Propose(command) => {
                self.on_propose([command], out);
                Ok(())
            }
            Input::ProposeBatch(commands) => {
                self.on_propose(commands, out);
                Ok(())
            }
            Input::Persisted(sync) => self.on_persisted(sync, out),
            Input::Read(id) => {
                self.on_read(id, out);
                Ok(())
            }
            Input::PeerUnreachable(peer) => {
                self.on_peer_unreachable(peer, out);
                Ok(())
            }
            Input::TransferLeadership(to) => {
                self.transfer_leadership(to, out);
                Ok(())
            }
        };
        self.end_step(out);
        result
    }

    /// Takes leadership now, with a ballot above every one seen (etcd's
    /// `Campaign`). The only way to lead when election is disabled.
    pub fn campaign(&mut self, out: &mut Actions) {
        if self.is_rejoining() {
            return; // it may not lead before it may vote
        }
        self.become_leader(out);
        self.end_step(out);
    }

    /// Breaks rules on purpose, for tests that prove the checkers see it.
    #[cfg(test)]
    pub(crate) fn set_test_faults(&mut self, faults: TestFaults) {
        self.faults = faults;
    }

    /// A summary for displays and tests.
    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            leader: self.leader(),
            leading: matches!(&self.role, Role::Leading(l) if l.is_steady()),
            looking: matches!(self.role, Role::Looking(_)),
            rejoining: self.is_rejoining(),
            promised: self.promised,
            commit: self.commit,
            commit_index: self.commit_index,
            election_round: self.round,
            inflight: match &self.role {
                Role::Leading(leading) => leading.inflight_slots(),
                _ => 0,
            },
        }
    }

    /// Sets how many slots of new commands a leader keeps in flight beyond
    /// its commit point: `slots` clamped to `1..=config.pipeline_max` (the
    /// default is `pipeline_max`). Commands beyond the window wait, and
    /// commands proposed meanwhile join them, so a smaller window makes
    /// fewer, larger batches. Values recovered in Phase 1 are whole batches
    /// already and go out up to `pipeline_max` whatever the window.
    /// Deterministic like everything else here: the runtime chooses the
    /// window from the latencies it measures. Returns the window in force.
    pub fn set_pipeline_window(&mut self, slots: u32) -> u32 {
        self.pipeline_window = slots.clamp(1, self.config.pipeline_max);
        self.pipeline_window
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The acceptor's log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The slots already committed when this replica started (recovered
    /// from its commit record), with each batch's first log index: what a
    /// restarted state machine must apply before the first `Commit` action.
    pub fn committed(&self) -> impl Iterator<Item = (Slot, LogIndex, &Batch)> {
        let mut index = self.commit_index.0
            - (self.log.start().0..self.commit.0)
                .filter_map(|s| self.log.get(Slot(s)))
                .map(|e| u64::from(e.batch.len()))
                .sum::<u64>();
        (self.log.start().0..self.commit.0).filter_map(move |s| {
            let entry = self.log.get(Slot(s))?;
            let first = LogIndex(index);
            index += u64::from(entry.batch.len());
            Some((Slot(s), first, &entry.batch))
        })
    }

    /// The highest slot the log may be compacted to: the commit point, but
    /// no further than the leader's own while following. A leader elected
    /// from behind (its Phase 1 done while our log still held its slots)
    /// proposes those slots again, and an acceptor that compacted them has
    /// no vote to give it.
    pub fn compaction_limit(&self) -> Slot {
        match &self.role {
            Role::Following(f) => self.commit.min(f.leader_commit),
            _ => self.commit,
        }
    }

    /// Drops log slots below `upto`, which the state machine has captured in a
    /// snapshot. Only committed slots can be compacted.
    pub fn compact(&mut self, upto: Slot) {
        assert!(upto <= self.commit, "compacting past the commit point");
        self.log.compact(upto);
    }

    /// The state machine installed a snapshot covering every slot below
    /// `upto`, whose first command after it has log index `next_index`.
    /// A leader still in Phase 1 may install one (its acceptors compacted
    /// past its commit point); it then recovers only the slots above
    /// `upto`. So may a steady leader elected from behind whose followers
    /// have since compacted the slots it proposes (they hold them chosen in
    /// a snapshot and have no vote to give): its in-flight slots below
    /// `upto` are chosen, and it goes on from there.
    /// Returns whether the snapshot was installed.
    /// `schedule` is the configurations the snapshot recorded from `upto` on
    /// (`None`: keep ours, for snapshots of a group that never changed).
    pub fn install_snapshot(
        &mut self,
        upto: Slot,
        next_index: LogIndex,
        schedule: Option<Schedule>,
    ) -> bool {
        if upto <= self.commit {
            return false;
        }
        if let Role::Leading(leading) = &mut self.role {
            leading.skip_to(self.commit, upto);
        }
        self.log.compact(upto);
        self.commit = upto;
        self.commit_at_step_start = upto;
        self.commit_index = next_index;
        if let Some(schedule) = schedule {
            self.schedule = schedule;
        }
        self.schedule.forget_below(upto);
        self.schedule_changed();
        true
    }

    /// The configurations of the slots from the commit point on.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The leader this replica believes in.
    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Looking(_) | Role::Rejoining(_) => None,
            Role::Following(f) => Some(f.leader),
            Role::Leading(_) => Some(self.config.id),
        }
    }

    fn on_tick(&mut self, out: &mut Actions) {
        self.now += 1;
        match &self.role {
            Role::Looking(_) => self.looking_tick(out),
            Role::Following(_) => self.following_tick(out),
            Role::Leading(_) => self.leading_tick(out),
            Role::Rejoining(_) => self.rejoining_tick(out),
        }
    }

    fn on_envelope(&mut self, envelope: Envelope, out: &mut Actions) -> Result<(), StepError> {
        self.check_envelope(&envelope)?;
        let Envelope { from, msg, .. } = envelope;
        if let Message::Rejoin(m) = msg {
            self.on_rejoin(from, m, out);
            return Ok(());
        }
        if self.is_rejoining() {
            self.on_rejoining_message(from, msg, out);
            return Ok(());
        }
        match msg {
            Message::Prepare(m) => self.on_prepare(from, m, out),
            Message::Promise(m) => self.on_promise(from, m, out),
            Message::Nack(m) => self.on_nack(m, out),
            Message::Accept(m) => self.on_accept(from, m, out),
            Message::Accepted(m) => self.on_accepted(from, m, out),
            Message::Heartbeat(m) => self.on_heartbeat(from, m, out),
            Message::HeartbeatAck(m) => self.on_heartbeat_ack(from, m, out),
            Message::CatchUpRequest(m) => self.on_catchup_request(from, m, out),
            Message::CatchUp(m) => self.on_catchup(m, out),
            Message::Notification(m) => self.on_notification(from, m, out),
            Message::Rejoin(_) => unreachable!("answered above"),
            Message::RejoinInfo(_) => {} // late: we have rejoined
            Message::TakeOver(m) => self.on_take_over(from, m, out),
        }
        Ok(())
    }

    fn on_persisted(&mut self, sync: SyncId, out: &mut Actions) -> Result<(), StepError> {
        if sync >= self.next_sync {
            return Err(StepError::UnknownSync(sync));
        }
        self.persisted = self.persisted.max(sync);
        while self.held.front().is_some_and(|(s, _)| *s <= self.persisted) {
            let (_, envelope) = self.held.pop_front().expect("front checked");
            self.release(envelope, out);
        }
        Ok(())
    }

    /// A held message whose state is now durable: the replica's own votes are
    /// counted here, the rest leave.
    fn release(&mut self, envelope: Envelope, out: &mut Actions) {
        if envelope.to != self.config.id {
            out.push(Action::Send(envelope));
            return;
        }
        let from = envelope.from;
        match envelope.msg {
            Message::Promise(m) => self.on_promise(from, m, out),
            Message::Accepted(m) => self.on_accepted(from, m, out),
            other => unreachable!(
                "only votes and Prepares to peers are held, not {}",
                other.kind()
            ),
        }
    }

    /// Records a durable write; the step's `Sync` will cover it.
    fn persist(&mut self, write: Write, out: &mut Actions) {
        out.push(Action::Persist(write));
        self.wrote_this_step = true;
        self.last_write_sync = self.next_sync;
    }

    /// Sends a message that reports acceptor state, once that state is durable.
    fn send_durable(&mut self, to: NodeId, msg: Message, out: &mut Actions) {
        let envelope = Envelope {
            from: self.config.id,
            to,
            msg,
        };
        #[cfg(test)]
        if self.faults.reply_before_persist && to != self.config.id {
            out.push(Action::Send(envelope));
            return;
        }
        if self.last_write_sync <= self.persisted {
            self.release(envelope, out);
        } else {
            self.held.push_back((self.last_write_sync, envelope));
        }
    }

    /// Sends a message that reports nothing durable.
    fn send(&self, to: NodeId, msg: Message, out: &mut Actions) {
        out.push(Action::Send(Envelope {
            from: self.config.id,
            to,
            msg,
        }));
    }

    fn broadcast(&self, msg: &Message, out: &mut Actions) {
        for &peer in self.peers() {
            self.send(peer, msg.clone(), out);
        }
    }

    fn peers(&self) -> impl Iterator<Item = &NodeId> {
        self.peers.iter()
    }

    /// Refreshes what is derived from the schedule.
    fn schedule_changed(&mut self) {
        self.peers = self.schedule.peers_from(self.commit, self.config.id);
        self.electors = self.schedule.at(self.commit).voter_ids().collect();
    }

    /// Whether, in every configuration from the commit point on, the voters
    /// for which `heard` holds make a majority: what a leader needs to
    /// stay, and to serve a read.
    fn majorities(&self, mut heard: impl FnMut(NodeId) -> bool) -> bool {
        self.schedule
            .from(self.commit)
            .all(|m| m.majority(&mut heard))
    }

    /// Votes of electors that make a majority of them.
    fn elector_quorum(&self) -> usize {
        self.electors.len() / 2 + 1
    }

    /// Whether this replica votes in the configuration in force.
    fn is_elector(&self) -> bool {
        self.electors.binary_search(&self.config.id).is_ok()
    }

    fn end_step(&mut self, out: &mut Actions) {
        if self.commit > self.commit_at_step_start {
            // Lazily: it rides on this step's sync or the next one.
            out.push(Action::Persist(Write::Commit(self.commit)));
            self.commit_at_step_start = self.commit;
        }
        if self.wrote_this_step {
            out.push(Action::Sync(self.next_sync));
            self.next_sync = SyncId(self.next_sync.0 + 1);
            self.wrote_this_step = false;
        }
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// A deterministic pseudo-random number in `0..bound` (splitmix64).
    fn jitter(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.jitter_state = self.jitter_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.jitter_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }

    /// What must hold after every step.
    pub fn check_invariants(&self) {
        for (slot, entry) in self.log.entries_from(Slot(0)) {
            assert!(
                entry.ballot <= self.promised,
                "slot {slot:?} accepted at {} above promise {}",
                entry.ballot,
                self.promised
            );
        }
        assert!(self.commit >= self.log.start(), "commit below log start");
        assert!(self.persisted < self.next_sync);
        if let Role::Leading(leader) = &self.role {
            assert_eq!(
                leader.ballot, self.promised,
                "a leader's ballot is its promise"
            );
            leader.check_invariants(self.commit);
        }
    }
}

#[cfg(test)]
mod tests;

//! [`GroupCore`]: one group's deterministic logic around its replica.

use std::collections::BTreeMap;

use bytes::Bytes;
use synod_wal::Position;
use thiserror::Error;

use super::action::{Callers, GroupAction, GroupInput, Proposal, ProposeOutcome, ReadOutcome};
use super::apply::apply_batch;
use super::compaction::Compaction;
use super::snapshot::{Snapshot, SnapshotError, SnapshotPolicy};
use super::state_machine::StateMachine;
use super::waiters::{Answer, Waiters};

mod snapshots;
use crate::protocol::{
    Action, Actions, Ballot, Batch, ChangeRefusal, ClientId, Command, Config, ConfigError,
    DurableState, Input, LogIndex, Membership, ReadId, Replica, Reply, Sessions, Slot, StepError,
    Write, REQUEST_COMMANDS_MAX, SESSIONS_MAX,
};

/// What a group core is built from, besides its durable state.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// The protocol configuration.
    pub config: Config,
    /// When to snapshot and how much log to keep below one.
    pub snapshot: SnapshotPolicy,
    /// Client sessions the table keeps at most.
    pub sessions_max: usize,
    /// Commands one request may hold at most (the session table's window).
    pub request_commands_max: u64,
    /// The first sequence number given to a proposal without a session
    /// (client 0). Drawn at random by the runtime, so a client-0 command
    /// proposed by another leader, or before a restart, is all but sure
    /// not to match one waiting here; drawn from the seed in the simulator.
    pub anonymous_seq: u64,
}

impl CoreOptions {
    /// The runtime's bounds: [`SESSIONS_MAX`] sessions of
    /// [`REQUEST_COMMANDS_MAX`] commands.
    pub fn new(config: Config, snapshot: SnapshotPolicy, anonymous_seq: u64) -> CoreOptions {
        CoreOptions {
            config,
            snapshot,
            sessions_max: SESSIONS_MAX,
            request_commands_max: REQUEST_COMMANDS_MAX,
            anonymous_seq,
        }
    }
}

/// What a group's disk held at start.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The snapshot file's contents, if there is one.
    pub snapshot: Option<Vec<u8>>,
    /// Every WAL frame that survived, with its position.
    pub writes: Vec<(Position, Write)>,
    /// Where the WAL's next frame lands.
    pub wal_next: Position,
    /// The rebuild mark was found: a rebuild was cut short.
    pub marked_rebuilding: bool,
    /// Rebuild from the peers if the disk holds nothing at all (it was lost).
    pub rejoin_if_empty: bool,
    /// Recovery cut the WAL's tail as damaged. A torn write is never
    /// acknowledged, but a synced frame damaged later looks the same: what
    /// was cut may have been a promise or an accept that counted, so the
    /// replica rebuilds from its peers before it votes again.
    pub tail_cut: bool,
    /// The promise record kept apart from the WAL (`RecordPromise`): the
    /// highest ballot this replica can have promised or accepted at. None
    /// if there is none (a lost disk, or a data directory older than the
    /// record). A replica whose tail was cut and that has one rebuilds
    /// from it as its floor, with a majority of its peers instead of all.
    pub promise_record: Option<Ballot>,
}

/// Why a group core could not start.
#[derive(Debug, Error)]
pub enum CoreError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The snapshot file does not decode.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The state machine refused the group's own snapshot.
    #[error("the state machine refused the snapshot: {reason}")]
    Restore {
        /// Why.
        reason: String,
    },
}

/// Deliberately broken rules, for the tests that prove the simulator's
/// checkers catch them.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CoreFaults {
    /// The session table forgets what each batch applied: a retry applies
    /// again.
    pub(crate) forget_sessions: bool,
    /// A durable snapshot lets the WAL go up to the second-lowest accept
    /// above it, not the lowest.
    pub(crate) cut_one_accept_high: bool,
}

/// One group's deterministic logic: the replica, the state machine behind
/// client sessions, the proposals and reads waiting for answers, the
/// snapshot policy, the WAL cut and the rebuild mark. See the module docs.
pub struct GroupCore<S, C: Callers> {
    replica: Replica,
    machine: S,
    sessions: Sessions<Bytes>,
    waiters: Waiters<C>,
    reads: BTreeMap<ReadId, (Bytes, C::Read)>,
    next_read: u64,
    anonymous_seq: u64,
    /// Slots applied (those below this one).
    applied: Slot,
    /// The log index of the next command to apply.
    next_index: LogIndex,
    /// The slot of the latest durable snapshot (0: none).
    snapshot: Slot,
    snapshots_installed: u64,
    compaction: Compaction,
    /// The rebuild mark is on disk.
    rebuilding: bool,
    /// What the promise record holds, while it can be trusted: it is at
    /// least every ballot this replica promised or accepted. None while a
    /// replica that lost it rebuilds from every peer (its old promises
    /// are unknown); the rebuild's last promise starts it again.
    recorded: Option<Ballot>,
    was_leading: bool,
    /// Ticks since start (how often a lost snapshot chunk is asked for).
    ticks: u64,
    /// Ticks between two asks for the same lost snapshot chunk.
    ask_every: u64,
    /// Emit an `Entry` per command applied.
    streaming: bool,
    /// The replica's actions of the step under way (kept for its buffer).
    scratch: Actions,
    #[cfg(test)]
    faults: CoreFaults,
}

impl<S: StateMachine, C: Callers> GroupCore<S, C> {
    /// Rebuilds a group from its disk: restores the snapshot, replays the
    /// WAL, and applies the slots its commit record says are chosen (the
    /// state machine is rebuilt in memory). `out` receives
    /// `MarkRebuilding` first if the replica must rebuild from its peers;
    /// the executor carries it out before anything else.
    pub fn recover(
        options: CoreOptions,
        mut machine: S,
        recovery: Recovery,
        out: &mut Vec<GroupAction<C>>,
    ) -> Result<GroupCore<S, C>, CoreError> {
        let bounds =
            Sessions::<Bytes>::with_capacity(options.sessions_max, options.request_commands_max);
        let mut sessions = bounds.clone();
        let mut base = DurableState::default();
        let mut latest = None;
        if let Some(encoded) = recovery.snapshot {
            let snapshot = Snapshot::decode_for(&encoded, bounds.bounds())?;
            machine
                .restore(&snapshot.machine)
                .map_err(|reason| CoreError::Restore { reason })?;
            base =
                DurableState::from_snapshot(snapshot.upto, snapshot.next_index, snapshot.promised);
            base.schedule = snapshot.schedule;
            sessions = snapshot.sessions;
            latest = Some((snapshot.upto, Bytes::from(encoded)));
        }
        let snapshot = base.log.start();
        let next_index = base.start_index;
        let lost = latest.is_none() && recovery.writes.is_empty();
        let rebuilding =
            recovery.marked_rebuilding || (recovery.rejoin_if_empty && lost) || recovery.tail_cut;
        let durable = base.replay_onto(recovery.writes.iter().map(|(_, write)| write));
        let recorded = recovery.promise_record;
        let ask_every = u64::from(options.config.resend_ticks);
        let replica = if rebuilding {
            // Durable before the rebuild writes anything: a crash from here
            // until it ends restarts the rebuild, never a half-rebuilt
            // acceptor.
            out.push(GroupAction::MarkRebuilding);
            Replica::rejoining(options.config, durable, recorded)?
        } else {
            Replica::new(options.config, durable)?
        };
        let compaction = Compaction::new(
            options.snapshot,
            latest,
            &recovery.writes,
            recovery.wal_next,
        );
        let mut core = GroupCore {
            replica,
            machine,
            sessions,
            waiters: Waiters::default(),
            reads: BTreeMap::new(),
            next_read: 0,
            anonymous_seq: options.anonymous_seq,
            applied: snapshot,
            next_index,
            snapshot,
            snapshots_installed: 0,
            compaction,
            rebuilding,
            // An intact WAL holds every promise: it starts a missing record.
            recorded: recorded.or((!rebuilding).then_some(Ballot::ZERO)),
            was_leading: false,
            ticks: 0,
            ask_every,
            streaming: false,
            scratch: Actions::default(),
            #[cfg(test)]
            faults: CoreFaults::default(),
        };
        let committed: Vec<(Slot, LogIndex, Batch)> = core
            .replica
            .committed()
            .map(|(slot, index, batch)| (slot, index, batch.clone()))
            .collect();
        for (slot, index, batch) in committed {
            core.apply(slot, index, batch, out);
        }
        // The snapshot policy counts the live load, not the replay.
        core.compaction.applied_bytes = 0;
        core.keep_promise_recorded(out);
        Ok(core)
    }

    /// Takes one input; the actions to carry out go to `out`, in order. A
    /// peer's message that the replica refuses changes nothing and is
    /// returned as the error (after the actions of the rest of the step).
    pub fn step(
        &mut self,
        input: GroupInput<C>,
        out: &mut Vec<GroupAction<C>>,
    ) -> Result<(), StepError> {
        let result = match input {
            GroupInput::Message(envelope) => self.step_replica(Input::Message(envelope), out),
            GroupInput::Propose(proposals) => self.on_propose(proposals, out),
            GroupInput::Read(query, caller) => {
                self.next_read += 1;
                let id = ReadId(self.next_read);
                self.reads.insert(id, (query, caller));
                self.step_replica(Input::Read(id), out)
            }
            GroupInput::ReadLocal(query, caller) => {
                let value = self.machine.query(&query);
                out.push(GroupAction::AnswerRead(caller, ReadOutcome::Value(value)));
                Ok(())
            }
            GroupInput::Persisted(sync) => self.step_replica(Input::Persisted(sync), out),
            GroupInput::Tick => {
                self.ticks += 1;
                self.ask_again_for_lost_chunks(out);
                self.step_replica(Input::Tick, out)
            }
            GroupInput::PeerUnreachable(peer) => {
                self.step_replica(Input::PeerUnreachable(peer), out)
            }
            GroupInput::TransferLeadership(to) => {
                self.step_replica(Input::TransferLeadership(to), out)
            }
            GroupInput::SnapshotChunk(from, chunk) => {
                self.on_snapshot_chunk(from, chunk, out);
                Ok(())
            }
            GroupInput::SnapshotWanted { from, upto, offset } => {
                self.on_snapshot_wanted(from, upto, offset, out);
                Ok(())
            }
            GroupInput::SnapshotSaved { upto, encoded } => {
                self.on_snapshot_saved(upto, encoded, out);
                Ok(())
            }
            GroupInput::SnapshotSkipped(upto) => {
                if self.compaction.saving.is_some_and(|s| s.upto == upto) {
                    self.compaction.saving = None;
                    self.compaction.tried_upto = upto;
                }
                Ok(())
            }
        };
        self.after_step(out);
        result
    }

    /// Makes this replica take leadership now (tests and scenarios).
    pub fn campaign(&mut self, out: &mut Vec<GroupAction<C>>) {
        self.replica.campaign(&mut self.scratch);
        self.carry_out(out);
        self.after_step(out);
    }

    /// Proposes `membership` as the group's next configuration (a steady
    /// leader only; `Replica::propose_membership` says when it governs).
    pub fn change_membership(
        &mut self,
        membership: Membership,
        out: &mut Vec<GroupAction<C>>,
    ) -> Result<(), ChangeRefusal> {
        let result = self
            .replica
            .propose_membership(membership, &mut self.scratch);
        self.carry_out(out);
        self.after_step(out);
        result
    }

    /// The group stops: every proposal and read still waiting is answered
    /// `Stopped`.
    pub fn stop(&mut self, out: &mut Vec<GroupAction<C>>) {
        self.waiters.answer_all(ProposeOutcome::Stopped, out);
        for (_, (_, caller)) in std::mem::take(&mut self.reads) {
            out.push(GroupAction::AnswerRead(caller, ReadOutcome::Stopped));
        }
    }

    /// Whether to emit an `Entry` for each command applied (a subscriber
    /// streams them); off by default, as it costs an action per command.
    pub fn stream_commits(&mut self, on: bool) {
        self.streaming = on;
    }

    /// Sets the replica's pipeline window (the executor measures it);
    /// returns the window in force.
    pub fn set_pipeline_window(&mut self, slots: u32) -> u32 {
        self.replica.set_pipeline_window(slots)
    }

    /// The replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The state machine.
    pub fn machine(&self) -> &S {
        &self.machine
    }

    /// The log index of the next command to apply.
    pub fn next_index(&self) -> LogIndex {
        self.next_index
    }

    /// Slots applied (those below this one).
    pub fn applied(&self) -> Slot {
        self.applied
    }

    /// The slot of the latest durable snapshot (0: none).
    pub fn snapshot(&self) -> Slot {
        self.snapshot
    }

    /// Snapshots installed from peers since start.
    pub fn snapshots_installed(&self) -> u64 {
        self.snapshots_installed
    }

    /// When the group snapshots.
    pub fn snapshot_policy(&self) -> SnapshotPolicy {
        self.compaction.policy
    }

    /// Whether a snapshot is being written.
    pub fn is_saving_snapshot(&self) -> bool {
        self.compaction.saving.is_some()
    }

    /// Where the WAL's next frame lands, as the core counts.
    pub fn wal_next(&self) -> Position {
        self.compaction.wal_next()
    }

    #[cfg(test)]
    pub(crate) fn set_faults(&mut self, faults: CoreFaults) {
        self.faults = faults;
        self.compaction.cut_one_accept_high = faults.cut_one_accept_high;
    }

    #[cfg(test)]
    pub(crate) fn set_test_faults(&mut self, faults: crate::protocol::TestFaults) {
        self.replica.set_test_faults(faults);
    }

    fn step_replica(
        &mut self,
        input: Input,
        out: &mut Vec<GroupAction<C>>,
    ) -> Result<(), StepError> {
        let result = self.replica.step(input, &mut self.scratch);
        self.carry_out(out);
        result
    }

    fn on_propose(
        &mut self,
        proposals: Vec<Proposal<C>>,
        out: &mut Vec<GroupAction<C>>,
    ) -> Result<(), StepError> {
        let mut commands = Vec::new();
        for proposal in proposals {
            match proposal {
                Proposal::One(command, caller) => {
                    let command = self.numbered(command);
                    let waiting = std::slice::from_ref(&command);
                    self.waiters.wait(waiting, Answer::One(caller), out);
                    commands.push(command);
                }
                Proposal::Many(request, caller) => {
                    let request: Vec<Command> =
                        request.into_iter().map(|c| self.numbered(c)).collect();
                    self.waiters.wait(&request, Answer::Many(caller), out);
                    commands.extend(request);
                }
            }
        }
        if commands.is_empty() {
            return Ok(());
        }
        self.step_replica(Input::ProposeBatch(commands), out)
    }

    /// `command`, with a sequence number of its own if it has no session:
    /// its waiter is then told its own outcome, not that of another such
    /// proposal waiting at the same time.
    fn numbered(&mut self, mut command: Command) -> Command {
        if command.client == ClientId(0) {
            command.seq = self.anonymous_seq;
            self.anonymous_seq = self.anonymous_seq.wrapping_add(1);
        }
        command
    }

    /// Turns the replica's actions into the executor's.
    fn carry_out(&mut self, out: &mut Vec<GroupAction<C>>) {
        let mut actions = std::mem::take(&mut self.scratch);
        for action in actions.drain() {
            match action {
                Action::Persist(write) => {
                    self.keep_promise_recorded(out);
                    let position = self.compaction.appended(&write);
                    out.push(GroupAction::Append { position, write });
                }
                Action::Sync(sync) => out.push(GroupAction::Sync(sync)),
                Action::Send(envelope) => out.push(GroupAction::Send(envelope)),
                Action::Commit {
                    slot,
                    first_index,
                    batch,
                } => self.apply(slot, first_index, batch, out),
                Action::Reply(reply) => self.on_reply(reply, out),
                Action::SendSnapshot { to } => self.send_snapshot(to, out),
            }
        }
        self.scratch = actions;
    }

    /// Records the replica's promise apart from the WAL when it has risen
    /// past the record, before the write that raises it is appended (so
    /// before anything reports it): a damaged WAL tail then cannot hide a
    /// promise this replica made. Not while a replica that lost the record
    /// rebuilds from every peer.
    fn keep_promise_recorded(&mut self, out: &mut Vec<GroupAction<C>>) {
        let promised = self.replica.status().promised;
        let recorded = match self.recorded {
            Some(recorded) => recorded,
            None if self.replica.is_rejoining() => return,
            None => Ballot::ZERO,
        };
        if promised > recorded {
            self.recorded = Some(promised);
            out.push(GroupAction::RecordPromise(promised));
        }
    }

    /// After every step: a leader that stepped down answers what it can no
    /// longer drive; a snapshot may be due; a rebuild may be over.
    fn after_step(&mut self, out: &mut Vec<GroupAction<C>>) {
        let status = self.replica.status();
        if self.was_leading && !status.leading {
            // Commands still waiting here sit in slots this node no longer
            // drives: whoever leads next may choose them or fill the slots
            // with no-ops, and nothing here would ever answer the latter.
            let leader = status.leader.filter(|l| *l != status.id);
            self.waiters
                .answer_all(ProposeOutcome::InDoubt { leader }, out);
        }
        self.was_leading = status.leading;
        self.compaction.incoming.forget_behind(self.applied);
        self.maybe_snapshot(out);
        self.maybe_end_rebuild(out);
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    /// Applies a chosen slot behind the sessions and answers its waiters.
    fn apply(
        &mut self,
        slot: Slot,
        first_index: LogIndex,
        batch: Batch,
        out: &mut Vec<GroupAction<C>>,
    ) {
        debug_assert_eq!(slot, self.applied, "slots apply in order, once");
        out.push(GroupAction::Applied {
            slot,
            first_index,
            batch: batch.clone(),
        });
        self.compaction.applied_bytes += batch.bytes().len() as u64;
        self.next_index = LogIndex(first_index.0 + u64::from(batch.len()));
        if Membership::is_entry(&batch) {
            // The group's own entry: the state machine never sees it.
            self.applied = slot.next();
            return;
        }
        #[cfg(test)]
        let before = self.faults.forget_sessions.then(|| self.sessions.clone());
        let (waiters, streaming) = (&mut self.waiters, self.streaming);
        apply_batch(
            &mut self.machine,
            &mut self.sessions,
            first_index,
            &batch,
            |applied| {
                if let (Some(data), true) = (applied.data, streaming) {
                    let data = batch.bytes().slice_ref(data);
                    let index = applied.index;
                    out.push(GroupAction::Entry { index, data });
                }
                waiters.answer(applied.client, applied.seq, applied.outcome, out);
            },
        );
        #[cfg(test)]
        if let Some(before) = before {
            self.sessions = before;
        }
        self.applied = slot.next();
    }

    fn on_reply(&mut self, reply: Reply, out: &mut Vec<GroupAction<C>>) {
        match reply {
            Reply::Refused {
                client,
                seq,
                reason,
            } => {
                let refused = ProposeOutcome::Refused(reason);
                self.waiters.answer(client, seq, refused, out);
            }
            Reply::ReadReady { id, commit } => {
                // Commits are applied as they are emitted, so the state
                // already covers every slot below `commit`.
                debug_assert!(self.applied >= commit);
                if let Some((query, caller)) = self.reads.remove(&id) {
                    let value = self.machine.query(&query);
                    out.push(GroupAction::AnswerRead(caller, ReadOutcome::Value(value)));
                }
            }
            Reply::ReadRefused { id, reason } => {
                if let Some((_, caller)) = self.reads.remove(&id) {
                    out.push(GroupAction::AnswerRead(
                        caller,
                        ReadOutcome::Refused(reason),
                    ));
                }
            }
        }
    }

    /// The replica has rejoined: once its joining promise and the snapshot
    /// it installed (if any) are durable, the mark goes and a restart is an
    /// ordinary one. Until then a crash rebuilds again: without the
    /// snapshot file the WAL would hold a promise and none of the chosen
    /// slots below it.
    fn maybe_end_rebuild(&mut self, out: &mut Vec<GroupAction<C>>) {
        if !self.rebuilding || self.replica.is_rejoining() || self.compaction.saving.is_some() {
            return;
        }
        self.rebuilding = false;
        out.push(GroupAction::EndRebuild);
    }

    /// What must hold between steps.
    #[cfg(debug_assertions)]
    fn check_invariants(&self) {
        let commit = self.replica.status().commit;
        assert_eq!(self.applied, commit, "every chosen slot is applied at once");
        assert!(
            self.snapshot <= self.applied,
            "a snapshot of unapplied slots"
        );
    }
}

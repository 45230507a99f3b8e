//! One Multi-Paxos group on a glommio executor: its replica, its WAL, its
//! state machine and its client sessions, driven by one task.
//!
//! ```text
//!  peers ──decoded──┐                      ┌─► Persist  → wal.append
//!  clients ─────────┤   inputs   ┌──────┐  ├─► Sync     → task: wal.sync(), then Persisted
//!  ticker ──────────┼──(channel)─► step ├──┼─► Send     → link (encoded once)
//!  sync tasks ──────┘            └──────┘  ├─► Commit   → sessions → state machine → reply
//!                                          └─► Reply    → waiting proposer / reader
//! ```
//!
//! A failed WAL write or sync stops the group: it is never retried, and
//! nothing waiting on it is acknowledged.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use rkyv::util::AlignedVec;
use synod_wal::{Position, Wal, WalConfig, WalError};
use thiserror::Error;

use super::codec::{
    decode_write, encode_envelope, encode_write, BatchLimits, DecodeError, KIND_WAL_WRITE,
};
use super::state_machine::{Applying, StateMachine};
use crate::protocol::{
    Action, Actions, Ballot, Batch, ClientId, Command, Config, ConfigError, DurableState, Envelope,
    GroupId, Input, LogIndex, NodeId, ReadId, Refusal, Replica, Reply, SessionOutcome, Sessions,
    Slot, SyncId, Write,
};

/// Proposals handed to the replica in one step at most.
const PROPOSALS_PER_STEP_MAX: usize = 4096;

/// Bytes an acceptor write adds around its batch in a WAL frame body.
pub const WRITE_OVERHEAD_BYTES: u64 = 4096;

/// Where a group's messages to its peers go: the transport, or a test link.
pub trait PeerLink {
    /// Queues an encoded message for `to`. False when the peer's queue is
    /// full: the message is dropped and the protocol's resends cover it.
    fn send(&self, to: NodeId, body: AlignedVec) -> bool;
}

/// What a group needs to start.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// The protocol configuration (this replica's id, the members, bounds).
    pub config: Config,
    /// The group's own WAL directory.
    pub wal_dir: PathBuf,
    /// WAL tunables.
    pub wal: WalConfig,
    /// Wall-clock length of one protocol tick.
    pub tick: Duration,
}

/// Why a group stopped or could not start.
#[derive(Debug, Error)]
pub enum GroupError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The WAL failed; fatal.
    #[error("write-ahead log: {0}")]
    Wal(#[from] WalError),
    /// A WAL frame did not decode: the log is corrupt.
    #[error("WAL frame at position {position:?} does not decode: {source}")]
    Corrupt {
        /// The frame.
        position: Position,
        /// Why.
        source: DecodeError,
    },
}

/// How a proposal ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeOutcome {
    /// Applied at `index`; the state machine's reply.
    Applied {
        /// The command's log index.
        index: LogIndex,
        /// What the state machine returned.
        reply: Bytes,
    },
    /// Not taken (not the leader, busy, too large).
    Refused(Refusal),
    /// The session has moved past this sequence number.
    Stale,
    /// The group stopped before an answer.
    Stopped,
}

/// How a linearizable read ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The state machine's answer, after every write acknowledged before.
    Value(Bytes),
    /// Refused (not the leader, busy).
    Refused(Refusal),
    /// The group stopped before an answer.
    Stopped,
}

/// One input to a group's task.
pub enum GroupInput {
    /// A decoded message from a peer.
    Peer(Envelope),
    /// A client command and where to send the outcome.
    Propose(Command, oneshot::Sender<ProposeOutcome>),
    /// A read-only query and where to send the outcome.
    Read(Bytes, oneshot::Sender<ReadOutcome>),
    /// A read-only query answered from local state at once.
    ReadLocal(Bytes, oneshot::Sender<ReadOutcome>),
    /// A sync finished.
    Persisted(SyncId),
    /// A tick passed.
    Tick,
    /// A sync failed: stop.
    Fatal(WalError),
    /// Stop now.
    Stop,
}

/// The handle an embedder uses; cheap to clone within the executor.
#[derive(Clone)]
pub struct GroupHandle {
    inputs: Rc<LocalSender<GroupInput>>,
}

impl GroupHandle {
    /// Proposes `data` as `(client, seq)` and waits until it is applied.
    pub async fn propose(&self, client: ClientId, seq: u64, data: Bytes) -> ProposeOutcome {
        let (tx, rx) = oneshot::channel();
        let command = Command { client, seq, data };
        if self
            .inputs
            .send(GroupInput::Propose(command, tx))
            .await
            .is_err()
        {
            return ProposeOutcome::Stopped;
        }
        rx.await.unwrap_or(ProposeOutcome::Stopped)
    }

    /// A linearizable read of `query` (read-index at the leader).
    pub async fn read(&self, query: Bytes) -> ReadOutcome {
        let (tx, rx) = oneshot::channel();
        if self.inputs.send(GroupInput::Read(query, tx)).await.is_err() {
            return ReadOutcome::Stopped;
        }
        rx.await.unwrap_or(ReadOutcome::Stopped)
    }

    /// Answers `query` from this replica's state as it stands, without
    /// confirming leadership: a stale read, allowed on any replica.
    pub async fn read_local(&self, query: Bytes) -> ReadOutcome {
        let (tx, rx) = oneshot::channel();
        if self
            .inputs
            .send(GroupInput::ReadLocal(query, tx))
            .await
            .is_err()
        {
            return ReadOutcome::Stopped;
        }
        rx.await.unwrap_or(ReadOutcome::Stopped)
    }

    /// Hands a decoded peer message to the group.
    pub async fn deliver(&self, envelope: Envelope) {
        let _ = self.inputs.send(GroupInput::Peer(envelope)).await;
    }

    /// Hands a decoded peer message to the group without waiting; false if
    /// its input queue is full (the message is dropped; Paxos resends).
    pub fn try_deliver(&self, envelope: Envelope) -> bool {
        self.inputs.try_send(GroupInput::Peer(envelope)).is_ok()
    }

    /// Asks the group to stop.
    pub async fn stop(&self) {
        let _ = self.inputs.send(GroupInput::Stop).await;
    }
}

/// Status a group publishes after every step, for displays and tests.
#[derive(Debug, Default)]
pub struct GroupStatus {
    /// Slots applied.
    pub applied: Cell<Slot>,
    /// Whether this replica leads (Phase 1 done).
    pub leading: Cell<bool>,
    /// Who it believes leads.
    pub leader: Cell<Option<NodeId>>,
    /// The highest ballot it promised.
    pub promised: Cell<Ballot>,
}

/// Opens the WAL, recovers the replica and returns the task's future with
/// the group's handle. Spawn the future on the executor that owns the group.
pub async fn start_group<S: StateMachine>(
    options: GroupOptions,
    group: GroupId,
    machine: S,
    link: Rc<dyn PeerLink>,
) -> Result<
    (
        GroupHandle,
        Rc<GroupStatus>,
        impl std::future::Future<Output = Result<(), GroupError>>,
    ),
    GroupError,
> {
    options.config.validate()?;
    if (options.wal.frame_body_bytes_max as u64)
        < u64::from(options.config.batch_bytes_max) + WRITE_OVERHEAD_BYTES
    {
        return Err(GroupError::Config(ConfigError::Invalid {
            field: "wal.frame_body_bytes_max",
            reason: format!("must hold a full batch plus {WRITE_OVERHEAD_BYTES} bytes of record"),
        }));
    }
    let limits = BatchLimits {
        batch_bytes_max: options.config.batch_bytes_max as usize,
        command_bytes_max: options.config.command_bytes_max as usize,
    };
    let (wal, report) = Wal::open(&options.wal_dir, options.wal.clone()).await?;
    if let Some(torn) = &report.torn {
        tracing::warn!(group = group.0, ?torn, "WAL had a torn tail; truncated");
    }
    let writes = read_writes(&wal, limits).await?;
    tracing::info!(
        group = group.0,
        frames = writes.len(),
        "recovered from the WAL"
    );
    let replica = Replica::new(options.config.clone(), DurableState::replay(&writes))?;
    let (tx, rx) = local_channel::new_bounded(1024);
    let inputs = Rc::new(tx);
    let status = Rc::new(GroupStatus::default());
    let mut driver = GroupDriver {
        group,
        replica,
        wal: Rc::new(wal),
        machine,
        sessions: Sessions::default(),
        proposals: HashMap::new(),
        reads: HashMap::new(),
        next_read: 0,
        link,
        inputs: inputs.clone(),
        status: status.clone(),
        actions: Actions::default(),
    };
    driver.apply_recovered();
    let handle = GroupHandle { inputs };
    Ok((handle, status, driver.run(rx, options.tick)))
}

async fn read_writes(wal: &Wal, limits: BatchLimits) -> Result<Vec<Write>, GroupError> {
    let mut writes = Vec::new();
    let mut failure = None;
    wal.read_frames(wal.first_position(), |position, kind, body| {
        if failure.is_some() || kind != KIND_WAL_WRITE {
            return;
        }
        // Recovery copies each body once into an aligned buffer it owns, so
        // the batches can keep slices of it.
        let mut aligned = AlignedVec::<16>::new();
        aligned.extend_from_slice(body);
        let frame = Bytes::from_owner(aligned);
        match decode_write(&frame, &frame, limits) {
            Ok(write) => writes.push(write),
            Err(source) => failure = Some(GroupError::Corrupt { position, source }),
        }
    })
    .await?;
    match failure {
        Some(error) => Err(error),
        None => Ok(writes),
    }
}

struct GroupDriver<S> {
    group: GroupId,
    replica: Replica,
    wal: Rc<Wal>,
    machine: S,
    /// Per client: last sequence applied, with its index and reply.
    sessions: Sessions<(LogIndex, Bytes)>,
    /// Proposals made here that wait for their slot to apply.
    proposals: HashMap<(ClientId, u64), oneshot::Sender<ProposeOutcome>>,
    reads: HashMap<ReadId, (Bytes, oneshot::Sender<ReadOutcome>)>,
    next_read: u64,
    link: Rc<dyn PeerLink>,
    inputs: Rc<LocalSender<GroupInput>>,
    status: Rc<GroupStatus>,
    actions: Actions,
}

impl<S: StateMachine> GroupDriver<S> {
    async fn run(
        mut self,
        inbox: LocalReceiver<GroupInput>,
        tick: Duration,
    ) -> Result<(), GroupError> {
        let ticker = self.inputs.clone();
        let ticks = glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(tick).await;
                if ticker.send(GroupInput::Tick).await.is_err() {
                    return;
                }
            }
        });
        let result = self.serve(inbox).await;
        drop(ticks);
        self.stop_waiters();
        result
    }

    async fn serve(&mut self, inbox: LocalReceiver<GroupInput>) -> Result<(), GroupError> {
        let mut held: Option<GroupInput> = None;
        loop {
            let input = match held.take() {
                Some(input) => input,
                None => match inbox.recv().await {
                    Some(input) => input,
                    None => return Ok(()),
                },
            };
            let input = match input {
                GroupInput::Peer(envelope) => Input::Message(envelope),
                GroupInput::Propose(command, reply) => {
                    let (commands, next) = self.gather_proposals(command, reply, &inbox).await;
                    held = next;
                    Input::ProposeBatch(commands)
                }
                GroupInput::Read(query, reply) => {
                    self.next_read += 1;
                    let id = ReadId(self.next_read);
                    self.reads.insert(id, (query, reply));
                    Input::Read(id)
                }
                GroupInput::ReadLocal(query, reply) => {
                    let _ = reply.send(ReadOutcome::Value(self.machine.query(&query)));
                    continue;
                }
                GroupInput::Persisted(sync) => Input::Persisted(sync),
                GroupInput::Tick => Input::Tick,
                GroupInput::Fatal(error) => return Err(error.into()),
                GroupInput::Stop => return Ok(()),
            };
            if let Err(error) = self.replica.step(input, &mut self.actions) {
                tracing::debug!(group = self.group.0, %error, "input dropped");
            }
            self.carry_out()?;
        }
    }

    /// Takes every proposal already queued behind `first`, so that commands
    /// that arrived together share slots; returns them and the first other
    /// input met, which must be handled next.
    async fn gather_proposals(
        &mut self,
        first: Command,
        reply: oneshot::Sender<ProposeOutcome>,
        inbox: &LocalReceiver<GroupInput>,
    ) -> (Vec<Command>, Option<GroupInput>) {
        self.proposals.insert((first.client, first.seq), reply);
        let mut commands = vec![first];
        while self.inputs.len() > 0 && commands.len() < PROPOSALS_PER_STEP_MAX {
            match inbox.recv().await {
                Some(GroupInput::Propose(command, reply)) => {
                    self.proposals.insert((command.client, command.seq), reply);
                    commands.push(command);
                }
                other => return (commands, other),
            }
        }
        (commands, None)
    }

    fn carry_out(&mut self) -> Result<(), GroupError> {
        let actions: Vec<Action> = self.actions.drain().collect();
        for action in actions {
            match action {
                Action::Persist(write) => {
                    self.wal.append(KIND_WAL_WRITE, &encode_write(&write))?;
                }
                Action::Sync(sync) => self.sync(sync),
                Action::Send(envelope) => {
                    let to = envelope.to;
                    if !self.link.send(to, encode_envelope(self.group, &envelope)) {
                        tracing::trace!(
                            group = self.group.0,
                            to = to.0,
                            "peer queue full; dropped"
                        );
                    }
                }
                Action::Commit {
                    slot,
                    first_index,
                    batch,
                } => self.apply(slot, first_index, &batch),
                Action::Reply(reply) => self.answer(reply),
                Action::SendSnapshot { to } => {
                    tracing::warn!(
                        group = self.group.0,
                        to = to.0,
                        "peer needs a snapshot; not yet supported"
                    );
                }
            }
        }
        self.publish_status();
        Ok(())
    }

    /// Publishes the replica's status, logging one line per change of role.
    fn publish_status(&self) {
        let status = self.replica.status();
        let (was_leading, had_leader) = (self.status.leading.get(), self.status.leader.get());
        let group = self.group.0;
        if status.leading && !was_leading {
            tracing::info!(group, ballot = %status.promised, commit = status.commit.0, "elected: leading");
        } else if was_leading && !status.leading {
            tracing::info!(group, ballot = %status.promised, "stepped down");
        }
        if status.leader != had_leader {
            match status.leader {
                Some(leader) => tracing::info!(group, leader = leader.0, "leader change"),
                None => {
                    tracing::info!(group, round = status.election_round, "looking for a leader")
                }
            }
        }
        self.status.leading.set(status.leading);
        self.status.leader.set(status.leader);
        self.status.promised.set(status.promised);
    }

    /// Group commit: the WAL folds every sync requested while one is in
    /// flight into the next write + fdatasync.
    fn sync(&self, sync: SyncId) {
        let (wal, inputs) = (self.wal.clone(), self.inputs.clone());
        glommio::spawn_local(async move {
            // The test-only broken build (feature `unsafe-ack-before-fsync`,
            // docs/chaos.md): report the write durable now, write it later,
            // so a crash in between loses acknowledged commands.
            let unsafe_ack = cfg!(feature = "unsafe-ack-before-fsync");
            if unsafe_ack {
                let _ = inputs.send(GroupInput::Persisted(sync)).await;
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            let input = match wal.sync().await {
                Ok(_) if unsafe_ack => return,
                Ok(_) => GroupInput::Persisted(sync),
                Err(error) => GroupInput::Fatal(error),
            };
            let _ = inputs.send(input).await;
        })
        .detach();
    }

    /// Rebuilds the state machine from the slots the WAL's commit record
    /// says are chosen (the state machine lives in memory).
    fn apply_recovered(&mut self) {
        let committed: Vec<(Slot, LogIndex, Batch)> = self
            .replica
            .committed()
            .map(|(slot, index, batch)| (slot, index, batch.clone()))
            .collect();
        if let Some((last, _, _)) = committed.last() {
            tracing::info!(
                group = self.group.0,
                slots = last.0 + 1,
                "re-applied the committed log"
            );
        }
        for (slot, index, batch) in committed {
            self.apply(slot, index, &batch);
        }
    }

    fn apply(&mut self, slot: Slot, first_index: LogIndex, batch: &Batch) {
        for (offset, command) in batch.iter().enumerate() {
            let index = LogIndex(first_index.0 + offset as u64);
            let outcome = match self.sessions.check(command.client, command.seq) {
                SessionOutcome::Fresh => {
                    let reply = self
                        .machine
                        .apply(&[Applying {
                            index,
                            data: command.data,
                        }])
                        .pop()
                        .unwrap_or_default();
                    self.sessions.record(
                        command.client,
                        command.seq,
                        index,
                        (index, reply.clone()),
                    );
                    ProposeOutcome::Applied { index, reply }
                }
                SessionOutcome::Duplicate {
                    reply: (index, reply),
                    ..
                } => ProposeOutcome::Applied {
                    index: *index,
                    reply: reply.clone(),
                },
                SessionOutcome::Stale => ProposeOutcome::Stale,
            };
            if let Some(waiter) = self.proposals.remove(&(command.client, command.seq)) {
                let _ = waiter.send(outcome);
            }
        }
        self.status.applied.set(slot.next());
    }

    fn answer(&mut self, reply: Reply) {
        match reply {
            Reply::Refused {
                client,
                seq,
                reason,
            } => {
                if let Some(waiter) = self.proposals.remove(&(client, seq)) {
                    let _ = waiter.send(ProposeOutcome::Refused(reason));
                }
            }
            Reply::ReadReady { id, commit } => {
                // Commits are applied as they are emitted, so the state
                // already covers every slot below `commit`.
                debug_assert!(self.status.applied.get() >= commit);
                if let Some((query, waiter)) = self.reads.remove(&id) {
                    let _ = waiter.send(ReadOutcome::Value(self.machine.query(&query)));
                }
            }
            Reply::ReadRefused { id, reason } => {
                if let Some((_, waiter)) = self.reads.remove(&id) {
                    let _ = waiter.send(ReadOutcome::Refused(reason));
                }
            }
        }
    }

    fn stop_waiters(&mut self) {
        for (_, waiter) in self.proposals.drain() {
            let _ = waiter.send(ProposeOutcome::Stopped);
        }
        for (_, (_, waiter)) in self.reads.drain() {
            let _ = waiter.send(ReadOutcome::Stopped);
        }
    }
}

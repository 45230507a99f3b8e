//! One Multi-Paxos group on a glommio executor: its replica, its WAL, its
//! state machine and its client sessions, driven by one task.
//!
//! ```text
//!  peers ──decoded──┐                      ┌─► Persist  → wal.append
//!  clients ─────────┤   inputs   ┌──────┐  ├─► Sync     → task: wal.sync(), then Persisted
//!  ticker ──────────┼──(channel)─► step ├──┼─► Send     → link (encoded once)
//!  sync tasks ──────┘            └──────┘  ├─► Commit   → sessions → state machine → reply
//!                                          ├─► Reply    → waiting proposer / reader
//!                                          └─► SendSnapshot → chunks to the peer
//! ```
//!
//! A failed WAL write or sync stops the group: it is never retried, and
//! nothing waiting on it is acknowledged. Every `snapshot.every_slots` applied
//! slots the group snapshots its state machine and sessions (`snapshot.rs`),
//! then drops the log and the WAL segments below, so memory and disk stay
//! bounded under an endless load.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use rkyv::util::AlignedVec;
use synod_wal::{Position, Wal, WalConfig, WalError};
use thiserror::Error;

use super::apply::apply_batch;
use super::codec::{
    decode_write, encode_envelope, encode_write, BatchLimits, DecodeError, KIND_PEER_MESSAGE,
    KIND_WAL_WRITE,
};
use super::metrics::GroupMetrics;
use super::snapshot::{
    self, chunks, encode_chunk, GroupSessions, Snapshot, SnapshotChunk, SnapshotError,
    SnapshotPolicy, Transfers, KIND_SNAPSHOT_CHUNK,
};
use super::state_machine::StateMachine;
use super::waiters::{Answer, Waiters};
use super::window::PipelineWindow;
use crate::protocol::{
    Action, Actions, Ballot, Batch, ClientId, Command, Config, ConfigError, DurableState, Envelope,
    GroupId, Input, LogIndex, Message, NodeId, ReadId, Refusal, Replica, Reply, Sessions, Slot,
    SyncId, Write, REQUEST_COMMANDS_MAX,
};

/// How long a snapshot transfer may wait on a full peer queue before it
/// gives up (the follower asks again and the transfer starts over).
const SNAPSHOT_SEND_PATIENCE: Duration = Duration::from_secs(5);

/// Proposals handed to the replica in one step at most.
const PROPOSALS_PER_STEP_MAX: usize = 4096;

/// Bytes an acceptor write adds around its batch in a WAL frame body.
pub const WRITE_OVERHEAD_BYTES: u64 = 4096;

/// Where a group's messages to its peers go: the transport, or a test link.
pub trait PeerLink {
    /// Queues a frame body of `kind` for `to`. False when the peer's queue
    /// is full: the frame is dropped and the protocol's resends cover it.
    fn send_frame(&self, to: NodeId, kind: u16, body: AlignedVec) -> bool;

    /// Queues an encoded protocol message for `to`.
    fn send(&self, to: NodeId, body: AlignedVec) -> bool {
        self.send_frame(to, KIND_PEER_MESSAGE, body)
    }

    /// Whether a connection to `to` is up; a link that cannot tell says yes.
    fn is_connected(&self, _to: NodeId) -> bool {
        true
    }
}

/// Ticks the connection to our leader must stay down before the replica is
/// told (one tick can be a reconnect in progress).
const LEADER_UNREACHABLE_TICKS: u32 = 2;

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
    /// When to snapshot and compact.
    pub snapshot: SnapshotPolicy,
    /// Where the group counts what it does.
    pub metrics: GroupMetrics,
    /// If the group has no state at all (no WAL frame, no snapshot), its
    /// disk was lost: rebuild from the peers before voting again
    /// ([`Replica::rejoining`]). A group with state ignores it.
    pub rejoin: bool,
}

/// The file in a group's WAL directory that marks a rebuild in progress:
/// written before the rebuild's first write, removed once the promise that
/// ends it is durable. A group restarted with it rebuilds again.
pub const REBUILDING_FILE: &str = "REBUILDING";

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
    /// The snapshot file is unreadable or corrupt, or could not be written
    /// (fatal, like a failed WAL sync).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The state machine refused the group's own snapshot file.
    #[error("the state machine refused the snapshot at {path}: {reason}")]
    Restore {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The group's task panicked (in the state machine, say): the group is
    /// gone, and the node stops with this instead of hanging.
    #[error("panicked: {0}")]
    Panicked(String),
    /// Part of the group's durable state is missing (its snapshot or its
    /// WAL, as a copy of only some files leaves it): starting would forget
    /// promises. Nothing was changed.
    #[error(
        "{0}; refusing to start: rebuild this replica from its peers (empty its data \
         directory and start it with --rejoin)"
    )]
    PartialState(String),
    /// The rebuild marker could not be written or removed.
    #[error("rebuild marker {path}: {source}")]
    Marker {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
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
    /// The session was evicted from the bounded table, and the command may
    /// be the retry of one applied before: not applied. If this was the
    /// request's first sending, none of it was applied: send it again as
    /// sequence `resume_at` and count on from there. If it had been sent
    /// before, its outcome is unknown. See `protocol::sessions`.
    Expired {
        /// Where the session may start again.
        resume_at: u64,
    },
    /// The group stopped before an answer.
    Stopped,
    /// This node stopped leading while the command was in flight: it may
    /// still be chosen (under the next leader) or not. Retry it with the
    /// same `(client, seq)` where the group is led now; the session
    /// applies it once and answers the retry with the first outcome.
    InDoubt {
        /// Who this node believed led when it stepped down, if anyone else.
        leader: Option<NodeId>,
    },
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

/// What a subscriber to a group's commits receives, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    /// A command was applied at `index`.
    Entry {
        /// Its log index.
        index: LogIndex,
        /// The command as proposed.
        data: Bytes,
    },
    /// The state jumped to a snapshot from a peer: the entries below
    /// `next_index` that were not streamed are in the state machine only.
    Snapshot {
        /// The log index of the next command.
        next_index: LogIndex,
    },
}

/// Committed entries a subscriber may fall behind by before it is dropped.
pub const SUBSCRIBER_LAG_MAX: usize = 65_536;

/// One input to a group's task.
pub enum GroupInput {
    /// A decoded message from a peer.
    Peer(Envelope),
    /// A client command and where to send the outcome.
    Propose(Command, oneshot::Sender<ProposeOutcome>),
    /// Commands that must reach the log in this order (one client's
    /// consecutive sequence numbers), each with where to send its outcome.
    ProposeMany(Vec<Command>, oneshot::Sender<Vec<ProposeOutcome>>),
    /// A read-only query and where to send the outcome.
    Read(Bytes, oneshot::Sender<ReadOutcome>),
    /// A read-only query answered from local state at once.
    ReadLocal(Bytes, oneshot::Sender<ReadOutcome>),
    /// A sync finished, after this long (`None`: not measured).
    Persisted(SyncId, Option<Duration>),
    /// Stream every command applied from now on to this channel.
    Subscribe(crossbeam_channel::Sender<Committed>),
    /// A piece of a snapshot from a peer.
    SnapshotChunk(NodeId, SnapshotChunk),
    /// A snapshot file is durable: compact below it.
    SnapshotSaved {
        /// The snapshot's slot.
        upto: Slot,
        /// The file's contents.
        encoded: Bytes,
        /// The WAL position the state was captured at: every write from
        /// there on (a later promise among them) must stay.
        captured_at: Position,
    },
    /// Writing a snapshot file failed: stop.
    SnapshotFailed(SnapshotError),
    /// A snapshot up to this slot could not be encoded (logged): the log
    /// stays as it is, and the next try waits for the policy to come due
    /// again from this slot.
    SnapshotSkipped(Slot),
    /// A tick passed.
    Tick,
    /// A sync failed: stop.
    Fatal(WalError),
    /// The rebuild marker could not be removed: stop (a restart rebuilds
    /// again, which is safe).
    RebuildFailed(GroupError),
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
    /// Client 0 has no session: the group numbers such a command itself
    /// (`seq` is ignored), and a retry of it may apply twice. A command
    /// proposed again while it still waits here takes over the wait; the
    /// earlier proposal is answered `Stopped`.
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

    /// Proposes `commands` in this order, as one input (so they share a
    /// slot and no other proposal comes between them); waits for them all.
    /// One answer for all of them: no channel per command. A command in
    /// them already waiting from an earlier proposal takes over its wait
    /// (that proposal is answered `Stopped` for it alone).
    ///
    /// At most [`REQUEST_COMMANDS_MAX`] commands (more are refused
    /// `TooLarge`); a session's sequence numbers follow the rules of
    /// `protocol::sessions` (from 1 or a `resume_at`, one per command, the
    /// next request once this one is answered), or its retries may apply
    /// twice once its session has been evicted.
    pub async fn propose_many(&self, commands: Vec<Command>) -> Vec<ProposeOutcome> {
        let count = commands.len();
        if count as u64 > REQUEST_COMMANDS_MAX {
            return vec![ProposeOutcome::Refused(Refusal::TooLarge); count];
        }
        let (tx, rx) = oneshot::channel();
        if self
            .inputs
            .send(GroupInput::ProposeMany(commands, tx))
            .await
            .is_err()
        {
            return vec![ProposeOutcome::Stopped; count];
        }
        rx.await
            .unwrap_or_else(|_| vec![ProposeOutcome::Stopped; count])
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

    /// Hands a piece of a snapshot from `from` to the group without waiting;
    /// false if its input queue is full (the transfer starts over later).
    pub fn try_deliver_chunk(&self, from: NodeId, chunk: SnapshotChunk) -> bool {
        self.inputs
            .try_send(GroupInput::SnapshotChunk(from, chunk))
            .is_ok()
    }

    /// Hands a piece of a snapshot from `from` to the group, waiting up to
    /// `patience` for room in its input queue: unlike a peer message, whose
    /// loss Paxos repairs by resending it, a lost chunk makes the whole
    /// transfer start over, and under load a queue is seldom empty for all
    /// of a large snapshot's chunks. False if there was no room in time or
    /// the group stopped.
    pub async fn deliver_chunk(
        &self,
        from: NodeId,
        chunk: SnapshotChunk,
        patience: Duration,
    ) -> bool {
        let send = std::pin::pin!(self.inputs.send(GroupInput::SnapshotChunk(from, chunk)));
        let waited = std::pin::pin!(glommio::timer::sleep(patience));
        match futures_util::future::select(send, waited).await {
            futures_util::future::Either::Left((sent, _)) => sent.is_ok(),
            futures_util::future::Either::Right(_) => false,
        }
    }

    /// Streams every command applied from now on, in log order. A
    /// subscriber more than [`SUBSCRIBER_LAG_MAX`] entries behind is dropped
    /// (its receiver disconnects): it reads the state and subscribes again.
    pub async fn subscribe(&self) -> crossbeam_channel::Receiver<Committed> {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_LAG_MAX);
        let _ = self.inputs.send(GroupInput::Subscribe(tx)).await;
        rx
    }

    /// Asks the group to stop.
    pub async fn stop(&self) {
        let _ = self.inputs.send(GroupInput::Stop).await;
    }
}

/// A group's state as one node sees it, at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusView {
    /// Slots applied to the state machine (those below this one).
    pub applied: Slot,
    /// Whether this replica leads (Phase 1 done).
    pub leading: bool,
    /// Who it believes leads.
    pub leader: Option<NodeId>,
    /// The highest ballot it promised.
    pub promised: Ballot,
    /// The slot of its latest durable snapshot (0: none).
    pub snapshot: Slot,
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
    /// The slot of its latest durable snapshot (0: none).
    pub snapshot: Cell<Slot>,
    /// Snapshots installed from a peer.
    pub snapshots_installed: Cell<u64>,
}

impl GroupStatus {
    /// The status as it stands.
    pub fn view(&self) -> StatusView {
        StatusView {
            applied: self.applied.get(),
            leading: self.leading.get(),
            leader: self.leader.get(),
            promised: self.promised.get(),
            snapshot: self.snapshot.get(),
        }
    }
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
    let snapshot_path = snapshot::snapshot_path(&options.wal_dir);
    let recovered = Recovered::load(&snapshot_path, machine)?;
    let wal_existed = options
        .wal_dir
        .join(synod_wal::layout::META_FILE_NAME)
        .exists();
    if recovered.encoded.is_some() && !wal_existed {
        return Err(GroupError::PartialState(format!(
            "{} holds a snapshot but {} no WAL: what this acceptor promised and \
             accepted after the snapshot is gone",
            snapshot_path.display(),
            options.wal_dir.display()
        )));
    }
    let (wal, report) = Wal::open(&options.wal_dir, options.wal.clone()).await?;
    if recovered.encoded.is_none() && wal.first_position() > Position(0) {
        return Err(GroupError::PartialState(format!(
            "the WAL in {} starts at frame {} (its head was removed once a snapshot \
             was durable) but {} is missing: the promises and values before it are gone",
            options.wal_dir.display(),
            wal.first_position().0,
            snapshot_path.display()
        )));
    }
    if let Some(torn) = &report.torn {
        tracing::warn!(group = group.0, ?torn, "WAL had a torn tail; truncated");
    }
    let writes = read_writes(&wal, limits).await?;
    tracing::info!(
        group = group.0,
        frames = writes.len(),
        snapshot = recovered.base.log.start().0,
        "recovered from the snapshot and the WAL"
    );
    let durable = recovered
        .base
        .clone()
        .replay_onto(writes.iter().map(|(_, w)| w));
    let marker = options.wal_dir.join(REBUILDING_FILE);
    let lost = recovered.encoded.is_none() && writes.is_empty();
    let rebuilding = marker.exists() || (options.rejoin && lost);
    let replica = if rebuilding {
        // Durable before the rebuild writes anything: a crash from here on
        // until it ends restarts the rebuild, never a half-rebuilt acceptor.
        write_marker(&marker)?;
        tracing::warn!(
            group = group.0,
            "rebuilding from the peers (this replica's disk was lost): it votes for nothing until every peer has answered and a leader above their promises has shared what it recovered"
        );
        Replica::rejoining(options.config.clone(), durable)?
    } else {
        Replica::new(options.config.clone(), durable)?
    };
    let (tx, rx) = local_channel::new_bounded(1024);
    let inputs = Rc::new(tx);
    let status = Rc::new(GroupStatus::default());
    let snapshot_upto = recovered.base.log.start();
    status.snapshot.set(snapshot_upto);
    // The restored state covers the snapshot's slots; the replayed ones
    // follow in apply_recovered.
    status.applied.set(snapshot_upto);
    let mut driver = GroupDriver {
        group,
        replica,
        wal: Rc::new(wal),
        machine: recovered.machine,
        sessions: recovered.sessions,
        proposals: Waiters::default(),
        reads: HashMap::new(),
        next_read: 0,
        anonymous_seq: rand::random(),
        link,
        inputs: inputs.clone(),
        status: status.clone(),
        actions: Actions::default(),
        snapshots: Snapshots {
            policy: options.snapshot,
            path: snapshot_path,
            latest: recovered.encoded.map(|e| (snapshot_upto, Bytes::from(e))),
            saving: false,
            applied_bytes: 0,
            tried_upto: Slot(0),
            paced_bytes: 0,
            taken_at: Instant::now(),
            applied_next_index: recovered.base.start_index,
            accept_positions: accept_positions(&writes),
            sending: Rc::default(),
            incoming: Transfers::default(),
        },
        metrics: options.metrics,
        subscribers: Vec::new(),
        leader_down_ticks: 0,
        leader_link: (None, false),
        rebuild_marker: rebuilding.then_some(marker),
        window: PipelineWindow::new(options.config.pipeline_max),
    };
    driver.apply_recovered();
    // The pace follows the live load, not the replay.
    driver.snapshots.restart_pace();
    let handle = GroupHandle { inputs };
    Ok((handle, status, driver.run(rx, options.tick)))
}

/// What a restart starts from: the snapshot's state, or an empty one.
struct Recovered<S> {
    base: DurableState,
    machine: S,
    sessions: GroupSessions,
    encoded: Option<Vec<u8>>,
}

impl<S: StateMachine> Recovered<S> {
    fn load(path: &std::path::Path, mut machine: S) -> Result<Recovered<S>, GroupError> {
        let Some((snapshot, encoded)) = snapshot::load(path)? else {
            return Ok(Recovered {
                base: DurableState::default(),
                machine,
                sessions: Sessions::default(),
                encoded: None,
            });
        };
        machine
            .restore(&snapshot.machine)
            .map_err(|reason| GroupError::Restore {
                path: path.to_owned(),
                reason,
            })?;
        Ok(Recovered {
            base: DurableState::from_snapshot(
                snapshot.upto,
                snapshot.next_index,
                snapshot.promised,
            ),
            machine,
            sessions: snapshot.sessions,
            encoded: Some(encoded),
        })
    }
}

fn write_marker(path: &std::path::Path) -> Result<(), GroupError> {
    let fail = |source| GroupError::Marker {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::create(path).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    snapshot::sync_parent_dir(path).map_err(fail)
}

fn remove_marker(path: &std::path::Path) -> Result<(), GroupError> {
    let fail = |source| GroupError::Marker {
        path: path.to_owned(),
        source,
    };
    std::fs::remove_file(path).map_err(fail)?;
    snapshot::sync_parent_dir(path).map_err(fail)
}

/// Where each slot's latest accepted value sits in the WAL.
fn accept_positions(writes: &[(Position, Write)]) -> BTreeMap<Slot, Position> {
    writes
        .iter()
        .filter_map(|(position, write)| match write {
            Write::Accept { slot, .. } => Some((*slot, *position)),
            _ => None,
        })
        .collect()
}

async fn read_writes(wal: &Wal, limits: BatchLimits) -> Result<Vec<(Position, Write)>, GroupError> {
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
            Ok(write) => writes.push((position, write)),
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
    sessions: Sessions<Bytes>,
    /// Proposals made here that wait for their slot to apply.
    proposals: Waiters,
    reads: HashMap<ReadId, (Bytes, oneshot::Sender<ReadOutcome>)>,
    next_read: u64,
    /// The next sequence number given to a proposal without a session
    /// (client 0), which the sessions ignore: numbered here so that its
    /// waiter is told its own outcome, not that of another such proposal
    /// waiting at the same time. Random from the start, so that a client-0
    /// command proposed by another leader, or before a restart, is all but
    /// sure not to match one waiting here.
    anonymous_seq: u64,
    link: Rc<dyn PeerLink>,
    inputs: Rc<LocalSender<GroupInput>>,
    status: Rc<GroupStatus>,
    actions: Actions,
    snapshots: Snapshots,
    metrics: GroupMetrics,
    subscribers: Vec<crossbeam_channel::Sender<Committed>>,
    /// Consecutive ticks the connection to our leader has been down.
    leader_down_ticks: u32,
    /// The leader whose connection is watched, and whether it was ever up.
    leader_link: (Option<NodeId>, bool),
    /// While rebuilding after disk loss: the marker to remove once rejoined.
    rebuild_marker: Option<PathBuf>,
    /// Chooses the pipeline window from measured rounds and fsyncs.
    window: PipelineWindow,
}

/// Hands `committed` to every subscriber; one that has fallen too far
/// behind, or has gone, is dropped.
fn publish(
    group: GroupId,
    subscribers: &mut Vec<crossbeam_channel::Sender<Committed>>,
    committed: Committed,
) {
    if subscribers.is_empty() {
        return;
    }
    subscribers.retain(|subscriber| {
        let kept = subscriber.try_send(committed.clone()).is_ok();
        if !kept {
            tracing::info!(
                group = group.0,
                "commit subscriber gone or lagging; dropped"
            );
        }
        kept
    });
}

/// Why a snapshot was not saved.
enum Unsaved {
    /// It could not be encoded: logged, the log stays uncompacted.
    Encoding(SnapshotError),
    /// The file could not be written: fatal.
    Writing(SnapshotError),
}

/// A group's snapshot bookkeeping.
struct Snapshots {
    policy: SnapshotPolicy,
    path: PathBuf,
    /// The latest durable snapshot, encoded, for followers that need it.
    latest: Option<(Slot, Bytes)>,
    /// A snapshot file is being written.
    saving: bool,
    /// Command bytes applied since the latest snapshot.
    applied_bytes: u64,
    /// The slot of the latest snapshot that could not be encoded.
    tried_upto: Slot,
    /// Command bytes applied since `taken_at`, for the write pace.
    paced_bytes: u64,
    /// When the latest snapshot was taken (or the group started).
    taken_at: Instant,
    /// The log index of the next command to apply.
    applied_next_index: LogIndex,
    /// Where each slot's latest accepted value sits in the WAL: the WAL
    /// frames below the lowest position of the slots a snapshot keeps may go.
    accept_positions: BTreeMap<Slot, Position>,
    /// Peers a snapshot is on its way to.
    sending: Rc<RefCell<BTreeSet<NodeId>>>,
    /// Snapshots arriving from peers, one transfer per sender.
    incoming: Transfers,
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
                    let mut commands = Vec::new();
                    self.take_proposal(command, reply, &mut commands);
                    held = self.gather_proposals(&mut commands, &inbox).await;
                    Input::ProposeBatch(commands)
                }
                GroupInput::ProposeMany(first, reply) => {
                    let mut commands = Vec::new();
                    self.take_proposals(first, reply, &mut commands);
                    held = self.gather_proposals(&mut commands, &inbox).await;
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
                GroupInput::Persisted(sync, took) => {
                    if let Some(took) = took {
                        self.window.on_fsync(took);
                    }
                    Input::Persisted(sync)
                }
                GroupInput::Tick => {
                    self.check_leader_link();
                    Input::Tick
                }
                GroupInput::Subscribe(subscriber) => {
                    self.subscribers.push(subscriber);
                    continue;
                }
                GroupInput::SnapshotChunk(from, chunk) => {
                    self.on_snapshot_chunk(from, chunk);
                    continue;
                }
                GroupInput::SnapshotSaved {
                    upto,
                    encoded,
                    captured_at,
                } => {
                    self.on_snapshot_saved(upto, encoded, captured_at);
                    self.maybe_end_rebuild();
                    continue;
                }
                GroupInput::SnapshotFailed(error) => return Err(error.into()),
                GroupInput::SnapshotSkipped(upto) => {
                    self.snapshots.saving = false;
                    self.snapshots.tried_upto = upto;
                    continue;
                }
                GroupInput::Fatal(error) => return Err(error.into()),
                GroupInput::RebuildFailed(error) => return Err(error),
                GroupInput::Stop => return Ok(()),
            };
            if let Err(error) = self.replica.step(input, &mut self.actions) {
                tracing::debug!(group = self.group.0, %error, "input dropped");
            }
            self.carry_out()?;
        }
    }

    /// Takes every proposal already queued behind those in `commands`, so
    /// that commands that arrived together share slots; returns the first
    /// other input met, which must be handled next.
    ///
    /// The protocol takes a session's adjacent commands in one step as one
    /// request, so a proposal of the session whose command ends `commands`
    /// (a retry of a request still queued, say) waits for the next step:
    /// joined, the two would be refused as one request too large, or
    /// together, for what either alone may not deserve.
    async fn gather_proposals(
        &mut self,
        commands: &mut Vec<Command>,
        inbox: &LocalReceiver<GroupInput>,
    ) -> Option<GroupInput> {
        while self.inputs.len() > 0 && commands.len() < PROPOSALS_PER_STEP_MAX {
            let input = inbox.recv().await;
            let session = |c: &Command| (c.client != ClientId(0)).then_some(c.client);
            let follows_its_session = |first: Option<&Command>| {
                let last = commands.last().and_then(session);
                last.is_some() && first.and_then(session) == last
            };
            match input {
                Some(GroupInput::Propose(command, reply))
                    if !follows_its_session(Some(&command)) =>
                {
                    self.take_proposal(command, reply, commands)
                }
                Some(GroupInput::ProposeMany(more, reply))
                    if !follows_its_session(more.first()) =>
                {
                    self.take_proposals(more, reply, commands)
                }
                other => return other,
            }
        }
        None
    }

    fn take_proposal(
        &mut self,
        command: Command,
        reply: oneshot::Sender<ProposeOutcome>,
        commands: &mut Vec<Command>,
    ) {
        let command = self.numbered(command);
        let now = Instant::now();
        self.proposals
            .wait(std::slice::from_ref(&command), Answer::One(reply), now);
        commands.push(command);
    }

    /// One request's commands, answered together when the last is done.
    fn take_proposals(
        &mut self,
        proposals: Vec<Command>,
        reply: oneshot::Sender<Vec<ProposeOutcome>>,
        commands: &mut Vec<Command>,
    ) {
        let proposals: Vec<Command> = proposals.into_iter().map(|c| self.numbered(c)).collect();
        self.proposals
            .wait(&proposals, Answer::Many(reply), Instant::now());
        commands.extend(proposals);
    }

    /// `command`, with a sequence number of its own if it has no session.
    fn numbered(&mut self, mut command: Command) -> Command {
        if command.client == ClientId(0) {
            command.seq = self.anonymous_seq;
            self.anonymous_seq = self.anonymous_seq.wrapping_add(1);
        }
        command
    }

    fn carry_out(&mut self) -> Result<(), GroupError> {
        let actions: Vec<Action> = self.actions.drain().collect();
        let now = Instant::now();
        for action in actions {
            match action {
                Action::Persist(write) => {
                    let body = encode_write(&write);
                    self.metrics.wal_bytes.inc_by(body.len() as u64);
                    let position = self.wal.append(KIND_WAL_WRITE, &body)?;
                    if let Write::Accept { slot, .. } = write {
                        self.snapshots.accept_positions.insert(slot, position);
                    }
                }
                Action::Sync(sync) => self.sync(sync),
                Action::Send(envelope) => {
                    if let Message::Accept(accept) = &envelope.msg {
                        self.window.on_accept_sent(accept.slot, now);
                    }
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
                } => {
                    self.window.on_chosen(slot, now);
                    self.apply(slot, first_index, &batch);
                }
                Action::Reply(reply) => self.answer(reply),
                Action::SendSnapshot { to } => self.send_snapshot(to),
            }
        }
        self.publish_status();
        self.maybe_snapshot();
        self.maybe_end_rebuild();
        Ok(())
    }

    /// The replica has rejoined: once its joining promise and the snapshot
    /// it installed (if any) are durable, the marker goes and a restart is
    /// an ordinary one. Until then a crash rebuilds again: without the
    /// snapshot file the WAL would hold a promise and none of the chosen
    /// slots below it.
    fn maybe_end_rebuild(&mut self) {
        if self.replica.is_rejoining() || self.snapshots.saving {
            return;
        }
        let Some(marker) = self.rebuild_marker.take() else {
            return;
        };
        let (wal, inputs, group) = (self.wal.clone(), self.inputs.clone(), self.group.0);
        let promised = self.replica.status().promised;
        glommio::spawn_local(async move {
            let failure = match wal.sync().await {
                Ok(_) => remove_marker(&marker).err().map(GroupInput::RebuildFailed),
                Err(error) => Some(GroupInput::Fatal(error)),
            };
            match failure {
                Some(input) => {
                    let _ = inputs.send(input).await;
                }
                None => {
                    tracing::info!(group, ballot = %promised, "rebuilt and rejoined: voting again")
                }
            }
        })
        .detach();
    }

    /// Publishes the replica's status, logging one line per change of role.
    fn publish_status(&mut self) {
        let status = self.replica.status();
        let (was_leading, had_leader) = (self.status.leading.get(), self.status.leader.get());
        let group = self.group.0;
        if status.leading && !was_leading {
            tracing::info!(group, ballot = %status.promised, commit = status.commit.0, "elected: leading");
        } else if was_leading && !status.leading {
            tracing::info!(group, ballot = %status.promised, "stepped down");
            self.window.forget_rounds();
            // Commands still waiting here sit in slots this node no longer
            // drives: whoever leads next may choose them or fill the slots
            // with no-ops, and nothing here would ever answer the latter.
            let leader = status.leader.filter(|l| *l != self.replica.config().id);
            self.proposals
                .answer_all(ProposeOutcome::InDoubt { leader });
        }
        if status.leader != had_leader {
            match status.leader {
                Some(leader) => {
                    self.metrics.leader_changes.inc();
                    tracing::info!(group, leader = leader.0, "leader change")
                }
                None => {
                    self.metrics.elections.inc();
                    tracing::info!(group, round = status.election_round, "looking for a leader")
                }
            }
        }
        self.metrics.pipeline_depth.set(i64::from(status.inflight));
        let window = self.replica.set_pipeline_window(self.window.slots());
        self.metrics.pipeline_window.set(i64::from(window));
        self.status.leading.set(status.leading);
        self.status.leader.set(status.leader);
        self.status.promised.set(status.promised);
    }

    /// Group commit: the WAL folds every sync requested while one is in
    /// flight into the next write + fdatasync.
    fn sync(&self, sync: SyncId) {
        let (wal, inputs) = (self.wal.clone(), self.inputs.clone());
        let fsync_latency = self.metrics.fsync_latency.clone();
        glommio::spawn_local(async move {
            // The test-only broken build (feature `unsafe-ack-before-fsync`,
            // docs/chaos.md): report the write durable now, write it later,
            // so a crash in between loses acknowledged commands.
            let unsafe_ack = cfg!(feature = "unsafe-ack-before-fsync");
            if unsafe_ack {
                let _ = inputs.send(GroupInput::Persisted(sync, None)).await;
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            let started = Instant::now();
            let synced = wal.sync().await;
            let took = started.elapsed();
            fsync_latency.observe(took.as_secs_f64());
            let input = match synced {
                Ok(_) if unsafe_ack => return,
                // The window wants the disk's cycle, not this wait (up to
                // two cycles under group commit).
                Ok(_) => GroupInput::Persisted(sync, wal.last_commit_time()),
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
        self.snapshots.applied_bytes += batch.bytes().len() as u64;
        self.snapshots.paced_bytes += batch.bytes().len() as u64;
        self.metrics.batch_commands.observe(f64::from(batch.len()));
        self.snapshots.applied_next_index = LogIndex(first_index.0 + u64::from(batch.len()));
        let now = Instant::now();
        let (proposals, metrics) = (&mut self.proposals, &self.metrics);
        let subscribers = &mut self.subscribers;
        let group = self.group;
        apply_batch(
            &mut self.machine,
            &mut self.sessions,
            first_index,
            batch,
            |applied| {
                if let (Some(data), false) = (applied.data, subscribers.is_empty()) {
                    let data = batch.bytes().slice_ref(data);
                    let index = applied.index;
                    publish(group, subscribers, Committed::Entry { index, data });
                }
                if let Some(waited) =
                    proposals.answer(applied.client, applied.seq, applied.outcome, now)
                {
                    metrics.commit_latency.observe(waited.as_secs_f64());
                }
            },
        );
        self.status.applied.set(slot.next());
    }

    fn answer(&mut self, reply: Reply) {
        match reply {
            Reply::Refused {
                client,
                seq,
                reason,
            } => {
                let refused = ProposeOutcome::Refused(reason);
                self.proposals.answer(client, seq, refused, Instant::now());
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

    /// Tells the replica when the transport has lost its leader for
    /// [`LEADER_UNREACHABLE_TICKS`] ticks in a row, having been connected to
    /// it (a node that just started may follow a leader it has heard of
    /// through another peer before its own connection is up).
    fn check_leader_link(&mut self) {
        let me = self.replica.config().id;
        let leader = self.replica.leader().filter(|l| *l != me);
        if leader != self.leader_link.0 {
            self.leader_link = (leader, false);
            self.leader_down_ticks = 0;
        }
        let Some(leader) = leader else {
            return;
        };
        let up = self.link.is_connected(leader);
        self.leader_link.1 |= up;
        let down = self.leader_link.1 && !up;
        self.leader_down_ticks = if down { self.leader_down_ticks + 1 } else { 0 };
        if self.leader_down_ticks == LEADER_UNREACHABLE_TICKS {
            tracing::info!(
                group = self.group.0,
                leader = leader.0,
                "lost the connection to the leader"
            );
            let input = Input::PeerUnreachable(leader);
            if let Err(error) = self.replica.step(input, &mut self.actions) {
                tracing::debug!(group = self.group.0, %error, "input dropped");
            }
        }
    }

    fn stop_waiters(&mut self) {
        self.proposals.answer_all(ProposeOutcome::Stopped);
        for (_, (_, waiter)) in self.reads.drain() {
            let _ = waiter.send(ReadOutcome::Stopped);
        }
    }
}

impl Snapshots {
    /// The write pace counts from now.
    fn restart_pace(&mut self) {
        self.taken_at = Instant::now();
        self.paced_bytes = 0;
    }
}

/// Snapshots: taking them, compacting below them, sending and installing.
impl<S: StateMachine> GroupDriver<S> {
    /// Takes a snapshot when the policy says so and none is being written.
    /// The state is captured here, in step with apply (the state machine's
    /// `snapshot` only captures); it is encoded and written on a thread of its
    /// own while the group goes on, and compaction waits for it to be
    /// durable.
    fn maybe_snapshot(&mut self) {
        let snapshots = &self.snapshots;
        let applied = self.status.applied.get();
        // Counted from the latest snapshot, or from the latest that could not
        // be encoded: a failing encoder is not retried on every apply.
        let base = self.status.snapshot.get().max(snapshots.tried_upto);
        let since = applied.distance_from(base);
        let due = snapshots.policy.every_slots > 0
            && (since >= snapshots.policy.every_slots
                || snapshots.applied_bytes >= snapshots.policy.every_bytes);
        if !due || snapshots.saving || applied <= self.status.snapshot.get() {
            return;
        }
        let (next_index, promised) = (snapshots.applied_next_index, self.replica.status().promised);
        let sessions = self.sessions.clone();
        let machine = self.machine.snapshot();
        let rate = snapshots
            .policy
            .write_rate(snapshots.paced_bytes, snapshots.taken_at.elapsed());
        self.save_snapshot(applied, rate, move || {
            Snapshot {
                upto: applied,
                next_index,
                promised,
                sessions,
                machine: machine.encode(),
            }
            .encode()
        });
    }

    /// Encodes and writes the file on a thread of its own (at no more than
    /// `bytes_per_sec`, if given); `SnapshotSaved` comes back. Not on
    /// glommio's blocking pool: it has one thread, which the WAL's segment
    /// removals (under the WAL's lock) and other groups' snapshots would
    /// queue behind a paced write. The state was captured now, so the WAL
    /// from here on (writes issued after the capture) must survive the
    /// compaction.
    fn save_snapshot(
        &mut self,
        upto: Slot,
        bytes_per_sec: Option<u64>,
        encode: impl FnOnce() -> Result<Vec<u8>, SnapshotError> + Send + 'static,
    ) {
        self.snapshots.saving = true;
        self.snapshots.applied_bytes = 0;
        self.snapshots.restart_pace();
        let captured_at = self.wal.next_position();
        let (path, inputs, group) = (self.snapshots.path.clone(), self.inputs.clone(), self.group);
        let failed = |path: &std::path::Path, why: String| SnapshotError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(why),
        };
        let (done, written) = oneshot::channel();
        let thread_path = path.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("synod-snapshot-{}", group.0))
            .spawn(move || {
                let result = encode().map_err(Unsaved::Encoding).and_then(|encoded| {
                    snapshot::save(&thread_path, &encoded, bytes_per_sec)
                        .map(|()| encoded)
                        .map_err(Unsaved::Writing)
                });
                let _ = done.send(result);
            });
        if let Err(error) = spawned {
            let error = failed(&path, format!("cannot start the snapshot thread: {error}"));
            self.stop_on(GroupInput::SnapshotFailed(error));
            return;
        }
        glommio::spawn_local(async move {
            let input = match written.await {
                Ok(Ok(encoded)) => GroupInput::SnapshotSaved {
                    upto,
                    encoded: Bytes::from(encoded),
                    captured_at,
                },
                Ok(Err(Unsaved::Writing(error))) => GroupInput::SnapshotFailed(error),
                Ok(Err(Unsaved::Encoding(error))) => {
                    tracing::error!(
                        group = group.0,
                        %error,
                        "cannot encode a snapshot; the log is not compacted"
                    );
                    GroupInput::SnapshotSkipped(upto)
                }
                // The thread panicked (in the state machine's encoding, say).
                Err(_) => {
                    GroupInput::SnapshotFailed(failed(&path, "the snapshot thread panicked".into()))
                }
            };
            let _ = inputs.send(input).await;
        })
        .detach();
    }

    /// Queues `input` to the group's own loop, which stops on it.
    fn stop_on(&self, input: GroupInput) {
        let inputs = self.inputs.clone();
        glommio::spawn_local(async move {
            let _ = inputs.send(input).await;
        })
        .detach();
    }

    /// The snapshot at `upto` is durable: drop the log below it (keeping
    /// `keep_slots` in memory for followers a little behind) and the WAL
    /// segments that hold nothing a restart still needs.
    fn on_snapshot_saved(&mut self, upto: Slot, encoded: Bytes, captured_at: Position) {
        let snapshots = &mut self.snapshots;
        snapshots.saving = false;
        let bytes = encoded.len();
        snapshots.latest = Some((upto, encoded));
        self.metrics.snapshots.inc();
        self.status.snapshot.set(upto);
        let keep_from = Slot(upto.0.saturating_sub(snapshots.policy.keep_slots));
        if keep_from > self.replica.log().start() {
            self.replica
                .compact(keep_from.min(self.replica.status().commit));
        }
        // A restart rebuilds every slot below `upto` from the snapshot; it
        // needs the WAL only from the first frame of a slot at or above it,
        // and everything written since the capture (a promise made while
        // the file was being written is not in it).
        snapshots.accept_positions = snapshots.accept_positions.split_off(&upto);
        let cut = snapshots
            .accept_positions
            .values()
            .min()
            .map_or(captured_at, |first| (*first).min(captured_at));
        let (wal, inputs) = (self.wal.clone(), self.inputs.clone());
        glommio::spawn_local(async move {
            if let Err(error) = wal.remove_before(cut).await {
                let _ = inputs.send(GroupInput::Fatal(error)).await;
            }
        })
        .detach();
        tracing::info!(
            group = self.group.0,
            upto = upto.0,
            bytes,
            "snapshot durable; log compacted"
        );
    }

    /// Sends the latest snapshot to `to` in chunks, one transfer per peer at
    /// a time, pacing on the peer's queue.
    fn send_snapshot(&mut self, to: NodeId) {
        let Some((upto, encoded)) = self.snapshots.latest.clone() else {
            tracing::warn!(
                group = self.group.0,
                to = to.0,
                "peer needs a snapshot, none is durable yet"
            );
            return;
        };
        if !self.snapshots.sending.borrow_mut().insert(to) {
            return;
        }
        tracing::info!(
            group = self.group.0,
            to = to.0,
            upto = upto.0,
            bytes = encoded.len(),
            "sending a snapshot"
        );
        let (group, link, sending) = (
            self.group,
            self.link.clone(),
            self.snapshots.sending.clone(),
        );
        glommio::spawn_local(async move {
            'chunks: for chunk in chunks(upto, &encoded) {
                let body = encode_chunk(group, &chunk);
                let started = std::time::Instant::now();
                while !link.send_frame(to, KIND_SNAPSHOT_CHUNK, body.clone()) {
                    if started.elapsed() > SNAPSHOT_SEND_PATIENCE {
                        tracing::warn!(
                            group = group.0,
                            to = to.0,
                            "snapshot transfer stalled; dropped"
                        );
                        break 'chunks;
                    }
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            }
            sending.borrow_mut().remove(&to);
        })
        .detach();
    }

    /// Gathers a snapshot from a peer; installs it once whole.
    fn on_snapshot_chunk(&mut self, from: NodeId, chunk: SnapshotChunk) {
        let Some(encoded) = self.snapshots.incoming.take(from, chunk) else {
            return;
        };
        match Snapshot::decode(&encoded) {
            Ok(snapshot) => self.install_snapshot(from, snapshot, encoded),
            Err(error) => {
                tracing::warn!(group = self.group.0, from = from.0, %error, "snapshot from a peer refused")
            }
        }
    }

    /// Replaces the applied state with `snapshot` when it is ahead of it.
    /// A snapshot holds only chosen state, so any peer's is correct here;
    /// one the state machine refuses changes nothing.
    fn install_snapshot(&mut self, from: NodeId, snapshot: Snapshot, encoded: Vec<u8>) {
        let upto = snapshot.upto;
        if upto <= self.status.applied.get() || self.snapshots.saving {
            return;
        }
        if self.replica.status().leading {
            return; // a steady leader holds every chosen slot it needs
        }
        // The file doubles as this acceptor's promise floor once the WAL
        // below it goes: it must not be lower than what we promised.
        let promised = self.replica.status().promised;
        let encoded = if snapshot.promised >= promised {
            encoded
        } else {
            match (Snapshot {
                promised,
                ..snapshot.clone()
            })
            .encode()
            {
                Ok(encoded) => encoded,
                Err(error) => {
                    tracing::warn!(group = self.group.0, %error, "cannot re-encode a snapshot from a peer");
                    return;
                }
            }
        };
        if let Err(reason) = self.machine.restore(&snapshot.machine) {
            tracing::warn!(
                group = self.group.0,
                from = from.0,
                reason,
                "state machine refused a snapshot"
            );
            return;
        }
        self.sessions = snapshot.sessions;
        let installed = self.replica.install_snapshot(upto, snapshot.next_index);
        debug_assert!(installed, "checked against applied and leading above");
        self.status.applied.set(upto);
        self.status
            .snapshots_installed
            .set(self.status.snapshots_installed.get() + 1);
        self.snapshots.applied_next_index = snapshot.next_index;
        publish(
            self.group,
            &mut self.subscribers,
            Committed::Snapshot {
                next_index: snapshot.next_index,
            },
        );
        tracing::info!(
            group = self.group.0,
            from = from.0,
            upto = upto.0,
            "installed a snapshot from a peer"
        );
        // Durable before the WAL below it goes (on_snapshot_saved).
        // At full speed: the group cannot compact until it is durable.
        self.save_snapshot(upto, None, move || Ok(encoded));
    }
}

#[cfg(test)]
mod tests {
    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    fn chunk(offset: u64) -> SnapshotChunk {
        SnapshotChunk {
            upto: Slot(9),
            offset,
            total: 2,
            data: Bytes::from_static(b"x"),
        }
    }

    /// A chunk that meets a full queue waits for room rather than being
    /// dropped (a dropped one restarts the whole transfer), but not for
    /// longer than it is told.
    #[test]
    fn a_chunk_waits_for_room_in_a_full_queue_within_its_patience() {
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(|| async {
                let (tx, rx) = local_channel::new_bounded(1);
                let handle = GroupHandle {
                    inputs: Rc::new(tx),
                };
                assert!(
                    handle.try_deliver_chunk(NodeId(2), chunk(0)),
                    "room for one"
                );
                assert!(!handle.try_deliver_chunk(NodeId(2), chunk(1)), "full");
                let patience = Duration::from_millis(200);
                let started = Instant::now();
                assert!(
                    !handle
                        .deliver_chunk(NodeId(2), chunk(1), Duration::from_millis(20))
                        .await,
                    "nobody drains the queue: given up"
                );
                assert!(started.elapsed() < patience);
                let drain = glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    let mut taken = Vec::new();
                    while let Some(input) = rx.recv().await {
                        taken.push(input);
                        if taken.len() == 2 {
                            break;
                        }
                    }
                    taken
                });
                assert!(handle.deliver_chunk(NodeId(2), chunk(1), patience).await);
                let taken = drain.await;
                assert!(matches!(
                    taken[1],
                    GroupInput::SnapshotChunk(NodeId(2), SnapshotChunk { offset: 1, .. })
                ));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

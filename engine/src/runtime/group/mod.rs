//! One Multi-Paxos group on a glommio executor: the executor of its
//! [`GroupCore`](crate::group::GroupCore), with its WAL, its peer link, its
//! snapshot file and the tasks that wait on them.
//!
//! ```text
//!  peers ──decoded──┐                         ┌─► Append        → wal.append
//!  clients ─────────┤  inbox   ┌───────────┐  ├─► Sync          → task: wal.sync(), then Persisted
//!  ticker ──────────┼─────────►│ GroupCore │──┼─► Send          → link (encoded once)
//!  sync tasks ──────┤          │   .step   │  ├─► Answer*       → the waiting caller's channel
//!  snapshot thread ─┘          └───────────┘  ├─► SaveSnapshot  → thread: encode, write, fsync
//!                                             ├─► RemoveWalBefore, MarkRebuilding, EndRebuild
//!                                             ├─► RecordPromise → PROMISE file, synced in place
//!                                             └─► SendSnapshot  → task: chunks to the peer
//! ```
//!
//! A failed WAL write or sync stops the group: it is never retried, and
//! nothing waiting on it is acknowledged. Every `snapshot.every_slots` applied
//! slots the group snapshots its state machine and sessions (`group::snapshot`),
//! then drops the log and the WAL segments below, so memory and disk stay
//! bounded under an endless load.

mod driver;
mod feed;
mod frames;
mod marker;
mod members;
mod outgoing;
mod promise_record;
mod stages;
mod start;
mod tasks;
#[cfg(test)]
mod tests;
mod transfer;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::channels::local_channel::LocalSender;
use synod_wal::{Position, WalConfig, WalError};
use thiserror::Error;

pub use self::feed::{CommitStream, SubscribeError};
pub use self::members::{ChangeError, MemberChange, CAUGHT_UP_SLOTS};
pub use self::start::start_group;
pub use self::transfer::{TransferError, TRANSFER_WAIT};
use super::codec::{DecodeError, PeerFrame, KIND_PEER_MESSAGE};
use super::metrics::GroupMetrics;
pub use super::status::{MembershipView, StatusView};
use crate::group::snapshot::{SnapshotChunk, SnapshotError, SnapshotPolicy};
pub use crate::group::{ProposeOutcome, ReadOutcome};
use crate::protocol::{
    Ballot, ClientId, Command, Config, ConfigError, LogIndex, NodeId, Refusal, Slot, SyncId,
    REQUEST_COMMANDS_MAX,
};

/// Bytes an acceptor write adds around its batch in a WAL frame body.
pub const WRITE_OVERHEAD_BYTES: u64 = 4096;

/// Where a group's messages to its peers go: the transport, or a test link.
pub trait PeerLink {
    /// Queues a frame body of `kind` for `to`. False when the peer's queue
    /// is full: the frame is dropped and the protocol's resends cover it.
    /// The body is shared, not copied: one Accept goes to every follower
    /// from the same bytes.
    fn send_frame(&self, to: NodeId, kind: u16, body: Bytes) -> bool;

    /// Queues an encoded protocol message for `to`.
    fn send(&self, to: NodeId, body: Bytes) -> bool {
        self.send_frame(to, KIND_PEER_MESSAGE, body)
    }

    /// Whether a connection to `to` is up; a link that cannot tell says yes.
    fn is_connected(&self, _to: NodeId) -> bool {
        true
    }

    /// Makes member `to` reachable at `addr` (`HOST:PORT`, as a
    /// configuration names it) from now on; a peer known already keeps its
    /// address. False if the address is not one or the link is full. A link
    /// whose peers are fixed ignores it.
    fn add_peer(&self, _to: NodeId, _addr: &str) -> bool {
        true
    }

    /// Where member `to` is reached, as this node knows it (`HOST:PORT`):
    /// a configuration proposed here names it for a member that has none.
    fn addr_of(&self, _to: NodeId) -> Option<String> {
        None
    }
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
    /// When to snapshot and compact.
    pub snapshot: SnapshotPolicy,
    /// Where the group counts what it does.
    pub metrics: GroupMetrics,
    /// If the group has no state at all (no WAL frame, no snapshot), its
    /// disk was lost: rebuild from the peers before voting again
    /// ([`Replica::rejoining`]). A group with state ignores it.
    pub rejoin: bool,
    /// Bytes of recently applied commands kept so that a subscriber can
    /// start from an index already applied (0: subscriptions start at the
    /// next command). Keeping any costs a little on every command.
    pub commit_history_bytes: usize,
}

/// The file in a group's WAL directory that marks a rebuild in progress:
/// written before the rebuild's first write, removed once the promise that
/// ends it is durable. A group restarted with it rebuilds again.
pub const REBUILDING_FILE: &str = "REBUILDING";

/// The file in a group's WAL directory that records the highest ballot the
/// replica may have promised, apart from the WAL (`promise_record.rs`).
pub const PROMISE_FILE: &str = "PROMISE";

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
    PartialState(PartialState),
    /// The rebuild marker could not be written or removed.
    #[error("rebuild marker {path}: {source}")]
    Marker {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The promise record could not be read or made durable (fatal, as a
    /// failed fsync is: the replica cannot show it kept its promises).
    #[error("promise record {path}: {source}")]
    PromiseRecord {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Which part of a group's durable state is missing.
#[derive(Debug, Error)]
pub enum PartialState {
    /// A snapshot without the WAL that holds what came after it.
    #[error(
        "{snapshot} holds a snapshot but {wal_dir} no WAL: what this acceptor promised and \
         accepted after the snapshot is gone"
    )]
    SnapshotWithoutWal {
        /// The snapshot file.
        snapshot: PathBuf,
        /// The WAL directory.
        wal_dir: PathBuf,
    },
    /// A WAL whose head went with a snapshot that is not there.
    #[error(
        "the WAL in {wal_dir} starts at frame {first} (its head was removed once a snapshot \
         was durable) but {snapshot} is missing: the promises and values before it are gone"
    )]
    WalWithoutSnapshot {
        /// The WAL directory.
        wal_dir: PathBuf,
        /// Its first frame.
        first: Position,
        /// The snapshot file that should be there.
        snapshot: PathBuf,
    },
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

/// A caller's channel, with when it was handed to the group (for the
/// latency histograms).
#[derive(Debug)]
pub(crate) struct Waiting<T> {
    pub(crate) reply: T,
    pub(crate) since: Instant,
}

impl<T> Waiting<T> {
    /// Stamped now: as the request is handed to the group.
    pub(crate) fn new(reply: T) -> Waiting<T> {
        Waiting {
            reply,
            since: Instant::now(),
        }
    }
}

/// One input to a group's task: the core's inputs as they arrive, and
/// what only the executor handles (subscribers, failures, stop).
pub(crate) enum Inbound {
    /// A decoded message from a peer, with the frame body it came in
    /// (an Accept's is its WAL record).
    Peer(PeerFrame),
    /// A client command and where to send the outcome (stamped with the
    /// time it was handed to the group).
    Propose(Command, Waiting<oneshot::Sender<ProposeOutcome>>),
    /// Commands that must reach the log in this order (one client's
    /// consecutive sequence numbers), each with where to send its outcome.
    ProposeMany(Vec<Command>, Waiting<oneshot::Sender<Vec<ProposeOutcome>>>),
    /// A read-only query and where to send the outcome.
    Read(Bytes, oneshot::Sender<ReadOutcome>),
    /// A read-only query answered from local state at once.
    ReadLocal(Bytes, oneshot::Sender<ReadOutcome>),
    /// A sync finished, after this long (`None`: not measured).
    Persisted(SyncId, Option<Duration>),
    /// Hand leadership to this member, if this replica leads and it is
    /// one; the answer says which it was.
    TransferLeadership(NodeId, oneshot::Sender<Result<(), TransferError>>),
    /// Propose this configuration, if this replica leads and no change is
    /// under way; the answer says which it was.
    ChangeMembership(
        crate::protocol::Membership,
        oneshot::Sender<Result<(), crate::protocol::ChangeRefusal>>,
    ),
    /// How far this member has caught up, as this leader knows.
    FollowerCommit(NodeId, oneshot::Sender<Option<Slot>>),
    /// Stream every command applied from this index on.
    Subscribe(
        LogIndex,
        oneshot::Sender<Result<CommitStream, SubscribeError>>,
    ),
    /// A piece of a snapshot from a peer.
    SnapshotChunk(NodeId, SnapshotChunk),
    /// A peer asks for the rest of our snapshot `upto` from `offset`.
    SnapshotWanted {
        /// The peer.
        from: NodeId,
        /// The snapshot.
        upto: Slot,
        /// The first byte it lacks.
        offset: u64,
    },
    /// A snapshot file is durable: compact below it.
    SnapshotSaved {
        /// The snapshot's slot.
        upto: Slot,
        /// The file's contents.
        encoded: Bytes,
    },
    /// Writing a snapshot file failed: stop.
    SnapshotFailed(SnapshotError),
    /// A snapshot up to this slot could not be encoded (logged): the log
    /// stays as it is, and the next try waits for the policy to come due
    /// again from this slot.
    SnapshotSkipped(Slot),
    /// A tick passed.
    Tick,
    /// A sync or a WAL removal failed: stop.
    Fatal(WalError),
    /// The rebuild marker could not be removed: stop (a restart rebuilds
    /// again, which is safe).
    RebuildFailed(GroupError),
    /// Stop now.
    Stop,
}

/// The groups of one core, by number, with their status.
pub(crate) type Groups = Rc<std::collections::BTreeMap<u32, (GroupHandle, Rc<GroupStatus>)>>;

/// The handle an embedder uses; cheap to clone within the executor.
#[derive(Clone)]
pub struct GroupHandle {
    inputs: Rc<LocalSender<Inbound>>,
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
            .send(Inbound::Propose(command, Waiting::new(tx)))
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
            .send(Inbound::ProposeMany(commands, Waiting::new(tx)))
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
        if self.inputs.send(Inbound::Read(query, tx)).await.is_err() {
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
            .send(Inbound::ReadLocal(query, tx))
            .await
            .is_err()
        {
            return ReadOutcome::Stopped;
        }
        rx.await.unwrap_or(ReadOutcome::Stopped)
    }

    /// Hands a decoded peer message to the group.
    pub async fn deliver(&self, frame: PeerFrame) {
        let _ = self.inputs.send(Inbound::Peer(frame)).await;
    }

    /// Hands a decoded peer message to the group without waiting; false if
    /// its input queue is full (the message is dropped; Paxos resends).
    pub fn try_deliver(&self, frame: PeerFrame) -> bool {
        self.inputs.try_send(Inbound::Peer(frame)).is_ok()
    }

    /// Hands a piece of a snapshot from `from` to the group without waiting;
    /// false if its input queue is full (the group asks for the rest
    /// later).
    pub fn try_deliver_chunk(&self, from: NodeId, chunk: SnapshotChunk) -> bool {
        self.inputs
            .try_send(Inbound::SnapshotChunk(from, chunk))
            .is_ok()
    }

    /// Hands a peer's ask for the rest of our snapshot to the group without
    /// waiting; false if its queue is full (the peer asks again).
    pub fn try_deliver_wanted(&self, from: NodeId, upto: Slot, offset: u64) -> bool {
        self.inputs
            .try_send(Inbound::SnapshotWanted { from, upto, offset })
            .is_ok()
    }

    /// Hands a piece of a snapshot from `from` to the group, waiting up to
    /// `patience` for room in its input queue: unlike a peer message, whose
    /// loss Paxos repairs by resending it, a lost chunk stalls the
    /// transfer until the group asks for the rest, and under load a queue is seldom empty for all
    /// of a large snapshot's chunks. False if there was no room in time or
    /// the group stopped.
    pub async fn deliver_chunk(
        &self,
        from: NodeId,
        chunk: SnapshotChunk,
        patience: Duration,
    ) -> bool {
        let send = std::pin::pin!(self.inputs.send(Inbound::SnapshotChunk(from, chunk)));
        let waited = std::pin::pin!(glommio::timer::sleep(patience));
        match futures_util::future::select(send, waited).await {
            futures_util::future::Either::Left((sent, _)) => sent.is_ok(),
            futures_util::future::Either::Right(_) => false,
        }
    }

    /// Streams every command applied from log index `from` on, in log
    /// order (see [`CommitStream`]).
    pub async fn subscribe(&self, from: LogIndex) -> Result<CommitStream, SubscribeError> {
        let (tx, rx) = oneshot::channel();
        let _ = self.inputs.send(Inbound::Subscribe(from, tx)).await;
        rx.await.unwrap_or(Err(SubscribeError::Stopped))
    }

    /// Asks the group to stop.
    pub async fn stop(&self) {
        let _ = self.inputs.send(Inbound::Stop).await;
    }
}

/// Status a group publishes after every step, for displays and tests.
#[derive(Debug, Default)]
pub struct GroupStatus {
    /// Slots applied.
    pub applied: Cell<Slot>,
    /// The log index of the next command to apply.
    pub next_index: Cell<LogIndex>,
    /// Every slot below is chosen, as this replica knows.
    pub commit: Cell<Slot>,
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
    /// The group's configuration, refreshed when it changes (`None` until
    /// the group's first step).
    pub membership: RefCell<Option<MembershipView>>,
}

impl GroupStatus {
    /// The group's configuration as it stands.
    pub fn membership(&self) -> Option<MembershipView> {
        self.membership.borrow().clone()
    }

    /// The status as it stands.
    pub fn view(&self) -> StatusView {
        StatusView {
            applied: self.applied.get(),
            next_index: self.next_index.get(),
            commit: self.commit.get(),
            leading: self.leading.get(),
            leader: self.leader.get(),
            promised: self.promised.get(),
            snapshot: self.snapshot.get(),
        }
    }
}

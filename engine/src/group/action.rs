//! What goes into a group core and what comes out.

use std::fmt;

use bytes::Bytes;
use synod_wal::Position;

use super::snapshot::{Snapshot, SnapshotChunk, SnapshotError};
use super::state_machine::Capture;
use crate::protocol::{
    Ballot, Batch, Command, Envelope, LogIndex, NodeId, Refusal, Sessions, Slot, SyncId, Write,
};

/// Who waits for answers: the executor's handles, opaque to the core. The
/// runtime's are channels back to the proposing task; the simulator's name
/// its clients.
pub trait Callers: fmt::Debug {
    /// Waits for the outcome of one proposed command.
    type Proposal: fmt::Debug;
    /// Waits for the outcomes of a request of many commands, together.
    type Request: fmt::Debug;
    /// Waits for the answer to a read.
    type Read: fmt::Debug;
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
    /// The group stopped before an answer, or a later proposal of the same
    /// command took over the wait.
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

/// How a read ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The state machine's answer (after every write acknowledged before
    /// it, for a linearizable read).
    Value(Bytes),
    /// Refused (not the leader, busy).
    Refused(Refusal),
    /// The group stopped before an answer.
    Stopped,
}

/// Proposals handed to the core in one step: they reach the log in this
/// order, and those of one step may share a slot.
#[derive(Debug)]
pub enum Proposal<C: Callers> {
    /// One command, answered alone.
    One(Command, C::Proposal),
    /// One request's commands (one client's consecutive sequence numbers),
    /// answered together once every one is known.
    Many(Vec<Command>, C::Request),
}

/// One input to a group core.
#[derive(Debug)]
pub enum GroupInput<C: Callers> {
    /// A decoded message from a peer.
    Message(Envelope),
    /// Client proposals, in arrival order.
    Propose(Vec<Proposal<C>>),
    /// A linearizable read of the state machine (read-index at the leader).
    Read(Bytes, C::Read),
    /// A read of this replica's state as it stands (stale reads allowed).
    ReadLocal(Bytes, C::Read),
    /// A sync the core asked for finished: every append before it is durable.
    Persisted(SyncId),
    /// A protocol tick passed.
    Tick,
    /// The transport lost this peer (our leader, say).
    PeerUnreachable(NodeId),
    /// Hand leadership to this member (a steady leader only).
    TransferLeadership(NodeId),
    /// A piece of a snapshot from a peer.
    SnapshotChunk(NodeId, SnapshotChunk),
    /// A peer lost chunks of our snapshot `upto` and asks us to go on from
    /// byte `offset` (`GroupAction::AskSnapshot` on its side).
    SnapshotWanted {
        /// The peer.
        from: NodeId,
        /// The snapshot it holds part of.
        upto: Slot,
        /// The first byte it lacks.
        offset: u64,
    },
    /// The snapshot the core asked to save is durable.
    SnapshotSaved {
        /// The snapshot's slot.
        upto: Slot,
        /// The file's contents, for peers that need it.
        encoded: Bytes,
    },
    /// The snapshot the core asked to save could not be encoded (logged by
    /// the executor): the log stays as it is.
    SnapshotSkipped(Slot),
}

/// A snapshot to encode and save, off the core: the state was captured in
/// step with apply, the encoding (the slow part) is left to the executor.
pub struct SnapshotJob {
    work: Job,
}

enum Job {
    /// The group's own state, captured at an applied slot.
    Own {
        snapshot: Snapshot,
        machine: Capture,
    },
    /// A snapshot from a peer, installed, to keep as it is.
    Installed(Vec<u8>),
}

impl SnapshotJob {
    pub(super) fn own(
        upto: Slot,
        next_index: LogIndex,
        promised: crate::protocol::Ballot,
        sessions: Sessions<Bytes>,
        schedule: crate::protocol::Schedule,
        machine: Capture,
    ) -> SnapshotJob {
        let snapshot = Snapshot {
            upto,
            next_index,
            promised,
            sessions,
            machine: Bytes::new(),
            schedule: Some(schedule),
        };
        SnapshotJob {
            work: Job::Own { snapshot, machine },
        }
    }

    pub(super) fn installed(encoded: Vec<u8>) -> SnapshotJob {
        SnapshotJob {
            work: Job::Installed(encoded),
        }
    }

    /// The file's contents: encodes the captured state (slow for a large
    /// state: run it off the group's core).
    pub fn encode(self) -> Result<Vec<u8>, SnapshotError> {
        match self.work {
            Job::Own {
                mut snapshot,
                machine,
            } => {
                snapshot.machine = machine.encode();
                snapshot.encode()
            }
            Job::Installed(encoded) => Ok(encoded),
        }
    }
}

impl fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.work {
            Job::Own { snapshot, .. } => write!(f, "SnapshotJob::Own({:?})", snapshot.upto),
            Job::Installed(encoded) => write!(f, "SnapshotJob::Installed({} bytes)", encoded.len()),
        }
    }
}

/// Where a snapshot transfer to a peer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStart {
    /// From this byte, unless a transfer to the peer is under way (it goes
    /// on): the start, or the first byte the peer said it lacked when it
    /// last asked about this snapshot (it holds those before).
    From(u64),
    /// The peer asked for the rest from this byte: a transfer under way
    /// jumps there, or one starts there.
    Asked(u64),
}

impl SnapshotStart {
    /// The byte to start at.
    pub fn offset(self) -> u64 {
        match self {
            SnapshotStart::From(offset) | SnapshotStart::Asked(offset) => offset,
        }
    }
}

/// One thing for the executor to do. Order matters: the executor carries
/// them out in the order given, and the durability rules are the
/// protocol's (a send that reports durable state comes after the sync
/// that makes it so).
#[derive(Debug)]
pub enum GroupAction<C: Callers> {
    /// Append `write` to the WAL; it lands at `position` (the core counts
    /// the WAL's frames, so it knows where each write is without asking).
    Append {
        /// Where the WAL puts it.
        position: Position,
        /// What to write.
        write: Write,
    },
    /// Make every append so far durable, then feed back `Persisted(sync)`.
    Sync(SyncId),
    /// Durably record, apart from the WAL and before the next action, that
    /// this replica may have promised or accepted at `ballot` (it only
    /// rises). Read back as `Recovery::promise_record`: a damaged WAL tail
    /// cannot take a promise with it. Failing to record is fatal, as a
    /// failed fsync is.
    RecordPromise(Ballot),
    /// Send a message to a peer.
    Send(Envelope),
    /// Stream this durable snapshot to a peer behind our compaction point.
    SendSnapshot {
        /// The peer.
        to: NodeId,
        /// The snapshot's slot.
        upto: Slot,
        /// The snapshot file's contents.
        encoded: Bytes,
        /// Where to start, and what to do with a transfer under way.
        start: SnapshotStart,
    },
    /// Ask peer `to` to go on sending its snapshot `upto` from byte
    /// `offset`: chunks were lost, and what came before is held.
    AskSnapshot {
        /// The sender.
        to: NodeId,
        /// Its snapshot's slot.
        upto: Slot,
        /// The first byte not held.
        offset: u64,
    },
    /// Encode and durably write the snapshot file, then feed back
    /// `SnapshotSaved` (or `SnapshotSkipped` if it could not be encoded; a
    /// failed write is fatal). Never more than one at a time.
    SaveSnapshot {
        /// The snapshot's slot.
        upto: Slot,
        /// What to encode.
        job: SnapshotJob,
        /// Write it at full speed: nothing compacts until it is durable
        /// (an installed snapshot); otherwise the executor may pace it.
        urgent: bool,
    },
    /// Drop the WAL frames before `position`: a durable snapshot covers
    /// them.
    RemoveWalBefore(Position),
    /// Durably mark this replica as rebuilding from its peers before
    /// anything else is written: a restart rebuilds again.
    MarkRebuilding,
    /// The rebuild is over: once every append so far is durable, remove
    /// the mark (a crash before that rebuilds again, which is safe).
    EndRebuild,
    /// A chosen slot was applied (for metrics and checkers).
    Applied {
        /// The slot.
        slot: Slot,
        /// The log index of its first command.
        first_index: LogIndex,
        /// Its commands.
        batch: Batch,
    },
    /// A command the state machine applied now (not a retry), emitted only
    /// while the executor streams commits ([`super::GroupCore::stream_commits`]).
    Entry {
        /// Its log index.
        index: LogIndex,
        /// The command's bytes.
        data: Bytes,
    },
    /// The applied state jumped to a peer's snapshot.
    SnapshotInstalled {
        /// The peer.
        from: NodeId,
        /// The snapshot's slot.
        upto: Slot,
        /// The log index of the next command.
        next_index: LogIndex,
    },
    /// A proposal's outcome.
    Answer(C::Proposal, ProposeOutcome),
    /// A request's outcomes, one per command, in its order.
    AnswerMany(C::Request, Vec<ProposeOutcome>),
    /// A read's outcome.
    AnswerRead(C::Read, ReadOutcome),
}

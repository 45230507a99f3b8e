//! What goes into a replica and what comes out.

use super::batch::{Batch, Command};
use super::log::Entry;
use super::message::Envelope;
use super::types::{Ballot, ClientId, LogIndex, NodeId, ReadId, Slot, SyncId};

/// One input to `Replica::step`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// One tick of time has passed.
    Tick,
    /// A message from a peer.
    Message(Envelope),
    /// A client command to append.
    Propose(Command),
    /// Commands that arrived together (one client frame, one drained inbox):
    /// queued together before the leader cuts a batch, so they share slots.
    ProposeBatch(Vec<Command>),
    /// Every write issued before `Action::Sync(id)` is durable.
    Persisted(SyncId),
    /// A linearizable read; answered with `Reply::ReadReady` once it may be
    /// served.
    Read(ReadId),
    /// The transport lost its connection to this peer and cannot restore
    /// it (a reset, refused reconnects). A hint, never trusted for safety:
    /// a follower whose leader it is looks for a new one at once instead of
    /// waiting out its silence timeout, as ZooKeeper's followers do when
    /// their leader's socket closes.
    PeerUnreachable(NodeId),
    /// Hand leadership to this member (a steady leader only; anything else
    /// ignores it): it takes over at once, without an election.
    TransferLeadership(NodeId),
}

/// A durable change to the acceptor's state. Replaying the writes in order
/// (`DurableState::replay`) rebuilds the acceptor after a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The acceptor promised this ballot.
    Promise(Ballot),
    /// The acceptor accepted `entry` at `slot` (replacing any older value).
    Accept {
        /// The slot.
        slot: Slot,
        /// Ballot and value.
        entry: Entry,
    },
    /// Every slot below is chosen. Written lazily: it needs no sync of its
    /// own and becomes durable with the next one. A restarted replica resumes
    /// from it instead of slot 0, so its Phase 1 asks for little.
    Commit(Slot),
}

/// Why a proposal or a read was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This replica does not lead; try the hinted one.
    NotLeader(Option<NodeId>),
    /// The leader's queue is full: back off.
    Busy,
    /// The command exceeds `command_bytes_max`.
    TooLarge,
    /// The command names the client id reserved for configuration entries.
    ReservedClient,
}

/// An answer owed to a client of this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The proposal `(client, seq)` was not taken.
    Refused {
        /// Session.
        client: ClientId,
        /// Sequence.
        seq: u64,
        /// Why.
        reason: Refusal,
    },
    /// Read `id` may be served once the state machine has applied every slot
    /// below `commit`.
    ReadReady {
        /// The read.
        id: ReadId,
        /// Apply up to here first.
        commit: Slot,
    },
    /// Read `id` was refused.
    ReadRefused {
        /// The read.
        id: ReadId,
        /// Why.
        reason: Refusal,
    },
}

/// One thing the runtime must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Append this write to stable storage.
    Persist(Write),
    /// Make every write so far durable, then feed `Input::Persisted(id)`.
    Sync(SyncId),
    /// Send a message. A message that reports durable state only appears here
    /// after the `Persisted` that covers it: the replica holds it back itself.
    Send(Envelope),
    /// `slot` is chosen: apply its batch. Its first command has log index
    /// `first_index`. Emitted in slot order, each slot once.
    Commit {
        /// The slot.
        slot: Slot,
        /// Log index of the batch's first command.
        first_index: LogIndex,
        /// The value.
        batch: Batch,
    },
    /// Answer a client.
    Reply(Reply),
    /// Peer `to` needs slots this replica compacted: send it a snapshot.
    SendSnapshot {
        /// The lagging follower.
        to: NodeId,
    },
}

/// The actions of one or more steps, in the order they must be carried out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    items: Vec<Action>,
}

impl Actions {
    /// Appends an action.
    pub fn push(&mut self, action: Action) {
        self.items.push(action);
    }

    /// The actions so far.
    pub fn as_slice(&self) -> &[Action] {
        &self.items
    }

    /// Takes the actions out, leaving the buffer empty but allocated.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Action> {
        self.items.drain(..)
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of actions.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Forgets every action.
    pub fn clear(&mut self) {
        self.items.clear();
    }
}

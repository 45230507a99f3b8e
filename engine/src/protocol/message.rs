//! The messages replicas exchange: one struct per message, one enum of them,
//! one envelope.

use super::batch::Batch;
use super::log::Entry;
use super::types::{Ballot, NodeId, Slot};
use super::vote::Vote;

/// Phase 1a: "promise me `ballot`, and tell me what you accepted from
/// `from_slot` on".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepare {
    /// The proposer's ballot.
    pub ballot: Ballot,
    /// The proposer's commit point: it needs nothing below.
    pub from_slot: Slot,
}

/// Phase 1b: the acceptor promised `ballot`; `entries` is what it accepted
/// at or after the Prepare's `from_slot`, one bounded page at a time. Sent
/// only once durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promise {
    /// The ballot promised.
    pub ballot: Ballot,
    /// The Prepare's `from_slot` this page answers.
    pub from_slot: Slot,
    /// More entries follow from this slot: ask again with it as `from_slot`.
    pub next_from: Option<Slot>,
    /// The acceptor's first slot still in its log; above `from_slot` means it
    /// compacted slots the proposer needs.
    pub log_start: Slot,
    /// Accepted entries at or after the Prepare's `from_slot`.
    pub entries: Vec<(Slot, Entry)>,
}

/// The acceptor refuses `ballot` because it promised a higher one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The ballot refused.
    pub ballot: Ballot,
    /// What the acceptor promised instead.
    pub promised: Ballot,
}

/// Phase 2a: accept `batch` at `slot`; `commit` is the leader's commit point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept {
    /// The leader's ballot.
    pub ballot: Ballot,
    /// The slot.
    pub slot: Slot,
    /// The value.
    pub batch: Batch,
    /// Every slot below is chosen.
    pub commit: Slot,
}

/// Phase 2b: the acceptor durably accepted `slot` at `ballot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The ballot accepted.
    pub ballot: Ballot,
    /// The slot accepted.
    pub slot: Slot,
}

/// The leader's keep-alive; carries the commit point and a read-index round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The leader's ballot.
    pub ballot: Ballot,
    /// Every slot below is chosen.
    pub commit: Slot,
    /// Reads wait for a majority to echo a round at least this high.
    pub read_round: u64,
}

/// A follower's answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The heartbeat's ballot.
    pub ballot: Ballot,
    /// The heartbeat's read round.
    pub read_round: u64,
    /// Every slot below is chosen, as the follower knows: how far behind
    /// the leader it is (a learner is promoted once it has caught up).
    pub commit: Slot,
}

/// A follower asks for chosen slots it lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUpRequest {
    /// The leader's ballot as the follower knows it.
    pub ballot: Ballot,
    /// The first slot the follower lacks.
    pub from_slot: Slot,
}

/// Chosen slots, sent by the leader to a lagging follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUp {
    /// The leader's ballot.
    pub ballot: Ballot,
    /// The leader's commit point.
    pub commit: Slot,
    /// Chosen values, in slot order, all below `commit`.
    pub entries: Vec<(Slot, Batch)>,
}

/// What a node is doing, as told to a looking node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Electing; the vote is the candidate it currently backs.
    Looking(Vote),
    /// Following the named leader.
    Following(NodeId),
    /// Leading.
    Leading,
}

/// An election notification (ZooKeeper's FastLeaderElection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The sender's election round (its logical clock).
    pub round: u64,
    /// The sender's state and, when looking, its vote.
    pub state: PeerState,
}

/// A replica rebuilding after losing its disk asks every peer for its
/// promise, then (with `floor`, the highest promise any peer reported) asks
/// for a leader whose ballot is above it (`rejoin.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejoin {
    /// `None` while asking for promises; then the floor to outbid.
    pub floor: Option<Ballot>,
}

/// A peer's answer to [`Rejoin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejoinInfo {
    /// The highest ballot the peer has promised (its own candidacy included).
    pub promised: Ballot,
    /// Set by a leader past Phase 1 at ballot `promised` above the asked
    /// floor: every slot below was recovered in that Phase 1.
    pub recovery_end: Option<Slot>,
}

/// The leader of `ballot` hands leadership to the addressee, which takes
/// it at once with a Phase 1 above `ballot` instead of waiting out an
/// election (etcd's `MsgTimeoutNow`; `transfer.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TakeOver {
    /// The sender's ballot: a replica that has promised another since
    /// ignores it.
    pub ballot: Ballot,
}

/// Every message, so that dispatch is one exhaustive match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Phase 1a.
    Prepare(Prepare),
    /// Phase 1b.
    Promise(Promise),
    /// Refusal of a ballot.
    Nack(Nack),
    /// Phase 2a.
    Accept(Accept),
    /// Phase 2b.
    Accepted(Accepted),
    /// Leader keep-alive.
    Heartbeat(Heartbeat),
    /// Answer to a heartbeat.
    HeartbeatAck(HeartbeatAck),
    /// Request for chosen slots.
    CatchUpRequest(CatchUpRequest),
    /// Chosen slots.
    CatchUp(CatchUp),
    /// Leader election.
    Notification(Notification),
    /// A replica rebuilding after disk loss asks.
    Rejoin(Rejoin),
    /// The answer.
    RejoinInfo(RejoinInfo),
    /// Leadership handed over.
    TakeOver(TakeOver),
}

impl Message {
    /// A short name for traces and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Prepare(_) => "Prepare",
            Message::Promise(_) => "Promise",
            Message::Nack(_) => "Nack",
            Message::Accept(_) => "Accept",
            Message::Accepted(_) => "Accepted",
            Message::Heartbeat(_) => "Heartbeat",
            Message::HeartbeatAck(_) => "HeartbeatAck",
            Message::CatchUpRequest(_) => "CatchUpRequest",
            Message::CatchUp(_) => "CatchUp",
            Message::Notification(_) => "Notification",
            Message::Rejoin(_) => "Rejoin",
            Message::RejoinInfo(_) => "RejoinInfo",
            Message::TakeOver(_) => "TakeOver",
        }
    }
}

/// A message with its sender and addressee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Sender.
    pub from: NodeId,
    /// Addressee.
    pub to: NodeId,
    /// The message.
    pub msg: Message,
}

//! The protocol's messages and acceptor writes as rkyv frame bodies.
//!
//! One format serves the wire and the WAL: a peer frame body names its
//! group and holds one message, and the sender and addressee are the
//! connection's (the transport authenticated the peer; the addressee is
//! this node), so the leader encodes an Accept once for every follower. A
//! WAL record of an accepted value ([`KIND_WAL_ACCEPT`]) is that same body:
//! a follower stores the Accept as it received it, and the leader the one
//! it sends. Batch bytes are serialized straight from the leader's shared
//! buffer, and on the way in they are sliced out of the received frame
//! (`Bytes::slice_ref`), never copied or re-encoded. Bytes from outside pass three checks: the frame
//! checksum (done by the WAL or the transport), `rkyv::access` with
//! bytecheck, then [`Validate`]; after that the protocol's own envelope
//! checks run in `Replica::step`.

use bytes::Bytes;
use synod_wal::frame::{access_body, FrameError, Validate};
use thiserror::Error;

use crate::protocol::{
    Accept, Accepted, Ballot, Batch, BatchError, CatchUp, CatchUpRequest, Entry, Envelope, GroupId,
    Heartbeat, HeartbeatAck, Message, Nack, NodeId, Notification, PeerState, Prepare, Promise,
    Rejoin, RejoinInfo, Slot, TakeOver, Vote,
};

/// Frame kind of an acceptor write in the WAL: a promise or a commit
/// record (and, in WALs written before [`KIND_WAL_ACCEPT`], an accept).
pub const KIND_WAL_WRITE: u16 = 1;
/// Frame kind of an accepted value in the WAL: a peer frame body holding
/// the Accept, as received or sent.
pub const KIND_WAL_ACCEPT: u16 = 2;
/// Frame kind of a message between replicas. (Kind 16 carried the sender
/// and addressee in the body; a node of such a build is not understood.)
pub const KIND_PEER_MESSAGE: u16 = 18;

/// The revision of the peer message format, in the top byte of the number
/// peers compare at the handshake (with the session bounds below it): a
/// node of another revision is refused there, with a reason, rather than
/// connected and misunderstood. Revision 1: heartbeat answers carry the
/// follower's commit point. Revision 2: votes carry the candidate's rank.
pub const PEER_FORMAT_REVISION: u64 = 2;

/// What peers compare at the handshake: the message format's revision
/// and the session bounds (`SESSION_BOUNDS` uses the low 56 bits).
pub const PEER_COMPAT: u64 = crate::protocol::SESSION_BOUNDS ^ (PEER_FORMAT_REVISION << 56);

/// Bounds a decoded batch must respect.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Bytes of one batch.
    pub batch_bytes_max: usize,
    /// Bytes of one command.
    pub command_bytes_max: usize,
}

/// Bytes that are not a valid message or write.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Bytecheck or semantic validation failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A batch inside is malformed.
    #[error("bad batch: {0}")]
    Batch(#[from] BatchError),
}

#[derive(rkyv::Archive, rkyv::Serialize, Clone, Copy, Debug, PartialEq, Eq)]
struct WireBallot {
    round: u64,
    node: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, Clone, Debug)]
struct WireEntry {
    slot: u64,
    ballot: WireBallot,
    count: u32,
    batch: Bytes,
}

#[derive(rkyv::Archive, rkyv::Serialize, Clone, Copy, Debug)]
struct WireVote {
    epoch: u64,
    commit: u64,
    last_ballot: WireBallot,
    last_slot: u64,
    rank: u32,
    node: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, Clone, Copy, Debug)]
enum WireState {
    Looking(WireVote),
    Following(u64),
    Leading,
}

#[derive(rkyv::Archive, rkyv::Serialize, Clone, Debug)]
enum WireMessage {
    Prepare {
        ballot: WireBallot,
        from_slot: u64,
    },
    Promise {
        ballot: WireBallot,
        from_slot: u64,
        next_from: Option<u64>,
        log_start: u64,
        entries: Vec<WireEntry>,
    },
    Nack {
        ballot: WireBallot,
        promised: WireBallot,
    },
    Accept {
        ballot: WireBallot,
        slot: u64,
        commit: u64,
        count: u32,
        batch: Bytes,
    },
    Accepted {
        ballot: WireBallot,
        slot: u64,
    },
    Heartbeat {
        ballot: WireBallot,
        commit: u64,
        read_round: u64,
    },
    HeartbeatAck {
        ballot: WireBallot,
        read_round: u64,
        commit: u64,
    },
    CatchUpRequest {
        ballot: WireBallot,
        from_slot: u64,
    },
    CatchUp {
        ballot: WireBallot,
        commit: u64,
        entries: Vec<WireEntry>,
    },
    Notification {
        round: u64,
        state: WireState,
    },
    Rejoin {
        floor: Option<WireBallot>,
    },
    RejoinInfo {
        promised: WireBallot,
        recovery_end: Option<u64>,
    },
    TakeOver {
        ballot: WireBallot,
    },
}

#[derive(rkyv::Archive, rkyv::Serialize, Clone, Debug)]
struct WirePeerFrame {
    group: u32,
    msg: WireMessage,
}

impl Validate for ArchivedWirePeerFrame {
    fn validate(&self) -> Result<(), String> {
        // Ballots, slots and senders depend on the group's membership and
        // log, and are checked by `Replica::step`.
        Ok(())
    }
}

fn ballot_out(b: Ballot) -> WireBallot {
    WireBallot {
        round: b.round,
        node: b.node.0,
    }
}

fn ballot_in(b: &ArchivedWireBallot) -> Ballot {
    Ballot {
        round: b.round.to_native(),
        node: NodeId(b.node.to_native()),
    }
}

fn entry_out(slot: Slot, ballot: Ballot, batch: &Batch) -> WireEntry {
    WireEntry {
        slot: slot.0,
        ballot: ballot_out(ballot),
        count: batch.len(),
        batch: batch.bytes().clone(),
    }
}

use crate::group::archive::to_bytes as serialize;

mod wal;
pub use wal::{decode_wal_accept, decode_write, encode_write};

/// Encodes a message for `group` as a peer frame body (the same bytes for
/// every peer it goes to).
pub fn encode_message(group: GroupId, msg: &Message) -> rkyv::util::AlignedVec {
    let wire = WirePeerFrame {
        group: group.0,
        msg: message_out(msg),
    };
    serialize(&wire)
}

fn message_out(msg: &Message) -> WireMessage {
    let entries = |entries: &mut dyn Iterator<Item = WireEntry>| entries.collect::<Vec<_>>();
    match msg {
        Message::Prepare(m) => WireMessage::Prepare {
            ballot: ballot_out(m.ballot),
            from_slot: m.from_slot.0,
        },
        Message::Promise(m) => WireMessage::Promise {
            ballot: ballot_out(m.ballot),
            from_slot: m.from_slot.0,
            next_from: m.next_from.map(|s| s.0),
            log_start: m.log_start.0,
            entries: entries(
                &mut m
                    .entries
                    .iter()
                    .map(|(s, e)| entry_out(*s, e.ballot, &e.batch)),
            ),
        },
        Message::Nack(m) => WireMessage::Nack {
            ballot: ballot_out(m.ballot),
            promised: ballot_out(m.promised),
        },
        Message::Accept(m) => WireMessage::Accept {
            ballot: ballot_out(m.ballot),
            slot: m.slot.0,
            commit: m.commit.0,
            count: m.batch.len(),
            batch: m.batch.bytes().clone(),
        },
        Message::Accepted(m) => WireMessage::Accepted {
            ballot: ballot_out(m.ballot),
            slot: m.slot.0,
        },
        Message::Heartbeat(m) => WireMessage::Heartbeat {
            ballot: ballot_out(m.ballot),
            commit: m.commit.0,
            read_round: m.read_round,
        },
        Message::HeartbeatAck(m) => WireMessage::HeartbeatAck {
            ballot: ballot_out(m.ballot),
            read_round: m.read_round,
            commit: m.commit.0,
        },
        Message::CatchUpRequest(m) => WireMessage::CatchUpRequest {
            ballot: ballot_out(m.ballot),
            from_slot: m.from_slot.0,
        },
        Message::CatchUp(m) => WireMessage::CatchUp {
            ballot: ballot_out(m.ballot),
            commit: m.commit.0,
            entries: entries(&mut m.entries.iter().map(|(s, b)| entry_out(*s, m.ballot, b))),
        },
        Message::Notification(n) => WireMessage::Notification {
            round: n.round,
            state: state_out(n.state),
        },
        Message::Rejoin(m) => WireMessage::Rejoin {
            floor: m.floor.map(ballot_out),
        },
        Message::RejoinInfo(m) => WireMessage::RejoinInfo {
            promised: ballot_out(m.promised),
            recovery_end: m.recovery_end.map(|s| s.0),
        },
        Message::TakeOver(m) => WireMessage::TakeOver {
            ballot: ballot_out(m.ballot),
        },
    }
}

fn state_out(state: PeerState) -> WireState {
    match state {
        PeerState::Looking(v) => WireState::Looking(WireVote {
            epoch: v.epoch,
            commit: v.commit.0,
            last_ballot: ballot_out(v.last_ballot),
            last_slot: v.last_slot.0,
            rank: v.rank,
            node: v.node.0,
        }),
        PeerState::Following(leader) => WireState::Following(leader.0),
        PeerState::Leading => WireState::Leading,
    }
}

/// Decodes a peer frame body received from `from` by `to` (this node);
/// batches are sliced out of `frame`, not copied.
pub fn decode_envelope(
    frame: &Bytes,
    from: NodeId,
    to: NodeId,
    limits: BatchLimits,
) -> Result<(GroupId, Envelope), DecodeError> {
    let (group, msg) = decode_message(frame, limits)?;
    Ok((group, Envelope { from, to, msg }))
}

/// A peer frame body, decoded: the message and the bytes it came in, which
/// (for an Accept) become the WAL record as they are. Made only by
/// decoding, so the two always agree.
#[derive(Clone, Debug)]
pub struct PeerFrame {
    group: GroupId,
    envelope: Envelope,
    body: Bytes,
}

impl PeerFrame {
    /// Decodes `body`, received from `from` by `to` (this node).
    pub fn decode(
        body: Bytes,
        from: NodeId,
        to: NodeId,
        limits: BatchLimits,
    ) -> Result<PeerFrame, DecodeError> {
        let (group, envelope) = decode_envelope(&body, from, to, limits)?;
        Ok(PeerFrame {
            group,
            envelope,
            body,
        })
    }

    /// The group it is for.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The message.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The message and its bytes.
    pub(crate) fn into_parts(self) -> (Envelope, Bytes) {
        (self.envelope, self.body)
    }
}

/// Decodes a peer frame body held in `frame`.
pub fn decode_message(
    frame: &Bytes,
    limits: BatchLimits,
) -> Result<(GroupId, Message), DecodeError> {
    let wire = access_body::<ArchivedWirePeerFrame>(frame)?;
    let batch = |count: u32, bytes: &[u8]| -> Result<Batch, DecodeError> {
        Ok(Batch::decode(
            frame.slice_ref(bytes),
            count,
            limits.batch_bytes_max,
            limits.command_bytes_max,
        )?)
    };
    let entries = |list: &rkyv::vec::ArchivedVec<ArchivedWireEntry>| -> Result<Vec<(Slot, Entry)>, DecodeError> {
        list.iter()
            .map(|e| {
                let entry = Entry { ballot: ballot_in(&e.ballot), batch: batch(e.count.to_native(), e.batch.as_slice())? };
                Ok((Slot(e.slot.to_native()), entry))
            })
            .collect()
    };
    let msg = match &wire.msg {
        ArchivedWireMessage::Prepare { ballot, from_slot } => Message::Prepare(Prepare {
            ballot: ballot_in(ballot),
            from_slot: Slot(from_slot.to_native()),
        }),
        ArchivedWireMessage::Promise {
            ballot,
            from_slot,
            next_from,
            log_start,
            entries: list,
        } => Message::Promise(Promise {
            ballot: ballot_in(ballot),
            from_slot: Slot(from_slot.to_native()),
            next_from: next_from.as_ref().map(|s| Slot(s.to_native())),
            log_start: Slot(log_start.to_native()),
            entries: entries(list)?,
        }),
        ArchivedWireMessage::Nack { ballot, promised } => Message::Nack(Nack {
            ballot: ballot_in(ballot),
            promised: ballot_in(promised),
        }),
        ArchivedWireMessage::Accept {
            ballot,
            slot,
            commit,
            count,
            batch: bytes,
        } => Message::Accept(Accept {
            ballot: ballot_in(ballot),
            slot: Slot(slot.to_native()),
            batch: batch(count.to_native(), bytes.as_slice())?,
            commit: Slot(commit.to_native()),
        }),
        ArchivedWireMessage::Accepted { ballot, slot } => Message::Accepted(Accepted {
            ballot: ballot_in(ballot),
            slot: Slot(slot.to_native()),
        }),
        ArchivedWireMessage::Heartbeat {
            ballot,
            commit,
            read_round,
        } => Message::Heartbeat(Heartbeat {
            ballot: ballot_in(ballot),
            commit: Slot(commit.to_native()),
            read_round: read_round.to_native(),
        }),
        ArchivedWireMessage::HeartbeatAck {
            ballot,
            read_round,
            commit,
        } => Message::HeartbeatAck(HeartbeatAck {
            ballot: ballot_in(ballot),
            read_round: read_round.to_native(),
            commit: Slot(commit.to_native()),
        }),
        ArchivedWireMessage::CatchUpRequest { ballot, from_slot } => {
            Message::CatchUpRequest(CatchUpRequest {
                ballot: ballot_in(ballot),
                from_slot: Slot(from_slot.to_native()),
            })
        }
        ArchivedWireMessage::CatchUp {
            ballot,
            commit,
            entries: list,
        } => Message::CatchUp(CatchUp {
            ballot: ballot_in(ballot),
            commit: Slot(commit.to_native()),
            entries: entries(list)?
                .into_iter()
                .map(|(s, e)| (s, e.batch))
                .collect(),
        }),
        ArchivedWireMessage::Notification { round, state } => Message::Notification(Notification {
            round: round.to_native(),
            state: state_in(state),
        }),
        ArchivedWireMessage::Rejoin { floor } => Message::Rejoin(Rejoin {
            floor: floor.as_ref().map(ballot_in),
        }),
        ArchivedWireMessage::RejoinInfo {
            promised,
            recovery_end,
        } => Message::RejoinInfo(RejoinInfo {
            promised: ballot_in(promised),
            recovery_end: recovery_end.as_ref().map(|s| Slot(s.to_native())),
        }),
        ArchivedWireMessage::TakeOver { ballot } => Message::TakeOver(TakeOver {
            ballot: ballot_in(ballot),
        }),
    };
    Ok((GroupId(wire.group.to_native()), msg))
}

fn state_in(state: &ArchivedWireState) -> PeerState {
    match state {
        ArchivedWireState::Looking(v) => PeerState::Looking(Vote {
            epoch: v.epoch.to_native(),
            commit: Slot(v.commit.to_native()),
            last_ballot: ballot_in(&v.last_ballot),
            last_slot: Slot(v.last_slot.to_native()),
            rank: v.rank.to_native(),
            node: NodeId(v.node.to_native()),
        }),
        ArchivedWireState::Following(leader) => PeerState::Following(NodeId(leader.to_native())),
        ArchivedWireState::Leading => PeerState::Leading,
    }
}

#[cfg(test)]
mod tests;

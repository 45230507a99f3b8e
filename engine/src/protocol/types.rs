//! Newtypes for the numbers the protocol speaks in.
//!
//! A bare `u64` in a message could be a slot, a round, a node or a tick; these
//! types make the compiler tell them apart.

use std::fmt;

/// A replica's identity within a group. `NodeId(0)` is never a member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// A log position. Each slot holds one batch of commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u64);

impl Slot {
    /// The slot after this one.
    #[must_use]
    pub fn next(self) -> Slot {
        Slot(self.0 + 1)
    }

    /// `n` slots after this one.
    #[must_use]
    pub fn plus(self, n: u64) -> Slot {
        Slot(self.0 + n)
    }

    /// Slots from `earlier` up to `self` (zero when `earlier` is later).
    #[must_use]
    pub fn distance_from(self, earlier: Slot) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A proposal number: ordered by round first, then by node (field order is
/// comparison order), so two proposers never share a ballot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    /// Rises with every new leadership attempt.
    pub round: u64,
    /// The proposer that owns the ballot.
    pub node: NodeId,
}

impl Ballot {
    /// Lower than every ballot a proposer can own.
    pub const ZERO: Ballot = Ballot {
        round: 0,
        node: NodeId(0),
    };
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node.0)
    }
}

/// Names one `Sync` action; `Persisted(id)` reports that every write issued
/// before that sync is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncId(pub u64);

/// A client session's identity. Commands of client 0 carry no session and are
/// never deduplicated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

impl ClientId {
    /// Reserved for configuration entries (`Membership`): no client's.
    pub const MEMBERSHIP: ClientId = ClientId(u64::MAX);
}

/// One independent Multi-Paxos group (a shard of the log).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

/// A command's position in the flattened log that clients see: the count of
/// commands in all earlier slots plus its offset in its batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogIndex(pub u64);

/// Names one linearizable read request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

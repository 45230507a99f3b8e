//! Votes and their total order: what election notifications carry.

use super::types::{Ballot, NodeId, Slot};

/// A candidate as a looking node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vote {
    /// The highest ballot round the candidate accepted anything under.
    pub epoch: u64,
    /// The candidate's commit point: a leader asks the others, in Phase 1,
    /// for every slot from there, so the further it is the less it asks.
    pub commit: Slot,
    /// Ballot of the candidate's last accepted slot.
    pub last_ballot: Ballot,
    /// The candidate's last accepted slot.
    pub last_slot: Slot,
    /// The candidate.
    pub node: NodeId,
}

/// The total order of votes: epoch, then commit point, then last logged
/// (ballot, slot), then the node's rank, which rotates with the group so
/// leaders spread over nodes. Distinct members have distinct ranks, so
/// distinct votes never tie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VoteKey {
    epoch: u64,
    commit: Slot,
    last_ballot: Ballot,
    last_slot: Slot,
    rank: usize,
}

impl VoteKey {
    /// The key of `vote` in a group with these sorted `members`.
    pub fn new(vote: &Vote, members: &[NodeId], group: u32) -> VoteKey {
        let n = members.len().max(1);
        let position = members.binary_search(&vote.node).unwrap_or(0);
        VoteKey {
            epoch: vote.epoch,
            commit: vote.commit,
            last_ballot: vote.last_ballot,
            last_slot: vote.last_slot,
            rank: (position + n - group as usize % n) % n,
        }
    }
}

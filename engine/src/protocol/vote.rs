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

/// The total order of votes: commit point, then epoch, then last logged
/// (ballot, slot), then the node's rank among the voters, which rotates
/// with the group so leaders spread over nodes (a node that is no voter
/// ranks below them), then its id: distinct votes never tie.
///
/// The commit point comes first: a replica that knows more to be chosen
/// knows every configuration a replica behind it does, and the voters it
/// asks in Phase 1 answer it. Ranked by epoch first, replicas behind a
/// change elected one of their own (a newer epoch from an attempt that
/// never completed), whose Phase 1 the replicas past the change refused,
/// and the group went round for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VoteKey {
    commit: Slot,
    epoch: u64,
    last_ballot: Ballot,
    last_slot: Slot,
    rank: usize,
    node: NodeId,
}

impl VoteKey {
    /// The key of `vote` in a group with these sorted voters.
    pub fn new(vote: &Vote, voters: &[NodeId], group: u32) -> VoteKey {
        let n = voters.len().max(1);
        let rank = voters
            .binary_search(&vote.node)
            .map_or(0, |position| 1 + (position + n - group as usize % n) % n);
        VoteKey {
            commit: vote.commit,
            epoch: vote.epoch,
            last_ballot: vote.last_ballot,
            last_slot: vote.last_slot,
            rank,
            node: vote.node,
        }
    }
}

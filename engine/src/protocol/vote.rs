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
    /// The candidate's rank among the voters in force at its commit
    /// point, as the candidate knows them (0: not one of them). The
    /// candidate states it: a replica behind a change does not know those
    /// voters yet, and ranking equal logs by the voters it does know, it
    /// backed another candidate than the replicas past the change, and the
    /// votes split for ever.
    pub rank: u32,
    /// The candidate.
    pub node: NodeId,
}

/// `node`'s rank among the sorted `voters` of group `group`: 1 and up for a
/// voter, rotating with the group so that leaders spread over nodes; 0 for
/// a node that is no voter, below every voter.
pub fn voter_rank(node: NodeId, voters: &[NodeId], group: u32) -> u32 {
    let n = voters.len().max(1);
    voters.binary_search(&node).map_or(0, |position| {
        u32::try_from(1 + (position + n - group as usize % n) % n).unwrap_or(u32::MAX)
    })
}

/// The total order of votes: commit point, then whether the candidate is
/// a voter there, then epoch, then last logged (ballot, slot), then the
/// candidate's rank among the voters ([`voter_rank`]), then its id:
/// distinct votes never tie.
///
/// The commit point comes first: a replica that knows more to be chosen
/// knows every configuration a replica behind it does, and the voters it
/// asks in Phase 1 answer it. Ranked by epoch first, replicas behind a
/// change elected one of their own (a newer epoch from an attempt that
/// never completed), whose Phase 1 the replicas past the change refused,
/// and the group went round for ever.
///
/// Being a voter comes before the log: a replica at the same commit point
/// as a candidate that is no voter there does not back it, while one
/// behind cannot tell and may; ranked by log first, those behind backed a
/// non-voter with a longer log, those level a voter, and the votes split
/// for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VoteKey {
    commit: Slot,
    voter: bool,
    epoch: u64,
    last_ballot: Ballot,
    last_slot: Slot,
    rank: u32,
    node: NodeId,
}

impl From<&Vote> for VoteKey {
    fn from(vote: &Vote) -> VoteKey {
        VoteKey {
            commit: vote.commit,
            voter: vote.rank > 0,
            epoch: vote.epoch,
            last_ballot: vote.last_ballot,
            last_slot: vote.last_slot,
            rank: vote.rank,
            node: vote.node,
        }
    }
}

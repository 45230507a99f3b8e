//! Leader election after ZooKeeper's FastLeaderElection.
//!
//! A looking node votes for the freshest candidate it knows, by
//! `(commit point, epoch, last logged, node)`, and rebroadcasts whenever it adopts a better
//! vote. Notifications of an older election round are answered and dropped; a
//! newer round resets the tally. Once a majority holds its vote it waits
//! `finalize_ticks` for a better one, then leads or follows. A node that is
//! not looking answers a looking one with its sitting leader, so a restarted
//! node joins the leader instead of starting an election. Safety never rests
//! on this: two nodes that both lead still cannot choose two values.

use std::collections::BTreeMap;

use super::action::Actions;
use super::message::{Message, Notification, PeerState};
use super::types::{Ballot, NodeId};
use super::vote::{voter_rank, Vote, VoteKey};
use super::{Following, Replica, Role};

#[derive(Clone, Debug, Default)]
pub(super) struct Looking {
    /// Whether this election has begun (at the first tick after looking).
    begun: bool,
    /// The candidate we vote for (ourselves at first).
    vote: Option<Vote>,
    /// Votes of looking peers in our round, ours included.
    tally: BTreeMap<NodeId, Vote>,
    /// Peers that are not looking, and the leader each reports.
    sitting: BTreeMap<NodeId, NodeId>,
    decide_at: Option<u64>,
    rebroadcast_at: u64,
}

impl Looking {
    pub(super) fn idle() -> Looking {
        Looking::default()
    }
}

impl Replica {
    pub(super) fn my_vote(&self) -> Vote {
        // Slots below the commit point are chosen: how they were accepted
        // says nothing about who should lead (a replica that compacted them
        // must not rank below one that kept them).
        let (last_slot, last_ballot) = self
            .log
            .last()
            .filter(|(slot, _)| *slot >= self.commit)
            .map(|(slot, entry)| (slot, entry.ballot))
            .unwrap_or((self.commit, Ballot::ZERO));
        // The electors are the voters in force at the commit point, every
        // one chosen below it: this rank is the one any replica with the
        // same commit point (and so the same chosen prefix) would state.
        Vote {
            epoch: self.accepted_max.round,
            commit: self.commit,
            last_ballot,
            last_slot,
            rank: voter_rank(self.config.id, &self.electors, self.config.group.0),
            node: self.config.id,
        }
    }

    pub(super) fn start_looking(&mut self, out: &mut Actions) {
        // Every node looks and passes votes on, voter or not: a vote counts
        // only where its sender is a voter of the configuration in force,
        // but a replica whose commit point is past a change may be the only
        // one that can tell a voter behind it who is best (Raft's servers
        // likewise answer votes without consulting their configuration).
        // A non-voter may stand too: it may be the one that knows most
        // (the voters of a new configuration may all be behind the point
        // it comes into force), and once it leads it hands over to a voter.
        self.abandon_leadership(out);
        self.round += 1;
        let vote = self.my_vote();
        let mut looking = Looking {
            begun: true,
            vote: Some(vote),
            ..Looking::default()
        };
        looking.tally.insert(self.config.id, vote);
        self.role = Role::Looking(looking);
        self.broadcast_vote(out);
        // A group of one is its own majority: no vote will come to count.
        self.check_vote_quorum(out);
    }

    fn broadcast_vote(&mut self, out: &mut Actions) {
        let next = self.now + self.rebroadcast_ticks();
        let Role::Looking(looking) = &mut self.role else {
            return;
        };
        looking.rebroadcast_at = next;
        let Some(vote) = looking.vote else {
            return;
        };
        let msg = Message::Notification(Notification {
            round: self.round,
            state: PeerState::Looking(vote),
        });
        self.broadcast(&msg, out);
    }

    fn rebroadcast_ticks(&mut self) -> u64 {
        let base = u64::from(self.config.election_timeout_ticks / 2).max(1);
        base + self.jitter(base)
    }

    pub(super) fn looking_tick(&mut self, out: &mut Actions) {
        if !self.config.election_enabled {
            return;
        }
        let Role::Looking(looking) = &self.role else {
            return;
        };
        if !looking.begun {
            self.start_looking(out);
        } else if looking.decide_at.is_some_and(|at| self.now >= at) {
            self.decide(out);
        } else if self.now >= looking.rebroadcast_at {
            self.broadcast_vote(out);
        }
    }

    pub(super) fn on_notification(&mut self, from: NodeId, n: Notification, out: &mut Actions) {
        if !self.config.election_enabled {
            return;
        }
        match (&self.role, n.state) {
            (Role::Looking(_), PeerState::Looking(vote)) => {
                self.looking_on_vote(from, n.round, vote, out)
            }
            (Role::Looking(_), PeerState::Following(leader)) => {
                self.looking_on_sitting(from, n.round, leader, out)
            }
            (Role::Looking(_), PeerState::Leading) => {
                self.looking_on_sitting(from, n.round, from, out)
            }
            (Role::Following(_) | Role::Leading(_), PeerState::Looking(_)) => {
                self.tell_sitting_leader(from, out)
            }
            (Role::Following(_) | Role::Leading(_) | Role::Rejoining(_), _) => {}
        }
    }

    fn tell_sitting_leader(&self, to: NodeId, out: &mut Actions) {
        let state = match &self.role {
            Role::Following(f) => PeerState::Following(f.leader),
            Role::Leading(_) => PeerState::Leading,
            Role::Looking(_) | Role::Rejoining(_) => return,
        };
        let msg = Message::Notification(Notification {
            round: self.round,
            state,
        });
        self.send(to, msg, out);
    }

    /// A vote from any node is heard (it is counted only if its sender is a
    /// voter of the configuration in force here), and adopted if better
    /// and its candidate may lead: a voter here, or one that has seen more
    /// chosen slots (then this replica may be the one behind a change).
    fn looking_on_vote(&mut self, from: NodeId, round: u64, vote: Vote, out: &mut Actions) {
        if round < self.round {
            self.tell_my_vote(from, out);
            return;
        }
        let mine = Some(self.my_vote());
        let Role::Looking(looking) = &self.role else {
            return;
        };
        // A vote adopted while it could lead may no longer (this replica
        // caught up past the change that removed its candidate): it no
        // longer stands in the way of one that can.
        let current = looking.vote.filter(|v| self.may_lead(v)).or(mine);
        let eligible = self.may_lead(&vote);
        let beats = |other: Option<Vote>| {
            eligible && other.is_none_or(|o| VoteKey::from(&vote) > VoteKey::from(&o))
        };
        let (adopt, reset) = if round > self.round {
            (if beats(mine) { Some(vote) } else { mine }, true)
        } else if beats(current) {
            (Some(vote), false)
        } else {
            (None, false)
        };
        let id = self.config.id;
        if let Role::Looking(looking) = &mut self.role {
            if reset {
                self.round = round;
                looking.tally.clear();
                looking.decide_at = None;
            }
            if let Some(better) = adopt {
                looking.vote = Some(better);
                looking.tally.insert(id, better);
            }
            looking.tally.insert(from, vote);
        }
        if adopt.is_some() {
            self.broadcast_vote(out);
        }
        self.check_vote_quorum(out);
    }

    /// Whether this replica may back `vote`'s candidate: a voter here, or
    /// one that has seen more chosen slots (this replica may be behind a
    /// change that made it one).
    fn may_lead(&self, vote: &Vote) -> bool {
        self.electors.binary_search(&vote.node).is_ok() || vote.commit > self.commit
    }

    fn tell_my_vote(&self, to: NodeId, out: &mut Actions) {
        let Role::Looking(Looking {
            vote: Some(vote), ..
        }) = &self.role
        else {
            return;
        };
        let msg = Message::Notification(Notification {
            round: self.round,
            state: PeerState::Looking(*vote),
        });
        self.send(to, msg, out);
    }

    fn check_vote_quorum(&mut self, out: &mut Actions) {
        let quorum = self.elector_quorum();
        let electors = &self.electors;
        let finalize = u64::from(self.config.finalize_ticks);
        let (now, commit) = (self.now, self.commit);
        let Role::Looking(looking) = &mut self.role else {
            return;
        };
        let Some(vote) = looking.vote else {
            return;
        };
        // A sender whose own vote says it is no voter at a commit point at
        // least ours is not counted, whatever our older configuration says:
        // counted, it and a replica behind the change decided for it alone
        // before the voters' votes arrived, and went round for ever.
        let stated_outside =
            |node: NodeId, v: &Vote| v.node == node && v.rank == 0 && v.commit >= commit;
        let holders = looking
            .tally
            .iter()
            .filter(|(node, v)| {
                **v == vote && electors.binary_search(node).is_ok() && !stated_outside(**node, v)
            })
            .count();
        if holders < quorum {
            looking.decide_at = None;
            return;
        }
        let at = *looking.decide_at.get_or_insert(now + finalize);
        if at <= now {
            self.decide(out);
        }
    }

    fn decide(&mut self, out: &mut Actions) {
        let Role::Looking(Looking {
            vote: Some(vote), ..
        }) = &self.role
        else {
            return;
        };
        let leader = vote.node;
        if leader == self.config.id {
            self.become_leader(out);
        } else {
            let silent_until = self.now + self.follower_timeout();
            self.role = Role::Following(Following::of(leader, silent_until));
        }
    }

    /// A peer that is not looking reports `leader`. Join it once the leader
    /// itself says it leads and, with us, a majority stands behind it; if
    /// the leader is this replica, lead once a majority follows it (as
    /// ZooKeeper's `checkLeader`): a voter behind a change may not know
    /// this replica and never send it its vote, only follow it.
    fn looking_on_sitting(&mut self, from: NodeId, round: u64, leader: NodeId, out: &mut Actions) {
        let quorum = self.elector_quorum();
        let me = usize::from(self.is_elector());
        let id = self.config.id;
        let electors = &self.electors;
        let Role::Looking(looking) = &mut self.role else {
            return;
        };
        // Followers make a leader of this replica only if they decided in
        // its own election round: one followed from an earlier round (a
        // removed node, say) would lead, fail Phase 1 (the voters ignore
        // it) and, followed on, lead again for ever. A non-voter may lead
        // this way, as by votes: it may know most.
        if leader != id || round == self.round {
            looking.sitting.insert(from, leader);
        }
        let claims = leader == id || looking.sitting.get(&leader) == Some(&leader);
        if !claims {
            return;
        }
        let behind = looking
            .sitting
            .iter()
            .filter(|(node, l)| **l == leader && electors.binary_search(node).is_ok())
            .count()
            + me;
        if behind < quorum {
            return;
        }
        if leader == id {
            self.become_leader(out);
        } else {
            let silent_until = self.now + self.follower_timeout();
            self.role = Role::Following(Following::of(leader, silent_until));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Slot;
    use proptest::prelude::*;

    fn arb_vote() -> impl Strategy<Value = Vote> {
        (0u64..3, 0u64..2, 0u64..3, 1u64..4, 0u64..3, 1u64..6).prop_map(
            |(epoch, commit, round, owner, slot, node)| Vote {
                epoch,
                commit: Slot(commit),
                last_ballot: Ballot {
                    round,
                    node: NodeId(owner),
                },
                last_slot: Slot(slot),
                rank: 0,
                node: NodeId(node),
            },
        )
    }

    /// The key of `vote` as its candidate would state it among `voters`.
    fn key_in(vote: &Vote, voters: &[NodeId], group: u32) -> VoteKey {
        let rank = voter_rank(vote.node, voters, group);
        VoteKey::from(&Vote { rank, ..*vote })
    }

    fn members() -> Vec<NodeId> {
        (1..=5).map(NodeId).collect()
    }

    proptest! {
        /// ZOOKEEPER-1419 was a vote comparison that was not a total order;
        /// here distinct votes never tie and the order is transitive.
        #[test]
        fn vote_order_is_strict_and_total(a in arb_vote(), b in arb_vote(), c in arb_vote(), group in 0u32..7) {
            let m = members();
            let (ka, kb, kc) = (key_in(&a, &m, group), key_in(&b, &m, group), key_in(&c, &m, group));
            prop_assert_eq!(ka == kb, a == b, "distinct votes must not tie");
            prop_assert!(!(ka < kb && kb < ka));
            if ka < kb && kb < kc { prop_assert!(ka < kc); }
            prop_assert!(ka < kb || kb < ka || a == b);
        }
    }

    #[test]
    fn commit_beats_epoch_beats_log_beats_id() {
        let vote = |epoch, round, slot, node| Vote {
            epoch,
            commit: Slot(0),
            last_ballot: Ballot {
                round,
                node: NodeId(1),
            },
            last_slot: Slot(slot),
            rank: 0,
            node: NodeId(node),
        };
        let m = members();
        let key = |v: Vote| key_in(&v, &m, 0);
        assert!(key(vote(2, 0, 0, 1)) > key(vote(1, 9, 9, 5)));
        assert!(key(vote(1, 2, 0, 1)) > key(vote(1, 1, 9, 5)));
        assert!(key(vote(1, 1, 3, 1)) > key(vote(1, 1, 2, 5)));
        assert!(key(vote(1, 1, 2, 5)) > key(vote(1, 1, 2, 4)));
        let knows_more = Vote {
            commit: Slot(7),
            ..vote(1, 0, 0, 1)
        };
        assert!(
            key(knows_more) > key(vote(1, 9, 9, 5)),
            "a further commit point beats a longer log"
        );
        assert!(
            key(knows_more) > key(vote(2, 0, 0, 1)),
            "the commit point comes before the epoch"
        );
    }

    /// Equal logs from a voter and from a node outside the voters: the
    /// voter wins, and the two never tie (a tie is how ZOOKEEPER-1419's
    /// elections never ended).
    #[test]
    fn a_voter_beats_an_equal_vote_from_outside_the_voters() {
        let m = members();
        let vote = |node| Vote {
            epoch: 1,
            commit: Slot(4),
            last_ballot: Ballot::ZERO,
            last_slot: Slot(4),
            rank: 0,
            node: NodeId(node),
        };
        for group in 0..5 {
            for voter in 1..=5 {
                let inside = key_in(&vote(voter), &m, group);
                let outside = key_in(&vote(9), &m, group);
                assert!(inside > outside, "group {group}, voter {voter}");
            }
        }
        let (a, b) = (key_in(&vote(8), &m, 0), key_in(&vote(9), &m, 0));
        assert!(a != b, "two nodes outside the voters do not tie");
        // At the same commit point a voter beats a longer log from outside
        // (replicas level with both see the outsider cannot lead); a
        // further commit point still beats a voter.
        let longer = Vote {
            epoch: 2,
            last_ballot: Ballot {
                round: 2,
                node: NodeId(9),
            },
            last_slot: Slot(9),
            ..vote(9)
        };
        assert!(key_in(&vote(1), &m, 0) > key_in(&longer, &m, 0));
        let further = Vote {
            commit: Slot(5),
            ..vote(9)
        };
        assert!(key_in(&further, &m, 0) > key_in(&vote(1), &m, 0));
    }

    #[test]
    fn tie_break_rotates_with_the_group() {
        let m = members();
        let winner = |group: u32| {
            m.iter()
                .copied()
                .max_by_key(|node| {
                    let v = Vote {
                        epoch: 0,
                        commit: Slot(0),
                        last_ballot: Ballot::ZERO,
                        last_slot: Slot(0),
                        rank: 0,
                        node: *node,
                    };
                    key_in(&v, &m, group)
                })
                .unwrap()
        };
        let winners: Vec<_> = (0..5).map(winner).collect();
        assert_eq!(winners[0], NodeId(5));
        let mut distinct = winners.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            5,
            "five groups, five different leaders: {winners:?}"
        );
    }
}

//! Rejoining after the loss of a disk, under the same node id.
//!
//! An acceptor whose disk was wiped has forgotten what it promised and what
//! it accepted. Voting again at once is unsafe twice over: a proposer may
//! still count on a promise it no longer keeps, and a value chosen with its
//! accept may now lack a majority that remembers it. So a rejoining replica
//! neither votes nor answers an election until both hazards are closed:
//!
//! 1. It asks every peer for the highest ballot it has promised (its own
//!    candidacy included) and waits for all of them: every ballot the lost
//!    disk could have promised was issued by some peer, which has promised
//!    it itself, so the maximum, the *floor*, is at least all of them.
//! 2. It asks for a leader above the floor. A leader at or below it runs
//!    Phase 1 again with a higher ballot. That Phase 1 completes without the
//!    rejoining replica (it does not vote), so a majority of the others now
//!    refuses every ballot up to the floor, and the leader has recovered
//!    every value that may have been chosen, in the slots below its
//!    recovery end.
//! 3. It fetches the chosen slots up to that recovery end (by catch-up, or
//!    a snapshot from the runtime), then promises the leader's ballot,
//!    durably, and from there on is an ordinary acceptor.
//!
//! With a peer down, step 1 waits: rejoining needs every other member up.
//! With a majority of the disks lost no leader can finish Phase 1 and the
//! replica waits for ever, as it must: acknowledged data may be gone.
//!
//! A replica that still knows the highest ballot it ever promised (its
//! WAL's tail was cut, but the promise record kept beside the WAL was not:
//! `group::Recovery::promise_record`) skips step 1: that ballot is its
//! floor. It then needs only what step 2 needs, a leader whose Phase 1
//! completed with a majority of the others: with five replicas, three of
//! the other four up.

use std::collections::BTreeMap;

use super::action::{Actions, Write};
use super::message::{CatchUp, CatchUpRequest, Message, Rejoin, RejoinInfo};
use super::types::{Ballot, NodeId, Slot};
use super::{Config, ConfigError, DurableState, Following, Replica, Role};

/// Where a rejoining replica stands.
#[derive(Clone, Debug, Default)]
pub(super) struct Rejoining {
    /// Each peer's reported promise, until all of them have answered.
    promises: BTreeMap<NodeId, Ballot>,
    /// The highest promise anywhere, once every peer has answered.
    floor: Option<Ballot>,
    /// A leader above the floor, past its Phase 1: its ballot and the end
    /// of the slots that Phase 1 recovered.
    leader: Option<(Ballot, Slot)>,
    asked_at: Option<u64>,
    catchup_sent_at: Option<u64>,
    /// Last tick the catch-up moved (or a leader was found).
    progress_at: u64,
}

impl Replica {
    /// A replica rebuilding after its disk was lost or its WAL's tail was
    /// cut: `durable` holds what survived, or what an earlier, interrupted
    /// rebuild already stored. It votes for nothing until it has rejoined
    /// (see the module docs). `promised_at_most` is the highest ballot it
    /// can have promised, if it knows (a record that outlived the WAL's
    /// tail); without it, it asks every peer.
    pub fn rejoining(
        config: Config,
        durable: DurableState,
        promised_at_most: Option<Ballot>,
    ) -> Result<Replica, ConfigError> {
        let mut replica = Replica::new(config, durable)?;
        let floor = promised_at_most.map(|known| known.max(replica.promised));
        replica.role = Role::Rejoining(Rejoining {
            floor,
            ..Rejoining::default()
        });
        Ok(replica)
    }

    /// A peer asks, on its way back: answer, and if we lead at or below
    /// its floor, outbid the floor with a new Phase 1.
    pub(super) fn on_rejoin(&mut self, from: NodeId, rejoin: Rejoin, out: &mut Actions) {
        if let Some(floor) = rejoin.floor {
            self.see_round(floor.round);
            if matches!(&self.role, Role::Leading(l) if l.ballot <= floor) {
                self.become_leader(out);
            }
        }
        let recovery_end = match (&self.role, rejoin.floor) {
            (Role::Leading(l), Some(floor)) if l.is_steady() && l.ballot > floor => {
                Some(l.recovery_end())
            }
            _ => None,
        };
        let info = RejoinInfo {
            promised: self.promised,
            recovery_end,
        };
        self.send(from, Message::RejoinInfo(info), out);
    }

    pub(super) fn rejoining_tick(&mut self, out: &mut Actions) {
        let (now, resend) = (self.now, u64::from(self.config.resend_ticks));
        let stalled_after = 4 * u64::from(self.config.election_timeout_ticks);
        let Role::Rejoining(r) = &mut self.role else {
            return;
        };
        if r.leader.is_some() && now > r.progress_at + stalled_after {
            r.leader = None; // that leader is gone: find the next one
        }
        if r.leader.is_none() && r.asked_at.is_none_or(|at| at + resend <= now) {
            r.asked_at = Some(now);
            let floor = r.floor;
            let answered: Vec<NodeId> = r.promises.keys().copied().collect();
            let peers: Vec<NodeId> = self
                .peers()
                .copied()
                .filter(|p| floor.is_some() || !answered.contains(p))
                .collect();
            for peer in peers {
                self.send(peer, Message::Rejoin(Rejoin { floor }), out);
            }
        }
        self.rejoin_progress(out);
    }

    /// Every message while rejoining: only answers to our questions count;
    /// nothing is voted on or acknowledged.
    pub(super) fn on_rejoining_message(&mut self, from: NodeId, msg: Message, out: &mut Actions) {
        match msg {
            Message::RejoinInfo(info) => self.on_rejoin_info(from, info, out),
            Message::CatchUp(catchup) => self.on_rejoin_catchup(from, catchup, out),
            _ => {}
        }
    }

    fn on_rejoin_info(&mut self, from: NodeId, info: RejoinInfo, out: &mut Actions) {
        let (now, own, peers) = (self.now, self.promised, self.peers.len());
        let Role::Rejoining(r) = &mut self.role else {
            return;
        };
        match r.floor {
            None => {
                r.promises.insert(from, info.promised);
                if r.promises.len() == peers {
                    let floor = r.promises.values().copied().fold(own, Ballot::max);
                    r.floor = Some(floor);
                    r.asked_at = None; // ask for a leader above it at the next tick
                }
            }
            Some(floor) => {
                if let Some(end) = info.recovery_end {
                    let better = r.leader.is_none_or(|(ballot, _)| info.promised > ballot);
                    if info.promised > floor && better {
                        r.leader = Some((info.promised, end));
                        r.catchup_sent_at = None;
                        r.progress_at = now;
                    }
                }
            }
        }
        self.rejoin_progress(out);
    }

    fn on_rejoin_catchup(&mut self, from: NodeId, catchup: CatchUp, out: &mut Actions) {
        let Role::Rejoining(r) = &self.role else {
            return;
        };
        let Some((ballot, _)) = r.leader else {
            return;
        };
        if catchup.ballot != ballot || from != ballot.node || catchup.ballot < self.promised {
            return;
        }
        let before = self.commit;
        self.store_chosen(ballot, catchup.entries, out);
        // The learner asks for more only as a follower; rejoin_progress asks.
        self.learn(ballot, catchup.commit, out);
        let now = self.now;
        if let Role::Rejoining(r) = &mut self.role {
            r.catchup_sent_at = None;
            if self.commit > before {
                r.progress_at = now;
            }
        }
        self.rejoin_progress(out);
    }

    /// Asks for the next chosen slots, or rejoins once it holds every slot
    /// the leader's Phase 1 recovered.
    fn rejoin_progress(&mut self, out: &mut Actions) {
        let (now, resend, commit) = (self.now, u64::from(self.config.resend_ticks), self.commit);
        let Role::Rejoining(r) = &mut self.role else {
            return;
        };
        let Some((ballot, end)) = r.leader else {
            return;
        };
        if commit < end {
            if r.catchup_sent_at.is_none_or(|at| at + resend <= now) {
                r.catchup_sent_at = Some(now);
                let request = CatchUpRequest {
                    ballot,
                    from_slot: commit,
                };
                self.send(ballot.node, Message::CatchUpRequest(request), out);
            }
            return;
        }
        // The promise that makes every ballot up to the floor ours to refuse.
        self.promised = self.promised.max(ballot);
        self.see_round(self.promised.round);
        self.persist(Write::Promise(self.promised), out);
        let silent_until = self.now + self.follower_timeout();
        self.role = Role::Following(Following::of(ballot.node, silent_until));
    }

    /// Whether this replica is still rebuilding (it votes for nothing).
    pub fn is_rejoining(&self) -> bool {
        matches!(self.role, Role::Rejoining(_))
    }
}

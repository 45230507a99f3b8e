//! The acceptor: promises, accepts, and the durable state behind them.

use super::action::{Action, Actions, Write};
use super::log::Entry;
use super::message::{
    Accept, Accepted, CatchUp, Heartbeat, HeartbeatAck, Message, Nack, Prepare, Promise,
};
use super::types::{Ballot, NodeId, Slot};
use super::{Following, Replica, Role};

impl Replica {
    pub(super) fn on_prepare(&mut self, from: NodeId, prepare: Prepare, out: &mut Actions) {
        // A node that votes in none of our configurations was removed (or
        // was never added): it must not unseat the leader. Unless it has
        // seen more chosen slots than we have: then we may be the one
        // behind, not knowing a configuration that added it.
        if !self.schedule.votes_anywhere(from) && prepare.from_slot <= self.commit {
            return;
        }
        self.see_round(prepare.ballot.round);
        if prepare.ballot < self.promised {
            self.send_nack(from, prepare.ballot, out);
            return;
        }
        if prepare.ballot > self.promised {
            self.promised = prepare.ballot;
            self.persist(Write::Promise(prepare.ballot), out);
        }
        self.heard_from_leader(prepare.ballot, out);
        let budget = self.config.page_bytes_max as usize;
        let promise = self.promise_for(prepare.ballot, prepare.from_slot, budget);
        self.send_durable(from, Message::Promise(promise), out);
        // A leader behind our compaction point cannot use this promise (it
        // lacks slots only our snapshot holds): hand it the snapshot, so
        // that its next Prepare starts from where we can answer.
        if prepare.from_slot < self.log.start() {
            out.push(Action::SendSnapshot { to: from });
        }
    }

    /// What this acceptor accepted from `from_slot` on, cut after about
    /// `bytes_max` bytes of batches (at least one entry) so that a promise
    /// always fits in a frame; the rest is asked for page by page.
    pub(super) fn promise_for(&self, ballot: Ballot, from_slot: Slot, bytes_max: usize) -> Promise {
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut next_from = None;
        for (slot, entry) in self.log.entries_from(from_slot) {
            if !entries.is_empty() && bytes + entry.batch.bytes().len() > bytes_max {
                next_from = Some(slot);
                break;
            }
            bytes += entry.batch.bytes().len();
            entries.push((slot, entry.clone()));
        }
        Promise {
            ballot,
            from_slot,
            next_from,
            log_start: self.log.start(),
            entries,
        }
    }

    pub(super) fn on_accept(&mut self, from: NodeId, accept: Accept, out: &mut Actions) {
        self.see_round(accept.ballot.round);
        if accept.ballot < self.promised && !self.test_accepts_below_promise() {
            self.send_nack(from, accept.ballot, out);
            return;
        }
        let Accept {
            ballot,
            slot,
            batch,
            commit,
        } = accept;
        // A compacted slot is chosen and held in the snapshot, not as an
        // accepted entry: there is no durable vote to report (a late copy
        // of an Accept; its leader has the slot chosen already).
        let compacted = slot < self.log.start();
        self.acceptor_accept(slot, Entry { ballot, batch }, out);
        self.heard_from_leader(ballot, out);
        if !compacted {
            self.send_durable(from, Message::Accepted(Accepted { ballot, slot }), out);
        } else if slot == commit {
            // A leader behind our snapshot (elected from behind, and we
            // installed a peer's snapshot since) waits for a vote on its
            // first open slot that we cannot give: hand it the snapshot.
            // Once per resend of that slot, not once per slot in flight.
            out.push(Action::SendSnapshot { to: from });
        }
        self.learn(ballot, commit, out);
    }

    pub(super) fn on_heartbeat(&mut self, from: NodeId, heartbeat: Heartbeat, out: &mut Actions) {
        self.see_round(heartbeat.ballot.round);
        if heartbeat.ballot < self.promised {
            self.send_nack(from, heartbeat.ballot, out);
            return;
        }
        self.heard_from_leader(heartbeat.ballot, out);
        let ack = HeartbeatAck {
            ballot: heartbeat.ballot,
            read_round: heartbeat.read_round,
            commit: self.commit,
        };
        self.send(from, Message::HeartbeatAck(ack), out);
        self.learn(heartbeat.ballot, heartbeat.commit, out);
    }

    /// Chosen values from the leader. They are stored as accepted at the
    /// leader's ballot: every proposal at or above the ballot that chose a
    /// value carries that value, so this can never contradict a later leader.
    pub(super) fn on_catchup(&mut self, catchup: CatchUp, out: &mut Actions) {
        self.see_round(catchup.ballot.round);
        if catchup.ballot < self.promised {
            return;
        }
        self.heard_from_leader(catchup.ballot, out);
        // The answer to our outstanding request starts at our commit point:
        // the next page may be asked for at once. A duplicate or a late
        // copy does not clear the way, or each copy would ask again and the
        // requests multiply with every duplicated page.
        let answers_ours = catchup
            .entries
            .first()
            .is_some_and(|(s, _)| *s == self.commit);
        if let Role::Following(following) = &mut self.role {
            if answers_ours {
                following.catchup_sent_at = None;
            }
        }
        self.store_chosen(catchup.ballot, catchup.entries, out);
        self.learn(catchup.ballot, catchup.commit, out);
    }

    /// Stores chosen values the leader of `ballot` sent, at `ballot`, for
    /// the slots not yet known chosen here.
    pub(super) fn store_chosen(
        &mut self,
        ballot: Ballot,
        entries: Vec<(Slot, super::batch::Batch)>,
        out: &mut Actions,
    ) {
        for (slot, batch) in entries {
            if slot >= self.commit {
                self.acceptor_accept(slot, Entry { ballot, batch }, out);
            }
        }
    }

    /// Accepts `entry` at `slot`: the one place acceptor state changes value.
    pub(super) fn acceptor_accept(&mut self, slot: Slot, entry: Entry, out: &mut Actions) {
        if slot < self.log.start() {
            return; // compacted: chosen, and kept in the snapshot
        }
        if !self.test_accepts_below_promise() {
            assert!(entry.ballot >= self.promised, "accept below the promise");
        }
        if slot < self.commit {
            let chosen = self.log.get(slot).map(|e| &e.batch);
            assert_eq!(chosen, Some(&entry.batch), "a chosen slot never changes");
        }
        self.promised = self.promised.max(entry.ballot);
        self.accepted_max = self.accepted_max.max(entry.ballot);
        self.log.insert(slot, entry.clone());
        self.persist(Write::Accept { slot, entry }, out);
    }

    fn send_nack(&self, to: NodeId, ballot: Ballot, out: &mut Actions) {
        let nack = Nack {
            ballot,
            promised: self.promised,
        };
        self.send(to, Message::Nack(nack), out);
    }

    /// A message at `ballot`, at least our promise, came from its leader:
    /// follow it (stepping down if we led at a lower ballot).
    pub(super) fn heard_from_leader(&mut self, ballot: Ballot, out: &mut Actions) {
        let leader = ballot.node;
        if leader == self.config.id {
            return;
        }
        let silent_until = self.now + self.follower_timeout();
        match &mut self.role {
            Role::Following(f) if f.leader == leader => f.silent_until = silent_until,
            _ => {
                self.abandon_leadership(out);
                self.role = Role::Following(Following::of(leader, silent_until));
            }
        }
    }

    pub(super) fn following_tick(&mut self, out: &mut Actions) {
        let Role::Following(following) = &self.role else {
            return;
        };
        if self.now > following.silent_until && self.config.election_enabled {
            self.start_looking(out);
        }
    }

    /// The transport says our leader is gone: look now rather than after
    /// the silence timeout. If it is in fact alive, the election's
    /// stickiness brings us back to it.
    pub(super) fn on_peer_unreachable(&mut self, peer: NodeId, out: &mut Actions) {
        let following_it = matches!(&self.role, Role::Following(f) if f.leader == peer);
        if following_it && self.config.election_enabled {
            self.start_looking(out);
        }
    }

    pub(super) fn follower_timeout(&mut self) -> u64 {
        let base = u64::from(self.config.election_timeout_ticks);
        base + self.jitter(base / 2 + 1)
    }

    pub(super) fn see_round(&mut self, round: u64) {
        self.round_seen_max = self.round_seen_max.max(round);
    }

    #[cfg(test)]
    fn test_accepts_below_promise(&self) -> bool {
        self.faults.accept_below_promise
    }

    #[cfg(not(test))]
    fn test_accepts_below_promise(&self) -> bool {
        false
    }
}

//! The learner: advances the commit point and emits chosen slots in order.

use super::action::{Action, Actions};
use super::batch::Batch;
use super::membership::Membership;
use super::message::{CatchUpRequest, Message};
use super::types::{Ballot, LogIndex, Slot};
use super::{Replica, Role};

impl Replica {
    /// The leader of `trusted` says every slot below `upto` is chosen. Our
    /// entry for a slot is that chosen value only if we accepted it at
    /// `trusted` itself (a leader proposes one value per slot per ballot);
    /// anything else we must fetch.
    pub(super) fn learn(&mut self, trusted: Ballot, upto: Slot, out: &mut Actions) {
        if let Role::Following(following) = &mut self.role {
            if following.leader == trusted.node {
                following.leader_commit = following.leader_commit.max(upto);
            }
        }
        while self.commit < upto {
            match self.log.get(self.commit) {
                Some(entry) if entry.ballot == trusted => self.commit_next(out),
                _ => {
                    self.request_catchup(trusted, out);
                    return;
                }
            }
        }
    }

    /// Emits slot `commit` (known chosen) and moves past it.
    pub(super) fn commit_next(&mut self, out: &mut Actions) {
        let slot = self.commit;
        let batch = self
            .log
            .get(slot)
            .expect("a chosen slot is in the log")
            .batch
            .clone();
        let first_index = self.commit_index;
        self.commit_index = LogIndex(first_index.0 + u64::from(batch.len()));
        self.commit = slot.next();
        self.schedule_on_commit(slot, &batch);
        out.push(Action::Commit {
            slot,
            first_index,
            batch,
        });
    }

    /// Keeps the schedule current as slots are chosen: a configuration
    /// entry joins it, and one no longer in use leaves it.
    fn schedule_on_commit(&mut self, slot: Slot, batch: &Batch) {
        let mut changed = false;
        if Membership::is_entry(batch) {
            match Membership::from_batch(batch) {
                Ok(Some(membership)) => {
                    self.schedule.chosen(slot, membership);
                    changed = true;
                }
                // Checked when it arrived: only a bug gets here.
                Ok(None) | Err(_) => {
                    debug_assert!(false, "a chosen configuration entry is malformed")
                }
            }
        }
        if self
            .schedule
            .entries()
            .get(1)
            .is_some_and(|(from, _)| *from <= self.commit)
        {
            self.schedule.forget_below(self.commit);
            changed = true;
        }
        if changed {
            self.schedule_changed();
        }
    }

    fn request_catchup(&mut self, trusted: Ballot, out: &mut Actions) {
        let now = self.now;
        let resend = u64::from(self.config.resend_ticks);
        let Role::Following(following) = &mut self.role else {
            return;
        };
        if following.leader != trusted.node {
            return;
        }
        if following
            .catchup_sent_at
            .is_some_and(|sent| sent + resend > now)
        {
            return;
        }
        following.catchup_sent_at = Some(now);
        let request = CatchUpRequest {
            ballot: trusted,
            from_slot: self.commit,
        };
        self.send(trusted.node, Message::CatchUpRequest(request), out);
    }
}

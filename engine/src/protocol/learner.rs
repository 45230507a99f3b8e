//! The learner: advances the commit point and emits chosen slots in order.

use super::action::{Action, Actions};
use super::message::{CatchUpRequest, Message};
use super::types::{Ballot, LogIndex, Slot};
use super::{Replica, Role};

impl Replica {
    /// The leader of `trusted` says every slot below `upto` is chosen. Our
    /// entry for a slot is that chosen value only if we accepted it at
    /// `trusted` itself (a leader proposes one value per slot per ballot);
    /// anything else we must fetch.
    pub(super) fn learn(&mut self, trusted: Ballot, upto: Slot, out: &mut Actions) {
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
        out.push(Action::Commit {
            slot,
            first_index,
            batch,
        });
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

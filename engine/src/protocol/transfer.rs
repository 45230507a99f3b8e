//! Leadership transfer: a steady leader hands leadership to a named member,
//! before it is removed or to move load (etcd's `MoveLeader`).
//!
//! The leader sends `TakeOver` with its ballot; the addressee, if it still
//! follows that ballot, takes leadership at once: a Phase 1 above every
//! ballot it has seen, as after an election. Safety is Paxos's own (the
//! new ballot outbids the old leader, whose acceptors then refuse it);
//! only the wait for an election is skipped. Proposals the old leader had
//! in flight end `InDoubt` when it steps down, and a client retries them
//! with the same session numbers, which apply once.

use super::action::Actions;
use super::message::{Message, TakeOver};
use super::types::NodeId;
use super::{Replica, Role};

impl Replica {
    /// Asks member `to` to take leadership over from this steady leader.
    /// Anything else (not leading, still in Phase 1, `to` not a peer)
    /// is ignored: the caller sees no change of leader.
    pub(super) fn transfer_leadership(&mut self, to: NodeId, out: &mut Actions) {
        let ballot = match &self.role {
            Role::Leading(l) if l.is_steady() => l.ballot,
            _ => return,
        };
        if to == self.config.id || !self.schedule.votes_anywhere(to) {
            return;
        }
        self.send(to, Message::TakeOver(TakeOver { ballot }), out);
    }

    /// The leader of `take_over.ballot` hands over: take leadership if
    /// that is still the ballot this replica follows.
    pub(super) fn on_take_over(&mut self, from: NodeId, take_over: TakeOver, out: &mut Actions) {
        let follows = matches!(&self.role, Role::Following(f) if f.leader == from);
        if follows && take_over.ballot == self.promised {
            self.become_leader(out);
        }
    }
}

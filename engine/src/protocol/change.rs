//! Proposing a new configuration (the schedule in `membership.rs` says
//! which configuration governs each slot).

use thiserror::Error;

use super::action::Actions;
use super::membership::Membership;
use super::types::{NodeId, Slot};
use super::{Replica, Role};

/// Why a configuration change was not proposed. Nothing changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChangeRefusal {
    /// Only a steady leader proposes; try the hinted one.
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    /// One change at a time: an earlier one is proposed or not in force yet.
    #[error("an earlier configuration change is still under way")]
    Pending,
}

impl Replica {
    /// Proposes `membership` as the group's next configuration. Once its
    /// entry is chosen at some slot `s` (the `Commit` of a batch that
    /// `Membership::from_batch` reads), it governs every slot from
    /// `s + CHANGE_DELAY_SLOTS` on, which `schedule()` shows; the leader
    /// fills the slots between with no-ops when nothing else is proposed.
    /// Any change is safe, not only one member at a time: Phase 1 asks a
    /// majority of every configuration that may govern an open slot.
    pub fn propose_membership(
        &mut self,
        membership: Membership,
        out: &mut Actions,
    ) -> Result<(), ChangeRefusal> {
        let hint = self.leader();
        let pending = self.change_pending_until().is_some();
        let Role::Leading(leading) = &mut self.role else {
            return Err(ChangeRefusal::NotLeader(hint));
        };
        if !leading.is_steady() {
            return Err(ChangeRefusal::NotLeader(hint));
        }
        if pending || leading.has_change_in_flight() {
            return Err(ChangeRefusal::Pending);
        }
        leading.propose_change(membership.to_batch());
        self.leader_flush(out);
        self.end_step(out);
        Ok(())
    }

    /// How far `member` has caught up, as a leader knows it: every slot
    /// below is chosen there (from its latest heartbeat answer); `None`
    /// unless this replica leads and has heard it answer.
    pub fn follower_commit(&self, member: NodeId) -> Option<Slot> {
        match &self.role {
            Role::Leading(leading) => leading.follower_commits.get(&member).copied(),
            _ => None,
        }
    }

    /// The first slot the newest configuration governs, if it is not in
    /// force yet; `None` once every known configuration is.
    pub fn change_pending_until(&self) -> Option<Slot> {
        let from = self.schedule.latest_from();
        (from > self.commit).then_some(from)
    }
}

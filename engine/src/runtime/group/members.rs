//! Adding, promoting and removing a group's members (the protocol's
//! reconfiguration, `protocol/change.rs`): proposed at the leader, then
//! waited for until this node sees the new configuration chosen or in
//! force.
//!
//! A voter is added in two changes, as etcd and openraft do: first as a
//! learner, which receives the log and counts in no quorum; then, once it
//! has caught up, as a voter. A voter that joined empty would otherwise
//! weigh on every quorum from its first slot while it copies the log.

use std::time::{Duration, Instant};

use futures_channel::oneshot;
use thiserror::Error;

use super::{GroupHandle, GroupStatus, Inbound, MembershipView};
use crate::protocol::{
    ChangeRefusal, Member, Membership, MembershipError, NodeId, Slot, CHANGE_DELAY_SLOTS,
};

/// A learner is caught up once its commit point is this close to the
/// leader's: within one change window, so that as a voter it answers
/// Accepts at once rather than after copying the log.
pub const CAUGHT_UP_SLOTS: u64 = CHANGE_DELAY_SLOTS;

/// How often a change under way is looked at.
const POLL: Duration = Duration::from_millis(5);

/// One change to a group's members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Make `id` a member reached at `addr` (`HOST:PORT`, its peer listen
    /// address): a learner, or a voter (added as a learner first, and
    /// promoted once caught up). A member in that role already is left as
    /// it is; a voter named as a learner is demoted.
    Add {
        /// The member.
        id: NodeId,
        /// Where its peers reach it.
        addr: String,
        /// Whether it votes.
        voter: bool,
    },
    /// Remove member `id` (a removed leader hands leadership to a voter).
    Remove(NodeId),
}

/// Why a change did not happen, or is not known to have.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ChangeError {
    /// This replica does not lead: ask the leader.
    #[error("this node does not lead the group (leader: {leader:?})")]
    NotLeader {
        /// Who it believes leads.
        leader: Option<NodeId>,
    },
    /// An earlier change did not come into force in time; try again
    /// after it.
    #[error("an earlier configuration change is still under way")]
    Pending,
    /// The configuration the change would make is not one (no voter left,
    /// too many members, node 0).
    #[error(transparent)]
    Invalid(#[from] MembershipError),
    /// The learner did not catch up in time; it stays a learner.
    #[error("node {} did not catch up in time (its commit point {commit:?}, the leader's {leader_commit:?})", member.0)]
    NotCaughtUp {
        /// The learner.
        member: NodeId,
        /// Its commit point as the leader last heard it.
        commit: Option<Slot>,
        /// The leader's.
        leader_commit: Slot,
    },
    /// The change was proposed but this node did not see it chosen in
    /// time (leadership moved, or a majority is away): it may still be.
    #[error("the change was not seen chosen within {} ms; it may still be", waited.as_millis())]
    TimedOut {
        /// How long this node waited.
        waited: Duration,
    },
    /// The group stopped.
    #[error("the group stopped")]
    Stopped,
}

impl From<ChangeRefusal> for ChangeError {
    fn from(refusal: ChangeRefusal) -> ChangeError {
        match refusal {
            ChangeRefusal::NotLeader(leader) => ChangeError::NotLeader { leader },
            ChangeRefusal::Pending => ChangeError::Pending,
        }
    }
}

/// The same members in the same roles (addresses aside: the leader fills
/// in those it knows).
fn same_roles(a: &Membership, b: &Membership) -> bool {
    let roles = |m: &Membership| -> Vec<(NodeId, bool)> {
        m.members().iter().map(|m| (m.id, m.voter)).collect()
    };
    roles(a) == roles(b)
}

/// Whether `membership` is what `change` makes: the member out, or in
/// its role.
fn made_by(change: &MemberChange, membership: &Membership) -> bool {
    match change {
        MemberChange::Remove(id) => !membership.contains(*id),
        MemberChange::Add { id, voter, .. } => {
            membership.contains(*id) && membership.is_voter(*id) == *voter
        }
    }
}

/// `current` with `id` in the given role (added if absent).
fn with_member(
    current: &Membership,
    id: NodeId,
    addr: &str,
    voter: bool,
) -> Result<Membership, MembershipError> {
    let mut members: Vec<Member> = current.members().to_vec();
    match members.iter_mut().find(|m| m.id == id) {
        Some(member) => {
            member.voter = voter;
            if !addr.is_empty() {
                member.addr = addr.to_string();
            }
        }
        None => members.push(Member {
            id,
            voter,
            addr: addr.to_string(),
        }),
    }
    Membership::new(members)
}

impl GroupHandle {
    /// Makes `change` and waits, up to `within` in all, until it is done:
    /// the new configuration in force here and at a majority of its voters
    /// (so that a removed node may be stopped at once). This node must
    /// lead; `status` is the group's, on this core. Returns the
    /// configuration as this node then sees it.
    pub async fn change_members(
        &self,
        status: &GroupStatus,
        change: MemberChange,
        within: Duration,
    ) -> Result<MembershipView, ChangeError> {
        let deadline = Instant::now() + within;
        let view = self.settled_view(status, &change, deadline).await?;
        let newest = view.next.as_ref().map_or(&view.in_force, |(_, next)| next);
        if made_by(&change, newest) {
            return Ok(view);
        }
        let current = &view.in_force;
        match change {
            MemberChange::Remove(id) => {
                let kept = current
                    .members()
                    .iter()
                    .filter(|m| m.id != id)
                    .cloned()
                    .collect();
                let next = Membership::new(kept)?;
                self.propose_configuration(status, next, deadline).await
            }
            MemberChange::Add { id, addr, voter } => {
                if voter && !current.contains(id) {
                    let learner = with_member(current, id, &addr, false)?;
                    let view = self
                        .propose_configuration(status, learner, deadline)
                        .await?;
                    self.caught_up(status, id, deadline).await?;
                    let promoted = with_member(&view.in_force, id, &addr, true)?;
                    return self.propose_configuration(status, promoted, deadline).await;
                }
                if voter {
                    self.caught_up(status, id, deadline).await?;
                }
                let next = with_member(current, id, &addr, voter)?;
                self.propose_configuration(status, next, deadline).await
            }
        }
    }

    /// How far `member` has caught up, as this replica knows while it
    /// leads (from the member's answers to its heartbeats).
    pub async fn follower_commit(&self, member: NodeId) -> Option<Slot> {
        let (tx, rx) = oneshot::channel();
        self.inputs
            .send(Inbound::FollowerCommit(member, tx))
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// The configuration once no change is under way, or as soon as the
    /// one under way is what `change` makes (asked again, say): a change
    /// chosen comes into force a few round trips later, so one asked for
    /// right after another waits for it rather than fail. This node must
    /// lead throughout.
    async fn settled_view(
        &self,
        status: &GroupStatus,
        change: &MemberChange,
        deadline: Instant,
    ) -> Result<MembershipView, ChangeError> {
        loop {
            let leader = status.leader.get();
            if !status.leading.get() {
                return Err(ChangeError::NotLeader { leader });
            }
            let view = status
                .membership()
                .ok_or(ChangeError::NotLeader { leader })?;
            match &view.next {
                None => return Ok(view),
                Some((_, next)) if made_by(change, next) => return Ok(view),
                Some(_) if Instant::now() >= deadline => return Err(ChangeError::Pending),
                Some(_) => glommio::timer::sleep(POLL).await,
            }
        }
    }

    /// Proposes `next` and waits until it is in force here and at a
    /// majority of its voters: their commit points past the first slot it
    /// governs, so that they elect by it. Until then a replica counts votes
    /// by the configuration before it, and a failure more than that one
    /// allows (the leader's, just after a removal) would leave no majority
    /// to elect anyone.
    async fn propose_configuration(
        &self,
        status: &GroupStatus,
        next: Membership,
        deadline: Instant,
    ) -> Result<MembershipView, ChangeError> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let proposal = Inbound::ChangeMembership(next.clone(), tx);
        if self.inputs.send(proposal).await.is_err() {
            return Err(ChangeError::Stopped);
        }
        rx.await.map_err(|_| ChangeError::Stopped)??;
        let timed_out = || ChangeError::TimedOut {
            waited: started.elapsed(),
        };
        // The first slot it governs, once seen chosen; if it was in force
        // before this looked, the commit point then is past it.
        let mut from = None;
        let view = loop {
            if let Some(view) = status.membership() {
                if let Some((slot, m)) = &view.next {
                    if same_roles(m, &next) {
                        from = Some(*slot);
                    }
                }
                if same_roles(&view.in_force, &next) {
                    break view;
                }
            }
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            glommio::timer::sleep(POLL).await;
        };
        let from = from.unwrap_or_else(|| status.commit.get());
        loop {
            // A leader that removed itself hands over once the change is in
            // force: a voter of it leads now, elected under it.
            if !status.leading.get() && status.leader.get().is_some_and(|l| next.is_voter(l)) {
                return Ok(view);
            }
            let me = status.leader.get();
            let mut past = 0;
            for voter in next.voter_ids() {
                let commit = match Some(voter) == me {
                    true => Some(status.commit.get()),
                    false => self.follower_commit(voter).await,
                };
                past += usize::from(commit.is_some_and(|c| c >= from));
            }
            if past >= next.quorum() {
                return Ok(view);
            }
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            glommio::timer::sleep(POLL).await;
        }
    }

    /// Waits until learner `member` is within [`CAUGHT_UP_SLOTS`] of this
    /// leader's commit point.
    async fn caught_up(
        &self,
        status: &GroupStatus,
        member: NodeId,
        deadline: Instant,
    ) -> Result<(), ChangeError> {
        loop {
            let leader_commit = status.commit.get();
            let commit = self.follower_commit(member).await;
            if commit.is_some_and(|c| c.0 + CAUGHT_UP_SLOTS >= leader_commit.0) {
                return Ok(());
            }
            if !status.leading.get() {
                let leader = status.leader.get();
                return Err(ChangeError::NotLeader { leader });
            }
            if Instant::now() >= deadline {
                return Err(ChangeError::NotCaughtUp {
                    member,
                    commit,
                    leader_commit,
                });
            }
            glommio::timer::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[u64]) -> Membership {
        Membership::voters(&ids.iter().map(|i| NodeId(*i)).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_member_is_added_in_its_role_or_moved_to_it() {
        let current = voters(&[1, 2, 3]);
        let learner = with_member(&current, NodeId(4), "h:1", false).unwrap();
        assert!(learner.contains(NodeId(4)) && !learner.is_voter(NodeId(4)));
        assert_eq!(learner.voter_count(), 3);
        let promoted = with_member(&learner, NodeId(4), "", true).unwrap();
        assert!(promoted.is_voter(NodeId(4)));
        let member = promoted.members().iter().find(|m| m.id == NodeId(4));
        assert_eq!(
            member.unwrap().addr,
            "h:1",
            "an empty address keeps the old"
        );
        assert!(same_roles(&promoted, &voters(&[1, 2, 3, 4])));
        assert!(!same_roles(&learner, &voters(&[1, 2, 3, 4])));
        assert!(
            with_member(&current, NodeId(0), "h:1", true).is_err(),
            "node 0 is refused, not ignored"
        );
    }
}

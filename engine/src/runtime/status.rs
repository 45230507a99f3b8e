//! What a group looks like from one node at one moment: plain data, read by
//! the embedder, the metrics and the client port.

use crate::protocol::{Ballot, LogIndex, Membership, NodeId, Schedule, Slot};

/// A group's state as one node sees it, at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusView {
    /// Slots applied to the state machine (those below this one).
    pub applied: Slot,
    /// The log index of the next command to apply (a subscription from it
    /// streams what is applied from now on).
    pub next_index: LogIndex,
    /// Every slot below is chosen, as this replica knows.
    pub commit: Slot,
    /// Whether this replica leads (Phase 1 done).
    pub leading: bool,
    /// Who it believes leads.
    pub leader: Option<NodeId>,
    /// The highest ballot it promised.
    pub promised: Ballot,
    /// The slot of its latest durable snapshot (0: none).
    pub snapshot: Slot,
}

/// A group's configuration as one node sees it: the one in force at its
/// commit point and, while a change is under way, the next one with the
/// first slot it governs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipView {
    /// The members that count now.
    pub in_force: Membership,
    /// A configuration chosen but not in force yet.
    pub next: Option<(Slot, Membership)>,
}

impl MembershipView {
    /// The view of a replica's schedule at its commit point `commit`.
    pub fn of(schedule: &Schedule, commit: Slot) -> MembershipView {
        let next = schedule
            .entries()
            .iter()
            .find(|(from, _)| *from > commit)
            .map(|(from, m)| (*from, m.clone()));
        MembershipView {
            in_force: schedule.at(commit).clone(),
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_names_the_configuration_in_force_and_the_next() {
        let voters = |ids: &[u64]| {
            Membership::voters(&ids.iter().map(|i| NodeId(*i)).collect::<Vec<_>>()).unwrap()
        };
        let schedule = Schedule::from_entries(vec![
            (Slot(0), voters(&[1, 2, 3])),
            (Slot(300), voters(&[1, 2, 4])),
        ])
        .unwrap();
        let during = MembershipView::of(&schedule, Slot(10));
        assert_eq!(during.in_force, voters(&[1, 2, 3]));
        assert_eq!(during.next, Some((Slot(300), voters(&[1, 2, 4]))));
        let after = MembershipView::of(&schedule, Slot(300));
        assert_eq!((after.in_force, after.next), (voters(&[1, 2, 4]), None));
    }
}

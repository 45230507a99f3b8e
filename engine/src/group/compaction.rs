//! When a group snapshots, and which WAL frames a durable snapshot lets go.
//!
//! The core counts the WAL's frames itself (each `Append` lands at the next
//! position), so it knows where each slot's first accepted value sits. A
//! restart rebuilds every slot below a snapshot from it, so it needs the
//! WAL only from the lowest position holding a slot at or above the
//! snapshot, and everything written since the state was captured (a promise
//! made while the file was being written is not in it).
//!
//! The first accept of each slot, not its latest: the latest may not be
//! durable yet when the cut is made, and a crash then loses it, so the
//! durable one before it must still be there. (Cutting at the latest lost
//! a durable accept in the change sweep: a slot accepted again at the same
//! ballot in the unsynced tail, the cut taken past the durable copy, then
//! power lost.)

use std::collections::BTreeMap;

use bytes::Bytes;
use synod_wal::Position;

use super::snapshot::{SnapshotPolicy, Transfers};
use crate::protocol::{NodeId, Slot, Write};

/// A snapshot being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Saving {
    /// Its slot.
    pub(super) upto: Slot,
    /// The WAL's next position when the state was captured.
    pub(super) captured_at: Position,
}

/// A group's snapshot and WAL-cut bookkeeping.
#[derive(Debug)]
pub(super) struct Compaction {
    pub(super) policy: SnapshotPolicy,
    /// The latest durable snapshot, encoded, for peers that need it.
    pub(super) latest: Option<(Slot, Bytes)>,
    /// The snapshot being written, if one is.
    pub(super) saving: Option<Saving>,
    /// Command bytes applied since the latest snapshot was taken.
    pub(super) applied_bytes: u64,
    /// The slot of the latest snapshot that could not be encoded: the next
    /// try counts from there, so a failing encoder is not retried on every
    /// apply.
    pub(super) tried_upto: Slot,
    /// Where each slot's first accepted value (still in the WAL) sits.
    accept_positions: BTreeMap<Slot, Position>,
    /// Where the next append lands.
    wal_next: Position,
    /// Snapshots arriving from peers, one transfer per sender.
    pub(super) incoming: Transfers,
    /// Per peer, the snapshot it last asked the rest of and from where.
    pub(super) wanted_by: BTreeMap<NodeId, (Slot, u64)>,
    /// Test-only: cut above the lowest accept a restart needs.
    #[cfg(test)]
    pub(super) cut_one_accept_high: bool,
}

impl Compaction {
    /// Bookkeeping for a WAL whose frames from `writes` on are these, and
    /// whose next frame lands at `wal_next`.
    pub(super) fn new(
        policy: SnapshotPolicy,
        latest: Option<(Slot, Bytes)>,
        writes: &[(Position, Write)],
        wal_next: Position,
    ) -> Compaction {
        let mut accept_positions = BTreeMap::new();
        for (position, write) in writes {
            if let Write::Accept { slot, .. } = write {
                accept_positions.entry(*slot).or_insert(*position);
            }
        }
        Compaction {
            policy,
            latest,
            saving: None,
            applied_bytes: 0,
            tried_upto: Slot(0),
            accept_positions,
            wal_next,
            incoming: Transfers::default(),
            wanted_by: BTreeMap::new(),
            #[cfg(test)]
            cut_one_accept_high: false,
        }
    }

    /// Where the next append lands.
    pub(super) fn wal_next(&self) -> Position {
        self.wal_next
    }

    /// Records an append; returns where it lands.
    pub(super) fn appended(&mut self, write: &Write) -> Position {
        let position = self.wal_next;
        self.wal_next = Position(position.0 + 1);
        if let Write::Accept { slot, .. } = write {
            self.accept_positions.entry(*slot).or_insert(position);
        }
        position
    }

    /// Whether a snapshot of the state applied below `applied` is due, the
    /// latest durable one being at `snapshot`.
    pub(super) fn due(&self, applied: Slot, snapshot: Slot) -> bool {
        if self.policy.every_slots == 0 || self.saving.is_some() || applied <= snapshot {
            return false;
        }
        let since = applied.distance_from(snapshot.max(self.tried_upto));
        since >= self.policy.every_slots || self.applied_bytes >= self.policy.every_bytes
    }

    /// A snapshot of the state as of now is being written.
    pub(super) fn start_saving(&mut self, upto: Slot) {
        self.saving = Some(Saving {
            upto,
            captured_at: self.wal_next,
        });
        self.applied_bytes = 0;
    }

    /// The snapshot being written is durable: it becomes the latest, and
    /// the WAL before the returned position may go.
    pub(super) fn saved(&mut self, saving: Saving, encoded: Bytes) -> Position {
        self.saving = None;
        self.latest = Some((saving.upto, encoded));
        self.accept_positions = self.accept_positions.split_off(&saving.upto);
        let lowest = self.accept_positions.values().min().copied();
        // Positions are distinct: the one after the lowest is the next.
        #[cfg(test)]
        let lowest = match self.cut_one_accept_high {
            true => self
                .accept_positions
                .values()
                .filter(|p| Some(**p) != lowest)
                .min()
                .copied(),
            false => lowest,
        };
        lowest.map_or(saving.captured_at, |first| first.min(saving.captured_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Ballot, Entry, NodeId};

    fn accept(slot: u64) -> Write {
        Write::Accept {
            slot: Slot(slot),
            entry: Entry {
                ballot: Ballot {
                    round: 1,
                    node: NodeId(1),
                },
                batch: crate::protocol::Batch::noop(),
            },
        }
    }

    #[test]
    fn the_cut_keeps_each_slot_above_the_snapshot_and_all_since_the_capture() {
        let policy = SnapshotPolicy::default();
        let mut compaction = Compaction::new(policy, None, &[], Position(10));
        // Slot 5 accepted at 10 and again (higher ballot) at 13; slot 6 at 11.
        for write in [accept(5), accept(6), Write::Commit(Slot(6)), accept(5)] {
            compaction.appended(&write);
        }
        compaction.start_saving(Slot(5));
        assert_eq!(compaction.appended(&accept(7)), Position(14));
        let saving = compaction.saving.expect("saving");
        assert_eq!(saving.captured_at, Position(14));
        // Slots 5 and 6 stay, each from its first accept: slot 5's second
        // one, at 13, may not be durable when the cut is made.
        assert_eq!(compaction.saved(saving, Bytes::new()), Position(10));
        compaction.start_saving(Slot(8));
        let saving = compaction.saving.expect("saving");
        assert_eq!(
            compaction.saved(saving, Bytes::new()),
            Position(15),
            "nothing above the snapshot: from the capture on"
        );
    }
}

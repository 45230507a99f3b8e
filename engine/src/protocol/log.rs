//! The acceptor's log: per slot, the highest-ballot value it accepted.

use std::collections::VecDeque;

use super::batch::Batch;
use super::types::{Ballot, Slot};

/// An accepted value and the ballot it was accepted at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The ballot of the Accept.
    pub ballot: Ballot,
    /// The value.
    pub batch: Batch,
}

/// Slots from `start` on; a hole is a slot not accepted yet. Slots below
/// `start` were compacted into a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log {
    start: Slot,
    slots: VecDeque<Option<Entry>>,
}

impl Log {
    /// An empty log whose slots below `start` were compacted.
    pub fn starting_at(start: Slot) -> Log {
        Log {
            start,
            slots: VecDeque::new(),
        }
    }

    /// The first slot still held.
    pub fn start(&self) -> Slot {
        self.start
    }

    /// One past the highest slot held.
    pub fn end(&self) -> Slot {
        self.start.plus(self.slots.len() as u64)
    }

    /// The entry at `slot`, if accepted and not compacted.
    pub fn get(&self, slot: Slot) -> Option<&Entry> {
        let offset = slot.0.checked_sub(self.start.0)?;
        self.slots.get(usize::try_from(offset).ok()?)?.as_ref()
    }

    /// Stores `entry` at `slot`, replacing what was there. Slots below the
    /// compaction point are ignored: they are chosen and in the snapshot.
    pub fn insert(&mut self, slot: Slot, entry: Entry) {
        let Some(offset) = slot.0.checked_sub(self.start.0) else {
            return;
        };
        let offset = offset as usize;
        if offset == self.slots.len() {
            // The usual case, a leader's next slot: no hole to fill.
            self.slots.push_back(Some(entry));
            return;
        }
        if offset > self.slots.len() {
            self.slots.resize(offset + 1, None);
        }
        self.slots[offset] = Some(entry);
    }

    /// The highest slot held and its entry.
    pub fn last(&self) -> Option<(Slot, &Entry)> {
        let (offset, entry) = self
            .slots
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, e)| e.as_ref().map(|e| (i, e)))?;
        Some((self.start.plus(offset as u64), entry))
    }

    /// Accepted entries at or after `from`, in slot order.
    pub fn entries_from(&self, from: Slot) -> impl Iterator<Item = (Slot, &Entry)> {
        let skip = from.distance_from(self.start) as usize;
        let start = self.start;
        self.slots
            .iter()
            .enumerate()
            .skip(skip)
            .filter_map(move |(i, e)| e.as_ref().map(|e| (start.plus(i as u64), e)))
    }

    /// Drops every slot below `upto` (they are in a snapshot).
    pub fn compact(&mut self, upto: Slot) {
        let drop = upto.distance_from(self.start).min(self.slots.len() as u64);
        self.slots.drain(..drop as usize);
        self.start = self.start.max(upto);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::NodeId;

    fn entry(round: u64) -> Entry {
        Entry {
            ballot: Ballot {
                round,
                node: NodeId(1),
            },
            batch: Batch::noop(),
        }
    }

    #[test]
    fn holes_compaction_and_last() {
        let mut log = Log::default();
        log.insert(Slot(3), entry(1));
        log.insert(Slot(1), entry(2));
        assert_eq!(log.end(), Slot(4));
        assert!(log.get(Slot(2)).is_none());
        assert_eq!(
            log.last().map(|(s, e)| (s, e.ballot.round)),
            Some((Slot(3), 1))
        );
        let slots: Vec<_> = log.entries_from(Slot(2)).map(|(s, _)| s).collect();
        assert_eq!(slots, vec![Slot(3)]);
        log.compact(Slot(2));
        assert_eq!(log.start(), Slot(2));
        assert!(log.get(Slot(1)).is_none());
        log.insert(Slot(0), entry(9));
        assert!(log.get(Slot(0)).is_none(), "compacted slots stay gone");
        log.compact(Slot(10));
        assert_eq!((log.start(), log.end()), (Slot(10), Slot(10)));
    }
}

//! A simulated disk: writes are volatile until a sync completes; a crash keeps
//! the synced writes and any prefix of the rest (a torn or lost tail).

use std::collections::VecDeque;
use std::ops::Range;

use synod_wal::Position;

use crate::protocol::{SyncId, Write};

/// One replica's disk. Writes are numbered as the WAL numbers its frames:
/// from 0, in append order, keeping their number when the head goes.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    /// The position of `writes[0]`.
    first: u64,
    writes: Vec<Write>,
    durable_len: usize,
    /// Syncs issued and not completed, with the write count each covers.
    syncs: VecDeque<(SyncId, usize)>,
}

impl SimDisk {
    /// Appends a write to the volatile tail; returns its position.
    pub fn append(&mut self, write: Write) -> Position {
        self.writes.push(write);
        Position(self.first + self.writes.len() as u64 - 1)
    }

    /// Where the next write lands.
    pub fn next_position(&self) -> Position {
        Position(self.first + self.writes.len() as u64)
    }

    /// Every write before this position is durable.
    pub fn durable_end(&self) -> Position {
        Position(self.first + self.durable_len as u64)
    }

    /// Every write with its position.
    pub fn positioned(&self) -> impl Iterator<Item = (Position, &Write)> {
        (self.first..).map(Position).zip(&self.writes)
    }

    /// Notes a sync covering every write so far.
    pub fn sync_issued(&mut self, sync: SyncId) {
        self.syncs.push_back((sync, self.writes.len()));
    }

    /// Completes syncs up to `sync`; returns the writes that became durable.
    pub fn sync_done(&mut self, sync: SyncId) -> Range<usize> {
        let before = self.durable_len;
        while self.syncs.front().is_some_and(|(id, _)| *id <= sync) {
            let (_, covered) = self.syncs.pop_front().expect("front checked");
            self.durable_len = self.durable_len.max(covered);
        }
        before..self.durable_len
    }

    /// Writes not yet synced.
    pub fn unsynced(&self) -> usize {
        self.writes.len() - self.durable_len
    }

    /// Power loss: `keep` of the unsynced writes reach the platter, the rest
    /// (and any torn frame, which recovery truncates) are gone. Returns the
    /// surviving unsynced writes, now durable.
    pub fn crash(&mut self, keep: usize) -> Range<usize> {
        let before = self.durable_len;
        self.writes
            .truncate(self.durable_len + keep.min(self.unsynced()));
        self.durable_len = self.writes.len();
        self.syncs.clear();
        before..self.durable_len
    }

    /// The last `frames` durable writes are damaged (a synced frame that
    /// went bad, or the block rewritten around it torn): recovery cuts
    /// them. Only a crashed disk; returns how many went.
    pub fn damage_tail(&mut self, frames: usize) -> usize {
        debug_assert_eq!(self.unsynced(), 0, "damage a crashed disk");
        let cut = frames.min(self.durable_len);
        self.durable_len -= cut;
        self.writes.truncate(self.durable_len);
        cut
    }

    /// Every write (the durable ones first).
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// Drops the writes before `position` (a snapshot covers them), as the
    /// WAL unlinks its oldest segments; only durable writes go, as only
    /// whole, committed segments are unlinked. Returns how many went.
    pub fn remove_before(&mut self, position: Position) -> usize {
        let count = (position.0.saturating_sub(self.first) as usize).min(self.durable_len);
        self.first += count as u64;
        self.writes.drain(..count);
        self.durable_len -= count;
        for (_, covered) in &mut self.syncs {
            *covered = covered.saturating_sub(count);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Ballot, NodeId};

    fn promise(round: u64) -> Write {
        Write::Promise(Ballot {
            round,
            node: NodeId(1),
        })
    }

    #[test]
    fn only_synced_writes_are_sure_to_survive() {
        let mut disk = SimDisk::default();
        disk.append(promise(1));
        disk.sync_issued(SyncId(1));
        disk.append(promise(2));
        disk.sync_issued(SyncId(2));
        disk.append(promise(3));
        assert_eq!(disk.sync_done(SyncId(1)), 0..1);
        assert_eq!(disk.unsynced(), 2);
        assert_eq!(disk.crash(1), 1..2);
        assert_eq!(disk.writes(), &[promise(1), promise(2)]);
        assert_eq!(
            disk.sync_done(SyncId(2)),
            2..2,
            "syncs in flight die with the crash"
        );
    }

    #[test]
    fn removing_the_head_keeps_the_unsynced_tail_and_its_syncs() {
        let mut disk = SimDisk::default();
        for round in 1..=3 {
            disk.append(promise(round));
        }
        disk.sync_issued(SyncId(1));
        disk.append(promise(4));
        disk.sync_issued(SyncId(2));
        assert_eq!(disk.remove_before(Position(1)), 0, "nothing is durable yet");
        assert_eq!(disk.sync_done(SyncId(1)), 0..3);
        assert_eq!(
            disk.remove_before(Position(10)),
            3,
            "only durable writes go"
        );
        assert_eq!(disk.writes(), &[promise(4)]);
        assert_eq!(disk.positioned().next(), Some((Position(3), &promise(4))));
        assert_eq!(
            disk.remove_before(Position(2)),
            0,
            "positions keep their number"
        );
        assert_eq!(disk.unsynced(), 1);
        assert_eq!(disk.sync_done(SyncId(2)), 0..1, "the sync now covers it");
        assert_eq!(disk.unsynced(), 0, "the one write left is durable");
    }
}

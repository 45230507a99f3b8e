//! Where a request's time goes at the leader, stage by stage, for the
//! `synod_stage_seconds` histograms (`synod bench --stages` reads them):
//!
//! ```text
//!  handed to the group ─ queue ─► its slot's Accept written ─ wal ─► durable here
//!                                          └──────────── round ────────────► chosen (answered)
//! ```
//!
//! `queue` covers the group's inbox, the batch and the pipeline window;
//! `round` the followers' writes and the votes' way back, overlapping
//! `wal` (which is recorded only when the leader's own write was durable
//! by the time the slot was chosen). A chosen slot is applied and
//! answered in the same step. Times are the group task's: when it handled
//! each event. Only the leader records them.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::{Slot, SyncId};
use crate::runtime::metrics::GroupMetrics;

/// The stages' clock of one group.
#[derive(Debug, Default)]
pub(super) struct StageClock {
    /// Slots whose Accept this replica wrote: when, and when it was
    /// durable here.
    written: BTreeMap<Slot, (Instant, Option<Instant>)>,
    /// Syncs asked for, each with the highest slot written before it.
    syncs: VecDeque<(SyncId, Slot)>,
    /// The slot being applied, and when it was chosen.
    applying: Option<(Slot, Instant)>,
    /// Requests answered (for the sample).
    answered: u64,
}

/// Requests timed: one in this many answered.
pub(super) const SAMPLE_EVERY: u64 = 8;

/// A request's time in each stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stages {
    pub(super) queue: Duration,
    /// None if the answer came before this replica's own write was durable
    /// (a majority of others was faster).
    pub(super) wal: Option<Duration>,
    pub(super) round: Duration,
}

impl StageClock {
    /// This replica wrote an Accept for `slot`.
    pub(super) fn written(&mut self, slot: Slot, now: Instant) {
        self.written.insert(slot, (now, None));
    }

    /// A sync was asked for: it covers every slot written so far.
    pub(super) fn sync_asked(&mut self, sync: SyncId) {
        if let Some((&slot, _)) = self.written.last_key_value() {
            self.syncs.push_back((sync, slot));
        }
    }

    /// Sync `sync` is done: the slots it covers are durable here.
    pub(super) fn persisted(&mut self, sync: SyncId, now: Instant) {
        let mut covered = None;
        while self.syncs.front().is_some_and(|(s, _)| *s <= sync) {
            covered = self.syncs.pop_front().map(|(_, slot)| slot);
        }
        if let Some(upto) = covered {
            for (_, (_, durable)) in self.written.range_mut(..=upto).rev() {
                if durable.is_some() {
                    break;
                }
                *durable = Some(now);
            }
        }
    }

    /// `slot` was chosen and is being applied: answers that follow are its.
    pub(super) fn chosen(&mut self, slot: Slot, now: Instant) {
        self.applying = Some((slot, now));
        // Slots below are applied: their answers have been given.
        while self
            .written
            .first_key_value()
            .is_some_and(|(s, _)| *s < slot)
        {
            self.written.pop_first();
        }
    }

    /// A request handed to the group at `since` is answered now, from the
    /// slot being applied; None if this replica did not write its Accept
    /// (it did not lead it).
    pub(super) fn stages(&self, since: Instant) -> Option<Stages> {
        let (slot, chosen) = self.applying?;
        let (written, durable) = *self.written.get(&slot)?;
        Some(Stages {
            queue: written.saturating_duration_since(since),
            wal: durable
                .filter(|d| *d <= chosen)
                .map(|d| d.saturating_duration_since(written)),
            round: chosen.saturating_duration_since(written),
        })
    }

    /// Records the stages of a request handed to the group at `since`:
    /// one request in [`SAMPLE_EVERY`], which tells the shape of the
    /// stages at a fraction of the cost of timing every request.
    pub(super) fn observe(&mut self, since: Instant, metrics: &GroupMetrics) {
        self.answered = self.answered.wrapping_add(1);
        if !self.answered.is_multiple_of(SAMPLE_EVERY) {
            return;
        }
        let Some(stages) = self.stages(since) else {
            return;
        };
        let histograms = &metrics.stage;
        histograms.queue.observe(stages.queue.as_secs_f64());
        if let Some(wal) = stages.wal {
            histograms.wal.observe(wal.as_secs_f64());
        }
        histograms.round.observe(stages.round.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_request_is_timed_from_its_arrival_through_its_slot() {
        let t0 = Instant::now();
        let mut clock = StageClock::default();
        clock.written(Slot(4), t0 + ms(2));
        clock.sync_asked(SyncId(9));
        clock.written(Slot(5), t0 + ms(3));
        clock.sync_asked(SyncId(10));
        clock.persisted(SyncId(9), t0 + ms(5));
        clock.chosen(Slot(4), t0 + ms(7));
        assert_eq!(
            clock.stages(t0),
            Some(Stages {
                queue: ms(2),
                wal: Some(ms(3)),
                round: ms(5),
            })
        );
        // Slot 5 chosen before its own sync is done: no wal stage.
        clock.chosen(Slot(5), t0 + ms(9));
        let stages = clock.stages(t0 + ms(1)).unwrap();
        assert_eq!(
            (stages.queue, stages.wal, stages.round),
            (ms(2), None, ms(6))
        );
        clock.persisted(SyncId(10), t0 + ms(10));
        assert_eq!(
            clock.written.len(),
            1,
            "slots below the applied one are dropped"
        );
        // A slot this replica did not write (it followed): nothing.
        clock.chosen(Slot(6), t0 + ms(11));
        assert_eq!(clock.stages(t0), None);
    }
}

//! The leader's pipeline window, chosen from what it measures: the round
//! time of a slot (its first Accept sent → chosen) and the time a sync of
//! its own WAL takes as the group waits for it (an fdatasync, plus waiting
//! behind one already running: from about one to two fdatasyncs under
//! load, which keeps the window on the small side).
//!
//! Every replica's WAL commits one write + fdatasync at a time and folds
//! whatever arrives meanwhile into the next one. Slots cut faster than one
//! per fsync therefore share fsyncs anyway and only add messages and WAL
//! frames; slots cut slower leave a disk idle. A round spans about
//! `round / fsync` fsyncs, so the window is that many slots in flight plus
//! one, so that the next slot can leave while they are out (the batch still
//! filling waits in the leader's queue and is not counted):
//! `ceil(round / fsync) + 1`, at least [`WINDOW_MIN`], at most
//! the configured `pipeline_max`. A slow network (long rounds) opens the
//! window up to keep the disks busy; a slow disk closes it, and commands
//! arriving meanwhile join the next slot, so batches grow with the fsync
//! time. Until both are measured the window is `pipeline_max`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::Slot;

/// The smallest window: a slot being made durable and the one after it.
pub const WINDOW_MIN: u32 = 2;

/// Weight of a new sample in the moving averages (as TCP's SRTT).
const SAMPLE_WEIGHT: f64 = 1.0 / 8.0;

/// Slots whose round is being timed, at most: a window never exceeds
/// `pipeline_max`, and older ones are dropped rather than grown without
/// bound if commits stop.
const TIMED_SLOTS_MAX: usize = 1 << 16;

/// An exponentially weighted moving average of durations, in seconds.
#[derive(Clone, Copy, Debug, Default)]
struct Average(Option<f64>);

impl Average {
    fn add(&mut self, sample: Duration) {
        let sample = sample.as_secs_f64();
        self.0 = Some(match self.0 {
            Some(mean) => mean + SAMPLE_WEIGHT * (sample - mean),
            None => sample,
        });
    }
}

/// Measures the leader's rounds and its fsyncs and turns them into a window.
#[derive(Debug)]
pub struct PipelineWindow {
    pipeline_max: u32,
    fsync: Average,
    round: Average,
    /// Slots whose first Accept went out, with when, oldest first.
    sent: VecDeque<(Slot, Instant)>,
}

impl PipelineWindow {
    /// A window of at most `pipeline_max` slots (at least 1).
    pub fn new(pipeline_max: u32) -> PipelineWindow {
        PipelineWindow {
            pipeline_max: pipeline_max.max(1),
            fsync: Average::default(),
            round: Average::default(),
            sent: VecDeque::new(),
        }
    }

    /// One of this replica's WAL syncs took `took`.
    pub fn on_fsync(&mut self, took: Duration) {
        self.fsync.add(took);
    }

    /// An Accept for `slot` went out; only a slot's first one starts its
    /// round (resends and the copies to other followers do not).
    pub fn on_accept_sent(&mut self, slot: Slot, now: Instant) {
        if self.sent.back().is_some_and(|(last, _)| *last >= slot) {
            return;
        }
        if self.sent.len() == TIMED_SLOTS_MAX {
            self.sent.pop_front();
        }
        self.sent.push_back((slot, now));
    }

    /// `slot` is chosen: its round ends (and any older slot's, untimed).
    pub fn on_chosen(&mut self, slot: Slot, now: Instant) {
        while let Some(&(sent, at)) = self.sent.front() {
            if sent > slot {
                break;
            }
            self.sent.pop_front();
            if sent == slot {
                self.round.add(now.saturating_duration_since(at));
            }
        }
    }

    /// Leadership ended: rounds in flight will not be timed.
    pub fn forget_rounds(&mut self) {
        self.sent.clear();
    }

    /// The window the measurements call for.
    pub fn slots(&self) -> u32 {
        let (Some(round), Some(fsync)) = (self.round.0, self.fsync.0) else {
            return self.pipeline_max;
        };
        let spanned = if fsync > 0.0 {
            (round / fsync).ceil()
        } else {
            f64::INFINITY
        };
        // `as` saturates: an unbounded ratio becomes u32::MAX.
        let slots = (spanned as u32).saturating_add(1);
        slots.clamp(WINDOW_MIN.min(self.pipeline_max), self.pipeline_max)
    }

    /// The mean round time, if measured.
    #[cfg(test)]
    fn round_time(&self) -> Option<Duration> {
        self.round.0.map(Duration::from_secs_f64)
    }

    /// The mean fsync time, if measured.
    #[cfg(test)]
    fn fsync_time(&self) -> Option<Duration> {
        self.fsync.0.map(Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(micros: u64) -> Duration {
        Duration::from_micros(micros)
    }

    /// A window that saw `rounds` rounds of `round` and fsyncs of `fsync`.
    fn measured(
        pipeline_max: u32,
        round: Duration,
        fsync: Duration,
        rounds: u64,
    ) -> PipelineWindow {
        let mut window = PipelineWindow::new(pipeline_max);
        let start = Instant::now();
        for slot in 0..rounds {
            let sent = start + us(slot * 10_000);
            window.on_accept_sent(Slot(slot), sent);
            window.on_fsync(fsync);
            window.on_chosen(Slot(slot), sent + round);
        }
        window
    }

    #[test]
    fn the_window_spans_a_round_in_fsyncs_plus_one() {
        assert_eq!(measured(64, us(900), us(300), 1).slots(), 4);
        assert_eq!(measured(64, us(1_000), us(300), 1).slots(), 5);
        // A slow network opens it up to the cap, a slow disk closes it.
        assert_eq!(measured(64, us(20_000), us(100), 1).slots(), 64);
        assert_eq!(measured(64, us(300), us(3_000), 1).slots(), WINDOW_MIN);
        assert_eq!(measured(1, us(300), us(3_000), 1).slots(), 1);
        // No fsync at all (fsync off and instant writes): the cap.
        assert_eq!(measured(16, us(300), Duration::ZERO, 1).slots(), 16);
    }

    #[test]
    fn until_both_are_measured_the_window_is_the_cap() {
        let mut window = PipelineWindow::new(32);
        assert_eq!(window.slots(), 32);
        window.on_fsync(us(300));
        assert_eq!(window.slots(), 32);
        let now = Instant::now();
        window.on_accept_sent(Slot(0), now);
        window.on_chosen(Slot(0), now + us(900));
        assert_eq!(window.slots(), 4);
    }

    #[test]
    fn averages_follow_a_change_without_jumping_on_one_sample() {
        let mut window = measured(64, us(900), us(300), 50);
        assert_eq!(window.slots(), 4);
        let now = Instant::now();
        // One slow round moves the window by at most a slot or so.
        window.on_accept_sent(Slot(1_000), now);
        window.on_chosen(Slot(1_000), now + us(9_000));
        assert!(window.slots() <= 8, "{}", window.slots());
        // A sustained change is followed.
        for slot in 1_001..1_100 {
            let sent = now + us(slot * 10_000);
            window.on_accept_sent(Slot(slot), sent);
            window.on_chosen(Slot(slot), sent + us(9_000));
        }
        assert_eq!(window.slots(), 31);
        let round = window.round_time().unwrap();
        assert!(round > us(8_900) && round < us(9_100), "{round:?}");
        assert_eq!(window.fsync_time().map(|f| f.as_micros()), Some(300));
    }

    #[test]
    fn only_a_slots_first_accept_times_it_and_chosen_slots_end_older_rounds() {
        let mut window = PipelineWindow::new(64);
        window.on_fsync(us(100));
        let start = Instant::now();
        window.on_accept_sent(Slot(5), start);
        // The copy to the other follower and a resend much later.
        window.on_accept_sent(Slot(5), start + us(400));
        window.on_accept_sent(Slot(5), start + us(50_000));
        window.on_accept_sent(Slot(6), start + us(100));
        window.on_accept_sent(Slot(7), start + us(200));
        // Slot 7 chosen (6 with it): one round, 7's, is sampled.
        window.on_chosen(Slot(5), start + us(500));
        window.on_chosen(Slot(7), start + us(700));
        assert_eq!(window.round_time().map(|r| r.as_micros()), Some(500));
        assert!(window.sent.is_empty());
        // A chosen slot nobody timed (a follower's) samples nothing.
        window.on_chosen(Slot(9), start + us(900));
        assert_eq!(window.round_time().map(|r| r.as_micros()), Some(500));
    }

    #[test]
    fn rounds_in_flight_are_forgotten_when_leadership_ends() {
        let mut window = PipelineWindow::new(64);
        let start = Instant::now();
        window.on_accept_sent(Slot(1), start);
        window.forget_rounds();
        window.on_chosen(Slot(1), start + us(100));
        assert_eq!(window.round_time(), None);
        // A slot below the last timed one after a new term starts again.
        window.on_accept_sent(Slot(0), start);
        assert_eq!(window.sent.len(), 1);
    }
}

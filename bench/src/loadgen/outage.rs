//! How long a leader kill silenced the cluster, read off the acks per
//! millisecond of a run.

/// How one leader kill went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outage {
    /// The longest stretch without any acknowledgement from the kill until
    /// the next kill (or the end of the run).
    pub gap_ms: u64,
    /// From the kill until, after that silence, a 100 ms window again
    /// carries 90 % of the rate of the second before the kill.
    pub recovery_ms: Option<u64>,
}

/// Measures the outage after a kill at `kill_ms` (since the run started),
/// looking no further than the next kill at `until_ms`, if any: a later
/// kill's silence is that kill's outage, not this one's.
pub fn outage(acks_per_ms: &[u32], kill_ms: usize, until_ms: Option<usize>) -> Outage {
    let before = &acks_per_ms[kill_ms.saturating_sub(1000)..kill_ms.min(acks_per_ms.len())];
    let rate_before =
        before.iter().map(|n| u64::from(*n)).sum::<u64>() as f64 / before.len().max(1) as f64;
    let end = until_ms.unwrap_or(usize::MAX).min(acks_per_ms.len());
    let after = acks_per_ms.get(kill_ms..end).unwrap_or(&[]);
    // The longest run of silent milliseconds, and where it ends.
    let (mut gap_ms, mut gap_end, mut run) = (0, 0, 0);
    for (i, n) in after.iter().enumerate() {
        run = if *n == 0 { run + 1 } else { 0 };
        if run > gap_ms {
            (gap_ms, gap_end) = (run, i + 1);
        }
    }
    let window = 100;
    let recovery_ms = after
        .get(gap_end..)
        .unwrap_or(&[])
        .windows(window)
        .position(|w| {
            w.iter().map(|n| u64::from(*n)).sum::<u64>() as f64 >= 0.9 * rate_before * window as f64
        })
        .map(|start| (gap_end + start + window) as u64);
    Outage {
        gap_ms: gap_ms as u64,
        recovery_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_is_the_longest_silence_and_recovery_the_return_to_90_percent() {
        // 10 acks/ms for 1 s, killed at 1000, silent 150 ms, 5/ms for 200 ms,
        // then back to 10/ms.
        let mut timeline = vec![10u32; 1000];
        timeline.extend(vec![0; 150]);
        timeline.extend(vec![5; 200]);
        timeline.extend(vec![10; 500]);
        let o = outage(&timeline, 1000, None);
        assert_eq!(o.gap_ms, 150);
        // The first window with 900 acks starts 330 ms after the kill:
        // 20 ms of 5/ms and 80 ms of 10/ms.
        assert_eq!(o.recovery_ms, Some(330 + 100));
        assert_eq!(outage(&[1, 1, 0, 0], 4, None).recovery_ms, None);
        // A second kill at 1500 with a longer silence is its own outage.
        timeline.truncate(1500);
        timeline.extend(vec![0; 400]);
        timeline.extend(vec![10; 500]);
        assert_eq!(outage(&timeline, 1000, Some(1500)).gap_ms, 150);
        assert_eq!(outage(&timeline, 1500, None).gap_ms, 400);
    }
}

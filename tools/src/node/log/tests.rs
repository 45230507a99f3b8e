//! The chunked log against a plain queue that drops one entry at a time.

use super::*;

/// A log that drops one entry at a time from a plain queue.
fn model(retain: usize, pushes: &[(u64, Vec<u8>)]) -> VecDeque<(u64, Vec<u8>)> {
    let mut log = VecDeque::new();
    let mut counted = 0;
    for (index, data) in pushes {
        counted += data.len() + ENTRY_OVERHEAD_BYTES;
        log.push_back((*index, data.clone()));
        while counted > retain && log.len() > 1 {
            let (_, dropped) = log.pop_front().unwrap();
            counted -= dropped.len() + ENTRY_OVERHEAD_BYTES;
        }
    }
    log
}

proptest::proptest! {
    /// Chunks change nothing a reader sees: the entries kept, every
    /// read, and the captured columns agree with dropping one entry at
    /// a time from a plain queue, across chunk seals.
    #[test]
    fn chunked_log_agrees_with_a_plain_queue(
        lens in proptest::collection::vec(0usize..40_000, 1..120),
        retain in 0usize..1_500_000,
        from in 0u64..140,
        count in 0usize..150,
    ) {
        let pushes: Vec<(u64, Vec<u8>)> = lens
            .iter()
            .enumerate()
            .map(|(i, len)| (i as u64 + 1, vec![i as u8; *len]))
            .collect();
        let mut log = ReadableLog::retaining(retain);
        for (index, data) in &pushes {
            log.push(*index, data);
        }
        let expected = model(retain, &pushes);
        proptest::prop_assert_eq!(log.start(), expected.front().map_or(0, |e| e.0));
        let read: Vec<(u64, Vec<u8>)> =
            log.read(from, count).into_iter().map(|(i, d)| (i, d.to_vec())).collect();
        let wanted: Vec<(u64, Vec<u8>)> =
            expected.iter().filter(|e| e.0 >= from).take(count).cloned().collect();
        proptest::prop_assert_eq!(read, wanted);
        let columns = log.capture().columns();
        proptest::prop_assert_eq!(
            columns,
            LogColumns {
                indexes: expected.iter().map(|e| e.0).collect(),
                lens: expected.iter().map(|e| e.1.len() as u32).collect(),
                data: expected.iter().flat_map(|e| e.1.clone()).collect(),
            }
        );
    }
}

#[test]
fn a_capture_is_not_changed_by_later_pushes() {
    let mut log = ReadableLog::retaining(1 << 20);
    for i in 0..20 {
        log.push(i, &vec![1; 30_000]);
    }
    let capture = log.capture();
    let before = capture.columns();
    for i in 20..200 {
        log.push(i, &vec![2; 30_000]);
    }
    assert_eq!(capture.columns(), before);
    assert!(log.start() > 20, "the log moved on");
}

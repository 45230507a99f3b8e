//! The commands a group applied, for subscribers: a stream from a given log
//! index, replayed from a bounded history of recent entries and then live.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::Stream;
use thiserror::Error;

use super::{Committed, SUBSCRIBER_LAG_MAX};
use crate::protocol::LogIndex;

/// Bytes an entry is counted for beside its command.
const ENTRY_OVERHEAD_BYTES: usize = 32;

/// The commands applied to one group, in log order, from the index asked
/// for. It ends when the group stops, or when the subscriber fell more
/// than [`SUBSCRIBER_LAG_MAX`] entries behind: subscribe again from the
/// index after the last one seen (the history, if it still holds it,
/// makes that lossless).
pub struct CommitStream(mpsc::Receiver<Committed>);

impl Stream for CommitStream {
    type Item = Committed;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Committed>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

/// Why a subscription was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubscribeError {
    /// There is no such group on this node.
    #[error("no group {0}")]
    NoGroup(u32),
    /// The entries from the index asked for are no longer kept (or were
    /// never: this node's state came from a snapshot); `first` is the
    /// lowest index a subscription may start at now.
    #[error("entries before log index {} are no longer kept", first.0)]
    Compacted {
        /// The first index still available.
        first: LogIndex,
    },
    /// The group has stopped.
    #[error("the group has stopped")]
    Stopped,
}

struct Subscriber {
    sender: mpsc::Sender<Committed>,
    from: LogIndex,
}

/// The history and the live subscribers of one group.
pub(crate) struct CommitFeed {
    history: VecDeque<(LogIndex, Bytes)>,
    bytes: usize,
    retain_bytes: usize,
    /// Every entry applied at or above this index is in `history` (when
    /// retaining).
    complete_from: LogIndex,
    subscribers: Vec<Subscriber>,
}

impl CommitFeed {
    /// A feed keeping about `retain_bytes` of entries applied from `next`.
    pub fn new(retain_bytes: usize, next: LogIndex) -> CommitFeed {
        CommitFeed {
            history: VecDeque::new(),
            bytes: 0,
            retain_bytes,
            complete_from: next,
            subscribers: Vec::new(),
        }
    }

    /// Whether the group must hand each applied entry to the feed.
    pub fn wants_entries(&self) -> bool {
        self.retain_bytes > 0 || !self.subscribers.is_empty()
    }

    /// A stream of the entries from `from` on; `next` is the index of the
    /// next command the group will apply.
    pub fn subscribe(
        &mut self,
        from: LogIndex,
        next: LogIndex,
    ) -> Result<CommitStream, SubscribeError> {
        let first = if self.retain_bytes == 0 {
            next
        } else {
            self.complete_from
        };
        if from < first && from < next {
            return Err(SubscribeError::Compacted { first });
        }
        let start = self.history.partition_point(|(index, _)| *index < from);
        let backlog = self.history.len() - start;
        let (mut sender, receiver) = mpsc::channel(SUBSCRIBER_LAG_MAX + backlog);
        for (index, data) in self.history.range(start..) {
            let entry = Committed::Entry {
                index: *index,
                data: data.clone(),
            };
            // Room for all of them was made above.
            let _ = sender.try_send(entry);
        }
        self.subscribers.push(Subscriber { sender, from });
        Ok(CommitStream(receiver))
    }

    /// Keeps and hands out `committed`; drops subscribers that are gone or
    /// too far behind. Returns how many were dropped.
    pub fn publish(&mut self, committed: Committed) -> usize {
        match &committed {
            Committed::Entry { index, data } => self.keep(*index, data),
            Committed::Snapshot { next_index } => {
                // The entries below came in the snapshot, not one by one.
                self.history.clear();
                self.bytes = 0;
                self.complete_from = *next_index;
            }
        }
        let before = self.subscribers.len();
        self.subscribers.retain_mut(|subscriber| match &committed {
            // Not yet at its start: kept unless its stream was dropped.
            Committed::Entry { index, .. } if *index < subscriber.from => {
                !subscriber.sender.is_closed()
            }
            _ => subscriber.sender.try_send(committed.clone()).is_ok(),
        });
        before - self.subscribers.len()
    }

    fn keep(&mut self, index: LogIndex, data: &Bytes) {
        if self.retain_bytes == 0 || index < self.complete_from {
            return;
        }
        self.bytes += data.len() + ENTRY_OVERHEAD_BYTES;
        self.history.push_back((index, data.clone()));
        while self.bytes > self.retain_bytes {
            let Some((index, data)) = self.history.pop_front() else {
                break;
            };
            self.bytes -= data.len() + ENTRY_OVERHEAD_BYTES;
            self.complete_from = LogIndex(index.0 + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, StreamExt};

    use super::*;

    fn entry(index: u64) -> Committed {
        Committed::Entry {
            index: LogIndex(index),
            data: Bytes::from(vec![index as u8; 10]),
        }
    }

    fn drain(stream: &mut CommitStream) -> Vec<u64> {
        std::iter::from_fn(|| stream.next().now_or_never().flatten())
            .map(|c| match c {
                Committed::Entry { index, .. } => index.0,
                Committed::Snapshot { next_index } => 1_000 + next_index.0,
            })
            .collect()
    }

    #[test]
    fn a_subscription_replays_what_is_kept_then_goes_on_live() {
        // Room for three entries of 10 bytes.
        let mut feed = CommitFeed::new(3 * (10 + ENTRY_OVERHEAD_BYTES), LogIndex(5));
        for index in 5..10 {
            feed.publish(entry(index));
        }
        assert_eq!(
            feed.subscribe(LogIndex(6), LogIndex(10)).err(),
            Some(SubscribeError::Compacted { first: LogIndex(7) })
        );
        let mut stream = feed.subscribe(LogIndex(8), LogIndex(10)).unwrap();
        let mut ahead = feed.subscribe(LogIndex(11), LogIndex(10)).unwrap();
        feed.publish(entry(10));
        feed.publish(entry(11));
        assert_eq!(drain(&mut stream), [8, 9, 10, 11]);
        assert_eq!(drain(&mut ahead), [11], "nothing below where it asked");
        // A snapshot from a peer: the entries below it never come one by one.
        feed.publish(Committed::Snapshot {
            next_index: LogIndex(50),
        });
        assert_eq!(drain(&mut stream), [1_050]);
        assert_eq!(
            feed.subscribe(LogIndex(12), LogIndex(50)).err(),
            Some(SubscribeError::Compacted {
                first: LogIndex(50)
            })
        );
    }

    #[test]
    fn without_a_history_only_the_next_entries_stream() {
        let mut feed = CommitFeed::new(0, LogIndex(3));
        assert!(!feed.wants_entries());
        assert_eq!(
            feed.subscribe(LogIndex(2), LogIndex(3)).err(),
            Some(SubscribeError::Compacted { first: LogIndex(3) })
        );
        let mut stream = feed.subscribe(LogIndex(3), LogIndex(3)).unwrap();
        assert!(feed.wants_entries());
        feed.publish(entry(3));
        assert_eq!(drain(&mut stream), [3]);
    }

    #[test]
    fn a_subscriber_too_far_behind_is_dropped_and_its_stream_ends() {
        let mut feed = CommitFeed::new(0, LogIndex(0));
        let mut stream = feed.subscribe(LogIndex(0), LogIndex(0)).unwrap();
        let mut dropped = 0;
        for index in 0..(SUBSCRIBER_LAG_MAX as u64 + 2) {
            dropped += feed.publish(entry(index));
        }
        assert_eq!(dropped, 1);
        assert!(!feed.wants_entries());
        let got = drain(&mut stream);
        assert!(got.len() > SUBSCRIBER_LAG_MAX - 1, "{}", got.len());
        assert_eq!(stream.next().now_or_never(), Some(None), "ended");
    }
}

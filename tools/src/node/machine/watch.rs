//! The KV store's recent changes, kept for watches: bounded in bytes, and
//! complete from a known log index on.

use std::collections::VecDeque;

use synod_client_proto::{ClientResponse, WatchEvent};

/// Bytes of changes kept by default.
pub const WATCH_RETAIN_BYTES: usize = 8 << 20;

/// Bytes of changes one answer carries at most, well inside a client
/// frame (1 MiB); one change, bounded by a command's size, always fits.
/// An answer may stop within one command's changes (a lease ending with
/// very many keys): the next goes on from there.
pub const WATCH_ANSWER_BYTES: usize = 512 << 10;

/// Bytes an event is counted for beside its key and value.
const EVENT_OVERHEAD_BYTES: usize = 48;

/// The latest changes, in log order.
#[derive(Debug)]
pub struct WatchLog {
    events: VecDeque<WatchEvent>,
    bytes: usize,
    retain_bytes: usize,
    /// Every change at this log index or later is in `events`.
    complete_from: u64,
}

fn counted(event: &WatchEvent) -> usize {
    event.key.len() + event.value.as_ref().map_or(0, Vec::len) + EVENT_OVERHEAD_BYTES
}

impl WatchLog {
    /// An empty history, complete from `complete_from` (0 for a new
    /// store; the next index for one restored from a snapshot, whose
    /// changes are not in it).
    pub fn new(retain_bytes: usize, complete_from: u64) -> WatchLog {
        WatchLog {
            events: VecDeque::new(),
            bytes: 0,
            retain_bytes,
            complete_from,
        }
    }

    /// Adds the changes of one command, dropping the oldest commands'
    /// changes past the bound.
    pub fn push(&mut self, events: impl IntoIterator<Item = WatchEvent>) {
        for event in events {
            self.bytes += counted(&event);
            self.events.push_back(event);
        }
        while self.bytes > self.retain_bytes {
            let Some(oldest) = self.events.front().map(|e| e.index) else {
                break;
            };
            // All of a command's changes go together, so the history is
            // complete from the next index.
            while self.events.front().is_some_and(|e| e.index == oldest) {
                if let Some(event) = self.events.pop_front() {
                    self.bytes -= counted(&event);
                }
            }
            self.complete_from = oldest + 1;
        }
    }

    /// The changes at `from` and after to keys starting with `prefix`, the
    /// first `skip` of those at `from` left out (seen already), at most
    /// [`WATCH_ANSWER_BYTES`] of them (one at least); `next_index` is the
    /// index after the last command applied. `from` u64::MAX asks for
    /// none, only where the next change will be.
    pub fn read(&self, prefix: &[u8], from: u64, skip: u32, next_index: u64) -> ClientResponse {
        if from == u64::MAX {
            return ClientResponse::Events {
                events: Vec::new(),
                next: next_index,
                next_skip: 0,
            };
        }
        if from < self.complete_from {
            return ClientResponse::Compacted {
                first: self.complete_from,
            };
        }
        let start = self.events.partition_point(|e| e.index < from);
        let mut events = Vec::new();
        let mut bytes = 0;
        // The index of the last change taken, and how many changes at it
        // the watcher has then seen (those of earlier answers included).
        let (mut at, mut seen_at) = (from, skip);
        let mut to_skip = skip;
        for event in self.events.range(start..) {
            if !event.key.starts_with(prefix) {
                continue;
            }
            if event.index == from && to_skip > 0 {
                to_skip -= 1;
                continue;
            }
            if event.index != at {
                (at, seen_at) = (event.index, 0);
            }
            let more = bytes + counted(event);
            if more > WATCH_ANSWER_BYTES && !events.is_empty() {
                return ClientResponse::Events {
                    events,
                    next: at,
                    next_skip: seen_at,
                };
            }
            bytes = more;
            events.push(event.clone());
            seen_at += 1;
        }
        let next = next_index.max(from);
        let next_skip = if next == from { skip } else { 0 };
        ClientResponse::Events {
            events,
            next,
            next_skip,
        }
    }
}

//! Snapshots on their way between replicas: cut into chunks, gathered by
//! the receiver one transfer per sender, and asked for again from the
//! first byte missing when chunks are lost.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{SnapshotError, SNAPSHOT_BYTES_MAX};
use crate::group::archive::{from_bytes, to_bytes};
use crate::protocol::{GroupId, NodeId, Slot};

/// Frame kind of one chunk of a snapshot on its way to a follower.
pub const KIND_SNAPSHOT_CHUNK: u16 = 17;
/// Frame kind of a receiver's ask to go on with a snapshot from an offset.
pub const KIND_SNAPSHOT_WANTED: u16 = 19;
/// Snapshot bytes one chunk carries at most (well inside a transport frame).
pub const CHUNK_BYTES_MAX: usize = 256 << 10;

/// One piece of an encoded snapshot on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot's slot, so pieces of two snapshots never mix.
    pub upto: Slot,
    /// Where `data` starts in the encoded snapshot.
    pub offset: u64,
    /// The encoded snapshot's length.
    pub total: u64,
    /// The bytes.
    pub data: Bytes,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WireChunk {
    group: u32,
    upto: u64,
    offset: u64,
    total: u64,
    data: Vec<u8>,
}

/// Encodes a chunk as a peer frame body (kind [`KIND_SNAPSHOT_CHUNK`]).
pub fn encode_chunk(group: GroupId, chunk: &SnapshotChunk) -> rkyv::util::AlignedVec {
    to_bytes(&WireChunk {
        group: group.0,
        upto: chunk.upto.0,
        offset: chunk.offset,
        total: chunk.total,
        data: chunk.data.to_vec(),
    })
}

/// Decodes and bounds-checks a chunk from a peer.
pub fn decode_chunk(body: &[u8]) -> Result<(GroupId, SnapshotChunk), SnapshotError> {
    let wire: WireChunk = from_bytes(body).map_err(SnapshotError::Body)?;
    let end = wire.offset.checked_add(wire.data.len() as u64);
    let fits = end.is_some_and(|end| end <= wire.total);
    if !fits || wire.total > SNAPSHOT_BYTES_MAX || wire.data.len() > CHUNK_BYTES_MAX {
        return Err(SnapshotError::Body(format!(
            "chunk {}+{} of {} out of bounds",
            wire.offset,
            wire.data.len(),
            wire.total
        )));
    }
    let chunk = SnapshotChunk {
        upto: Slot(wire.upto),
        offset: wire.offset,
        total: wire.total,
        data: Bytes::from(wire.data),
    };
    Ok((GroupId(wire.group), chunk))
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WireWanted {
    group: u32,
    upto: u64,
    offset: u64,
}

/// Encodes an ask for the rest of snapshot `upto` from byte `offset`, as
/// a peer frame body (kind [`KIND_SNAPSHOT_WANTED`]).
pub fn encode_wanted(group: GroupId, upto: Slot, offset: u64) -> rkyv::util::AlignedVec {
    to_bytes(&WireWanted {
        group: group.0,
        upto: upto.0,
        offset,
    })
}

/// Decodes an ask from a peer: its group, the snapshot and the offset
/// (checked against the snapshot when it is answered).
pub fn decode_wanted(body: &[u8]) -> Result<(GroupId, Slot, u64), SnapshotError> {
    let wire: WireWanted = from_bytes(body).map_err(SnapshotError::Body)?;
    Ok((GroupId(wire.group), Slot(wire.upto), wire.offset))
}

/// Snapshots arriving from peers, one transfer per sender: an acceptor
/// compacted past a new leader's Phase 1 sends it its snapshot, and so may
/// every other at the same time; their chunks interleave.
#[derive(Debug, Default)]
pub struct Transfers {
    by_sender: BTreeMap<NodeId, Incoming>,
}

/// What one chunk did to its sender's transfer.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Kept (or a duplicate, or stale): nothing to do yet.
    Pending,
    /// The last chunk: the whole encoded snapshot.
    Whole(Vec<u8>),
    /// Chunks were lost (a dropped connection, a full queue): ask the
    /// sender to go on from `offset` of snapshot `upto`; what is held
    /// stays.
    Gap {
        /// The snapshot's slot.
        upto: Slot,
        /// The first byte not held.
        offset: u64,
    },
}

/// Asks for the rest of a transfer that go unanswered before it is given
/// up and its bytes freed (the sender died, or no longer has it); the
/// replica asks for the log again and gets a snapshot anew.
pub const ASKS_UNANSWERED_MAX: u32 = 8;

impl Transfers {
    /// Takes a chunk from `from` at tick `now`. A gap is reported at most
    /// once per `ask_every` ticks per sender, so the chunks that follow a
    /// lost one do not each ask again, nor do the answers to two asks.
    pub fn take(
        &mut self,
        from: NodeId,
        chunk: SnapshotChunk,
        now: u64,
        ask_every: u64,
    ) -> Received {
        let transfer = self.by_sender.entry(from).or_default();
        let before = (transfer.upto, transfer.bytes.len());
        let received = transfer.take(chunk);
        if (transfer.upto, transfer.bytes.len()) != before {
            // Progress: the sender is alive and sending this snapshot.
            transfer.unanswered = 0;
        }
        transfer.heard_at = now;
        let received = match received {
            Received::Gap { upto, offset } => {
                // One ask per sender per interval, whatever the offset: each
                // ask restarts the sender from there, so answers to asks
                // must not cross and multiply.
                let asked_lately = transfer.asked.is_some_and(|(at, _)| now < at + ask_every);
                if asked_lately {
                    Received::Pending
                } else {
                    transfer.asked = Some((now, (upto, offset)));
                    Received::Gap { upto, offset }
                }
            }
            other => other,
        };
        if transfer.total == 0 {
            // Finished, or nothing held: nothing kept for this sender.
            self.by_sender.remove(&from);
        }
        received
    }

    /// Transfers that stalled (no chunk, and no ask, for `ask_every`
    /// ticks: a chunk or an ask was lost, the last chunks among them, or
    /// the sender gave up on a full queue): ask for the rest from what is
    /// held. One unanswered [`ASKS_UNANSWERED_MAX`] times is dropped, its
    /// bytes freed.
    pub fn asks_due(&mut self, now: u64, ask_every: u64) -> Vec<(NodeId, Slot, u64)> {
        let mut due = Vec::new();
        self.by_sender.retain(|from, transfer| {
            let last = transfer.asked.map_or(transfer.heard_at, |(at, _)| at);
            if now < last.max(transfer.heard_at) + ask_every {
                return true;
            }
            if transfer.unanswered >= ASKS_UNANSWERED_MAX {
                return false;
            }
            let (upto, held) = (transfer.upto, transfer.bytes.len() as u64);
            transfer.asked = Some((now, (upto, held)));
            transfer.unanswered += 1;
            due.push((*from, upto, held));
            true
        });
        due
    }

    /// Drops the transfers of snapshots no further than `applied`: the
    /// state is there already (installed from another peer, say).
    pub fn forget_behind(&mut self, applied: Slot) {
        self.by_sender.retain(|_, transfer| transfer.upto > applied);
    }

    /// Bytes held from `from`'s transfer under way (0: none).
    #[cfg(test)]
    pub fn held(&self, from: NodeId) -> u64 {
        self.by_sender
            .get(&from)
            .map_or(0, |transfer| transfer.bytes.len() as u64)
    }
}

/// A snapshot arriving chunk by chunk. Chunks may come more than once (a
/// sender asked to go on from an offset, or sending its snapshot again
/// from the start); what is held is kept until the snapshot is whole or a
/// newer one starts.
#[derive(Debug, Default)]
pub struct Incoming {
    upto: Slot,
    total: u64,
    bytes: Vec<u8>,
    /// The tick and the (snapshot, offset) of the last ask.
    asked: Option<(u64, (Slot, u64))>,
    /// The tick of the last chunk from this sender.
    heard_at: u64,
    /// Asks since the last chunk that added bytes.
    unanswered: u32,
}

impl Incoming {
    /// Takes a chunk: appends it if it starts where the bytes held end,
    /// ignores one already held or of an older snapshot, and reports a
    /// gap otherwise.
    pub fn take(&mut self, chunk: SnapshotChunk) -> Received {
        let same = chunk.upto == self.upto && chunk.total == self.total && self.total > 0;
        if !same {
            if chunk.upto < self.upto && self.total > 0 {
                return Received::Pending;
            }
            // A newer snapshot (or the first): it replaces what was held.
            *self = Incoming {
                upto: chunk.upto,
                total: chunk.total,
                bytes: Vec::with_capacity(chunk.total.min(CHUNK_BYTES_MAX as u64 * 4) as usize),
                ..Incoming::default()
            };
        }
        let held = self.bytes.len() as u64;
        if chunk.offset > held {
            return Received::Gap {
                upto: self.upto,
                offset: held,
            };
        }
        let end = chunk.offset + chunk.data.len() as u64;
        if end <= held {
            return Received::Pending;
        }
        // Overlaps the end of what is held: keep the part past it.
        let new = &chunk.data[(held - chunk.offset) as usize..];
        self.bytes.extend_from_slice(new);
        if self.bytes.len() as u64 == self.total {
            let done = std::mem::take(&mut self.bytes);
            *self = Incoming::default();
            return Received::Whole(done);
        }
        Received::Pending
    }
}

/// Cuts `encoded` into chunks for the wire.
pub fn chunks(upto: Slot, encoded: &Bytes) -> impl Iterator<Item = SnapshotChunk> + '_ {
    chunks_from(upto, encoded, 0)
}

/// Cuts `encoded` into chunks for the wire, from byte `offset` on.
pub fn chunks_from(
    upto: Slot,
    encoded: &Bytes,
    offset: u64,
) -> impl Iterator<Item = SnapshotChunk> + '_ {
    (clamped(encoded, offset)..encoded.len())
        .step_by(CHUNK_BYTES_MAX)
        .map(move |at| chunk_at(upto, encoded, at as u64))
}

/// `offset` as a position in `encoded`, its end if past it.
fn clamped(encoded: &Bytes, offset: u64) -> usize {
    usize::try_from(offset).map_or(encoded.len(), |o| o.min(encoded.len()))
}

/// The chunk of `encoded` that starts at byte `offset` (empty past its end).
pub fn chunk_at(upto: Slot, encoded: &Bytes, offset: u64) -> SnapshotChunk {
    let start = clamped(encoded, offset);
    SnapshotChunk {
        upto,
        offset: start as u64,
        total: encoded.len() as u64,
        data: encoded.slice(start..(start + CHUNK_BYTES_MAX).min(encoded.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::snapshot::tests::sample;
    use crate::group::snapshot::Snapshot;

    #[test]
    fn a_gap_keeps_what_is_held_and_the_rest_completes_it() {
        let snapshot = sample();
        let encoded = Bytes::from(snapshot.encode().unwrap());
        let pieces: Vec<SnapshotChunk> = chunks(snapshot.upto, &encoded).collect();
        assert_eq!(pieces.len(), 3, "600 KiB in 256 KiB chunks");
        for piece in &pieces {
            let body = encode_chunk(GroupId(5), piece);
            assert_eq!(decode_chunk(&body).unwrap(), (GroupId(5), piece.clone()));
        }

        let mut incoming = Incoming::default();
        assert_eq!(incoming.take(pieces[0].clone()), Received::Pending);
        let held = CHUNK_BYTES_MAX as u64;
        let gap = Received::Gap {
            upto: snapshot.upto,
            offset: held,
        };
        assert_eq!(incoming.take(pieces[2].clone()), gap, "the second was lost");
        assert_eq!(incoming.take(pieces[0].clone()), Received::Pending, "held");
        // The sender goes on from the offset asked for.
        let rest: Vec<SnapshotChunk> = chunks_from(snapshot.upto, &encoded, held).collect();
        assert_eq!(rest, pieces[1..].to_vec());
        assert_eq!(incoming.take(rest[0].clone()), Received::Pending);
        let Received::Whole(whole) = incoming.take(rest[1].clone()) else {
            panic!("the last chunk completes it");
        };
        assert_eq!(Snapshot::decode(&whole).unwrap(), snapshot);
    }

    #[test]
    fn a_newer_snapshot_replaces_what_is_held_and_an_older_one_is_ignored() {
        let encoded = Bytes::from(sample().encode().unwrap());
        let older: Vec<SnapshotChunk> = chunks(Slot(12), &encoded).collect();
        let newer: Vec<SnapshotChunk> = chunks(Slot(20), &encoded).collect();
        let mut incoming = Incoming::default();
        assert_eq!(incoming.take(older[0].clone()), Received::Pending);
        // The newer one's first chunk was lost: ask for it from the start.
        let gap = Received::Gap {
            upto: Slot(20),
            offset: 0,
        };
        assert_eq!(incoming.take(newer[1].clone()), gap);
        assert_eq!(incoming.take(older[1].clone()), Received::Pending, "older");
        for piece in &newer[..2] {
            assert_eq!(incoming.take(piece.clone()), Received::Pending);
        }
        assert!(matches!(
            incoming.take(newer[2].clone()),
            Received::Whole(_)
        ));
    }

    #[test]
    fn a_gap_is_asked_for_once_per_interval_and_again_after_it() {
        let encoded = Bytes::from(sample().encode().unwrap());
        let pieces: Vec<SnapshotChunk> = chunks(Slot(12), &encoded).collect();
        let mut transfers = Transfers::default();
        let from = NodeId(2);
        let take = |t: &mut Transfers, i: usize, now| t.take(from, pieces[i].clone(), now, 5);
        assert_eq!(take(&mut transfers, 0, 0), Received::Pending);
        let chunk = CHUNK_BYTES_MAX as u64;
        let gap = Received::Gap {
            upto: Slot(12),
            offset: chunk,
        };
        assert_eq!(take(&mut transfers, 2, 1), gap);
        assert_eq!(
            take(&mut transfers, 2, 3),
            Received::Pending,
            "asked already"
        );
        assert_eq!(take(&mut transfers, 2, 6), gap, "the ask was lost");
        // Nothing comes: the clock asks again, once per interval.
        assert!(transfers.asks_due(10, 5).is_empty(), "asked at 6");
        assert_eq!(transfers.asks_due(11, 5), [(from, Slot(12), chunk)]);
        assert!(transfers.asks_due(12, 5).is_empty(), "asked at 11");
        assert_eq!(transfers.held(from), chunk);
        // The second chunk comes, the last is lost on the way: the tail is
        // asked for on time alone (no chunk comes to show the gap).
        assert_eq!(take(&mut transfers, 1, 13), Received::Pending);
        assert!(transfers.asks_due(17, 5).is_empty());
        assert_eq!(transfers.asks_due(18, 5), [(from, Slot(12), 2 * chunk)]);
        assert!(matches!(take(&mut transfers, 2, 19), Received::Whole(_)));
        assert!(transfers.by_sender.is_empty(), "nothing held once done");
        assert!(transfers.asks_due(100, 5).is_empty());
    }

    #[test]
    fn a_transfer_nobody_answers_or_already_applied_is_dropped() {
        let encoded = Bytes::from(sample().encode().unwrap());
        let pieces: Vec<SnapshotChunk> = chunks(Slot(12), &encoded).collect();
        let mut transfers = Transfers::default();
        let (gone, other) = (NodeId(2), NodeId(3));
        transfers.take(gone, pieces[0].clone(), 0, 5);
        transfers.take(other, pieces[0].clone(), 0, 5);
        transfers.forget_behind(Slot(12));
        assert_eq!(
            (transfers.held(gone), transfers.held(other)),
            (0, 0),
            "applied"
        );
        transfers.take(gone, pieces[0].clone(), 0, 5);
        let mut asks = 0;
        for now in 1..200 {
            asks += transfers.asks_due(now, 5).len();
        }
        assert_eq!(asks, ASKS_UNANSWERED_MAX as usize);
        assert_eq!(transfers.held(gone), 0, "given up: its bytes freed");
        assert!(transfers.by_sender.is_empty());
    }

    #[test]
    fn asks_round_trip_through_their_frame() {
        let body = encode_wanted(GroupId(3), Slot(12), 1 << 40);
        assert_eq!(
            decode_wanted(&body).unwrap(),
            (GroupId(3), Slot(12), 1 << 40)
        );
        assert!(decode_wanted(b"not an ask").is_err());
    }

    /// Two acceptors answering one new leader's Phase 1 each send their
    /// snapshot at once: interleaved, both arrive whole.
    #[test]
    fn interleaved_transfers_from_two_peers_both_complete() {
        let encoded = Bytes::from(sample().encode().unwrap());
        let pieces: Vec<SnapshotChunk> = chunks(Slot(12), &encoded).collect();
        assert!(pieces.len() > 1);
        let mut transfers = Transfers::default();
        let mut done = Vec::new();
        for piece in &pieces {
            for from in [NodeId(2), NodeId(3)] {
                if let Received::Whole(whole) = transfers.take(from, piece.clone(), 0, 5) {
                    done.push((from, whole));
                }
            }
        }
        assert_eq!(
            done,
            vec![(NodeId(2), encoded.to_vec()), (NodeId(3), encoded.to_vec())]
        );
        assert!(transfers.by_sender.is_empty(), "nothing held once done");
    }

    #[test]
    fn chunks_out_of_bounds_are_refused() {
        let chunk = SnapshotChunk {
            upto: Slot(1),
            offset: u64::MAX - 2,
            total: 10,
            data: Bytes::from_static(b"abcd"),
        };
        assert!(decode_chunk(&encode_chunk(GroupId(0), &chunk)).is_err());
        let huge = SnapshotChunk {
            offset: 0,
            total: SNAPSHOT_BYTES_MAX + 1,
            ..chunk
        };
        assert!(decode_chunk(&encode_chunk(GroupId(0), &huge)).is_err());
        assert!(decode_chunk(b"garbage that is not a chunk").is_err());
    }
}

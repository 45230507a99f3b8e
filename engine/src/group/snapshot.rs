//! Snapshots: a group's applied state at a slot, kept in one checksummed
//! file beside its WAL and handed in chunks to a follower that needs slots
//! its leader compacted.
//!
//! ```text
//!  apply ─► every N slots ─► encode ─► save (tmp, fsync, rename, fsync dir)
//!                                        └─► compact the log, drop WAL segments
//!  CatchUpRequest below log start ─► SendSnapshot ─► chunks ─► follower
//!       follower: all chunks ─► decode (checksum, bytecheck, validate)
//!                 ─► restore ─► install ─► save ─► compact
//! ```
//!
//! A snapshot holds only chosen state (the state machine, the client
//! sessions, the next log index), so any replica's snapshot is correct for
//! every other: acceptor safety never rests on it. The WAL frames a snapshot
//! covers are removed only once its file is durable.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use synod_wal::frame::{decode_frame, encode_frame, FrameError, FRAME_BODY_BYTES_MAX};
use thiserror::Error;

use super::archive::{from_bytes, to_bytes};
use crate::protocol::{
    describe_session_bounds, pack_session_bounds, Ballot, ClientId, GroupId, LogIndex, NodeId,
    SessionRecord, Sessions, Slot, SESSION_BOUNDS,
};

/// Frame kind of a snapshot file: the session bounds it was taken with,
/// then the snapshot.
pub const KIND_SNAPSHOT: u16 = 4;

/// Frame kind of snapshots written before they recorded their session
/// bounds. Every build that wrote them kept 65,536 sessions of up to 4,096
/// commands, so they are read as having those.
const KIND_SNAPSHOT_IMPLIED_BOUNDS: u16 = 3;
const IMPLIED_SESSION_BOUNDS: u64 = pack_session_bounds(1 << 16, 4096);

/// Frame kind of snapshots written before sessions were bounded (no
/// `evicted_through`): recognised only to refuse them by name.
const KIND_SNAPSHOT_UNBOUNDED_SESSIONS: u16 = 2;
/// Frame kind of one chunk of a snapshot on its way to a follower.
pub const KIND_SNAPSHOT_CHUNK: u16 = 17;
/// Frame kind of a receiver's ask to go on with a snapshot from an offset.
pub const KIND_SNAPSHOT_WANTED: u16 = 19;
/// Snapshot bytes one chunk carries at most (well inside a transport frame).
pub const CHUNK_BYTES_MAX: usize = 256 << 10;

/// When a group snapshots and how much log it keeps in memory after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Snapshot once this many slots were applied since the last one;
    /// 0 never snapshots (the log and the WAL then grow without bound).
    pub every_slots: u64,
    /// Or once this many bytes of commands were applied since the last one.
    pub every_bytes: u64,
    /// Slots kept in memory below a snapshot, so that a follower a little
    /// behind catches up from the log instead of needing the snapshot.
    pub keep_slots: u64,
    /// The group's own snapshots are written no faster than this many
    /// times the rate at which command bytes were applied since the last
    /// one (and no slower than `write_floor_bytes_per_sec`). A snapshot
    /// written at full speed shares the disk with the WAL's fdatasyncs and
    /// stalled acknowledgements (bench/RESULTS.md); paced, the WAL written
    /// meanwhile, which compaction cannot drop yet, stays below about
    /// 1/`write_pace` of the snapshot. 0: full speed. A snapshot installed
    /// from a peer is always written at full speed.
    pub write_pace: u64,
    /// The slowest a paced snapshot is written, in bytes per second.
    pub write_floor_bytes_per_sec: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            every_slots: 10_000,
            every_bytes: 64 << 20,
            keep_slots: 1_000,
            write_pace: 4,
            write_floor_bytes_per_sec: 4 << 20,
        }
    }
}

impl SnapshotPolicy {
    /// How fast to write a snapshot taken after `applied_bytes` of commands
    /// in `elapsed`; `None`: at full speed.
    pub fn write_rate(&self, applied_bytes: u64, elapsed: std::time::Duration) -> Option<u64> {
        if self.write_pace == 0 {
            return None;
        }
        let applied_per_sec = applied_bytes as f64 / elapsed.as_secs_f64().max(1e-3);
        let paced = (applied_per_sec * self.write_pace as f64).min(u64::MAX as f64) as u64;
        Some(paced.max(self.write_floor_bytes_per_sec).max(1))
    }
}

/// Why a snapshot could not be read, written or installed.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The file or the bytes fail the frame check.
    #[error("snapshot frame: {0}")]
    Frame(#[from] FrameError),
    /// The body fails bytecheck or its own validation.
    #[error("snapshot body: {0}")]
    Body(String),
    /// The file could not be read or written.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The sessions a group keeps: per client, the last sequence applied, with
/// its index and reply.
pub type GroupSessions = Sessions<Bytes>;

/// A group's applied state below `upto`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every slot below is applied into `machine`.
    pub upto: Slot,
    /// The log index of the first command at `upto`.
    pub next_index: LogIndex,
    /// A floor for the acceptor's promise after a restart: WAL frames that
    /// recorded lower promises may be gone.
    pub promised: Ballot,
    /// Client sessions, so a retry after a restart is still applied once.
    pub sessions: GroupSessions,
    /// The state machine's own snapshot.
    pub machine: Bytes,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WireSession {
    client: u64,
    seq: u64,
    index: u64,
    /// `None`: a tombstone of an expired session.
    reply: Option<Vec<u8>>,
}

/// A snapshot with the bounds its sessions were kept under.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WireBoundedSnapshot {
    session_bounds: u64,
    snapshot: WireSnapshot,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WireSnapshot {
    upto: u64,
    next_index: u64,
    promised_round: u64,
    promised_node: u64,
    sessions: Vec<WireSession>,
    sessions_evicted_through: Option<u64>,
    machine: Vec<u8>,
}

impl Snapshot {
    /// The snapshot as one frame (header, checksum, rkyv body): the file's
    /// contents and what travels in chunks.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        self.encode_with_bounds(self.sessions.bounds())
    }

    fn encode_with_bounds(&self, session_bounds: u64) -> Result<Vec<u8>, SnapshotError> {
        let body = to_bytes(&WireBoundedSnapshot {
            session_bounds,
            snapshot: self.wire(),
        });
        let mut out = Vec::new();
        encode_frame(KIND_SNAPSHOT, self.upto.0, &body, &mut out)?;
        Ok(out)
    }

    fn wire(&self) -> WireSnapshot {
        WireSnapshot {
            upto: self.upto.0,
            next_index: self.next_index.0,
            promised_round: self.promised.round,
            promised_node: self.promised.node.0,
            sessions: self
                .sessions
                .iter()
                .map(|session| WireSession {
                    client: session.client.0,
                    seq: session.last_seq,
                    index: session.index.0,
                    reply: session.reply.map(|reply| reply.to_vec()),
                })
                .collect(),
            sessions_evicted_through: self.sessions.evicted_through().map(|i| i.0),
            machine: self.machine.to_vec(),
        }
    }

    /// Checks and decodes bytes from a file or a peer: checksum, bytecheck,
    /// then the fields' own sense.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        Snapshot::decode_for(bytes, SESSION_BOUNDS)
    }

    /// [`Snapshot::decode`] for a group whose session table has `bounds`
    /// ([`Sessions::bounds`]): a snapshot taken under others is refused.
    pub fn decode_for(bytes: &[u8], bounds: u64) -> Result<Snapshot, SnapshotError> {
        let (header, body, used) = decode_frame(bytes)?;
        if header.kind == KIND_SNAPSHOT_UNBOUNDED_SESSIONS {
            return Err(SnapshotError::Body(
                "a snapshot of an older format (sessions without eviction): \
                 rebuild this replica from its peers (an empty data directory \
                 and `synod node --rejoin`)"
                    .into(),
            ));
        }
        let known_kind = [KIND_SNAPSHOT, KIND_SNAPSHOT_IMPLIED_BOUNDS].contains(&header.kind);
        if !known_kind || used != bytes.len() {
            return Err(SnapshotError::Body(format!(
                "kind {} and {used} of {} bytes: not one snapshot frame",
                header.kind,
                bytes.len()
            )));
        }
        let (session_bounds, wire) = if header.kind == KIND_SNAPSHOT {
            let bounded: WireBoundedSnapshot = from_bytes(body).map_err(SnapshotError::Body)?;
            (bounded.session_bounds, bounded.snapshot)
        } else {
            let wire: WireSnapshot = from_bytes(body).map_err(SnapshotError::Body)?;
            (IMPLIED_SESSION_BOUNDS, wire)
        };
        // Restored under other bounds, the table would evict other sessions
        // than the replicas that kept it, and apply other commands.
        if session_bounds != bounds {
            return Err(SnapshotError::Body(format!(
                "taken by a build keeping {}; this build keeps {}: run one build on every replica",
                describe_session_bounds(session_bounds),
                describe_session_bounds(bounds)
            )));
        }
        if header.seq != wire.upto || wire.upto == 0 || wire.promised_node == 0 {
            return Err(SnapshotError::Body("impossible slot or ballot".into()));
        }
        let mut last_client = 0;
        let mut indexes = std::collections::BTreeSet::new();
        let evicted_through = wire.sessions_evicted_through;
        for session in &wire.sessions {
            if session.client <= last_client
                || session.index >= wire.next_index
                || evicted_through.is_some_and(|through| session.index <= through)
                || !indexes.insert(session.index)
            {
                return Err(SnapshotError::Body(format!(
                    "session of client {} out of order, shares its index, or is not \
                     between the evicted ones and the snapshot's end",
                    session.client
                )));
            }
            last_client = session.client;
        }
        if evicted_through.is_some_and(|through| through >= wire.next_index) {
            return Err(SnapshotError::Body(
                "sessions evicted past the snapshot's end".into(),
            ));
        }
        Ok(Snapshot {
            upto: Slot(wire.upto),
            next_index: LogIndex(wire.next_index),
            promised: Ballot {
                round: wire.promised_round,
                node: NodeId(wire.promised_node),
            },
            sessions: Sessions::restore(
                (bounds >> 32) as usize,
                bounds & u64::from(u32::MAX),
                evicted_through.map(LogIndex),
                wire.sessions.into_iter().map(|s| {
                    let index = LogIndex(s.index);
                    SessionRecord {
                        client: ClientId(s.client),
                        last_seq: s.seq,
                        index,
                        reply: s.reply.map(Bytes::from),
                    }
                }),
            ),
            machine: Bytes::from(wire.machine),
        })
    }
}

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
    if !fits || wire.total > snapshot_bytes_max() || wire.data.len() > CHUNK_BYTES_MAX {
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

/// The largest encoded snapshot: one frame.
pub fn snapshot_bytes_max() -> u64 {
    u64::from(FRAME_BODY_BYTES_MAX) + 64
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

impl Transfers {
    /// Takes a chunk from `from` at tick `now`. A gap is reported at most
    /// once per `ask_every` ticks per sender, so the chunks that follow a
    /// lost one do not each ask again, and a lost ask is repeated.
    pub fn take(
        &mut self,
        from: NodeId,
        chunk: SnapshotChunk,
        now: u64,
        ask_every: u64,
    ) -> Received {
        let transfer = self.by_sender.entry(from).or_default();
        let received = transfer.take(chunk);
        let received = match received {
            Received::Gap { upto, offset } => {
                let asked_lately = transfer
                    .asked
                    .is_some_and(|(at, asked)| asked == (upto, offset) && now < at + ask_every);
                if asked_lately {
                    Received::Pending
                } else {
                    transfer.asked = Some((now, (upto, offset)));
                    Received::Gap { upto, offset }
                }
            }
            other => other,
        };
        if transfer.total == 0 && transfer.asked.is_none() {
            // Finished, or nothing held: nothing kept for this sender.
            self.by_sender.remove(&from);
        }
        received
    }

    /// Bytes held from `from`'s transfer under way (0: none).
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
    /// The tick and the (snapshot, offset) of the last gap reported.
    asked: Option<(u64, (Slot, u64))>,
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
                asked: None,
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
    let start = usize::try_from(offset).map_or(encoded.len(), |o| o.min(encoded.len()));
    (start..encoded.len())
        .step_by(CHUNK_BYTES_MAX)
        .map(move |at| chunk_at(upto, encoded, at as u64))
}

/// The chunk of `encoded` that starts at byte `offset` (empty past its end).
pub fn chunk_at(upto: Slot, encoded: &Bytes, offset: u64) -> SnapshotChunk {
    let start = usize::try_from(offset).map_or(encoded.len(), |o| o.min(encoded.len()));
    SnapshotChunk {
        upto,
        offset: start as u64,
        total: encoded.len() as u64,
        data: encoded.slice(start..(start + CHUNK_BYTES_MAX).min(encoded.len())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::{REQUEST_COMMANDS_MAX, SESSIONS_MAX};

    /// A snapshot with sessions of every kind and a machine above one
    /// chunk, for the tests of its file too.
    pub(crate) fn sample() -> Snapshot {
        let record = |client, last_seq, index, reply: Option<&'static [u8]>| SessionRecord {
            client: ClientId(client),
            last_seq,
            index: LogIndex(index),
            reply: reply.map(Bytes::from_static),
        };
        let sessions: GroupSessions = Sessions::restore(
            SESSIONS_MAX,
            REQUEST_COMMANDS_MAX,
            Some(LogIndex(5)),
            [
                record(3, 7, 10, Some(b"r3")),
                record(9, 1, 41, Some(b"")),
                record(11, 4102, 30, None),
            ],
        );
        Snapshot {
            upto: Slot(12),
            next_index: LogIndex(42),
            promised: Ballot {
                round: 4,
                node: NodeId(2),
            },
            sessions,
            machine: Bytes::from(vec![7u8; 600 << 10]),
        }
    }

    #[test]
    fn own_snapshots_are_paced_by_the_applied_rate_above_a_floor() {
        let policy = SnapshotPolicy::default();
        let second = std::time::Duration::from_secs(1);
        assert_eq!(
            policy.write_rate(0, second),
            Some(4 << 20),
            "idle: the floor"
        );
        assert_eq!(
            policy.write_rate(10 << 20, second),
            Some(40 << 20),
            "4x the applied rate"
        );
        assert_eq!(policy.write_rate(5 << 20, 2 * second), Some(10 << 20));
        let full_speed = SnapshotPolicy {
            write_pace: 0,
            ..policy
        };
        assert_eq!(full_speed.write_rate(10 << 20, second), None);
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let encoded = sample().encode().unwrap();
        for at in [0, 40, encoded.len() / 2, encoded.len() - 20] {
            let mut flipped = encoded.clone();
            flipped[at] ^= 0x10;
            assert!(Snapshot::decode(&flipped).is_err(), "bit flip at {at}");
        }
        assert!(Snapshot::decode(&encoded[..encoded.len() - 16]).is_err());
        let mut longer = encoded.clone();
        longer.extend_from_slice(&[0; 16]);
        assert!(Snapshot::decode(&longer).is_err(), "trailing bytes");
        assert!(Snapshot::decode(b"").is_err());
    }

    fn reframed(snapshot: &Snapshot, kind: u16) -> Vec<u8> {
        let encoded = snapshot.encode().unwrap();
        let (_, body, _) = decode_frame(&encoded).unwrap();
        let mut out = Vec::new();
        encode_frame(kind, snapshot.upto.0, body, &mut out).unwrap();
        out
    }

    #[test]
    fn sessions_that_contradict_their_evictions_and_older_formats_are_refused() {
        let snapshot = sample();
        assert_eq!(
            Snapshot::decode(&snapshot.encode().unwrap()).unwrap(),
            snapshot
        );
        let older = reframed(&snapshot, KIND_SNAPSHOT_UNBOUNDED_SESSIONS);
        let error = Snapshot::decode(&older).unwrap_err().to_string();
        assert!(error.contains("older format"), "{error}");
        // Snapshots from before the bounds were recorded are read as taken
        // under the bounds of the builds that wrote them.
        let mut implied = Vec::new();
        let body = to_bytes(&snapshot.wire());
        encode_frame(KIND_SNAPSHOT_IMPLIED_BOUNDS, 12, &body, &mut implied).unwrap();
        let decoded = Snapshot::decode(&implied);
        if IMPLIED_SESSION_BOUNDS == SESSION_BOUNDS {
            assert_eq!(decoded.unwrap(), snapshot);
        } else {
            assert!(decoded.is_err());
        }
        // Another build's table is refused, by name.
        let other = snapshot
            .encode_with_bounds(pack_session_bounds(1 << 20, 4096))
            .unwrap();
        let error = Snapshot::decode(&other).unwrap_err().to_string();
        assert!(
            error.contains("1048576 sessions") && error.contains("65536 sessions"),
            "{error}"
        );
        // A kept session at or below the evicted ones cannot happen: the
        // oldest are evicted first.
        let contradicting = Snapshot {
            sessions: Sessions::restore(
                SESSIONS_MAX,
                REQUEST_COMMANDS_MAX,
                Some(LogIndex(10)),
                [SessionRecord {
                    client: ClientId(3),
                    last_seq: 7,
                    index: LogIndex(10),
                    reply: Some(Bytes::new()),
                }],
            ),
            ..snapshot.clone()
        };
        assert!(Snapshot::decode(&contradicting.encode().unwrap()).is_err());
        let past_the_end = Snapshot {
            sessions: Sessions::restore(SESSIONS_MAX, REQUEST_COMMANDS_MAX, Some(LogIndex(42)), []),
            ..snapshot
        };
        assert!(Snapshot::decode(&past_the_end.encode().unwrap()).is_err());
    }

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
        assert_eq!(
            transfers.take(from, pieces[0].clone(), 0, 5),
            Received::Pending
        );
        let gap = Received::Gap {
            upto: Slot(12),
            offset: CHUNK_BYTES_MAX as u64,
        };
        assert_eq!(transfers.take(from, pieces[2].clone(), 1, 5), gap);
        assert_eq!(
            transfers.take(from, pieces[2].clone(), 3, 5),
            Received::Pending,
            "asked already"
        );
        assert_eq!(
            transfers.take(from, pieces[2].clone(), 6, 5),
            gap,
            "the ask was lost"
        );
        assert_eq!(transfers.held(from), CHUNK_BYTES_MAX as u64);
        assert_eq!(
            transfers.take(from, pieces[1].clone(), 7, 5),
            Received::Pending
        );
        assert!(matches!(
            transfers.take(from, pieces[2].clone(), 8, 5),
            Received::Whole(_)
        ));
        assert!(transfers.by_sender.is_empty(), "nothing held once done");
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
            total: snapshot_bytes_max() + 1,
            ..chunk
        };
        assert!(decode_chunk(&encode_chunk(GroupId(0), &huge)).is_err());
        assert!(decode_chunk(b"garbage that is not a chunk").is_err());
    }
}

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

use std::path::PathBuf;

use bytes::Bytes;
use synod_wal::frame::{decode_frame, encode_frame, frame_bytes, FrameError, FrameHeader};
use thiserror::Error;

mod transfer;

pub use transfer::{
    chunk_at, chunks, chunks_from, decode_chunk, decode_wanted, encode_chunk, encode_wanted,
    Incoming, Received, SnapshotChunk, Transfers, CHUNK_BYTES_MAX, KIND_SNAPSHOT_CHUNK,
    KIND_SNAPSHOT_WANTED,
};

use super::archive::{from_bytes, to_bytes};
use crate::protocol::{
    describe_session_bounds, pack_session_bounds, Ballot, ClientId, LogIndex, Membership, NodeId,
    Schedule, SessionRecord, Sessions, Slot, SESSION_BOUNDS,
};

/// Frame kind of a snapshot's head (its slot, promise floor, sessions, and
/// the length and CRC32C of its state machine bytes), which the part frames
/// follow in order.
pub const KIND_SNAPSHOT_HEAD: u16 = 5;
/// Frame kind of a snapshot's head that also records the group's
/// configurations from its slot on; the part frames follow as after kind 5,
/// which is still read (as a group that never changed its members).
pub const KIND_SNAPSHOT_HEAD_MEMBERS: u16 = 7;
/// Frame kind of one part of a snapshot's state machine bytes (frame seq:
/// the part's number).
const KIND_SNAPSHOT_PART: u16 = 6;
/// State machine bytes in one part frame; every part but the last is full.
pub const PART_BYTES: usize = 4 << 20;
/// The largest snapshot a replica writes or takes from a peer: a bound on
/// what a peer can make a replica gather, far above the 64 MiB one frame
/// holds. A state whose snapshot would be larger is not snapshotted (the
/// WAL keeps it, as with any snapshot that cannot be encoded).
pub const SNAPSHOT_BYTES_MAX: u64 = 16 << 30;

/// Frame kind of single-frame snapshots (builds before the parts): the
/// session bounds it was taken with, then the snapshot, at most 64 MiB.
/// Still read.
const KIND_SNAPSHOT: u16 = 4;

/// Frame kind of snapshots written before they recorded their session
/// bounds. Every build that wrote them kept 65,536 sessions of up to 4,096
/// commands, so they are read as having those.
const KIND_SNAPSHOT_IMPLIED_BOUNDS: u16 = 3;
const IMPLIED_SESSION_BOUNDS: u64 = pack_session_bounds(1 << 16, 4096);

/// Frame kind of snapshots written before sessions were bounded (no
/// `evicted_through`): recognised only to refuse them by name.
const KIND_SNAPSHOT_UNBOUNDED_SESSIONS: u16 = 2;

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
    /// The configurations of the slots from `upto` on (`None` in snapshots
    /// of builds before membership changes: the group's first members).
    pub schedule: Option<Schedule>,
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

/// A snapshot's head frame: all of it but the state machine's bytes
/// (`snapshot.machine` is empty), which follow in part frames.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WireHead {
    bounded: WireBoundedSnapshot,
    machine_bytes: u64,
    machine_crc: u32,
}

/// The head with the group's configurations (kind 7).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WireHeadMembers {
    head: WireHead,
    /// Each configuration's first slot and `Membership::encode` bytes.
    schedule: Vec<(u64, Vec<u8>)>,
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
    /// The snapshot as the file holds it and as it travels in chunks: a
    /// head frame, then the state machine's bytes in part frames of
    /// [`PART_BYTES`] (each frame checksummed; the head also carries the
    /// CRC32C of all of them), so no state is bounded by one frame.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        self.encode_with_bounds(self.sessions.bounds())
    }

    fn encode_with_bounds(&self, session_bounds: u64) -> Result<Vec<u8>, SnapshotError> {
        let head = WireHead {
            bounded: WireBoundedSnapshot {
                session_bounds,
                snapshot: self.wire_without_machine(),
            },
            machine_bytes: self.machine.len() as u64,
            machine_crc: crc32c::crc32c(&self.machine),
        };
        let (kind, head) = match &self.schedule {
            Some(schedule) => {
                let schedule = schedule
                    .entries()
                    .iter()
                    .map(|(from, m)| (from.0, m.encode().to_vec()))
                    .collect();
                let head = to_bytes(&WireHeadMembers { head, schedule });
                (KIND_SNAPSHOT_HEAD_MEMBERS, head)
            }
            None => (KIND_SNAPSHOT_HEAD, to_bytes(&head)),
        };
        let full_parts = self.machine.len() / PART_BYTES;
        let last_part = self.machine.len() % PART_BYTES;
        let total = frame_bytes(head.len())
            + full_parts * frame_bytes(PART_BYTES)
            + if last_part > 0 {
                frame_bytes(last_part)
            } else {
                0
            };
        if total as u64 > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::Body(format!(
                "{total} bytes, above the {SNAPSHOT_BYTES_MAX} a snapshot may hold"
            )));
        }
        let mut out = Vec::with_capacity(total);
        encode_frame(kind, self.upto.0, &head, &mut out)?;
        for (number, part) in self.machine.chunks(PART_BYTES).enumerate() {
            encode_frame(KIND_SNAPSHOT_PART, number as u64, part, &mut out)?;
        }
        Ok(out)
    }

    /// All but the state machine's bytes, which travel in parts.
    fn wire_without_machine(&self) -> WireSnapshot {
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
            machine: Vec::new(),
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
        if header.kind == KIND_SNAPSHOT_HEAD || header.kind == KIND_SNAPSHOT_HEAD_MEMBERS {
            let (head, schedule) = if header.kind == KIND_SNAPSHOT_HEAD {
                (from_bytes(body).map_err(SnapshotError::Body)?, None)
            } else {
                let wire: WireHeadMembers = from_bytes(body).map_err(SnapshotError::Body)?;
                (wire.head, Some(schedule_from_wire(wire.schedule)?))
            };
            let head: WireHead = head;
            let bounded = head.bounded;
            let mut snapshot =
                Snapshot::checked(&header, bounded.session_bounds, bounded.snapshot, bounds)?;
            snapshot.machine =
                machine_from_parts(&bytes[used..], head.machine_bytes, head.machine_crc)?;
            snapshot.schedule = schedule;
            return Ok(snapshot);
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
        Snapshot::checked(&header, session_bounds, wire, bounds)
    }

    /// A decoded snapshot's fields, checked for sense against each other
    /// and the group's session `bounds`.
    fn checked(
        header: &FrameHeader,
        session_bounds: u64,
        wire: WireSnapshot,
        bounds: u64,
    ) -> Result<Snapshot, SnapshotError> {
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
            schedule: None,
        })
    }
}

/// A recorded schedule, each configuration checked as when it was chosen.
fn schedule_from_wire(wire: Vec<(u64, Vec<u8>)>) -> Result<Schedule, SnapshotError> {
    let mut entries = Vec::with_capacity(wire.len());
    for (from, bytes) in wire {
        let membership = Membership::decode(&bytes).map_err(|error| {
            SnapshotError::Body(format!("configuration from slot {from}: {error}"))
        })?;
        entries.push((Slot(from), membership));
    }
    Schedule::from_entries(entries)
        .ok_or_else(|| SnapshotError::Body("configurations empty or out of slot order".into()))
}

/// Gathers the state machine's bytes from the part frames after a head:
/// numbered in order, every one full but the last, exactly `length` bytes
/// with nothing after, and their CRC32C the head's.
fn machine_from_parts(mut rest: &[u8], length: u64, crc: u32) -> Result<Bytes, SnapshotError> {
    if length > SNAPSHOT_BYTES_MAX || length > rest.len() as u64 {
        return Err(SnapshotError::Body(format!(
            "a state machine of {length} bytes in {} bytes of parts",
            rest.len()
        )));
    }
    let mut machine = Vec::with_capacity(length as usize);
    let mut number = 0u64;
    while (machine.len() as u64) < length {
        let (header, part, used) = decode_frame(rest)?;
        let expected = (length - machine.len() as u64).min(PART_BYTES as u64);
        if header.kind != KIND_SNAPSHOT_PART
            || header.seq != number
            || part.len() as u64 != expected
        {
            return Err(SnapshotError::Body(format!(
                "part {number}: kind {}, number {}, {} bytes where {expected} belong",
                header.kind,
                header.seq,
                part.len()
            )));
        }
        machine.extend_from_slice(part);
        rest = &rest[used..];
        number += 1;
    }
    if !rest.is_empty() {
        return Err(SnapshotError::Body(format!(
            "{} bytes after the last part",
            rest.len()
        )));
    }
    if crc32c::crc32c(&machine) != crc {
        return Err(SnapshotError::Body(
            "the state machine's parts fail the head's CRC32C".into(),
        ));
    }
    Ok(Bytes::from(machine))
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
            schedule: None,
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

    fn wire_with_machine(snapshot: &Snapshot) -> WireSnapshot {
        WireSnapshot {
            machine: snapshot.machine.to_vec(),
            ..snapshot.wire_without_machine()
        }
    }

    /// The frames of `encoded`: kind, seq and body each.
    fn frames(mut encoded: &[u8]) -> Vec<(u16, u64, Vec<u8>)> {
        let mut out = Vec::new();
        while !encoded.is_empty() {
            let (header, body, used) = decode_frame(encoded).unwrap();
            out.push((header.kind, header.seq, body.to_vec()));
            encoded = &encoded[used..];
        }
        out
    }

    fn framed(frames: &[(u16, u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, seq, body) in frames {
            encode_frame(*kind, *seq, body, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn the_configurations_travel_in_the_head_and_their_absence_is_read() {
        let with = Snapshot {
            schedule: Schedule::from_entries(vec![
                (
                    Slot(3),
                    Membership::voters(&[NodeId(1), NodeId(2), NodeId(3)]).unwrap(),
                ),
                (
                    Slot(300),
                    Membership::voters(&[NodeId(2), NodeId(4)]).unwrap(),
                ),
            ]),
            ..sample()
        };
        let encoded = with.encode().unwrap();
        assert_eq!(Snapshot::decode(&encoded).unwrap(), with);
        let without = sample();
        let encoded = without.encode().unwrap();
        let (header, _, _) = decode_frame(&encoded).unwrap();
        assert_eq!(header.kind, KIND_SNAPSHOT_HEAD, "as earlier builds wrote");
        assert_eq!(Snapshot::decode(&encoded).unwrap(), without);
    }

    #[test]
    fn a_state_of_many_parts_round_trips_and_its_parts_are_checked() {
        let snapshot = Snapshot {
            machine: Bytes::from((0..9 << 20).map(|i| (i % 253) as u8).collect::<Vec<u8>>()),
            ..sample()
        };
        let encoded = snapshot.encode().unwrap();
        assert_eq!(
            encoded.len(),
            encoded.capacity(),
            "sized exactly, padding included"
        );
        let parts = frames(&encoded);
        let kinds: Vec<(u16, u64)> = parts.iter().map(|(k, s, _)| (*k, *s)).collect();
        assert_eq!(
            kinds,
            [(KIND_SNAPSHOT_HEAD, 12), (6, 0), (6, 1), (6, 2)],
            "9 MiB in parts of 4"
        );
        assert_eq!(Snapshot::decode(&encoded).unwrap(), snapshot);

        let mut swapped = parts.clone();
        swapped.swap(1, 2);
        assert!(Snapshot::decode(&framed(&swapped)).is_err(), "out of order");
        assert!(
            Snapshot::decode(&framed(&parts[..3])).is_err(),
            "a part missing"
        );
        let mut extra = parts.clone();
        extra.push((KIND_SNAPSHOT_PART, 3, vec![1]));
        assert!(
            Snapshot::decode(&framed(&extra)).is_err(),
            "a part too many"
        );
        // A part whose frame checks but whose bytes are not the state's:
        // the head's CRC32C catches it.
        let mut altered = parts.clone();
        altered[2].2[100] ^= 1;
        let error = Snapshot::decode(&framed(&altered)).unwrap_err().to_string();
        assert!(error.contains("CRC32C"), "{error}");
    }

    /// One frame holds at most 64 MiB; a snapshot is not bounded by it.
    #[test]
    fn a_state_larger_than_one_frame_round_trips() {
        let snapshot = Snapshot {
            machine: Bytes::from(vec![3u8; (65 << 20) + 7]),
            ..sample()
        };
        let encoded = snapshot.encode().unwrap();
        assert!(encoded.len() > synod_wal::frame::FRAME_BODY_BYTES_MAX as usize);
        assert_eq!(Snapshot::decode(&encoded).unwrap(), snapshot);
    }

    #[test]
    fn single_frame_snapshots_of_earlier_builds_are_read() {
        let snapshot = sample();
        let body = to_bytes(&WireBoundedSnapshot {
            session_bounds: SESSION_BOUNDS,
            snapshot: wire_with_machine(&snapshot),
        });
        let mut single = Vec::new();
        encode_frame(KIND_SNAPSHOT, 12, &body, &mut single).unwrap();
        assert_eq!(Snapshot::decode(&single).unwrap(), snapshot);
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
        let body = to_bytes(&wire_with_machine(&snapshot));
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
}

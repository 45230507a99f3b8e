//! What a WAL frame records, decoded with the engine's own codec: a
//! promise, a commit point, or an accepted value (its slot, ballot and the
//! count and size of its commands). Reads only; any bytes may be on disk.

use std::fs::File;
use std::os::unix::fs::FileExt as _;

use bytes::Bytes;
use serde_json::{json, Value};
use synod_engine::protocol::{Message, Write};
use synod_engine::runtime::codec::{
    decode_message, decode_write, BatchLimits, KIND_WAL_ACCEPT, KIND_WAL_WRITE,
};
use synod_wal::frame::FRAME_HEADER_BYTES;
use synod_wal::scan::FrameMeta;

/// One frame's record.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// The acceptor promised this ballot (round, node).
    Promise((u64, u64)),
    /// Every slot below this one is chosen.
    Commit(u64),
    /// The acceptor accepted a batch in a slot.
    Accept {
        /// The group, when the record names it.
        group: Option<u32>,
        /// The slot.
        slot: u64,
        /// The ballot (round, node).
        ballot: (u64, u64),
        /// Commands in the batch.
        commands: u32,
        /// Bytes of the batch.
        bytes: usize,
    },
    /// A kind this build does not write.
    Unknown,
    /// The body did not decode (the reason).
    Undecodable(String),
}

impl Record {
    /// For the table.
    pub fn text(&self) -> String {
        match self {
            Record::Promise((round, node)) => format!("promise {round}.{node}"),
            Record::Commit(slot) => format!("commit below slot {slot}"),
            Record::Accept {
                slot,
                ballot: (round, node),
                commands,
                bytes,
                ..
            } => {
                format!("accept slot {slot} at {round}.{node}: {commands} commands, {bytes} bytes")
            }
            Record::Unknown => "unknown kind".into(),
            Record::Undecodable(reason) => format!("undecodable: {reason}"),
        }
    }

    /// For `--json`.
    pub fn json(&self) -> Value {
        match self {
            Record::Promise((round, node)) => json!({"type": "promise", "ballot": [round, node]}),
            Record::Commit(slot) => json!({"type": "commit", "slot": slot}),
            Record::Accept {
                group,
                slot,
                ballot: (round, node),
                commands,
                bytes,
            } => json!({
                "type": "accept", "group": group, "slot": slot, "ballot": [round, node],
                "commands": commands, "bytes": bytes,
            }),
            Record::Unknown => json!({"type": "unknown"}),
            Record::Undecodable(reason) => json!({"type": "undecodable", "reason": reason}),
        }
    }
}

/// Reads and decodes the record of `frame` from its segment `file`.
pub fn read_record(file: &File, frame: &FrameMeta) -> Record {
    if ![KIND_WAL_WRITE, KIND_WAL_ACCEPT].contains(&frame.kind) {
        return Record::Unknown;
    }
    let len = frame.body_len as usize;
    // The codec reads archived values in place: the body must be aligned.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(len);
    aligned.resize(len, 0);
    let at = frame.offset_bytes + FRAME_HEADER_BYTES as u64;
    if let Err(error) = file.read_exact_at(&mut aligned, at) {
        return Record::Undecodable(error.to_string());
    }
    decode(frame.kind, Bytes::from_owner(aligned))
}

/// Decodes a body of a WAL kind.
pub fn decode(kind: u16, body: Bytes) -> Record {
    // No batch is larger than the body holding it.
    let limits = BatchLimits {
        batch_bytes_max: body.len(),
        command_bytes_max: body.len(),
    };
    let ballot = |b: synod_engine::protocol::Ballot| (b.round, b.node.0);
    if kind == KIND_WAL_ACCEPT {
        return match decode_message(&body, limits) {
            Ok((group, Message::Accept(accept))) => Record::Accept {
                group: Some(group.0),
                slot: accept.slot.0,
                ballot: ballot(accept.ballot),
                commands: accept.batch.len(),
                bytes: accept.batch.bytes().len(),
            },
            Ok((_, other)) => Record::Undecodable(format!("a {} message", other.kind())),
            Err(error) => Record::Undecodable(error.to_string()),
        };
    }
    match decode_write(&body, &body, limits) {
        Ok(Write::Promise(b)) => Record::Promise(ballot(b)),
        Ok(Write::Commit(slot)) => Record::Commit(slot.0),
        Ok(Write::Accept { slot, entry }) => Record::Accept {
            group: None,
            slot: slot.0,
            ballot: ballot(entry.ballot),
            commands: entry.batch.len(),
            bytes: entry.batch.bytes().len(),
        },
        Err(error) => Record::Undecodable(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_engine::protocol::{Ballot, NodeId, Slot};
    use synod_engine::runtime::codec::encode_write;

    #[test]
    fn writes_decode_and_garbage_is_named_not_fatal() {
        let promise = Write::Promise(Ballot {
            round: 3,
            node: NodeId(2),
        });
        let body = Bytes::copy_from_slice(&encode_write(&promise));
        assert_eq!(decode(KIND_WAL_WRITE, body), Record::Promise((3, 2)));
        let commit = Bytes::copy_from_slice(&encode_write(&Write::Commit(Slot(41))));
        assert_eq!(decode(KIND_WAL_WRITE, commit), Record::Commit(41));
        for garbage in [&b""[..], b"\xff\xff\xff\xff\xff\xff\xff\xff", &[7u8; 64]] {
            for kind in [KIND_WAL_WRITE, KIND_WAL_ACCEPT] {
                let record = decode(kind, Bytes::copy_from_slice(garbage));
                assert!(matches!(record, Record::Undecodable(_)), "{record:?}");
            }
        }
    }
}

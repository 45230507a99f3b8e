//! Acceptor writes as WAL records: promises and commit records as their
//! own kind, accepted values as the Accept frame itself.

use bytes::Bytes;
use synod_wal::frame::{access_body, FrameError, Validate};

use super::{
    ballot_in, ballot_out, decode_message, entry_out, serialize, BatchLimits, DecodeError,
    WireBallot, WireEntry,
};
use crate::protocol::{Batch, Entry, GroupId, Message, Slot, Write};

#[derive(rkyv::Archive, rkyv::Serialize, Clone, Debug)]
pub(super) enum WireWrite {
    Promise(WireBallot),
    Accept(WireEntry),
    Commit(u64),
}

impl Validate for ArchivedWireWrite {
    fn validate(&self) -> Result<(), String> {
        let ballot = match self {
            ArchivedWireWrite::Promise(b) => b,
            ArchivedWireWrite::Accept(e) => &e.ballot,
            ArchivedWireWrite::Commit(_) => return Ok(()),
        };
        if ballot.round == 0 || ballot.node == 0 {
            return Err("a written ballot is never zero".into());
        }
        Ok(())
    }
}

/// Decodes a WAL record of kind [`KIND_WAL_ACCEPT`] of `group`.
pub fn decode_wal_accept(
    frame: &Bytes,
    group: GroupId,
    limits: BatchLimits,
) -> Result<Write, DecodeError> {
    match decode_message(frame, limits)? {
        (recorded, _) if recorded != group => {
            Err(DecodeError::Frame(FrameError::Invalid(format!(
                "an accept of group {} in group {}'s WAL",
                recorded.0, group.0
            ))))
        }
        (_, Message::Accept(accept)) => Ok(Write::Accept {
            slot: accept.slot,
            entry: Entry {
                ballot: accept.ballot,
                batch: accept.batch,
            },
        }),
        (_, other) => Err(DecodeError::Frame(FrameError::Invalid(format!(
            "a {} where an accepted value belongs",
            other.kind()
        )))),
    }
}

/// Encodes an acceptor write as a WAL frame body.
pub fn encode_write(write: &Write) -> rkyv::util::AlignedVec {
    let wire = match write {
        Write::Promise(b) => WireWrite::Promise(ballot_out(*b)),
        Write::Commit(slot) => WireWrite::Commit(slot.0),
        Write::Accept { slot, entry } => {
            WireWrite::Accept(entry_out(*slot, entry.ballot, &entry.batch))
        }
    };
    serialize(&wire)
}

/// Decodes a WAL frame body read back into `frame`.
pub fn decode_write(frame: &Bytes, body: &[u8], limits: BatchLimits) -> Result<Write, DecodeError> {
    Ok(match access_body::<ArchivedWireWrite>(body)? {
        ArchivedWireWrite::Promise(b) => Write::Promise(ballot_in(b)),
        ArchivedWireWrite::Commit(slot) => Write::Commit(Slot(slot.to_native())),
        ArchivedWireWrite::Accept(e) => {
            let batch = Batch::decode(
                frame.slice_ref(e.batch.as_slice()),
                e.count.to_native(),
                limits.batch_bytes_max,
                limits.command_bytes_max,
            )?;
            Write::Accept {
                slot: Slot(e.slot.to_native()),
                entry: Entry {
                    ballot: ballot_in(&e.ballot),
                    batch,
                },
            }
        }
    })
}

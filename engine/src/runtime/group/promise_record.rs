//! The promise record: the highest ballot this replica may have promised
//! or accepted at, in a small file beside the WAL, so that a damaged WAL
//! tail (cut at recovery) cannot hide a promise (docs/protocol.md).
//!
//! ```text
//! PROMISE: two 64-byte slots, written in turn
//!   magic "synodpr1" | counter u64 | round u64 | node u64 | crc32c u32 | zeros
//! ```
//!
//! Each write goes to the slot the previous one did not use, with the next
//! counter, and is synced before the group goes on. A write torn by a power
//! cut can damage only its own slot; the other still holds the record
//! before it, and nothing reported the newer ballot yet (the record is made
//! durable before the WAL write that raises the promise is appended).
//! Reading takes the highest ballot of the slots that check; a file with
//! none (or no file) is no record. A few writes per election, so plain
//! blocking I/O on the group's executor.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::GroupError;
use crate::protocol::{Ballot, NodeId};
use crate::runtime::snapshot_file;

const MAGIC: &[u8; 8] = b"synodpr1";
const SLOT_BYTES: usize = 64;
const CHECKED_BYTES: usize = 32;

fn failed(path: &Path) -> impl Fn(std::io::Error) -> GroupError + '_ {
    move |source| GroupError::PromiseRecord {
        path: path.to_owned(),
        source,
    }
}

/// One slot's contents: (counter, ballot), if it checks.
fn decode(slot: &[u8]) -> Option<(u64, Ballot)> {
    let word = |i: usize| u64::from_le_bytes(slot[i..i + 8].try_into().expect("8 bytes"));
    if slot.len() < SLOT_BYTES || &slot[..8] != MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes(slot[CHECKED_BYTES..CHECKED_BYTES + 4].try_into().ok()?);
    if crc32c::crc32c(&slot[..CHECKED_BYTES]) != stored {
        return None;
    }
    let ballot = Ballot {
        round: word(16),
        node: NodeId(word(24)),
    };
    Some((word(8), ballot))
}

fn encode(counter: u64, ballot: Ballot) -> [u8; SLOT_BYTES] {
    let mut slot = [0u8; SLOT_BYTES];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&counter.to_le_bytes());
    slot[16..24].copy_from_slice(&ballot.round.to_le_bytes());
    slot[24..32].copy_from_slice(&ballot.node.0.to_le_bytes());
    let crc = crc32c::crc32c(&slot[..CHECKED_BYTES]);
    slot[CHECKED_BYTES..CHECKED_BYTES + 4].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// A group's promise record, open for writing.
pub(super) struct PromiseRecord {
    path: PathBuf,
    file: Option<File>,
    counter: u64,
}

impl PromiseRecord {
    /// Reads the record at `path`: the ballot it holds, if any slot checks
    /// (no file, or none that checks: none).
    pub(super) fn read(path: &Path) -> Result<(PromiseRecord, Option<Ballot>), GroupError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(failed(path)(e)),
        };
        let slots: Vec<(u64, Ballot)> = bytes
            .chunks(SLOT_BYTES)
            .take(2)
            .filter_map(decode)
            .collect();
        if !bytes.is_empty() && slots.is_empty() {
            tracing::warn!(path = %path.display(), "promise record damaged: ignored");
        }
        let counter = slots.iter().map(|(c, _)| *c).max().unwrap_or(0);
        let ballot = slots.iter().map(|(_, b)| *b).max();
        let record = PromiseRecord {
            path: path.to_owned(),
            file: None,
            counter,
        };
        Ok((record, ballot))
    }

    /// Durably records `ballot`, in the slot the last write did not use.
    pub(super) fn write(&mut self, ballot: Ballot) -> Result<(), GroupError> {
        let path = self.path.clone();
        if self.file.is_none() {
            let existed = path.exists();
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(failed(&path))?;
            if !existed {
                file.sync_all().map_err(failed(&path))?;
                snapshot_file::sync_parent_dir(&path).map_err(failed(&path))?;
            }
            self.file = Some(file);
        }
        let file = self.file.as_ref().expect("opened above");
        self.counter += 1;
        let offset = (self.counter % 2) * SLOT_BYTES as u64;
        file.write_all_at(&encode(self.counter, ballot), offset)
            .map_err(failed(&path))?;
        file.sync_data().map_err(failed(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballot(round: u64, node: u64) -> Ballot {
        Ballot {
            round,
            node: NodeId(node),
        }
    }

    #[test]
    fn the_highest_ballot_comes_back_and_a_torn_slot_leaves_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("PROMISE");
        let (mut record, none) = PromiseRecord::read(&path).unwrap();
        assert_eq!(none, None);
        for round in 1..=5 {
            record.write(ballot(round, 2)).unwrap();
        }
        let (_, read) = PromiseRecord::read(&path).unwrap();
        assert_eq!(read, Some(ballot(5, 2)));
        // The newest write (counter 5) is in slot 1; damage it.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_BYTES + 20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (mut record, read) = PromiseRecord::read(&path).unwrap();
        assert_eq!(read, Some(ballot(4, 2)), "the slot before it");
        // Writing again goes on from the counter that checks, into the
        // damaged slot.
        record.write(ballot(6, 1)).unwrap();
        assert_eq!(PromiseRecord::read(&path).unwrap().1, Some(ballot(6, 1)));
        // Both slots damaged, or garbage: no record.
        std::fs::write(&path, vec![7u8; 2 * SLOT_BYTES]).unwrap();
        assert_eq!(PromiseRecord::read(&path).unwrap().1, None);
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(PromiseRecord::read(&path).unwrap().1, None);
    }
}

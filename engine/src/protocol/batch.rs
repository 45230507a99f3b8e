//! Commands and the batches that carry them.
//!
//! A batch is built once by the leader as one contiguous buffer of command
//! records and then shared (reference-counted, never re-encoded) by the
//! Accept messages, every acceptor's log and the state machine. Record layout,
//! all integers little-endian:
//!
//! ```text
//! | client u64 | seq u64 | len u32 | data [len] | client u64 | ...
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::types::ClientId;

/// Bytes of a command record before its data.
pub const COMMAND_HEADER_BYTES: usize = 8 + 8 + 4;

/// A client command as proposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The session it belongs to (0: no session).
    pub client: ClientId,
    /// The session's sequence number; a retry repeats it.
    pub seq: u64,
    /// Opaque to the protocol.
    pub data: Bytes,
}

impl Command {
    /// Bytes this command takes in a batch.
    pub fn encoded_len(&self) -> usize {
        COMMAND_HEADER_BYTES + self.data.len()
    }
}

/// A command seen inside a batch, borrowing the batch's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandRef<'a> {
    /// The session it belongs to.
    pub client: ClientId,
    /// The session's sequence number.
    pub seq: u64,
    /// The command's bytes.
    pub data: &'a [u8],
}

/// Why bytes claimed to be a batch are not one.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// A record runs past the end of the buffer.
    #[error("command record {index} runs past the end of the batch")]
    Truncated {
        /// Which record.
        index: u32,
    },
    /// The records do not add up to the count the sender claimed.
    #[error("batch claims {claimed} commands but holds {found}")]
    CountMismatch {
        /// Count in the message.
        claimed: u32,
        /// Records found.
        found: u32,
    },
    /// One command is larger than this replica accepts.
    #[error("command of {len} bytes exceeds command_bytes_max {max}")]
    CommandTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The client id reserved for configuration entries, beside other
    /// commands (a configuration entry travels alone).
    #[error("command {index} uses the reserved client id beside other commands")]
    ReservedClient {
        /// Which record.
        index: u32,
    },
    /// The whole batch is larger than this replica accepts.
    #[error("batch of {len} bytes exceeds batch_bytes_max {max}")]
    BatchTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// An immutable batch of commands; cloning shares the bytes. An empty batch is
/// the no-op that fills a gap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    bytes: Bytes,
    count: u32,
}

impl Batch {
    /// The no-op batch.
    pub fn noop() -> Batch {
        Batch::default()
    }

    /// A batch from bytes received from outside, checked record by record.
    pub fn decode(
        bytes: Bytes,
        count: u32,
        batch_bytes_max: usize,
        command_bytes_max: usize,
    ) -> Result<Batch, BatchError> {
        if bytes.len() > batch_bytes_max {
            return Err(BatchError::BatchTooLarge {
                len: bytes.len(),
                max: batch_bytes_max,
            });
        }
        let batch = Batch { bytes, count };
        let mut found = 0u32;
        let mut iter = batch.records();
        while let Some(record) = iter.next_record() {
            let command = record.map_err(|()| BatchError::Truncated { index: found })?;
            if command.client == ClientId::MEMBERSHIP && count != 1 {
                return Err(BatchError::ReservedClient { index: found });
            }
            if command.data.len() > command_bytes_max {
                return Err(BatchError::CommandTooLarge {
                    len: command.data.len(),
                    max: command_bytes_max,
                });
            }
            found += 1;
        }
        if found != count {
            return Err(BatchError::CountMismatch {
                claimed: count,
                found,
            });
        }
        Ok(batch)
    }

    /// Commands in the batch.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True for the no-op batch.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded records, exactly as they go to the wire, the disk and apply.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The commands, in order.
    pub fn iter(&self) -> impl Iterator<Item = CommandRef<'_>> {
        let mut records = self.records();
        // A Batch is only built by `BatchBuilder` or checked by `decode`, so
        // every record is whole.
        std::iter::from_fn(move || records.next_record().map(|r| r.expect("checked batch")))
    }

    fn records(&self) -> Records<'_> {
        Records {
            rest: &self.bytes[..],
        }
    }
}

struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    fn next_record(&mut self) -> Option<Result<CommandRef<'a>, ()>> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.take())
    }

    fn take(&mut self) -> Result<CommandRef<'a>, ()> {
        let header = self.rest.get(..COMMAND_HEADER_BYTES).ok_or(())?;
        let client = u64::from_le_bytes(header[0..8].try_into().map_err(|_| ())?);
        let seq = u64::from_le_bytes(header[8..16].try_into().map_err(|_| ())?);
        let len = u32::from_le_bytes(header[16..20].try_into().map_err(|_| ())?) as usize;
        let end = COMMAND_HEADER_BYTES.checked_add(len).ok_or(())?;
        let data = self.rest.get(COMMAND_HEADER_BYTES..end).ok_or(())?;
        self.rest = &self.rest[end..];
        Ok(CommandRef {
            client: ClientId(client),
            seq,
            data,
        })
    }
}

/// Accumulates queued commands into one buffer until a batch is cut.
#[derive(Clone, Debug, Default)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: u32,
}

impl BatchBuilder {
    /// An empty builder with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        BatchBuilder {
            buf: BytesMut::with_capacity(bytes),
            count: 0,
        }
    }

    /// Whether `command` still fits under both bounds.
    pub fn fits(&self, command: &Command, batch_bytes_max: usize, batch_cmds_max: u32) -> bool {
        self.fits_all(command.encoded_len(), 1, batch_bytes_max, batch_cmds_max)
    }

    /// Whether `count` more commands of `bytes` encoded bytes in all still
    /// fit under both bounds. An empty builder takes one command of any size.
    pub fn fits_all(
        &self,
        bytes: usize,
        count: u32,
        batch_bytes_max: usize,
        batch_cmds_max: u32,
    ) -> bool {
        (self.count == 0 && count == 1)
            || (self.count.saturating_add(count) <= batch_cmds_max
                && self.buf.len().saturating_add(bytes) <= batch_bytes_max)
    }

    /// Appends one command record.
    pub fn push(&mut self, command: &Command) {
        self.buf.reserve(command.encoded_len());
        self.buf.put_u64_le(command.client.0);
        self.buf.put_u64_le(command.seq);
        self.buf.put_u32_le(command.data.len() as u32);
        self.buf.put_slice(&command.data);
        self.count += 1;
    }

    /// Commands so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True when nothing has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes so far.
    pub fn bytes_len(&self) -> usize {
        self.buf.len()
    }

    /// Freezes the buffer into a shareable batch.
    pub fn finish(self) -> Batch {
        Batch {
            bytes: self.buf.freeze(),
            count: self.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn command(client: u64, seq: u64, data: &[u8]) -> Command {
        Command {
            client: ClientId(client),
            seq,
            data: Bytes::copy_from_slice(data),
        }
    }

    proptest! {
        #[test]
        fn built_batches_decode_to_the_same_commands(
            cmds in prop::collection::vec((any::<u64>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..40)), 0..20)
        ) {
            let mut builder = BatchBuilder::default();
            for (client, seq, data) in &cmds {
                builder.push(&command(*client, *seq, data));
            }
            let batch = builder.finish();
            let decoded = Batch::decode(batch.bytes().clone(), batch.len(), 1 << 20, 64).unwrap();
            let seen: Vec<_> = decoded.iter().map(|c| (c.client.0, c.seq, c.data.to_vec())).collect();
            prop_assert_eq!(seen, cmds);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), count in 0u32..5) {
            let _ = Batch::decode(Bytes::from(bytes), count, 1 << 20, 1 << 20);
        }
    }

    #[test]
    fn decode_reports_each_kind_of_damage() {
        let mut builder = BatchBuilder::default();
        builder.push(&command(1, 1, b"hello"));
        let batch = builder.finish();
        let bytes = batch.bytes().clone();
        assert_eq!(
            Batch::decode(bytes.slice(..bytes.len() - 1), 1, 1024, 1024),
            Err(BatchError::Truncated { index: 0 })
        );
        assert_eq!(
            Batch::decode(bytes.clone(), 2, 1024, 1024),
            Err(BatchError::CountMismatch {
                claimed: 2,
                found: 1
            })
        );
        assert_eq!(
            Batch::decode(bytes.clone(), 1, 1024, 4),
            Err(BatchError::CommandTooLarge { len: 5, max: 4 })
        );
        assert!(matches!(
            Batch::decode(bytes, 1, 8, 1024),
            Err(BatchError::BatchTooLarge { .. })
        ));
    }

    #[test]
    fn builder_respects_both_bounds() {
        let mut builder = BatchBuilder::default();
        let c = command(1, 1, &[0; 10]);
        assert!(builder.fits(&c, 1, 1), "an empty builder takes any command");
        builder.push(&c);
        assert!(!builder.fits(&c, 1000, 1));
        assert!(!builder.fits(&c, 2 * c.encoded_len() - 1, 10));
        assert!(builder.fits(&c, 2 * c.encoded_len(), 10));
    }
}

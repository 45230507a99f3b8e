//! Data frames between peers are authenticated, not only checksummed: a
//! CRC stops a flipped bit, not an attacker on the path who passed the
//! handshake through and then rewrites, replays, reorders or drops frames.
//!
//! ```text
//!  writer: [frame][frame]...[frame][MAC]   one MAC frame after each written batch
//!  MAC = BLAKE3 keyed with this direction's key over
//!        batch number ‖ for each frame: kind ‖ seq ‖ length ‖ body
//!  reader: frames are held until the MAC frame after them verifies, then
//!          delivered; a MAC that does not verify closes the connection and
//!          delivers none of the frames it covers
//! ```
//!
//! Each direction of each connection has its own key, derived from the
//! handshake's transcript (both sides' fresh nonces) and the cluster secret
//! (`handshake::Transcript::frame_key`). The batch number counts the MACs
//! of the connection, so a batch replayed, moved, or dropped (the next
//! MAC then carries a number the reader is not at) fails to verify, and a
//! batch recorded on one connection proves nothing on another.

use crate::handshake::MAC_BYTES;
use crate::queue::Batch;
use crate::reader::Frame;
use crate::stream::ConnError;

/// Frame kind of the MAC after each batch (reserved to the transport).
pub const KIND_BATCH_MAC: u16 = 0xff05;

fn absorb(mac: &mut blake3::Hasher, kind: u16, seq: u64, body: &[u8]) {
    mac.update(&kind.to_le_bytes());
    mac.update(&seq.to_le_bytes());
    mac.update(&(body.len() as u64).to_le_bytes());
    mac.update(body);
}

/// A MAC of the batch numbered `batches` under `key`, with nothing absorbed.
fn batch_mac(key: &[u8; MAC_BYTES], batches: u64) -> blake3::Hasher {
    let mut mac = blake3::Hasher::new_keyed(key);
    mac.update(&batches.to_le_bytes());
    mac
}

/// The writing side: the MAC of each batch it writes.
pub(crate) struct Sealer {
    key: [u8; MAC_BYTES],
    batches: u64,
}

impl Sealer {
    pub(crate) fn new(key: &[u8; MAC_BYTES]) -> Sealer {
        Sealer {
            key: *key,
            batches: 0,
        }
    }

    /// Appends to `batch` the MAC frame that covers its frames.
    pub(crate) fn seal(&mut self, batch: &mut Batch) {
        let mut mac = batch_mac(&self.key, self.batches);
        batch.for_each_frame(|kind, seq, body| absorb(&mut mac, kind, seq, body));
        let tag = mac.finalize();
        batch.push_trailer(KIND_BATCH_MAC, self.batches, tag.as_bytes());
        self.batches += 1;
    }
}

/// The reading side: holds frames until the MAC that covers them verifies.
pub(crate) struct Opener {
    key: [u8; MAC_BYTES],
    running: blake3::Hasher,
    batches: u64,
    held: Vec<Frame>,
    held_bytes: usize,
    /// Held bytes beyond this close the connection: a writer sends a MAC
    /// after every batch, and its batches are bounded by its queue.
    held_bytes_max: usize,
}

impl Opener {
    pub(crate) fn new(key: &[u8; MAC_BYTES], held_bytes_max: usize) -> Opener {
        Opener {
            key: *key,
            running: batch_mac(key, 0),
            batches: 0,
            held: Vec::new(),
            held_bytes: 0,
            held_bytes_max,
        }
    }

    /// A data frame: held until a MAC covers it.
    pub(crate) fn hold(&mut self, frame: Frame) -> Result<(), ConnError> {
        self.held_bytes += frame.body.len();
        if self.held_bytes > self.held_bytes_max {
            return Err(ConnError::Unauthenticated(format!(
                "{} bytes of frames without a MAC, more than a batch can hold ({})",
                self.held_bytes, self.held_bytes_max
            )));
        }
        absorb(&mut self.running, frame.kind, frame.seq, &frame.body);
        self.held.push(frame);
        Ok(())
    }

    /// A MAC frame: the frames it covers if it verifies (constant-time);
    /// otherwise the connection must close, and none of them is delivered.
    pub(crate) fn open(&mut self, seq: u64, tag: &[u8]) -> Result<Vec<Frame>, ConnError> {
        let next = batch_mac(&self.key, self.batches + 1);
        let running = std::mem::replace(&mut self.running, next);
        // `Hash`'s equality is constant-time.
        let verified = <[u8; MAC_BYTES]>::try_from(tag)
            .is_ok_and(|tag| running.finalize() == blake3::Hash::from(tag));
        if seq != self.batches || !verified {
            return Err(ConnError::Unauthenticated(format!(
                "batch {} of {} frames fails its MAC: altered, replayed, reordered or cut",
                self.batches,
                self.held.len()
            )));
        }
        self.batches += 1;
        self.held_bytes = 0;
        Ok(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::queue::{Body, SendQueue};
    use crate::reader::FrameReader;
    use crate::NodeId;

    /// Frames as the reader would see them after `writes` batches went out.
    fn wire(frames: &[(u16, &[u8])], sealer: &mut Sealer) -> Vec<Frame> {
        let queue = SendQueue::new(NodeId(2), 1 << 20, 1 << 20);
        for (kind, body) in frames {
            queue.push(*kind, Body::Slice(body)).unwrap();
        }
        let mut batch = queue.take().unwrap();
        sealer.seal(&mut batch);
        let bytes: Vec<u8> = (0..batch.segments())
            .flat_map(|i| batch.segment(i).to_vec())
            .collect();
        let mut reader = FrameReader::new(1 << 20);
        reader.push(&bytes);
        let mut out = Vec::new();
        while let Some(frame) = reader.next_frame().unwrap() {
            out.push(frame);
        }
        out
    }

    fn open(opener: &mut Opener, frames: Vec<Frame>) -> Result<Vec<Frame>, ConnError> {
        let mut delivered = Vec::new();
        for frame in frames {
            if frame.kind == KIND_BATCH_MAC {
                delivered.extend(opener.open(frame.seq, &frame.body)?);
            } else {
                opener.hold(frame)?;
            }
        }
        Ok(delivered)
    }

    #[test]
    fn batches_open_in_order_and_an_altered_replayed_or_dropped_one_does_not() {
        let key = [9; MAC_BYTES];
        let mut sealer = Sealer::new(&key);
        let first = wire(&[(1, b"accept"), (2, b"heartbeat")], &mut sealer);
        let second = wire(&[(1, b"next")], &mut sealer);
        let third = wire(&[(1, b"third")], &mut sealer);
        let mut opener = Opener::new(&key, 1 << 20);
        let bodies = |m: Vec<Frame>| m.into_iter().map(|m| m.body).collect::<Vec<Bytes>>();
        assert_eq!(
            bodies(open(&mut opener, first.clone()).unwrap()),
            ["accept", "heartbeat"]
        );
        assert!(open(&mut opener, first.clone()).is_err(), "a replay");
        let mut opener = Opener::new(&key, 1 << 20);
        let mut altered = first.clone();
        altered[0].body = Bytes::from_static(b"ACCEPT");
        assert!(open(&mut opener, altered).is_err(), "an altered body");
        let mut opener = Opener::new(&key, 1 << 20);
        open(&mut opener, first.clone()).unwrap();
        assert!(
            open(&mut opener, third.clone()).is_err(),
            "the second batch dropped"
        );
        let mut opener = Opener::new(&key, 1 << 20);
        open(&mut opener, first).unwrap();
        assert_eq!(bodies(open(&mut opener, second).unwrap()), ["next"]);
        assert_eq!(bodies(open(&mut opener, third).unwrap()), ["third"]);
        let mut stranger = Opener::new(&[8; MAC_BYTES], 1 << 20);
        let again = wire(&[(1, b"accept")], &mut Sealer::new(&key));
        assert!(
            open(&mut stranger, again).is_err(),
            "another connection's key"
        );
    }

    #[test]
    fn frames_without_a_mac_are_bounded() {
        let mut opener = Opener::new(&[9; MAC_BYTES], 10);
        let message = |n| Frame {
            kind: 1,
            seq: 0,
            body: Bytes::from(vec![0; n]),
        };
        opener.hold(message(6)).unwrap();
        assert!(opener.hold(message(6)).is_err());
    }
}

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
//!
//! With encryption on (`PeerConfig::encrypt`), the writer first encrypts
//! every body of the batch with ChaCha20 (the direction's cipher key,
//! the batch number as the nonce, one keystream running through the
//! batch's bodies in order), then MACs the ciphertext; the reader checks
//! the MAC before it decrypts anything (encrypt-then-MAC). Kinds,
//! sequence numbers and lengths stay in the clear, under the MAC.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;

use bytes::Bytes;

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

/// The cipher key of a direction whose MAC key is `key`: apart from it
/// (another derivation), so neither reveals the other.
fn cipher_key(key: &[u8; MAC_BYTES]) -> [u8; 32] {
    blake3::derive_key("synod-net v3 frame bodies cipher", key)
}

/// The keystream of batch `batches`: each batch number is used once per key,
/// and each connection direction has its own key.
fn keystream(key: &[u8; 32], batches: u64) -> ChaCha20 {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&batches.to_le_bytes());
    ChaCha20::new(key.into(), &nonce.into())
}

/// The writing side: the MAC of each batch it writes.
pub(crate) struct Sealer {
    key: [u8; MAC_BYTES],
    cipher: Option<[u8; 32]>,
    batches: u64,
}

impl Sealer {
    /// Seals batches under `key`, encrypting their bodies first if `encrypt`.
    pub(crate) fn new(key: &[u8; MAC_BYTES], encrypt: bool) -> Sealer {
        Sealer {
            key: *key,
            cipher: encrypt.then(|| cipher_key(key)),
            batches: 0,
        }
    }

    /// Encrypts `batch`'s bodies (if this side encrypts), then appends the
    /// MAC frame that covers its frames.
    pub(crate) fn seal(&mut self, batch: &mut Batch) {
        if let Some(cipher) = &self.cipher {
            let mut stream = keystream(cipher, self.batches);
            batch.transform_bodies(|body| stream.apply_keystream(body));
        }
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
    cipher: Option<[u8; 32]>,
    running: blake3::Hasher,
    batches: u64,
    held: Vec<Frame>,
    held_bytes: usize,
    /// Held bytes beyond this close the connection: a writer sends a MAC
    /// after every batch, and its batches are bounded by its queue.
    held_bytes_max: usize,
}

impl Opener {
    /// Opens batches sealed under `key`, decrypting them if `encrypted`.
    pub(crate) fn new(key: &[u8; MAC_BYTES], encrypted: bool, held_bytes_max: usize) -> Opener {
        Opener {
            key: *key,
            cipher: encrypted.then(|| cipher_key(key)),
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
        let mut frames = std::mem::take(&mut self.held);
        if let Some(cipher) = &self.cipher {
            // Verified first: nothing unauthenticated is decrypted. The
            // plaintext gets a buffer of its own (the ciphertext shares
            // the reader's).
            let mut stream = keystream(cipher, self.batches);
            for frame in &mut frames {
                let mut body = frame.body.to_vec();
                stream.apply_keystream(&mut body);
                frame.body = Bytes::from(body);
            }
        }
        self.batches += 1;
        self.held_bytes = 0;
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
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
        for encrypt in [false, true] {
            open_in_order_and_refuse_tampering(encrypt);
        }
    }

    fn open_in_order_and_refuse_tampering(encrypt: bool) {
        let key = [9; MAC_BYTES];
        let opener_for = |key: &[u8; MAC_BYTES]| Opener::new(key, encrypt, 1 << 20);
        let mut sealer = Sealer::new(&key, encrypt);
        let first = wire(&[(1, b"accept"), (2, b"heartbeat")], &mut sealer);
        let second = wire(&[(1, b"next")], &mut sealer);
        let third = wire(&[(1, b"third")], &mut sealer);
        let mut opener = opener_for(&key);
        let bodies = |m: Vec<Frame>| m.into_iter().map(|m| m.body).collect::<Vec<Bytes>>();
        assert_eq!(
            bodies(open(&mut opener, first.clone()).unwrap()),
            ["accept", "heartbeat"]
        );
        assert!(open(&mut opener, first.clone()).is_err(), "a replay");
        let mut opener = opener_for(&key);
        let mut altered = first.clone();
        altered[0].body = Bytes::from_static(b"ACCEPT");
        assert!(open(&mut opener, altered).is_err(), "an altered body");
        let mut opener = opener_for(&key);
        open(&mut opener, first.clone()).unwrap();
        assert!(
            open(&mut opener, third.clone()).is_err(),
            "the second batch dropped"
        );
        let mut opener = opener_for(&key);
        open(&mut opener, first).unwrap();
        assert_eq!(bodies(open(&mut opener, second).unwrap()), ["next"]);
        assert_eq!(bodies(open(&mut opener, third).unwrap()), ["third"]);
        let mut stranger = opener_for(&[8; MAC_BYTES]);
        let again = wire(&[(1, b"accept")], &mut Sealer::new(&key, encrypt));
        assert!(
            open(&mut stranger, again).is_err(),
            "another connection's key"
        );
    }

    #[test]
    fn frames_without_a_mac_are_bounded() {
        let mut opener = Opener::new(&[9; MAC_BYTES], false, 10);
        let message = |n| Frame {
            kind: 1,
            seq: 0,
            body: Bytes::from(vec![0; n]),
        };
        opener.hold(message(6)).unwrap();
        assert!(opener.hold(message(6)).is_err());
    }

    #[test]
    fn encrypted_bodies_are_not_on_the_wire_and_the_callers_body_is_untouched() {
        let key = [7; MAC_BYTES];
        let secret = b"a value no one on the path may read";
        let large = Bytes::from(secret.repeat(1000));
        let queue = SendQueue::new(NodeId(2), 1 << 20, 1 << 20);
        queue.push(1, Body::Slice(secret)).unwrap();
        queue.push(2, Body::Bytes(&large)).unwrap();
        let mut batch = queue.take().unwrap();
        Sealer::new(&key, true).seal(&mut batch);
        let bytes: Vec<u8> = (0..batch.segments())
            .flat_map(|i| batch.segment(i).to_vec())
            .collect();
        let found = bytes.windows(secret.len()).any(|w| w == secret);
        assert!(!found, "plaintext on the wire");
        assert_eq!(&large[..secret.len()], secret, "the caller's body changed");
        let mut reader = FrameReader::new(1 << 20);
        reader.push(&bytes);
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame().unwrap() {
            frames.push(frame);
        }
        let mut opener = Opener::new(&key, true, 1 << 20);
        let opened = open(&mut opener, frames.clone()).unwrap();
        assert_eq!(opened[0].body, &secret[..]);
        assert_eq!(opened[1].body, large);
        // A reader that does not decrypt gets ciphertext, never the value.
        let opened = open(&mut Opener::new(&key, false, 1 << 20), frames).unwrap();
        assert_ne!(opened[0].body, &secret[..]);
    }
}

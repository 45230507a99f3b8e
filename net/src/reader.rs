//! The stream decoder: bytes from a socket in, whole checked frames out.
//! Pure (no I/O), so the fuzzer drives exactly the code the connections run.

use bytes::{Bytes, BytesMut};
use synod_wal::frame::{
    decode_frame, frame_bytes, FrameError, FrameHeader, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES,
    FRAME_MAGIC, FRAME_VERSION,
};

/// Bytes asked of each socket read: large enough that bulk frames need few
/// syscalls, small enough that an idle connection costs little.
pub(crate) const READ_CHUNK_BYTES: usize = 128 << 10;
/// Below this much room, `read_space` makes a fresh chunk of room.
const READ_SPACE_BYTES_MIN: usize = 16 << 10;

/// One checked frame. `body` shares the reader's buffer (no copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's kind.
    pub kind: u16,
    /// The frame's sequence number (a per-connection counter, or a client
    /// request id).
    pub seq: u64,
    /// The body, padding excluded.
    pub body: Bytes,
}

/// Accumulates stream bytes and cuts them into frames. Never holds more
/// than one maximal frame plus one read chunk: the header's length is checked
/// against the limit before the reader waits for (and so buffers) the body.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    body_bytes_max: u32,
    /// Bytes of `buf` that hold stream data; the rest is room to read into.
    data_bytes: usize,
}

impl FrameReader {
    /// A reader refusing bodies above `body_bytes_max` (clamped to the frame
    /// format's own ceiling).
    pub fn new(body_bytes_max: u32) -> FrameReader {
        FrameReader {
            buf: BytesMut::new(),
            body_bytes_max: body_bytes_max.min(FRAME_BODY_BYTES_MAX),
            data_bytes: 0,
        }
    }

    /// Changes the limit (raised once a handshake has authenticated the peer).
    pub fn set_body_bytes_max(&mut self, body_bytes_max: u32) {
        self.body_bytes_max = body_bytes_max.min(FRAME_BODY_BYTES_MAX);
    }

    /// A slice to read socket bytes into; follow with [`Self::filled`].
    /// The area past the data is zeroed once and reused, so a small read
    /// does not pay for clearing a whole chunk.
    pub fn read_space(&mut self) -> &mut [u8] {
        if self.buf.len() - self.data_bytes < READ_SPACE_BYTES_MIN {
            // Only the data moves if this reallocates; the new room is zeroed once.
            self.buf.truncate(self.data_bytes);
            self.buf.reserve(READ_CHUNK_BYTES);
            self.buf.resize(self.data_bytes + READ_CHUNK_BYTES, 0);
        }
        &mut self.buf[self.data_bytes..]
    }

    /// Records that the first `n` bytes of the last [`Self::read_space`] hold data.
    pub fn filled(&mut self, n: usize) {
        self.data_bytes = (self.data_bytes + n).min(self.buf.len());
    }

    /// Appends bytes (tests and the fuzzer; connections use `read_space`).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.truncate(self.data_bytes);
        self.buf.extend_from_slice(bytes);
        self.data_bytes = self.buf.len();
    }

    /// Bytes buffered that are not yet part of a returned frame.
    pub fn buffered_bytes(&self) -> usize {
        self.data_bytes
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or why the
    /// stream is bad (the connection must then be closed: after a bad frame
    /// there is no way to find the next frame boundary).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(total) = self.whole_frame_bytes()? else {
            return Ok(None);
        };
        let (header, body_range) = {
            let (header, body, _) = decode_frame(&self.buf[..total])?;
            (header, FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + body.len())
        };
        let frame = self.buf.split_to(total).freeze();
        self.data_bytes -= total;
        Ok(Some(Frame {
            kind: header.kind,
            seq: header.seq,
            body: frame.slice(body_range),
        }))
    }

    /// Checks the header as soon as it is there (magic, version, length
    /// bound: before waiting for the body), then says whether the whole frame
    /// has arrived.
    fn whole_frame_bytes(&self) -> Result<Option<usize>, FrameError> {
        let data = &self.buf[..self.data_bytes];
        let Some(raw) = data.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let raw: &[u8; FRAME_HEADER_BYTES] = raw.try_into().expect("sliced to header size");
        let header = FrameHeader::from_bytes(raw);
        if header.magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic {
                found: header.magic,
            });
        }
        if header.version != FRAME_VERSION {
            return Err(FrameError::Version(header.version));
        }
        if header.body_len > self.body_bytes_max {
            return Err(FrameError::TooLarge {
                body_len: header.body_len.into(),
                limit_bytes: self.body_bytes_max.into(),
            });
        }
        let total = frame_bytes(header.body_len as usize);
        Ok((data.len() >= total).then_some(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use synod_wal::frame::encode_frame;

    fn frames(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            encode_frame(7, i as u64, body, &mut out).unwrap();
        }
        out
    }

    fn drain(reader: &mut FrameReader) -> Result<Vec<Frame>, FrameError> {
        let mut out = Vec::new();
        while let Some(frame) = reader.next_frame()? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn oversized_length_refused_from_the_header_alone() {
        let mut stream = frames(&[vec![1; 100]]);
        stream.truncate(FRAME_HEADER_BYTES);
        let mut reader = FrameReader::new(64);
        reader.push(&stream);
        assert!(matches!(
            reader.next_frame(),
            Err(FrameError::TooLarge { body_len: 100, .. })
        ));
    }

    #[test]
    fn bad_magic_and_checksum_refused() {
        let mut reader = FrameReader::new(1024);
        reader.push(&[0xAB; 64]);
        assert!(matches!(
            reader.next_frame(),
            Err(FrameError::BadMagic { .. })
        ));
        let mut stream = frames(&[vec![1; 20]]);
        stream[40] ^= 1;
        let mut reader = FrameReader::new(1024);
        reader.push(&stream);
        assert!(matches!(
            reader.next_frame(),
            Err(FrameError::Checksum { .. })
        ));
    }

    #[test]
    fn read_space_and_filled_round_trip() {
        let stream = frames(&[vec![3; 5], vec![4; 40]]);
        let mut reader = FrameReader::new(1024);
        let space = reader.read_space();
        space[..stream.len()].copy_from_slice(&stream);
        reader.filled(stream.len());
        let got = drain(&mut reader).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].body.as_ref(), &[4; 40]);
        assert_eq!(reader.buffered_bytes(), 0);
    }

    proptest! {
        /// Any split of a valid stream into pieces yields the same frames.
        #[test]
        fn frames_survive_any_chunking(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..8),
            cuts in proptest::collection::vec(1usize..40, 0..40),
        ) {
            let stream = frames(&bodies);
            let mut reader = FrameReader::new(1024);
            let mut got = Vec::new();
            let mut at: usize = 0;
            for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let end = at.saturating_add(*cut).min(stream.len());
                reader.push(&stream[at..end]);
                at = end;
                got.extend(drain(&mut reader).unwrap());
            }
            prop_assert_eq!(got.len(), bodies.len());
            for (i, (frame, body)) in got.iter().zip(&bodies).enumerate() {
                prop_assert_eq!((frame.kind, frame.seq, frame.body.as_ref()), (7, i as u64, &body[..]));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut reader = FrameReader::new(64);
            reader.push(&bytes);
            let _ = drain(&mut reader);
            prop_assert!(reader.buffered_bytes() <= bytes.len());
        }
    }
}

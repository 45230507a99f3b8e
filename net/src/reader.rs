//! The stream decoder: bytes from a socket in, whole checked frames out.
//! Pure (no I/O), so the fuzzer drives exactly the code the connections run.
//!
//! Small frames are read many per call into a shared chunk and handed out
//! as slices of it. A large frame that has not arrived whole gets a buffer
//! of its own, of exactly its size, once its header has been checked: the
//! rest of it is read straight into that buffer (no copy, no zeroing of
//! room it will not use), and when the consumer drops the body (on any
//! thread) the buffer goes back to the reader's pool for a later large
//! frame (no zeroing of fresh memory).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use synod_wal::frame::{
    decode_frame, frame_bytes, FrameError, FrameHeader, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES,
    FRAME_MAGIC, FRAME_VERSION,
};

/// Bytes asked of each socket read once a connection is busy (a read
/// filled all the room it was given): large enough that bulk frames need
/// few syscalls.
pub(crate) const READ_CHUNK_BYTES: usize = 128 << 10;
/// Below this much room, `read_space` makes a fresh chunk of room.
const READ_SPACE_BYTES_MIN: usize = 16 << 10;
/// The chunk of a connection that has not been busy yet: an idle or
/// unauthenticated connection (a flood of them, say) costs this, not a
/// whole read chunk.
pub(crate) const IDLE_CHUNK_BYTES: usize = 8 << 10;
/// `READ_SPACE_BYTES_MIN` of an idle connection's chunk.
const IDLE_SPACE_BYTES_MIN: usize = 2 << 10;
/// Frames of at least this many bytes (header and padding included) that
/// are not yet whole get a buffer of their own.
const LARGE_FRAME_BYTES_MIN: usize = 4 << 10;
/// Free large-frame buffers a reader keeps for reuse, the oldest dropped
/// first when another comes back.
const POOLED_BUFFERS_MAX: usize = 8;
/// Larger buffers are not kept for reuse.
const POOLED_BUFFER_BYTES_MAX: usize = 2 << 20;

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

/// A large frame being read into its own buffer.
#[derive(Debug)]
struct LargeFrame {
    /// At least `total` bytes, all initialized; the frame is `buf[..total]`.
    buf: Vec<u8>,
    total: usize,
    filled: usize,
}

impl LargeFrame {
    fn is_whole(&self) -> bool {
        self.filled == self.total
    }
}

/// Accumulates stream bytes and cuts them into frames. Never holds more
/// than one maximal frame plus one read chunk of stream data: the header's
/// length is checked against the limit before the reader waits for (and so
/// buffers) the body. Besides, its pool keeps up to eight free buffers
/// (of at most 2 MiB) that bodies of large frames gave back.
#[derive(Debug)]
pub struct FrameReader {
    /// The chunk: `buf[..data_bytes]` is stream data, the rest room to read into.
    buf: BytesMut,
    body_bytes_max: u32,
    data_bytes: usize,
    /// The large frame being read. Stream order: its bytes, then the chunk's
    /// (the chunk is empty while it is incomplete).
    large: Option<LargeFrame>,
    /// The last frame returned was large: the next one likely is too, so
    /// read only its header into the chunk and its body where it belongs.
    last_frame_large: bool,
    /// Where bodies of large frames return their buffers.
    pool: Arc<BufferPool>,
    /// A read has filled all the chunk room offered: read chunks are full size.
    busy: bool,
    /// The chunk room the last `read_space` offered.
    offered: usize,
}

impl FrameReader {
    /// A reader refusing bodies above `body_bytes_max` (clamped to the frame
    /// format's own ceiling).
    pub fn new(body_bytes_max: u32) -> FrameReader {
        FrameReader {
            buf: BytesMut::new(),
            body_bytes_max: body_bytes_max.min(FRAME_BODY_BYTES_MAX),
            data_bytes: 0,
            large: None,
            last_frame_large: false,
            pool: Arc::default(),
            busy: false,
            offered: 0,
        }
    }

    /// Changes the limit (raised once a handshake has authenticated the peer).
    pub fn set_body_bytes_max(&mut self, body_bytes_max: u32) {
        self.body_bytes_max = body_bytes_max.min(FRAME_BODY_BYTES_MAX);
    }

    /// A slice to read socket bytes into; follow with [`Self::filled`].
    /// Never empty, and possibly short: the rest of a large frame, or just
    /// a header after a large frame, so that bytes land where they stay.
    /// The chunk's room past the data is zeroed once and reused, so a small
    /// read does not pay for clearing a whole chunk.
    pub fn read_space(&mut self) -> &mut [u8] {
        // A bad header is `next_frame`'s to report; here it only means no
        // large frame starts.
        let _ = self.frame_in_chunk();
        if self.reading_large() {
            let large = self.large.as_mut().expect("reading a large frame");
            return &mut large.buf[large.filled..large.total];
        }
        let (chunk, room_min) = match self.busy {
            true => (READ_CHUNK_BYTES, READ_SPACE_BYTES_MIN),
            false => (IDLE_CHUNK_BYTES, IDLE_SPACE_BYTES_MIN),
        };
        if self.buf.len() - self.data_bytes < room_min {
            // Only the data moves if this reallocates; the new room is zeroed once.
            self.buf.truncate(self.data_bytes);
            self.buf.reserve(chunk);
            self.buf.resize(self.data_bytes + chunk, 0);
        }
        let header_only = self.last_frame_large && self.data_bytes == 0 && self.large.is_none();
        let room = &mut self.buf[self.data_bytes..];
        let room = if header_only {
            &mut room[..FRAME_HEADER_BYTES]
        } else {
            room
        };
        self.offered = room.len();
        room
    }

    /// Bytes the reader holds for its chunk (allocated, whether data or room).
    pub fn chunk_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Records that the first `n` bytes of the last [`Self::read_space`] hold data.
    pub fn filled(&mut self, n: usize) {
        match self.large.as_mut().filter(|l| !l.is_whole()) {
            Some(large) => large.filled = (large.filled + n).min(large.total),
            None => {
                // The socket had more than the room: this connection moves
                // bulk, and gets full-size reads from now on.
                self.busy |= n >= self.offered && self.offered > FRAME_HEADER_BYTES;
                self.data_bytes = (self.data_bytes + n).min(self.buf.len());
            }
        }
    }

    /// Whether socket bytes go to the large frame's buffer now.
    fn reading_large(&self) -> bool {
        self.large.as_ref().is_some_and(|l| !l.is_whole())
    }

    /// Appends bytes (tests and the fuzzer; connections use `read_space`).
    pub fn push(&mut self, mut bytes: &[u8]) {
        if let Some(large) = self.large.as_mut() {
            let n = (large.total - large.filled).min(bytes.len());
            large.buf[large.filled..large.filled + n].copy_from_slice(&bytes[..n]);
            large.filled += n;
            bytes = &bytes[n..];
        }
        self.buf.truncate(self.data_bytes);
        self.buf.extend_from_slice(bytes);
        self.data_bytes = self.buf.len();
    }

    /// Bytes buffered that are not yet part of a returned frame.
    pub fn buffered_bytes(&self) -> usize {
        self.data_bytes + self.large.as_ref().map_or(0, |l| l.filled)
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or why the
    /// stream is bad (the connection must then be closed: after a bad frame
    /// there is no way to find the next frame boundary).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(large) = self.large.take_if(|l| l.is_whole()) {
            return self.finish_large(large).map(Some);
        }
        let Some(total) = self.frame_in_chunk()? else {
            return Ok(None);
        };
        let (header, body_range) = {
            let (header, body, _) = decode_frame(&self.buf[..total])?;
            (header, FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + body.len())
        };
        let frame = self.buf.split_to(total).freeze();
        self.data_bytes -= total;
        self.last_frame_large = total >= LARGE_FRAME_BYTES_MIN;
        Ok(Some(Frame {
            kind: header.kind,
            seq: header.seq,
            body: frame.slice(body_range),
        }))
    }

    /// The size of the whole frame at the start of the chunk, if it is
    /// there. A large frame that is not whole moves to a buffer of its own.
    fn frame_in_chunk(&mut self) -> Result<Option<usize>, FrameError> {
        if self.large.is_some() {
            return Ok(None);
        }
        let Some(total) = self.checked_frame_bytes()? else {
            return Ok(None);
        };
        if self.data_bytes < total {
            if total >= LARGE_FRAME_BYTES_MIN {
                self.start_large(total);
            }
            return Ok(None);
        }
        Ok(Some(total))
    }

    /// Checks the header as soon as it is there (magic, version, length
    /// bound: before waiting for the body), then returns the frame's size.
    fn checked_frame_bytes(&self) -> Result<Option<usize>, FrameError> {
        let Some(raw) = self.buf[..self.data_bytes].get(..FRAME_HEADER_BYTES) else {
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
        Ok(Some(frame_bytes(header.body_len as usize)))
    }

    /// Moves the chunk's data (all of it the start of this `total`-byte
    /// frame, which is not whole) into a buffer of the frame's own.
    fn start_large(&mut self, total: usize) {
        let mut buf = self.take_buffer(total);
        buf[..self.data_bytes].copy_from_slice(&self.buf[..self.data_bytes]);
        self.large = Some(LargeFrame {
            buf,
            total,
            filled: self.data_bytes,
        });
        // The chunk's bytes are room again (nothing else refers to them).
        self.data_bytes = 0;
    }

    /// A pooled buffer that fits, or a new one.
    fn take_buffer(&mut self, total: usize) -> Vec<u8> {
        self.pool.take(total).unwrap_or_else(|| vec![0; total])
    }

    fn finish_large(&mut self, large: LargeFrame) -> Result<Frame, FrameError> {
        let (header, body_range) = {
            let (header, body, _) = decode_frame(&large.buf[..large.total])?;
            (header, FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + body.len())
        };
        let lent = Lent {
            buf: large.buf,
            pool: self.pool.clone(),
        };
        self.last_frame_large = true;
        Ok(Frame {
            kind: header.kind,
            seq: header.seq,
            body: Bytes::from_owner(lent).slice(body_range),
        })
    }
}

/// Free large-frame buffers of one reader, filled by the bodies it handed
/// out as they are dropped (on whatever thread).
#[derive(Debug, Default)]
struct BufferPool {
    free: Mutex<VecDeque<Vec<u8>>>,
}

impl BufferPool {
    /// A free buffer of `total` to `2 * total` bytes (never a much larger one
    /// for a small frame).
    fn take(&self, total: usize) -> Option<Vec<u8>> {
        let mut free = self.free.lock().ok()?;
        let fits = |b: &Vec<u8>| (total..=total.saturating_mul(2)).contains(&b.len());
        let i = free.iter().position(fits)?;
        free.remove(i)
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.len() > POOLED_BUFFER_BYTES_MAX {
            return;
        }
        // A poisoned lock only means a panic elsewhere: drop the buffer.
        if let Ok(mut free) = self.free.lock() {
            if free.len() == POOLED_BUFFERS_MAX {
                free.pop_front();
            }
            free.push_back(buf);
        }
    }
}

/// A large frame's buffer lent out as the body's `Bytes`.
struct Lent {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection costs a small chunk; one that fills its reads
    /// moves to full-size chunks.
    #[test]
    fn a_connection_gets_a_full_chunk_only_once_it_is_busy() {
        let mut reader = FrameReader::new(1 << 20);
        let room = reader.read_space().len();
        assert!(room <= IDLE_CHUNK_BYTES, "{room}");
        reader.filled(100);
        let _ = reader.read_space();
        assert!(reader.chunk_bytes() < READ_CHUNK_BYTES);
        let room = reader.read_space().len();
        reader.filled(room);
        while reader.next_frame().is_ok_and(|f| f.is_some()) {}
        reader.data_bytes = 0;
        reader.buf.clear();
        let room = reader.read_space().len();
        assert!(room >= READ_CHUNK_BYTES / 2, "{room}");
    }

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

    /// Feeds `piece` the way a socket read does: into `read_space`, which
    /// may be shorter than the piece.
    fn feed(reader: &mut FrameReader, mut piece: &[u8]) {
        while !piece.is_empty() {
            let space = reader.read_space();
            assert!(!space.is_empty());
            let n = space.len().min(piece.len());
            space[..n].copy_from_slice(&piece[..n]);
            reader.filled(n);
            piece = &piece[n..];
        }
    }

    #[test]
    fn a_large_frame_is_read_into_its_own_buffer_which_is_reused_once_dropped() {
        let body = vec![5u8; 10_000];
        let stream = frames(&[body.clone(), body.clone(), body.clone()]);
        let one = frame_bytes(body.len());
        let mut reader = FrameReader::new(1 << 20);
        // The header and a little of the body, then the rest of the frame:
        // read_space offers exactly the frame's remainder.
        feed(&mut reader, &stream[..100]);
        assert_eq!(reader.next_frame(), Ok(None));
        assert_eq!(reader.read_space().len(), one - 100);
        feed(&mut reader, &stream[100..one]);
        let first = reader.next_frame().unwrap().unwrap();
        assert_eq!(first.body.as_ref(), &body[..]);
        // After a large frame only a header is asked for.
        assert_eq!(reader.read_space().len(), FRAME_HEADER_BYTES);
        // Second frame while the first body is still held: a new buffer.
        feed(&mut reader, &stream[one..2 * one]);
        let second = reader.next_frame().unwrap().unwrap();
        assert_ne!(second.body.as_ptr(), first.body.as_ptr());
        // Drop the first: the third frame lands in its buffer.
        // Dropped on another thread: the buffer still comes back.
        let first_at = first.body.as_ptr();
        std::thread::spawn(move || drop(first)).join().unwrap();
        feed(&mut reader, &stream[2 * one..]);
        let third = reader.next_frame().unwrap().unwrap();
        assert_eq!(third.body.as_ptr(), first_at);
        assert_eq!((third.seq, third.body.as_ref()), (2, &body[..]));
        assert_eq!(second.body.as_ref(), &body[..]);
        assert_eq!(reader.buffered_bytes(), 0);
    }

    #[test]
    fn a_bad_checksum_in_a_large_frame_is_refused() {
        let mut stream = frames(&[vec![1; 9000]]);
        stream[5000] ^= 1;
        let mut reader = FrameReader::new(1 << 20);
        feed(&mut reader, &stream[..64]);
        assert_eq!(reader.next_frame(), Ok(None));
        feed(&mut reader, &stream[64..]);
        assert!(matches!(
            reader.next_frame(),
            Err(FrameError::Checksum { .. })
        ));
    }

    proptest! {
        // Large bodies make a case slow in debug builds.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any split of a valid stream into pieces, fed either way, yields
        /// the same frames, small and large alike.
        #[test]
        fn frames_survive_any_chunking(
            bodies in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..80),
                    proptest::collection::vec(any::<u8>(), 4000..9000),
                ],
                0..8,
            ),
            cuts in proptest::collection::vec(1usize..6000, 0..40),
            by_push in any::<bool>(),
        ) {
            let stream = frames(&bodies);
            let mut reader = FrameReader::new(16 << 10);
            let mut got = Vec::new();
            let mut at: usize = 0;
            for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let end = at.saturating_add(*cut).min(stream.len());
                if by_push {
                    reader.push(&stream[at..end]);
                } else {
                    feed(&mut reader, &stream[at..end]);
                }
                at = end;
                got.extend(drain(&mut reader).unwrap());
            }
            prop_assert_eq!(got.len(), bodies.len());
            prop_assert_eq!(reader.buffered_bytes(), 0);
            for (i, (frame, body)) in got.iter().zip(&bodies).enumerate() {
                prop_assert_eq!((frame.kind, frame.seq, frame.body.as_ref()), (7, i as u64, &body[..]));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The fuzz target's oracle on streams that are mostly frames: fed
        /// in pieces, alternately through `read_space` and `push`, with one
        /// byte possibly damaged, every frame returned is the very bytes of
        /// the stream at that place, and the reader stays bounded.
        #[test]
        fn damaged_streams_yield_only_their_own_frames(
            bodies in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..80),
                    proptest::collection::vec(any::<u8>(), 4000..9000),
                ],
                1..6,
            ),
            damage in proptest::option::of((any::<usize>(), 1u8..=255)),
            piece_bytes in 1usize..3000,
        ) {
            let mut stream = frames(&bodies);
            if let Some((at, flip)) = damage {
                let at = at % stream.len();
                stream[at] ^= flip;
            }
            let mut reader = FrameReader::new(16 << 10);
            let mut consumed = 0;
            'pieces: for (i, piece) in stream.chunks(piece_bytes).enumerate() {
                if i % 2 == 0 {
                    feed(&mut reader, piece);
                } else {
                    reader.push(piece);
                }
                loop {
                    match reader.next_frame() {
                        Ok(Some(frame)) => {
                            let mut again = Vec::new();
                            encode_frame(frame.kind, frame.seq, &frame.body, &mut again).unwrap();
                            prop_assert_eq!(&stream[consumed..consumed + again.len()], &again[..]);
                            consumed += again.len();
                        }
                        Ok(None) => break,
                        Err(_) => break 'pieces,
                    }
                }
                prop_assert!(reader.buffered_bytes() < frame_bytes(16 << 10) + READ_CHUNK_BYTES);
            }
            if damage.is_none() {
                prop_assert_eq!(consumed, stream.len());
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut reader = FrameReader::new(64);
            reader.push(&bytes);
            let _ = drain(&mut reader);
            prop_assert!(reader.buffered_bytes() <= bytes.len());
        }
    }
}

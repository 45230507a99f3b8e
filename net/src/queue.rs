//! A per-peer (or per-client-connection) send queue, bounded in bytes.
//! Frames are encoded straight into the pending batch, so coalescing is
//! free: the writer takes the whole batch and writes it with as few
//! (vectored) calls as the socket allows. Large bodies handed over as
//! `Bytes` are not copied: the batch holds a reference and the write sends
//! them from where they are, between their header and padding.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_wal::frame::{
    encode_frame, encode_frame_header, frame_bytes, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES,
};

use crate::notify::Notify;
use crate::NodeId;

/// Why a frame was not queued. The frame was not sent; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer's queue holds too many bytes: slow down (or `send_wait`).
    #[error("send queue to {peer} full: {queued_bytes} bytes queued, limit {limit_bytes}, frame {frame_bytes}")]
    QueueFull {
        /// The destination.
        peer: NodeId,
        /// Bytes queued now (pending plus being written).
        queued_bytes: usize,
        /// The configured limit.
        limit_bytes: usize,
        /// Bytes the refused frame needed.
        frame_bytes: usize,
    },
    /// The body is above the configured frame size.
    #[error("frame body of {body_bytes} bytes above the limit of {limit_bytes}")]
    TooLarge {
        /// The body's size.
        body_bytes: usize,
        /// The configured limit.
        limit_bytes: u32,
    },
    /// Not a configured peer (or this node itself).
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// Kinds at or above `KIND_RESERVED_MIN` belong to the transport.
    #[error("frame kind {0:#06x} is reserved for the transport")]
    ReservedKind(u16),
    /// The connection or transport is gone.
    #[error("closed")]
    Closed,
}

/// Bodies at least this large, when given as `Bytes`, are written from the
/// caller's buffer; smaller ones are copied into the batch, where coalescing
/// them costs less than an iovec and a reference each.
pub(crate) const BODY_BYTES_BY_REFERENCE_MIN: usize = 4 << 10;

/// The padding after a body that is not copied.
static PADDING: [u8; FRAME_ALIGN_BYTES] = [0; FRAME_ALIGN_BYTES];

/// A frame body as the caller hands it over.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Body<'a> {
    /// Borrowed: copied into the batch.
    Slice(&'a [u8]),
    /// Shared: referenced by the batch if large, else copied.
    Bytes(&'a Bytes),
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Slice(b) => b.len(),
            Body::Bytes(b) => b.len(),
        }
    }
}

/// One piece of a batch, in stream order.
#[derive(Debug)]
enum Part {
    /// `inline[start..end]`: headers, copied bodies, their padding.
    Inline { start: usize, end: usize },
    /// A body written from the caller's buffer.
    Shared(Bytes),
    /// Zero padding after a shared body.
    Padding(usize),
}

/// Where one frame of a batch keeps its body, for authenticating it.
#[derive(Debug)]
enum BodyAt {
    /// `inline[start..start + len]`.
    Inline { start: usize, len: usize },
    /// `parts[index]`, a shared body.
    Part(usize),
}

/// One frame of a batch, as its MAC covers it.
#[derive(Debug)]
struct FrameAt {
    kind: u16,
    seq: u64,
    /// Where its header starts in `inline`.
    header: usize,
    body: BodyAt,
}

/// The frames of one write: whole frames, in order.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    inline: Vec<u8>,
    parts: Vec<Part>,
    /// Each frame's kind, sequence number and body.
    frames_at: Vec<FrameAt>,
    /// Inline bytes not yet covered by a part.
    inline_open: usize,
    bytes: usize,
    frames: u64,
}

impl Batch {
    /// Wire bytes of the batch.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Pieces to write, in order (`segment(0..segments())`).
    pub(crate) fn segments(&self) -> usize {
        self.parts.len()
    }

    /// The bytes of piece `i`.
    pub(crate) fn segment(&self, i: usize) -> &[u8] {
        match &self.parts[i] {
            Part::Inline { start, end } => &self.inline[*start..*end],
            Part::Shared(body) => body,
            Part::Padding(n) => &PADDING[..*n],
        }
    }

    fn push(&mut self, kind: u16, seq: u64, body: Body<'_>) {
        let shared = match body {
            Body::Bytes(b) if b.len() >= BODY_BYTES_BY_REFERENCE_MIN => Some(b),
            _ => None,
        };
        let total = match shared {
            None => {
                let bytes = match body {
                    Body::Slice(b) => b,
                    Body::Bytes(b) => b.as_ref(),
                };
                let header = self.inline.len();
                let body = BodyAt::Inline {
                    start: header + FRAME_HEADER_BYTES,
                    len: bytes.len(),
                };
                self.frames_at.push(FrameAt {
                    kind,
                    seq,
                    header,
                    body,
                });
                encode_frame(kind, seq, bytes, &mut self.inline)
                    .expect("length checked, buffer aligned")
            }
            Some(b) => {
                let header = self.inline.len();
                let bytes = encode_frame_header(kind, seq, b).expect("length checked");
                self.inline.extend_from_slice(&bytes);
                self.close_inline();
                let body = BodyAt::Part(self.parts.len());
                self.frames_at.push(FrameAt {
                    kind,
                    seq,
                    header,
                    body,
                });
                self.parts.push(Part::Shared(b.clone()));
                let total = frame_bytes(b.len());
                let padding = total - FRAME_HEADER_BYTES - b.len();
                if padding > 0 {
                    self.parts.push(Part::Padding(padding));
                }
                total
            }
        };
        self.bytes += total;
        self.frames += 1;
    }

    /// Ends the inline bytes written so far as one part.
    fn close_inline(&mut self) {
        if self.inline.len() > self.inline_open {
            self.parts.push(Part::Inline {
                start: self.inline_open,
                end: self.inline.len(),
            });
            self.inline_open = self.inline.len();
        }
    }

    /// Calls `visit(kind, seq, body)` for each frame, in order.
    pub(crate) fn for_each_frame(&self, mut visit: impl FnMut(u16, u64, &[u8])) {
        for frame in &self.frames_at {
            let body = match frame.body {
                BodyAt::Inline { start, len } => &self.inline[start..start + len],
                BodyAt::Part(index) => match &self.parts[index] {
                    Part::Shared(body) => &body[..],
                    Part::Inline { .. } | Part::Padding(_) => {
                        unreachable!("a shared body's part is shared")
                    }
                },
            };
            visit(frame.kind, frame.seq, body);
        }
    }

    /// Rewrites each frame's body in place, in order, keeping its length
    /// (encryption), and its header's checksum to match. A shared body is
    /// copied first: it is the caller's.
    pub(crate) fn transform_bodies(&mut self, mut transform: impl FnMut(&mut [u8])) {
        for frame in &self.frames_at {
            let header = match frame.body {
                BodyAt::Inline { start, len } => {
                    let body = &mut self.inline[start..start + len];
                    transform(body);
                    encode_frame_header(frame.kind, frame.seq, body)
                }
                BodyAt::Part(index) => {
                    let Part::Shared(body) = &self.parts[index] else {
                        unreachable!("a shared body's part is shared")
                    };
                    let mut copy = body.to_vec();
                    transform(&mut copy);
                    let header = encode_frame_header(frame.kind, frame.seq, &copy);
                    self.parts[index] = Part::Shared(Bytes::from(copy));
                    header
                }
            };
            let header = header.expect("the length was checked when the frame was queued");
            self.inline[frame.header..frame.header + FRAME_HEADER_BYTES].copy_from_slice(&header);
        }
    }

    /// Appends a small frame of the transport's own after the batch's
    /// frames (a MAC over them), once the batch is taken for writing.
    pub(crate) fn push_trailer(&mut self, kind: u16, seq: u64, body: &[u8]) {
        let total = encode_frame(kind, seq, body, &mut self.inline).expect("a small frame");
        self.close_inline();
        self.bytes += total;
    }

    /// Empties the batch, keeping its allocations; drops the references to
    /// shared bodies.
    fn clear(&mut self) {
        self.inline.clear();
        self.parts.clear();
        self.frames_at.clear();
        self.inline_open = 0;
        self.bytes = 0;
        self.frames = 0;
    }
}

#[derive(Debug)]
struct Buffers {
    pending: Batch,
    inflight_bytes: usize,
    inflight_frames: u64,
    /// The batch last written, kept to avoid reallocating each round.
    spare: Batch,
    seq_next: u64,
}

/// Bounded queue plus the two signals around it.
#[derive(Debug)]
pub(crate) struct SendQueue {
    peer: NodeId,
    bytes_max: usize,
    body_bytes_max: u32,
    buffers: RefCell<Buffers>,
    /// Moves when frames are queued (wakes the writer).
    pub(crate) data: Notify,
    /// Moves when bytes leave the queue (wakes `send_wait`).
    pub(crate) space: Notify,
    /// When the queue last moved: bytes reached the socket, or the first
    /// frame came into an empty queue.
    moved_at: Cell<Instant>,
}

impl SendQueue {
    pub(crate) fn new(peer: NodeId, bytes_max: usize, body_bytes_max: u32) -> SendQueue {
        SendQueue {
            peer,
            bytes_max,
            body_bytes_max,
            buffers: RefCell::new(Buffers {
                pending: Batch::default(),
                inflight_bytes: 0,
                inflight_frames: 0,
                spare: Batch::default(),
                seq_next: 0,
            }),
            data: Notify::default(),
            space: Notify::default(),
            moved_at: Cell::new(Instant::now()),
        }
    }

    /// Bytes of the batch being written reached the socket.
    pub(crate) fn moved(&self) {
        self.moved_at.set(Instant::now());
    }

    /// How long the queue has held bytes that did not move; zero if empty.
    pub(crate) fn stuck_for(&self) -> Duration {
        if self.queued_bytes() == 0 {
            return Duration::ZERO;
        }
        self.moved_at.get().elapsed()
    }

    /// Pending plus being written.
    pub(crate) fn queued_bytes(&self) -> usize {
        let b = self.buffers.borrow();
        b.pending.bytes + b.inflight_bytes
    }

    /// Queues one frame with the next sequence number.
    pub(crate) fn push(&self, kind: u16, body: Body<'_>) -> Result<(), SendError> {
        let seq = self.buffers.borrow().seq_next;
        self.push_with_seq(kind, seq, body)?;
        self.buffers.borrow_mut().seq_next += 1;
        Ok(())
    }

    /// Queues one frame with the caller's sequence number (client request ids).
    pub(crate) fn push_with_seq(
        &self,
        kind: u16,
        seq: u64,
        body: Body<'_>,
    ) -> Result<(), SendError> {
        self.check_room(body.len())?;
        if self.queued_bytes() == 0 {
            self.moved();
        }
        self.buffers.borrow_mut().pending.push(kind, seq, body);
        self.data.notify();
        Ok(())
    }

    /// Whether a `body_bytes` frame fits now.
    pub(crate) fn check_room(&self, body_bytes: usize) -> Result<(), SendError> {
        if body_bytes > self.body_bytes_max as usize {
            return Err(SendError::TooLarge {
                body_bytes,
                limit_bytes: self.body_bytes_max,
            });
        }
        let needed = frame_bytes(body_bytes);
        let queued = self.queued_bytes();
        if queued + needed > self.bytes_max {
            return Err(SendError::QueueFull {
                peer: self.peer,
                queued_bytes: queued,
                limit_bytes: self.bytes_max,
                frame_bytes: needed,
            });
        }
        Ok(())
    }

    /// Moves everything pending to in-flight and hands it to the writer.
    pub(crate) fn take(&self) -> Option<Batch> {
        let mut b = self.buffers.borrow_mut();
        if b.pending.frames == 0 {
            return None;
        }
        let spare = std::mem::take(&mut b.spare);
        let mut out = std::mem::replace(&mut b.pending, spare);
        out.close_inline();
        b.inflight_bytes = out.bytes;
        b.inflight_frames = out.frames;
        Some(out)
    }

    /// The writer finished writing `batch`; returns the frames it held.
    pub(crate) fn written(&self, mut batch: Batch) -> u64 {
        batch.clear();
        let frames = {
            let mut b = self.buffers.borrow_mut();
            b.spare = batch;
            b.inflight_bytes = 0;
            std::mem::take(&mut b.inflight_frames)
        };
        self.space.notify();
        frames
    }

    /// The connection died with a write in flight: those frames may or may
    /// not have arrived. Returns how many are given up.
    pub(crate) fn lost_inflight(&self) -> u64 {
        let frames = {
            let mut b = self.buffers.borrow_mut();
            b.inflight_bytes = 0;
            std::mem::take(&mut b.inflight_frames)
        };
        self.space.notify();
        frames
    }

    /// Waits until the frame fits, then queues it.
    pub(crate) async fn push_wait(&self, kind: u16, body: Body<'_>) -> Result<(), SendError> {
        loop {
            let epoch = self.space.epoch();
            match self.push(kind, body) {
                Err(SendError::QueueFull { .. }) => self.space.changed_since(epoch).await,
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(b: &[u8]) -> Body<'_> {
        Body::Slice(b)
    }

    fn wire(batch: &Batch) -> Vec<u8> {
        (0..batch.segments())
            .flat_map(|i| batch.segment(i).to_vec())
            .collect()
    }

    #[test]
    fn bound_holds_and_frees_after_write() {
        let q = SendQueue::new(NodeId(2), 200, 64);
        q.push(1, slice(&[0; 16])).unwrap(); // 48 bytes
        q.push(1, slice(&[0; 64])).unwrap(); // 96 bytes: 144 queued
        assert!(matches!(
            q.push(1, slice(&[0; 64])),
            Err(SendError::QueueFull {
                queued_bytes: 144,
                ..
            })
        ));
        assert!(matches!(
            q.push(1, slice(&[0; 65])),
            Err(SendError::TooLarge { .. })
        ));
        let batch = q.take().unwrap();
        assert_eq!((batch.bytes(), q.queued_bytes()), (144, 144));
        assert_eq!(q.written(batch), 2);
        assert_eq!(q.queued_bytes(), 0);
        q.push(1, slice(&[0; 64])).unwrap();
    }

    #[test]
    fn large_shared_bodies_are_referenced_and_the_wire_is_unchanged() {
        let large = Bytes::from(vec![7u8; BODY_BYTES_BY_REFERENCE_MIN + 5]);
        let small = Bytes::from(vec![8u8; 20]);
        let q = SendQueue::new(NodeId(2), 1 << 20, 1 << 20);
        q.push(1, slice(&[1; 3])).unwrap();
        q.push(2, Body::Bytes(&large)).unwrap();
        q.push(3, Body::Bytes(&small)).unwrap();
        q.push(4, Body::Bytes(&large)).unwrap();
        let batch = q.take().unwrap();
        let mut expected = Vec::new();
        for (seq, (kind, body)) in [
            (1, &[1u8; 3][..]),
            (2, &large[..]),
            (3, &small[..]),
            (4, &large[..]),
        ]
        .into_iter()
        .enumerate()
        {
            encode_frame(kind, seq as u64, body, &mut expected).unwrap();
        }
        assert_eq!(wire(&batch), expected);
        assert_eq!(
            (batch.bytes(), q.queued_bytes()),
            (expected.len(), expected.len())
        );
        // The large body goes out from the caller's buffer (twice), the small one is copied.
        let shared = (0..batch.segments())
            .filter(|&i| batch.segment(i).as_ptr() == large.as_ptr())
            .count();
        assert_eq!(shared, 2);
        assert!(!large.is_unique());
        assert_eq!(q.written(batch), 4);
        assert!(large.is_unique(), "the written batch let go of the body");
    }
}

//! A per-peer (or per-client-connection) send queue, bounded in bytes.
//! Frames are encoded straight into the pending buffer, so coalescing is
//! free: the writer takes the whole buffer and writes it with one call.

use std::cell::RefCell;

use synod_wal::frame::{encode_frame, frame_bytes};

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

#[derive(Debug)]
struct Buffers {
    pending: Vec<u8>,
    pending_frames: u64,
    inflight_bytes: usize,
    inflight_frames: u64,
    /// The buffer last written, kept to avoid reallocating each round.
    spare: Vec<u8>,
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
}

impl SendQueue {
    pub(crate) fn new(peer: NodeId, bytes_max: usize, body_bytes_max: u32) -> SendQueue {
        SendQueue {
            peer,
            bytes_max,
            body_bytes_max,
            buffers: RefCell::new(Buffers {
                pending: Vec::new(),
                pending_frames: 0,
                inflight_bytes: 0,
                inflight_frames: 0,
                spare: Vec::new(),
                seq_next: 0,
            }),
            data: Notify::default(),
            space: Notify::default(),
        }
    }

    /// Pending plus being written.
    pub(crate) fn queued_bytes(&self) -> usize {
        let b = self.buffers.borrow();
        b.pending.len() + b.inflight_bytes
    }

    /// Queues one frame with the next sequence number.
    pub(crate) fn push(&self, kind: u16, body: &[u8]) -> Result<(), SendError> {
        let seq = self.buffers.borrow().seq_next;
        self.push_with_seq(kind, seq, body)?;
        self.buffers.borrow_mut().seq_next += 1;
        Ok(())
    }

    /// Queues one frame with the caller's sequence number (client request ids).
    pub(crate) fn push_with_seq(&self, kind: u16, seq: u64, body: &[u8]) -> Result<(), SendError> {
        self.check_room(body.len())?;
        let mut b = self.buffers.borrow_mut();
        encode_frame(kind, seq, body, &mut b.pending).expect("length checked, buffer aligned");
        b.pending_frames += 1;
        drop(b);
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
    pub(crate) fn take(&self) -> Option<Vec<u8>> {
        let mut b = self.buffers.borrow_mut();
        if b.pending.is_empty() {
            return None;
        }
        let spare = std::mem::take(&mut b.spare);
        let out = std::mem::replace(&mut b.pending, spare);
        b.inflight_bytes = out.len();
        b.inflight_frames = std::mem::take(&mut b.pending_frames);
        Some(out)
    }

    /// The writer finished writing `buf`; returns the frames it held.
    pub(crate) fn written(&self, mut buf: Vec<u8>) -> u64 {
        buf.clear();
        let frames = {
            let mut b = self.buffers.borrow_mut();
            b.spare = buf;
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

    /// Waits until a `body_bytes` frame fits, then queues it.
    pub(crate) async fn push_wait(&self, kind: u16, body: &[u8]) -> Result<(), SendError> {
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

    #[test]
    fn bound_holds_and_frees_after_write() {
        let q = SendQueue::new(NodeId(2), 200, 64);
        q.push(1, &[0; 16]).unwrap(); // 48 bytes
        q.push(1, &[0; 64]).unwrap(); // 96 bytes: 144 queued
        assert!(matches!(
            q.push(1, &[0; 64]),
            Err(SendError::QueueFull {
                queued_bytes: 144,
                ..
            })
        ));
        assert!(matches!(
            q.push(1, &[0; 65]),
            Err(SendError::TooLarge { .. })
        ));
        let buf = q.take().unwrap();
        assert_eq!((buf.len(), q.queued_bytes()), (144, 144));
        assert_eq!(q.written(buf), 2);
        assert_eq!(q.queued_bytes(), 0);
        q.push(1, &[0; 64]).unwrap();
    }
}

//! Pure recovery logic over the bytes of one segment: which frames are
//! valid, where the data ends, and whether what follows is a torn write or
//! corruption. No I/O, so the recovery path, `synod wal verify` and the fuzz
//! target all run exactly this code.
//!
//! ```text
//! [frame seq=f][frame seq=f+1]...[frame seq=n-1][ X: first byte that is not
//!  the frame seq=n ] ... end of file
//!
//! X.. all zero                      -> clean end
//! a valid frame with seq >= n after X -> corruption at X (data follows it,
//!                                      so it may have been acknowledged)
//! otherwise, last segment           -> torn write at X: truncate
//! otherwise, earlier segment        -> corruption at X
//! ```

use crate::frame::{
    decode_frame, frame_bytes, FrameError, FrameHeader, FRAME_ALIGN_BYTES, FRAME_BODY_BYTES_MAX,
    FRAME_HEADER_BYTES, FRAME_MAGIC, FRAME_VERSION,
};
use crate::Position;

/// One valid frame found in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    /// Its log position (also its header `seq`).
    pub position: Position,
    /// The frame kind.
    pub kind: u16,
    /// Byte offset of its header in the segment.
    pub offset_bytes: u64,
    /// Body length in bytes.
    pub body_len: u32,
}

/// How the valid frames of a segment end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Only zero bytes follow the last frame.
    Clean,
    /// A torn write: nonzero bytes that are no valid frame, from
    /// `offset_bytes` for `bytes` bytes (up to the last nonzero byte).
    Torn {
        /// Where the torn tail starts (the end of the valid frames).
        offset_bytes: u64,
        /// Bytes from there to the last nonzero byte, inclusive.
        bytes: u64,
        /// Why the first bytes there are not a frame.
        reason: FrameError,
    },
}

/// The result of scanning one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// Every valid frame, in order.
    pub frames: Vec<FrameMeta>,
    /// Byte offset just past the last valid frame.
    pub data_end_bytes: u64,
    /// What follows the valid frames.
    pub end: SegmentEnd,
}

/// A segment that cannot be opened: an invalid frame that is not a torn tail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid frame at byte offset {offset_bytes}: {reason}")]
pub struct Corruption {
    /// Byte offset of the first invalid frame.
    pub offset_bytes: u64,
    /// Why it is invalid, and why it is not a torn tail.
    pub reason: String,
}

/// Scans a segment image whose first frame has position `first`. `is_last`
/// says whether a torn tail is allowed (only the newest segment can have
/// been in the middle of a write when the process died).
pub fn scan_segment(
    bytes: &[u8],
    first: Position,
    is_last: bool,
) -> Result<SegmentScan, Corruption> {
    let mut frames = Vec::new();
    let mut offset = 0usize;
    let mut seq = first.0;
    let stop = loop {
        if offset >= bytes.len() {
            break None;
        }
        match decode_at(bytes, offset, seq) {
            Ok((kind, body_len, consumed)) => {
                frames.push(FrameMeta {
                    position: Position(seq),
                    kind,
                    offset_bytes: offset as u64,
                    body_len,
                });
                offset += consumed;
                seq += 1;
            }
            Err(e) => break Some(e),
        }
    };
    let end = classify_tail(bytes, offset, seq, is_last, stop)?;
    Ok(SegmentScan {
        frames,
        data_end_bytes: offset as u64,
        end,
    })
}

/// Decodes the frame at `offset` and checks that it carries `seq`.
fn decode_at(bytes: &[u8], offset: usize, seq: u64) -> Result<(u16, u32, usize), FrameError> {
    let (header, _, consumed) = decode_frame(&bytes[offset..])?;
    if header.seq != seq {
        // A valid frame of some other position: in a log whose truncations
        // zero the tail, this only comes from a misplaced or damaged file.
        return Err(FrameError::Invalid(format!(
            "sequence {} where {seq} was expected",
            header.seq
        )));
    }
    Ok((header.kind, header.body_len, consumed))
}

fn classify_tail(
    bytes: &[u8],
    offset: usize,
    seq: u64,
    is_last: bool,
    stop: Option<FrameError>,
) -> Result<SegmentEnd, Corruption> {
    let rest = &bytes[offset.min(bytes.len())..];
    let Some(last_nonzero) = rest.iter().rposition(|b| *b != 0) else {
        return Ok(SegmentEnd::Clean);
    };
    let reason = stop.unwrap_or(FrameError::BadMagic { found: 0 });
    match find_frame_after(bytes, offset, seq) {
        Later::Frame(later) => {
            return Err(Corruption {
                offset_bytes: offset as u64,
                reason: format!(
                    "{reason}; a valid frame follows at offset {later}, so this is not a torn tail"
                ),
            })
        }
        Later::Undecided => {
            return Err(Corruption {
                offset_bytes: offset as u64,
                reason: format!(
                    "{reason}; more plausible frame headers follow than can be checked in time \
                     to tell a torn tail from corruption"
                ),
            })
        }
        Later::None => {}
    }
    if !is_last {
        return Err(Corruption {
            offset_bytes: offset as u64,
            reason: format!("{reason}; not the last segment, so this is not a torn tail"),
        });
    }
    Ok(SegmentEnd::Torn {
        offset_bytes: offset as u64,
        bytes: last_nonzero as u64 + 1,
        reason,
    })
}

/// What follows bad bytes in a segment.
#[derive(Debug, PartialEq, Eq)]
enum Later {
    /// A valid frame, at this offset.
    Frame(usize),
    /// None: the bad bytes may be a torn tail.
    None,
    /// So many plausible headers that checking them all would cost more
    /// than a bounded multiple of the segment (a crafted file): treated as
    /// corruption, the side that forgets nothing.
    Undecided,
}

/// A valid frame after `offset` whose sequence could belong to this log
/// after position `seq` (at most one frame per header's worth of bytes
/// since `offset`), if any. Such a frame means data was written and synced
/// after the bad bytes, so they are not a torn tail.
///
/// Linear in the segment: a candidate's header is checked (magic, version,
/// zero reserved bytes, a length that fits, a sequence in range) before its
/// body is checksummed, and the bytes checksummed in all are bounded by
/// twice the segment's size.
fn find_frame_after(bytes: &[u8], offset: usize, seq: u64) -> Later {
    let magic = FRAME_MAGIC.to_le_bytes();
    let mut checksum_budget = 2 * bytes.len() + FRAME_HEADER_BYTES;
    let first_candidate = offset + FRAME_ALIGN_BYTES;
    for o in (first_candidate..bytes.len().saturating_sub(FRAME_HEADER_BYTES - 1))
        .step_by(FRAME_ALIGN_BYTES)
    {
        if bytes[o..o + 4] != magic {
            continue;
        }
        let raw: &[u8; FRAME_HEADER_BYTES] = bytes[o..o + FRAME_HEADER_BYTES]
            .try_into()
            .expect("the range is a header long");
        let h = FrameHeader::from_bytes(raw);
        let frames_between = ((o - offset) / FRAME_HEADER_BYTES) as u64;
        let plausible = h.version == FRAME_VERSION
            && h.reserved == 0
            && h.body_len <= FRAME_BODY_BYTES_MAX
            && frame_bytes(h.body_len as usize) <= bytes.len() - o
            && h.seq >= seq
            && h.seq - seq <= frames_between;
        if !plausible {
            continue;
        }
        let cost = frame_bytes(h.body_len as usize);
        if cost > checksum_budget {
            return Later::Undecided;
        }
        checksum_budget -= cost;
        if decode_frame(&bytes[o..]).is_ok() {
            return Later::Frame(o);
        }
    }
    Later::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;

    fn image(bodies: &[&[u8]], first: u64, zeros: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            encode_frame(1, first + i as u64, body, &mut out).unwrap();
        }
        out.resize(out.len() + zeros, 0);
        out
    }

    /// A crafted segment: bad bytes, then a plausible header every 32
    /// bytes, each claiming the rest of the file as its body (checking them
    /// all would checksum the file once per header). The search stops at
    /// its budget and calls it corruption, never a torn tail to cut.
    #[test]
    fn a_segment_full_of_plausible_headers_is_corruption_found_in_bounded_work() {
        let mut img = image(&[b"a"], 0, 0);
        let bad = img.len();
        img.resize(256 << 10, 0);
        img[bad] = 0xee;
        let mut o = bad + FRAME_ALIGN_BYTES;
        while o + FRAME_HEADER_BYTES <= img.len() {
            let body_len = (img.len() - o - FRAME_HEADER_BYTES) as u32 / 16 * 16;
            let header = FrameHeader {
                magic: FRAME_MAGIC,
                version: FRAME_VERSION,
                kind: 1,
                body_len,
                crc32c: 0,
                seq: 1,
                reserved: 0,
            };
            img[o..o + FRAME_HEADER_BYTES].copy_from_slice(&header.to_bytes());
            o += FRAME_HEADER_BYTES;
        }
        assert_eq!(find_frame_after(&img, bad, 1), Later::Undecided);
        let error = scan_segment(&img, Position(0), true).unwrap_err();
        assert!(
            error.reason.contains("than can be checked"),
            "{}",
            error.reason
        );
    }

    #[test]
    fn clean_segment() {
        let img = image(&[b"a", b"bb", b"ccc"], 10, 100);
        let scan = scan_segment(&img, Position(10), false).unwrap();
        assert_eq!(scan.frames.len(), 3);
        assert_eq!(scan.frames[2].position, Position(12));
        assert_eq!(scan.end, SegmentEnd::Clean);
    }

    #[test]
    fn torn_tail_only_in_last_segment() {
        let mut img = image(&[b"a", b"bb", b"ccc"], 0, 100);
        let third = scan_segment(&img, Position(0), true).unwrap().frames[2].offset_bytes as usize;
        img[third + 40] ^= 1;
        let scan = scan_segment(&img, Position(0), true).unwrap();
        assert_eq!(scan.frames.len(), 2);
        assert!(
            matches!(scan.end, SegmentEnd::Torn { offset_bytes, .. } if offset_bytes == third as u64)
        );
        let err = scan_segment(&img, Position(0), false).unwrap_err();
        assert_eq!(err.offset_bytes, third as u64);
    }

    #[test]
    fn middle_corruption_is_refused() {
        let mut img = image(&[b"a", b"bb", b"ccc"], 0, 100);
        img[40] ^= 1;
        let err = scan_segment(&img, Position(0), true).unwrap_err();
        assert_eq!(err.offset_bytes, 0);
    }

    #[test]
    fn wrong_sequence_is_not_a_frame() {
        let img = image(&[b"a"], 5, 0);
        let err = scan_segment(&img, Position(4), false).unwrap_err();
        assert_eq!(err.offset_bytes, 0);
    }
}

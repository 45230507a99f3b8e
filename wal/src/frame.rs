//! The one frame format of synod (DESIGN.md §4), shared by the wire and the
//! WAL. No other crate defines its own header.
//!
//! ```text
//! offset  0: magic      u32  b"SYNF" little endian
//!         4: version    u16  FRAME_VERSION
//!         6: kind       u16  chosen by the user of the frame
//!         8: body_len   u32  bytes of body, padding excluded
//!        12: crc32c     u32  over the header (this field zero) and the body
//!        16: seq        u64  WAL position, or the wire sequence number
//!        24: reserved   u64  zero
//!        32: body, then zero padding up to a multiple of 16 bytes
//! ```
//!
//! Frames start at 16-byte aligned offsets and the header is 32 bytes, so a
//! body is 16-byte aligned wherever its frame is, which is what rkyv's
//! `aligned` format needs. Decoding bytes from outside is always: checksum,
//! then [`access_body`] (`rkyv::access` with bytecheck), then [`Validate`].

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::Portable;

/// `b"SYNF"` read as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"SYNF");
/// The frame format version written in every header.
pub const FRAME_VERSION: u16 = 1;
/// Size of [`FrameHeader`] on the wire and on disk.
pub const FRAME_HEADER_BYTES: usize = 32;
/// Frames start, and bodies start, at multiples of this.
pub const FRAME_ALIGN_BYTES: usize = 16;
/// Hard ceiling on a body, so a damaged length can never ask for gigabytes.
pub const FRAME_BODY_BYTES_MAX: u32 = 64 << 20;

/// The fixed frame header. Serialized field by field in little endian, never
/// transmuted, so the in-memory layout only matters for the size assertion.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Always [`FRAME_MAGIC`].
    pub magic: u32,
    /// Always [`FRAME_VERSION`] for frames this code accepts.
    pub version: u16,
    /// What the body holds; opaque to this module.
    pub kind: u16,
    /// Length of the body in bytes, padding excluded.
    pub body_len: u32,
    /// CRC32C over the header with this field zero, then the body.
    pub crc32c: u32,
    /// Sequence number: the WAL position of the frame, or a wire counter.
    pub seq: u64,
    /// Must be zero.
    pub reserved: u64,
}

const _: () = assert!(size_of::<FrameHeader>() == FRAME_HEADER_BYTES);
const _: () = assert!(FRAME_HEADER_BYTES % FRAME_ALIGN_BYTES == 0);

/// Why bytes are not a valid frame. Operating errors: bad bytes from disk or
/// a peer, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header or the header's length asks for.
    #[error("truncated frame: {needed_bytes} bytes needed, {available_bytes} available")]
    Truncated {
        /// Bytes the frame needs.
        needed_bytes: usize,
        /// Bytes that were there.
        available_bytes: usize,
    },
    /// The first four bytes are not [`FRAME_MAGIC`].
    #[error("bad magic {found:#010x}")]
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// The body length is above [`FRAME_BODY_BYTES_MAX`] or a caller's limit.
    #[error("frame body of {body_len} bytes exceeds the limit of {limit_bytes}")]
    TooLarge {
        /// The length asked for.
        body_len: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// The checksum does not match.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A format version this code does not read.
    #[error("unsupported frame version {0}")]
    Version(u16),
    /// A reserved field or the padding is not zero.
    #[error("reserved field or padding is not zero")]
    ReservedNonZero,
    /// The output buffer does not end at a 16-byte boundary.
    #[error("frame would start at a misaligned offset {0}")]
    Misaligned(usize),
    /// The body failed rkyv's bytecheck validation.
    #[error("body failed archive validation: {0}")]
    Archive(String),
    /// The body is a well-formed archive but semantically invalid.
    #[error("body failed semantic validation: {0}")]
    Invalid(String),
}

/// Semantic checks on an archived value after bytecheck has passed (step three
/// of decoding): ranges, invariants between fields, anything bytecheck cannot
/// know.
pub trait Validate {
    /// `Err(reason)` when the value must be rejected.
    fn validate(&self) -> Result<(), String>;
}

/// Bytes a frame with a `body_len`-byte body takes, padding included.
pub const fn frame_bytes(body_len: usize) -> usize {
    FRAME_HEADER_BYTES + body_len.next_multiple_of(FRAME_ALIGN_BYTES)
}

impl FrameHeader {
    /// Serializes the header in little endian.
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut b = [0u8; FRAME_HEADER_BYTES];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.kind.to_le_bytes());
        b[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.crc32c.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }

    /// Parses a header; checks nothing.
    pub fn from_bytes(b: &[u8; FRAME_HEADER_BYTES]) -> FrameHeader {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        FrameHeader {
            magic: u32_at(0),
            version: u16_at(4),
            kind: u16_at(6),
            body_len: u32_at(8),
            crc32c: u32_at(12),
            seq: u64_at(16),
            reserved: u64_at(24),
        }
    }
}

fn checksum(header: &FrameHeader, body: &[u8]) -> u32 {
    let mut unsummed = *header;
    unsummed.crc32c = 0;
    crc32c::crc32c_append(crc32c::crc32c(&unsummed.to_bytes()), body)
}

/// Appends one frame (header, body, zero padding) to `out`, whose length must
/// be a multiple of 16 so the body lands aligned. Returns the bytes appended.
pub fn encode_frame(
    kind: u16,
    seq: u64,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, FrameError> {
    if out.len() % FRAME_ALIGN_BYTES != 0 {
        return Err(FrameError::Misaligned(out.len()));
    }
    let header = encode_frame_header(kind, seq, body)?;
    let total = frame_bytes(body.len());
    out.reserve(total);
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    out.resize(out.len() + total - FRAME_HEADER_BYTES - body.len(), 0);
    Ok(total)
}

/// The header (checksum included) of the frame [`encode_frame`] would write
/// for `body`, for writers that send the body from where it already is
/// (a vectored write) instead of copying it behind the header. The frame is
/// then this header, the body, and [`frame_bytes`]` - 32 - body.len()` zero
/// bytes of padding.
pub fn encode_frame_header(
    kind: u16,
    seq: u64,
    body: &[u8],
) -> Result<[u8; FRAME_HEADER_BYTES], FrameError> {
    let body_len = u32::try_from(body.len())
        .ok()
        .filter(|len| *len <= FRAME_BODY_BYTES_MAX)
        .ok_or(FrameError::TooLarge {
            body_len: body.len() as u64,
            limit_bytes: FRAME_BODY_BYTES_MAX.into(),
        })?;
    let mut header = FrameHeader {
        magic: FRAME_MAGIC,
        version: FRAME_VERSION,
        kind,
        body_len,
        crc32c: 0,
        seq,
        reserved: 0,
    };
    header.crc32c = checksum(&header, body);
    Ok(header.to_bytes())
}

/// Decodes the frame at the start of `bytes`: magic, length bound, checksum,
/// then version and zero reserved bytes. Returns the header, the body and the
/// bytes consumed (padding included).
pub fn decode_frame(bytes: &[u8]) -> Result<(FrameHeader, &[u8], usize), FrameError> {
    let raw: &[u8; FRAME_HEADER_BYTES] = bytes
        .get(..FRAME_HEADER_BYTES)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Truncated {
            needed_bytes: FRAME_HEADER_BYTES,
            available_bytes: bytes.len(),
        })?;
    let header = FrameHeader::from_bytes(raw);
    if header.magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic {
            found: header.magic,
        });
    }
    if header.body_len > FRAME_BODY_BYTES_MAX {
        return Err(FrameError::TooLarge {
            body_len: header.body_len.into(),
            limit_bytes: FRAME_BODY_BYTES_MAX.into(),
        });
    }
    let body_len = header.body_len as usize;
    let total = frame_bytes(body_len);
    if bytes.len() < total {
        return Err(FrameError::Truncated {
            needed_bytes: total,
            available_bytes: bytes.len(),
        });
    }
    let body = &bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + body_len];
    let computed = checksum(&header, body);
    if computed != header.crc32c {
        return Err(FrameError::Checksum {
            stored: header.crc32c,
            computed,
        });
    }
    if header.version != FRAME_VERSION {
        return Err(FrameError::Version(header.version));
    }
    let padding = &bytes[FRAME_HEADER_BYTES + body_len..total];
    if header.reserved != 0 || padding.iter().any(|b| *b != 0) {
        return Err(FrameError::ReservedNonZero);
    }
    Ok((header, body, total))
}

/// Steps two and three of decoding a body: `rkyv::access` with bytecheck,
/// then [`Validate::validate`]. The body must sit at a 16-byte aligned
/// address, as it does inside any buffer that holds whole frames at aligned
/// offsets (an `AlignedVec`, a DMA buffer).
pub fn access_body<A>(body: &[u8]) -> Result<&A, FrameError>
where
    A: Portable + Validate + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    let address = body.as_ptr() as usize;
    if address % FRAME_ALIGN_BYTES != 0 {
        return Err(FrameError::Misaligned(address));
    }
    let archived =
        rkyv::access::<A, rancor::Error>(body).map_err(|e| FrameError::Archive(e.to_string()))?;
    archived.validate().map_err(FrameError::Invalid)?;
    Ok(archived)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(rkyv::Archive, rkyv::Serialize)]
    struct Accept {
        slot: u64,
        value: Vec<u8>,
    }

    impl Validate for ArchivedAccept {
        fn validate(&self) -> Result<(), String> {
            if self.value.len() > 1024 {
                return Err("value too long".into());
            }
            Ok(())
        }
    }

    #[test]
    fn body_round_trips_through_rkyv_access_and_validate() {
        let value = Accept {
            slot: 7,
            value: vec![1, 2, 3],
        };
        let archived = rkyv::to_bytes::<rancor::Error>(&value).unwrap();
        let mut out = rkyv::util::AlignedVec::<16>::new();
        let mut frame = Vec::new();
        encode_frame(3, 9, &archived, &mut frame).unwrap();
        out.extend_from_slice(&frame);
        let (header, body, consumed) = decode_frame(&out).unwrap();
        assert_eq!((header.kind, header.seq, consumed), (3, 9, frame.len()));
        let accept = access_body::<ArchivedAccept>(body).unwrap();
        assert_eq!(accept.slot, 7);
        assert_eq!(accept.value.as_slice(), &[1, 2, 3]);
    }

    #[test]
    fn semantic_validation_rejects() {
        let value = Accept {
            slot: 1,
            value: vec![0; 2000],
        };
        let archived = rkyv::to_bytes::<rancor::Error>(&value).unwrap();
        assert!(matches!(
            access_body::<ArchivedAccept>(&archived),
            Err(FrameError::Invalid(_))
        ));
    }

    #[test]
    fn garbage_body_fails_bytecheck_not_panics() {
        let mut garbage = rkyv::util::AlignedVec::<16>::new();
        garbage.extend_from_slice(&[0xff; 48]);
        assert!(access_body::<ArchivedAccept>(&garbage).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(kind: u16, seq: u64, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            let n = encode_frame(kind, seq, &body, &mut out).unwrap();
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(n % FRAME_ALIGN_BYTES, 0);
            let header = encode_frame_header(kind, seq, &body).unwrap();
            prop_assert_eq!(&header[..], &out[..FRAME_HEADER_BYTES]);
            let (h, b, consumed) = decode_frame(&out).unwrap();
            prop_assert_eq!((h.kind, h.seq, b, consumed), (kind, seq, &body[..], n));
        }

        #[test]
        fn any_single_byte_flip_is_detected(body in proptest::collection::vec(any::<u8>(), 0..100), at: usize, bit in 0u8..8) {
            let mut out = Vec::new();
            encode_frame(1, 2, &body, &mut out).unwrap();
            let at = at % out.len();
            out[at] ^= 1 << bit;
            prop_assert!(decode_frame(&out).is_err());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame(&bytes);
        }
    }
}

//! The network frame reader (`synod_net::FrameReader`) fed an arbitrary byte
//! stream in arbitrary pieces, exactly as a socket would: never a panic,
//! never more buffered than one largest frame plus one read, and every
//! frame it returns is the very bytes of the stream at that place.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_net::FrameReader;
use synod_wal::frame::{encode_frame, frame_bytes};

/// Small, so that length fields above and below the limit both occur, and
/// above the reader's 4 KiB threshold for a frame buffer of its own.
const BODY_BYTES_MAX: u32 = 8192;
/// `READ_CHUNK_BYTES` in net/src/reader.rs.
const READ_CHUNK_BYTES: usize = 128 << 10;

fuzz_target!(|data: &[u8]| {
    let Some((&piece_seed, stream)) = data.split_first() else {
        return;
    };
    let piece_bytes = 1 + piece_seed as usize * 3;
    let mut reader = FrameReader::new(BODY_BYTES_MAX);
    let mut consumed = 0;
    for (i, piece) in stream.chunks(piece_bytes).enumerate() {
        // Both ways in: the socket path (read_space/filled) and push.
        // read_space may be shorter than the piece (the rest of a large
        // frame, or one header): fill it as often as it takes.
        if i % 2 == 0 {
            let mut rest = piece;
            while !rest.is_empty() {
                let space = reader.read_space();
                assert!(!space.is_empty());
                let n = space.len().min(rest.len());
                space[..n].copy_from_slice(&rest[..n]);
                reader.filled(n);
                rest = &rest[n..];
            }
        } else {
            reader.push(piece);
        }
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    let mut again = Vec::new();
                    encode_frame(frame.kind, frame.seq, &frame.body, &mut again).unwrap();
                    assert_eq!(&stream[consumed..consumed + again.len()], &again[..]);
                    consumed += again.len();
                }
                Ok(None) => break,
                Err(_) => return, // the connection would close here
            }
        }
        assert!(reader.buffered_bytes() < frame_bytes(BODY_BYTES_MAX as usize) + READ_CHUNK_BYTES);
    }
});

//! Peer frame bodies and WAL records as a peer or a disk could hand them
//! over: `PeerFrame::decode` (every message a peer sends), `decode_write`
//! and `decode_wal_accept` (every WAL record recovery reads), and the
//! session bounds of a snapshot, chunk by chunk. Bytes from outside get a
//! clear error: never a panic, and what decodes re-encodes to a body that
//! decodes to the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;
use synod_engine::protocol::{GroupId, NodeId};
use synod_engine::runtime::codec::{
    decode_wal_accept, decode_write, encode_message, encode_write, BatchLimits, PeerFrame,
};

const LIMITS: BatchLimits = BatchLimits {
    batch_bytes_max: 64 << 10,
    command_bytes_max: 4 << 10,
};

/// The body as the transport and the WAL hand them over: owned, aligned.
fn received(data: &[u8]) -> Bytes {
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(data);
    Bytes::from_owner(aligned)
}

fuzz_target!(|data: &[u8]| {
    let frame = received(data);
    if let Ok(decoded) = PeerFrame::decode(frame.clone(), NodeId(1), NodeId(2), LIMITS) {
        let again = received(&encode_message(decoded.group(), &decoded.envelope().msg));
        let redecoded = PeerFrame::decode(again, NodeId(1), NodeId(2), LIMITS)
            .expect("a re-encoded message decodes");
        assert_eq!(redecoded.envelope(), decoded.envelope());
    }
    if let Ok(write) = decode_write(&frame, &frame, LIMITS) {
        let again = received(&encode_write(&write));
        assert_eq!(decode_write(&again, &again, LIMITS).expect("re-encoded"), write);
    }
    let _ = decode_wal_accept(&frame, GroupId(0), LIMITS);
});

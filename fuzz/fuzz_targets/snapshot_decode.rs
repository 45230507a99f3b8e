//! Snapshots as a file or a peer could hand them over: `Snapshot::decode`
//! (checksum, bytecheck, then the fields' own sense) and `decode_chunk`
//! (one piece of a transfer) and `decode_wanted` (a receiver's ask for the
//! rest). Never a panic; what decodes re-encodes to a
//! snapshot that decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_engine::group::snapshot::{decode_chunk, decode_wanted, encode_wanted, Snapshot};

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = Snapshot::decode(data) {
        let again = snapshot.encode().expect("a decoded snapshot encodes");
        assert_eq!(Snapshot::decode(&again).expect("re-encoded"), snapshot);
    }
    let _ = decode_chunk(data);
    if let Ok((group, upto, offset)) = decode_wanted(data) {
        let again = encode_wanted(group, upto, offset);
        assert_eq!(decode_wanted(&again).expect("re-encoded"), (group, upto, offset));
    }
});

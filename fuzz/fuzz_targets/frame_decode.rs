//! Frame decoding of arbitrary bytes: checksum, then rkyv access with
//! bytecheck, then semantic validation. Must never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;
use synod_wal::frame::{access_body, decode_frame, encode_frame, Validate};

#[derive(rkyv::Archive, rkyv::Serialize)]
#[allow(dead_code)] // only ever read through its archived form
struct Batch {
    first_slot: u64,
    commands: Vec<Vec<u8>>,
}

impl Validate for ArchivedBatch {
    fn validate(&self) -> Result<(), String> {
        if self.commands.len() > 1024 {
            return Err("too many commands".into());
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    // Aligned copy, as frames sit in aligned buffers in the WAL and network.
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(data);
    if let Ok((header, body, consumed)) = decode_frame(&aligned) {
        assert!(consumed <= aligned.len());
        assert_eq!(body.len(), header.body_len as usize);
        let _ = access_body::<ArchivedBatch>(body);
        // A frame that decodes re-encodes to the same bytes.
        let mut again = Vec::new();
        encode_frame(header.kind, header.seq, body, &mut again).unwrap();
        assert_eq!(&again[..], &aligned[..consumed]);
    }
    // Bodies straight from the input, valid frame or not.
    let _ = access_body::<ArchivedBatch>(&aligned);
});

//! Recovery's scan of an arbitrary segment file image: classify every
//! image as frames + clean end, frames + torn tail, or corruption at an
//! offset. Must never panic or hang, and what it reports must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_wal::frame::decode_frame;
use synod_wal::scan::{scan_segment, SegmentEnd};
use synod_wal::Position;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, image)) = data.split_first() else {
        return;
    };
    let first = Position(u64::from(flags >> 1));
    let is_last = flags & 1 == 1;
    match scan_segment(image, first, is_last) {
        Ok(scan) => {
            let mut expected_offset = 0u64;
            for (i, frame) in scan.frames.iter().enumerate() {
                assert_eq!(frame.offset_bytes, expected_offset);
                assert_eq!(frame.position, Position(first.0 + i as u64));
                let (_, _, consumed) = decode_frame(&image[frame.offset_bytes as usize..]).unwrap();
                expected_offset += consumed as u64;
            }
            assert_eq!(scan.data_end_bytes, expected_offset);
            if let SegmentEnd::Torn { offset_bytes, .. } = scan.end {
                assert!(is_last);
                assert_eq!(offset_bytes, scan.data_end_bytes);
            }
        }
        Err(corruption) => assert!(corruption.offset_bytes <= image.len() as u64),
    }
});

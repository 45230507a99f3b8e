//! Recovery of damaged directories: torn tails at every byte offset,
//! corruption, gaps, and directories that are not a WAL.

mod common;

use std::path::{Path, PathBuf};

use common::{body, frames_of, run, small_config};
use synod_wal::frame::encode_frame;
use synod_wal::layout::{meta_contents, segment_file_name, META_FILE_NAME};
use synod_wal::{Position, Wal, WalError};

/// Writes a WAL directory by hand: meta file and one segment image.
fn write_dir(dir: &Path, image: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(META_FILE_NAME), meta_contents()).unwrap();
    let segment = dir.join(segment_file_name(Position(0)));
    std::fs::write(&segment, image).unwrap();
    segment
}

/// Frames 0..n with varied sizes; returns the image and each frame's range.
fn image_of(n: u64) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
    let mut image = Vec::new();
    let mut ranges = Vec::new();
    for i in 0..n {
        let start = image.len();
        encode_frame(1, i, &body(i, (i as usize * 13) % 70), &mut image).unwrap();
        ranges.push(start..image.len());
    }
    (image, ranges)
}

#[test]
fn truncation_at_every_byte_of_the_last_frames_is_a_torn_tail() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let (image, ranges) = image_of(12);
        let tail_start = ranges[ranges.len() - 3].start;
        for cut in tail_start..=image.len() {
            let dir = root.path().join(format!("cut{cut}"));
            write_dir(&dir, &image[..cut]);
            let (wal, report) = Wal::open(&dir, small_config()).await.unwrap();
            let whole = ranges.iter().filter(|r| r.end <= cut).count();
            assert_eq!(report.frames, whole as u64, "cut at {cut}");
            let at_boundary = ranges.iter().any(|r| r.end == cut) || cut == 0;
            assert_eq!(
                report.torn.is_some(),
                !at_boundary,
                "cut at {cut}: {report:?}"
            );
            assert_eq!(frames_of(&wal).await.len(), whole);
            // The tail is usable: a new frame lands where the torn one was.
            assert_eq!(wal.append(9, b"after").unwrap(), Position(whole as u64));
            wal.sync().await.unwrap();
            drop(wal);
            let (_, again) = Wal::open(&dir, small_config()).await.unwrap();
            assert_eq!(
                (again.frames, again.torn),
                (whole as u64 + 1, None),
                "cut at {cut}"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    });
}

#[test]
fn corruption_at_every_byte_of_the_last_frames() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let (image, ranges) = image_of(12);
        let last = ranges.len() - 1;
        for at in ranges[last - 2].start..image.len() {
            let dir = root.path().join(format!("flip{at}"));
            let mut damaged = image.clone();
            damaged[at] ^= 0x5a;
            let segment = write_dir(&dir, &damaged);
            let frame = ranges.iter().position(|r| r.contains(&at)).unwrap();
            match Wal::open(&dir, small_config()).await {
                // The last frame has nothing after it: indistinguishable
                // from a torn write, so it is cut and reported.
                Ok((_, report)) => {
                    assert_eq!(frame, last, "byte {at} accepted");
                    assert_eq!(report.frames, last as u64);
                    let torn = report.torn.expect("torn reported");
                    assert_eq!(torn.offset_bytes, ranges[last].start as u64);
                }
                // Valid frames follow: acknowledged data may be behind it.
                Err(WalError::Corrupt {
                    path, offset_bytes, ..
                }) => {
                    assert!(frame < last, "byte {at}");
                    assert_eq!(
                        (path, offset_bytes),
                        (segment.clone(), ranges[frame].start as u64)
                    );
                }
                Err(e) => panic!("byte {at}: {e}"),
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    });
}

#[test]
fn corrupt_middle_frame_refuses_to_open_naming_file_and_offset() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for i in 0..80u64 {
            wal.append(1, &body(i, 2500)).unwrap();
        }
        wal.sync().await.unwrap();
        drop(wal);
        let segments = synod_wal::layout::list_segments(dir.path()).unwrap();
        assert!(segments.len() >= 3);
        // A frame in the middle of the first (not last) segment.
        let (_, first_segment) = &segments[0];
        let mut bytes = std::fs::read(first_segment).unwrap();
        let frame_bytes = synod_wal::frame::frame_bytes(2500);
        bytes[3 * frame_bytes + 100] ^= 1;
        std::fs::write(first_segment, &bytes).unwrap();
        match Wal::open(dir.path(), small_config()).await {
            Err(WalError::Corrupt {
                path, offset_bytes, ..
            }) => {
                assert_eq!(
                    (&path, offset_bytes),
                    (first_segment, 3 * frame_bytes as u64)
                );
                let message = WalError::Corrupt {
                    path,
                    offset_bytes,
                    reason: String::new(),
                }
                .to_string();
                assert!(
                    message.contains(&segment_file_name(Position(0)))
                        && message.contains(&format!("offset {}", 3 * frame_bytes)),
                    "{message}"
                );
            }
            other => panic!("expected corruption, got {:?}", other.map(|(_, r)| r)),
        }
        let report = synod_wal::inspect::inspect_dir(dir.path()).unwrap();
        assert!(matches!(report.error, Some(WalError::Corrupt { .. })));
    });
}

#[test]
fn corrupt_middle_frame_of_the_last_segment_is_refused() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let (mut image, ranges) = image_of(12);
        image[ranges[5].start + 3] ^= 0xff;
        write_dir(root.path(), &image);
        let err = Wal::open(root.path(), small_config())
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(err, WalError::Corrupt { offset_bytes, .. } if offset_bytes == ranges[5].start as u64),
            "{err}"
        );
    });
}

#[test]
fn missing_segment_is_a_gap() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), small_config()).await.unwrap();
        for i in 0..80u64 {
            wal.append(1, &body(i, 2500)).unwrap();
        }
        wal.sync().await.unwrap();
        drop(wal);
        let segments = synod_wal::layout::list_segments(dir.path()).unwrap();
        std::fs::remove_file(&segments[1].1).unwrap();
        let err = Wal::open(dir.path(), small_config())
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, WalError::Gap { .. }), "{err}");
    });
}

#[test]
fn a_directory_that_is_not_a_wal_is_refused() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_file_name(Position(0))), b"junk").unwrap();
        let err = Wal::open(dir.path(), small_config())
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, WalError::NotAWal { .. }), "{err}");
        let other = tempfile::tempdir().unwrap();
        std::fs::write(
            other.path().join(META_FILE_NAME),
            b"something else entirely",
        )
        .unwrap();
        assert!(matches!(
            synod_wal::inspect::inspect_dir(other.path()),
            Err(WalError::NotAWal { .. })
        ));
        assert!(matches!(
            synod_wal::inspect::inspect_dir(&other.path().join("absent")),
            Err(WalError::NotAWal { .. })
        ));
    });
}

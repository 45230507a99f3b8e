//! Offline reading of a WAL directory with plain blocking std I/O, for
//! `synod wal inspect` and `synod wal verify`. It runs the same
//! [`scan_segment`] as recovery, and never writes.

use std::path::{Path, PathBuf};

use crate::layout;
use crate::scan::{scan_segment, FrameMeta, SegmentEnd};
use crate::{Position, WalError};

/// One segment as found on disk.
#[derive(Debug)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// Its first position, from its name.
    pub first: Position,
    /// Its valid frames.
    pub frames: Vec<FrameMeta>,
    /// How its frames end.
    pub end: SegmentEnd,
}

/// The segments of a directory, up to the first problem.
#[derive(Debug)]
pub struct DirReport {
    /// Segments that scanned cleanly (the last may have a torn tail).
    pub segments: Vec<SegmentReport>,
    /// The first problem, if any: recovery would refuse to open.
    pub error: Option<WalError>,
}

/// Scans `dir`. `Err` only if it is not a WAL directory at all; damage is
/// reported in [`DirReport::error`] after the segments that precede it.
pub fn inspect_dir(dir: &Path) -> Result<DirReport, WalError> {
    if !dir.is_dir() {
        return Err(WalError::NotAWal {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    layout::check_meta(dir)?;
    let listed = layout::list_segments(dir)?;
    let mut report = DirReport {
        segments: Vec::new(),
        error: None,
    };
    let mut expected: Option<Position> = None;
    for (i, (first, path)) in listed.iter().enumerate() {
        match scan_one(path, *first, i + 1 == listed.len(), expected) {
            Ok(segment) => {
                expected = Some(Position(first.0 + segment.frames.len() as u64));
                report.segments.push(segment);
            }
            Err(e) => {
                report.error = Some(e);
                break;
            }
        }
    }
    Ok(report)
}

fn scan_one(
    path: &Path,
    first: Position,
    is_last: bool,
    expected: Option<Position>,
) -> Result<SegmentReport, WalError> {
    if let Some(expected) = expected.filter(|e| *e != first) {
        return Err(WalError::Gap {
            path: path.to_path_buf(),
            found: first,
            expected,
        });
    }
    let image = std::fs::read(path).map_err(|source| WalError::Io {
        path: path.to_path_buf(),
        op: "reading a segment",
        source,
    })?;
    let scan = scan_segment(&image, first, is_last).map_err(|c| WalError::Corrupt {
        path: path.to_path_buf(),
        offset_bytes: c.offset_bytes,
        reason: c.reason,
    })?;
    Ok(SegmentReport {
        path: path.to_path_buf(),
        first,
        frames: scan.frames,
        end: scan.end,
    })
}

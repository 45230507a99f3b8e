//! Names and the identity file of a WAL directory.

use std::path::{Path, PathBuf};

use crate::{Position, WalError, BLOCK_BYTES};

/// The file that marks a directory as a synod WAL.
pub const META_FILE_NAME: &str = "wal.meta";
/// What `wal.meta` starts with.
pub const META_MAGIC: &[u8; 8] = b"SYNODWAL";
/// Directory format version, after the magic (u32 little endian).
pub const LAYOUT_VERSION: u32 = 1;
const SEGMENT_SUFFIX: &str = ".wal";

/// The file name of the segment whose first frame is at `first`.
pub fn segment_file_name(first: Position) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first.0)
}

/// The first position encoded in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<Position> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Position)
}

/// The contents of `wal.meta`: one block, so that it is also a file glommio
/// can read with O_DIRECT (see `storage`).
pub fn meta_contents() -> Vec<u8> {
    let mut meta = vec![0u8; BLOCK_BYTES];
    meta[..8].copy_from_slice(META_MAGIC);
    meta[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
    meta
}

/// Checks `wal.meta` in `dir`.
pub fn check_meta(dir: &Path) -> Result<(), WalError> {
    let not_a_wal = |reason: String| WalError::NotAWal {
        path: dir.to_path_buf(),
        reason,
    };
    let meta = std::fs::read(dir.join(META_FILE_NAME))
        .map_err(|e| not_a_wal(format!("cannot read {META_FILE_NAME}: {e}")))?;
    if meta.len() < 12 || &meta[..8] != META_MAGIC {
        return Err(not_a_wal(format!(
            "{META_FILE_NAME} does not start with the WAL magic"
        )));
    }
    let version = u32::from_le_bytes([meta[8], meta[9], meta[10], meta[11]]);
    if version != LAYOUT_VERSION {
        return Err(not_a_wal(format!(
            "layout version {version}, this build reads {LAYOUT_VERSION}"
        )));
    }
    Ok(())
}

/// The segment files of `dir`, oldest first. Other files are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<(Position, PathBuf)>, WalError> {
    let io = |source| WalError::Io {
        path: dir.to_path_buf(),
        op: "listing the directory",
        source,
    };
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = segment_file_name(Position(42));
        assert_eq!(name, "00000000000000000042.wal");
        assert_eq!(parse_segment_file_name(&name), Some(Position(42)));
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.wal"), None);
    }
}

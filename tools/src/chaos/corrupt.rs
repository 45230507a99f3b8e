//! Damage to a stopped node's WAL, found with the same scan recovery runs.
//!
//! - A torn tail: nonzero garbage right after the last valid frame of the
//!   newest segment, as a write cut short leaves it. Recovery must cut it
//!   off and the node must come back.
//! - A bit flip inside a frame that valid frames follow: data after it may
//!   have been acknowledged, so recovery must refuse, naming file and
//!   offset, and the node must not start.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rand::Rng;
use synod_wal::frame::FRAME_HEADER_BYTES;
use synod_wal::inspect::inspect_dir;

/// Where damage was done.
#[derive(Clone, Debug)]
pub struct Damage {
    /// The segment file.
    pub path: PathBuf,
    /// The byte offset.
    pub offset_bytes: u64,
}

/// The newest segment and the end of its valid frames.
fn tail(wal_dir: &Path) -> Result<(PathBuf, Vec<synod_wal::scan::FrameMeta>), String> {
    let report = inspect_dir(wal_dir).map_err(|e| e.to_string())?;
    if let Some(error) = report.error {
        return Err(format!("already damaged: {error}"));
    }
    let segment = report.segments.last().ok_or("no segment")?;
    Ok((segment.path.clone(), segment.frames.clone()))
}

/// Writes 1 to 200 random nonzero bytes after the last valid frame.
pub fn tear_tail(wal_dir: &Path, rng: &mut impl Rng) -> Result<Damage, String> {
    let (path, frames) = tail(wal_dir)?;
    let last = frames.last().ok_or("an empty segment")?;
    let end = padded_end(last);
    let garbage: Vec<u8> = (0..rng.random_range(1..=200))
        .map(|_| rng.random_range(1..=255u8))
        .collect();
    write_at(&path, end, &garbage)?;
    Ok(Damage {
        path,
        offset_bytes: end,
    })
}

/// Flips one bit in the body (or header) of a frame that is not the last.
pub fn flip_bit(wal_dir: &Path, rng: &mut impl Rng) -> Result<Damage, String> {
    let (path, frames) = tail(wal_dir)?;
    if frames.len() < 2 {
        return Err("fewer than two frames in the newest segment".into());
    }
    let frame = frames[rng.random_range(0..frames.len() - 1)];
    let length = FRAME_HEADER_BYTES as u64 + u64::from(frame.body_len);
    let offset = frame.offset_bytes + rng.random_range(0..length);
    let mut image = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    image[offset as usize] ^= 1 << rng.random_range(0..8);
    write_at(&path, offset, &image[offset as usize..=offset as usize])?;
    Ok(Damage {
        path,
        offset_bytes: offset,
    })
}

fn padded_end(frame: &synod_wal::scan::FrameMeta) -> u64 {
    let length = FRAME_HEADER_BYTES as u64 + u64::from(frame.body_len);
    frame.offset_bytes + length.div_ceil(16) * 16
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> Result<(), String> {
    let error = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = fs::File::options().write(true).open(path).map_err(error)?;
    file.seek(SeekFrom::Start(offset)).map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)
}

/// Copies a directory tree (a node's data, to put back after a refusal).
pub fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(|e| format!("{}: {e}", target.display()))?;
        }
    }
    Ok(())
}

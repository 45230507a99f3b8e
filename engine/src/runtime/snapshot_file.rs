//! A group's snapshot file: written durably beside its WAL, read at start.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::group::snapshot::SnapshotError;

/// Pieces a paced write is issued in, so it never runs ahead of its rate
/// by more than one.
const WRITE_PIECE_BYTES: usize = 256 << 10;

/// Where a group keeps its snapshot: beside its WAL directory.
pub fn snapshot_path(wal_dir: &Path) -> PathBuf {
    let mut name = wal_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".snapshot");
    wal_dir.with_file_name(name)
}

/// Writes `encoded` to `path` durably: a temporary file (written at no
/// more than `bytes_per_sec`, if given), fsync, rename over the old
/// snapshot, fsync of the directory. A crash leaves the old snapshot or the
/// new one, never half of one. Blocking: run it off the executor.
pub fn save(path: &Path, encoded: &[u8], bytes_per_sec: Option<u64>) -> Result<(), SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("snapshot.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    let started = std::time::Instant::now();
    let mut written = 0;
    for piece in encoded.chunks(WRITE_PIECE_BYTES) {
        file.write_all(piece).map_err(io)?;
        written += piece.len();
        if let Some(rate) = bytes_per_sec {
            let due = std::time::Duration::from_secs_f64(written as f64 / rate as f64);
            if let Some(early) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(early);
            }
        }
    }
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    sync_parent_dir(path).map_err(io)
}

/// fsyncs the directory holding `path`, so that a file created, renamed or
/// removed there stays so across a crash. Blocking.
pub fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the snapshot file at `path`; `None` if there is none. Its bytes
/// are checked when the group's core decodes them.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, SnapshotError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SnapshotError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::snapshot::tests::sample;
    use crate::group::snapshot::Snapshot;

    #[test]
    fn a_paced_save_takes_at_least_its_bytes_over_its_rate_and_loads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(&dir.path().join("group-0"));
        let encoded = sample().encode().unwrap();
        let rate = 4 << 20;
        let started = std::time::Instant::now();
        save(&path, &encoded, Some(rate)).unwrap();
        // A lower bound only: sleeping guarantees it on any machine.
        let least = std::time::Duration::from_secs_f64(encoded.len() as f64 / rate as f64);
        assert!(
            started.elapsed() >= least,
            "{:?} < {least:?}",
            started.elapsed()
        );
        assert_eq!(read(&path).unwrap().unwrap(), encoded);
    }

    #[test]
    fn snapshots_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(&dir.path().join("group-0"));
        assert_eq!(path, dir.path().join("group-0.snapshot"));
        assert!(read(&path).unwrap().is_none(), "no file, no snapshot");
        let snapshot = sample();
        let encoded = snapshot.encode().unwrap();
        save(&path, &encoded, None).unwrap();
        let bytes = read(&path).unwrap().unwrap();
        assert_eq!(Snapshot::decode(&bytes).unwrap(), snapshot);
        assert_eq!(bytes, encoded);
    }
}

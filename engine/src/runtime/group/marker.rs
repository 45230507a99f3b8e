//! The rebuild marker: a file in the group's WAL directory, present while
//! the replica rebuilds from its peers.

use std::path::Path;

use super::GroupError;
use crate::runtime::snapshot_file;

fn marker_error(path: &Path) -> impl Fn(std::io::Error) -> GroupError + '_ {
    move |source| GroupError::Marker {
        path: path.to_owned(),
        source,
    }
}

/// Writes the rebuild marker durably.
pub(super) fn write_marker(path: &Path) -> Result<(), GroupError> {
    let file = std::fs::File::create(path).map_err(marker_error(path))?;
    file.sync_all().map_err(marker_error(path))?;
    snapshot_file::sync_parent_dir(path).map_err(marker_error(path))
}

/// Removes the rebuild marker durably.
pub(super) fn remove_marker(path: &Path) -> Result<(), GroupError> {
    std::fs::remove_file(path).map_err(marker_error(path))?;
    snapshot_file::sync_parent_dir(path).map_err(marker_error(path))
}

//! A node's data directory: claimed for one cluster and node on first
//! start, refused to any other, and locked while a node runs on it.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::options::NodeOptions;

/// The file in a node's data directory that names its cluster and node.
pub const IDENTITY_FILE: &str = "synod-node";

/// A data directory refused: which, and what is wrong with it.
#[derive(Debug, Error)]
#[error("data directory {}: {source}", path.display())]
pub struct DataDirError {
    /// The directory.
    pub path: PathBuf,
    /// What is wrong with it.
    pub source: DataDirProblem,
}

/// What is wrong with a data directory.
#[derive(Debug, Error)]
pub enum DataDirProblem {
    /// The path could not be made absolute (glommio opens directories by
    /// absolute path only).
    #[error("cannot make the path absolute: {0}")]
    Absolute(#[source] io::Error),
    /// Its identity file names another cluster or node.
    #[error("holds `{found}`, not `{expected}`")]
    Foreign {
        /// The identity found.
        found: String,
        /// This node's.
        expected: String,
    },
    /// It holds files but no identity file.
    #[error("not empty and has no {IDENTITY_FILE} file: not a synod data directory")]
    NotSynod,
    /// Another process holds its lock.
    #[error("in use by another running node")]
    InUse,
    /// Reading, writing, opening or locking it failed.
    #[error("{operation}: {source}")]
    Io {
        /// What was being done.
        operation: DataDirOperation,
        /// Why it failed.
        source: io::Error,
    },
}

/// What was being done to a data directory when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirOperation {
    /// Reading its identity file.
    ReadIdentity,
    /// Listing it (is it empty?).
    List,
    /// Creating it.
    Create,
    /// Writing its identity file.
    WriteIdentity,
    /// Opening its identity file to lock it.
    OpenIdentity,
    /// Locking its identity file.
    Lock,
}

impl std::fmt::Display for DataDirOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            DataDirOperation::ReadIdentity => "reading",
            DataDirOperation::List => "listing",
            DataDirOperation::Create => "creating",
            DataDirOperation::WriteIdentity => "writing",
            DataDirOperation::OpenIdentity => "opening",
            DataDirOperation::Lock => "locking",
        };
        match self {
            DataDirOperation::List | DataDirOperation::Create => write!(f, "{what} it"),
            _ => write!(f, "{what} {IDENTITY_FILE}"),
        }
    }
}

/// Claims `data_dir` for this cluster and node, or refuses a directory that
/// belongs to another (its WALs would be another cluster's promises).
pub fn claim_data_dir(options: &NodeOptions) -> Result<(), DataDirError> {
    let dir = &options.data_dir;
    let path = dir.join(IDENTITY_FILE);
    let identity = format!("cluster {} node {}\n", options.cluster_id, options.id.0);
    let refuse = |source: DataDirProblem| DataDirError {
        path: dir.clone(),
        source,
    };
    let failed = |operation| move |source| refuse(DataDirProblem::Io { operation, source });
    match std::fs::read_to_string(&path) {
        Ok(found) if found == identity => Ok(()),
        Ok(found) => Err(refuse(DataDirProblem::Foreign {
            found: found.trim().to_string(),
            expected: identity.trim().to_string(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if has_entries(dir).map_err(failed(DataDirOperation::List))? {
                return Err(refuse(DataDirProblem::NotSynod));
            }
            create_dir_durably(dir, 0o777).map_err(failed(DataDirOperation::Create))?;
            write_durably(&path, identity.as_bytes())
                .map_err(failed(DataDirOperation::WriteIdentity))
        }
        Err(e) => Err(failed(DataDirOperation::ReadIdentity)(e)),
    }
}

/// Creates `dir` and its missing parents with `mode` (less the umask),
/// each made durable in the directory that holds it. Another process
/// creating the same directories at the same moment is no error: one that
/// appears meanwhile is taken as it is (and its entry synced as well, since
/// its creator may not have got that far yet).
pub fn create_dir_durably(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    let create = || match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        created => created,
    };
    match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
                return Err(e);
            };
            create_dir_durably(parent, mode)?;
            create()?;
        }
        created => created?,
    }
    sync_parent(dir)
}

/// Writes `path` whole or not at all, across a power cut: a temporary
/// file, fsync, rename, fsync of the directory. (A plain write could leave
/// an empty identity file, which the next start refuses as another node's.)
fn write_durably(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    io::Write::write_all(&mut file, contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(parent.unwrap_or(Path::new(".")))?.sync_all()
}

/// Whether `dir` holds anything; a directory not there yet holds nothing.
fn has_entries(dir: &Path) -> io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Locks a claimed data directory for this process (an exclusive lock on
/// its identity file, released when the returned file is dropped or the
/// process dies), so a second node started on it is refused instead of
/// writing the same WALs.
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, DataDirError> {
    let refuse = |source: DataDirProblem| DataDirError {
        path: dir.to_path_buf(),
        source,
    };
    let failed = |operation| move |source| refuse(DataDirProblem::Io { operation, source });
    let file = std::fs::File::open(dir.join(IDENTITY_FILE))
        .map_err(failed(DataDirOperation::OpenIdentity))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(refuse(DataDirProblem::InUse)),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(DataDirOperation::Lock)(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::protocol::NodeId;

    fn options(dir: &Path, cluster_id: u64, id: u64) -> NodeOptions {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let peers = vec![(NodeId(id), addr)];
        NodeOptions {
            cluster_id,
            ..NodeOptions::new(NodeId(id), addr, peers, dir.to_path_buf())
        }
    }

    #[test]
    fn a_new_data_directory_is_created_with_its_parents_and_a_whole_identity() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a").join("b").join("data");
        claim_data_dir(&options(&data, 7, 3)).unwrap();
        let identity = std::fs::read_to_string(data.join(IDENTITY_FILE)).unwrap();
        assert_eq!(identity, "cluster 7 node 3\n");
        let names: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [IDENTITY_FILE], "no temporary file left");
    }

    /// Nodes started together under a parent not there yet create it at
    /// the same moment: every one of them succeeds.
    #[test]
    fn creating_the_same_nested_directories_at_once_succeeds_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let shared = dir.path().join(format!("r{round}")).join("a").join("b");
            let barrier = std::sync::Barrier::new(6);
            std::thread::scope(|scope| {
                let creators: Vec<_> = (0..6)
                    .map(|i| {
                        let (shared, barrier) = (&shared, &barrier);
                        scope.spawn(move || {
                            // Half create the shared directory, half one of
                            // their own below it.
                            let mine = if i % 2 == 0 {
                                shared.clone()
                            } else {
                                shared.join(i.to_string())
                            };
                            barrier.wait();
                            create_dir_durably(&mine, 0o777).map(|()| mine)
                        })
                    })
                    .collect();
                for creator in creators {
                    let created = creator.join().unwrap().expect("created or found");
                    assert!(created.is_dir(), "{}", created.display());
                }
            });
        }
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let error = create_dir_durably(&file, 0o777).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{error}");
    }

    #[test]
    fn a_data_directory_of_another_cluster_or_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        claim_data_dir(&options(&data, 7, 1)).unwrap();
        claim_data_dir(&options(&data, 7, 1)).expect("the same node comes back");
        let other_cluster = claim_data_dir(&options(&data, 8, 1))
            .unwrap_err()
            .to_string();
        assert!(
            other_cluster.contains("cluster 7 node 1"),
            "{other_cluster}"
        );
        assert!(
            claim_data_dir(&options(&data, 7, 2)).is_err(),
            "another node's directory"
        );
        let held = lock_data_dir(&data).expect("the first node locks it");
        let second = lock_data_dir(&data).unwrap_err();
        assert!(matches!(second.source, DataDirProblem::InUse), "{second}");
        assert!(second.to_string().contains("in use"), "{second}");
        drop(held);
        lock_data_dir(&data).expect("free again once the first lets go");
        let stranger = dir.path().join("stranger");
        std::fs::create_dir_all(&stranger).unwrap();
        std::fs::write(stranger.join("something"), b"x").unwrap();
        let refused = claim_data_dir(&options(&stranger, 7, 1))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("not a synod data directory"), "{refused}");
    }

    #[test]
    fn a_failed_operation_keeps_its_cause_and_names_what_it_was_doing() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be: listing it fails.
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let error = lock_data_dir(&file).unwrap_err();
        let DataDirError {
            path,
            source: DataDirProblem::Io { operation, source },
        } = &error
        else {
            panic!("{error:?}")
        };
        assert_eq!((path, *operation), (&file, DataDirOperation::OpenIdentity));
        assert!(std::error::Error::source(&error).is_some());
        assert!(error.to_string().contains(&source.to_string()), "{error}");
        assert!(error.to_string().contains("opening synod-node"), "{error}");
    }
}

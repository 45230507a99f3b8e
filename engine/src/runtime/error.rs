//! Why a node could not start, or stopped: each cause kept, with what was
//! being done and to what, so that a caller can tell them apart and a log
//! line names them.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use synod_net::TransportError;
use thiserror::Error;

use super::data_dir::IDENTITY_FILE;
use super::group::GroupError;
use super::options::{CORES_MAX, GROUPS_MAX};
use crate::protocol::NodeId;

/// Why a node stopped, or never started.
#[derive(Debug, Error)]
pub enum NodeError {
    /// A group could not start or stopped on a fatal error.
    #[error("group {group}: {source}")]
    Group {
        /// The group.
        group: u32,
        /// Why.
        source: GroupError,
    },
    /// A core's peer transport could not start.
    #[error("network: core {core}'s peer port: {source}")]
    Transport {
        /// The core.
        core: u32,
        /// Why.
        source: TransportError,
    },
    /// The client port could not be claimed for this process (another
    /// process holds it), or one core could not bind its share of it.
    #[error("network: client port {addr}: {source}")]
    ClientPort {
        /// The port's address.
        addr: SocketAddr,
        /// Why.
        source: ClientPortError,
    },
    /// The metrics endpoint could not be bound.
    #[error("network: metrics on {addr}: {source}")]
    Metrics {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// An executor could not start, or a core ended unexpectedly.
    #[error("executor: {0}")]
    Executor(#[from] ExecutorError),
    /// The data directory belongs to another cluster or node, or is unusable.
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        source: DataDirError,
    },
    /// The options contradict each other.
    #[error("configuration: {0}")]
    Config(#[from] OptionsError),
}

/// Why the client port could not be opened.
#[derive(Debug, Error)]
pub enum ClientPortError {
    /// Claiming it for this process's cores failed: another process holds
    /// it, or the claim could not be made.
    #[error("{0}")]
    Claim(#[source] io::Error),
    /// One core could not bind its share of it.
    #[error("core {core}: {source}")]
    Bind {
        /// The core.
        core: u32,
        /// Why.
        source: TransportError,
    },
}

/// Why an executor (a core) failed.
#[derive(Debug, Error)]
pub enum ExecutorError {
    /// The executor's thread could not be started.
    #[error("core {core}: {source}")]
    Spawn {
        /// The core.
        core: u32,
        /// Why.
        source: glommio::GlommioError<()>,
    },
    /// Code outside any group's task panicked (the state machine's
    /// constructor, say): the core's tasks are leaked, the node stops.
    #[error("core {core} panicked: {message}")]
    Panicked {
        /// The core.
        core: u32,
        /// What the panic said.
        message: String,
    },
    /// A core stopped before all of them were ready, without an error.
    #[error("core {core} stopped while starting")]
    StoppedWhileStarting {
        /// The core.
        core: u32,
    },
    /// Every core's thread is gone without reporting how it ended.
    #[error("every core vanished")]
    Vanished,
    /// A core reported it was ready after the node had started.
    #[error("a core started twice")]
    StartedTwice,
}

/// What is wrong with a data directory.
#[derive(Debug, Error)]
pub enum DataDirError {
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

/// Options that contradict each other or exceed a limit.
#[derive(Debug, Error)]
pub enum OptionsError {
    /// Too few or too many groups.
    #[error("groups must be 1 to {GROUPS_MAX} (not {groups})")]
    Groups {
        /// The groups asked for.
        groups: u32,
    },
    /// Too few or too many cores, or more cores than groups.
    #[error("cores must be 1 to {CORES_MAX} and at most groups ({groups}), not {cores}")]
    Cores {
        /// The cores asked for.
        cores: u32,
        /// The groups asked for.
        groups: u32,
    },
    /// Paced snapshot writes without a floor would never finish.
    #[error("snapshot_write_floor must be positive while snapshot_write_pace is")]
    SnapshotWriteFloor,
    /// A peer's port is too high for every core to have its own above it.
    #[error(
        "peer {} at {addr}: {cores} cores need ports {}..={}",
        peer.0,
        addr.port(),
        u32::from(addr.port()) + cores - 1
    )]
    PeerPorts {
        /// The peer.
        peer: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// The cores each node runs.
        cores: u32,
    },
}

//! Why a node could not start, or stopped: each cause kept, with what was
//! being done and to what, so that a caller can tell them apart and a log
//! line names them.

use std::io;
use std::net::SocketAddr;

use synod_net::TransportError;
use thiserror::Error;

use super::data_dir::DataDirError;
use super::group::GroupError;
use super::options::OptionsError;

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
    #[error(transparent)]
    DataDir(#[from] DataDirError),
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

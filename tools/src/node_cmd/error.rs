//! Why `synod node`'s settings were refused: each names the flag or field,
//! and keeps the cause (the file's I/O error, the TOML parser's, the
//! address parser's).

use std::path::PathBuf;

use synod_engine::runtime::node::OptionsError;
use thiserror::Error;

/// Settings that cannot start a node.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// The `--config` file could not be read.
    #[error("--config {}: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML of the known fields.
    #[error("--config {}: {source}", path.display())]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// The config file's `peers` table does not parse.
    #[error("config field `peers`: {0}")]
    FilePeers(#[source] PeersError),
    /// An address setting (flag or config file) that does not parse or
    /// resolve.
    #[error("{name}: {source}")]
    Address {
        /// The setting's name in the config file.
        name: &'static str,
        /// Why.
        source: crate::address::AddressError,
    },
    /// This node's own peers entry is a name that does not resolve yet,
    /// and `listen` is written otherwise: nothing shows they are the same.
    #[error(
        "listen {listen}: this node's entry in peers, {listed}, does not resolve yet and is \
         written otherwise; give both the same HOST:PORT, or listen on 0.0.0.0:PORT"
    )]
    ListedNameUnresolved {
        /// `listen` as given.
        listen: String,
        /// This node's entry in the peers.
        listed: synod_engine::runtime::node::PeerAddr,
    },
    /// A required setting is neither a flag nor in the config file.
    #[error("missing `{name}`: give --{} or set `{name}` in --config", name.replace('_', "-"))]
    Missing {
        /// The setting's name in the config file.
        name: &'static str,
    },
    /// `--join`: the cluster did not say who its members are.
    #[error("--join: group {group}: {reason}")]
    Join {
        /// The group asked about.
        group: u32,
        /// Why.
        reason: String,
    },
    /// This node's id is not one of the peers.
    #[error("id {id} is not listed in peers")]
    NotAPeer {
        /// The id.
        id: u64,
    },
    /// A tick of no time.
    #[error("tick_ms must be positive")]
    ZeroTick,
    /// The secret file cannot be used.
    #[error(transparent)]
    Secret(#[from] crate::secret_cmd::SecretFileError),
    /// No secret, and running without one was not asked for.
    #[error("no --secret-file given; pass --insecure to run without one")]
    NoSecret,
    /// The options contradict each other (the engine's own check).
    #[error("configuration: {0}")]
    Options(#[from] OptionsError),
}

/// Why a `--peers` list (or the config file's `peers`) does not parse.
#[derive(Debug, Error)]
pub enum PeersError {
    /// An item without `=`.
    #[error("`{0}` is not ID=HOST:PORT")]
    NotIdAndAddress(String),
    /// An id that is not a number.
    #[error("`{0}` is not a node id")]
    NotAnId(String),
    /// Node id 0.
    #[error("node id 0 is reserved")]
    ReservedId,
    /// An address that does not parse.
    #[error("a peer's address: {0}")]
    NotAnAddress(#[source] crate::address::AddressError),
    /// Nothing listed.
    #[error("no peers")]
    Empty,
}

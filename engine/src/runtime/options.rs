//! What a node is started with, the limits it checks them against, and how
//! its groups are laid out over its cores and ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use synod_net::PeerAddr;
use thiserror::Error;

use super::codec::BatchLimits;
use super::snapshot::SnapshotPolicy;
use crate::protocol::{Config, GroupId, NodeId};

/// The secret used by `--insecure` nodes: public, so it proves nothing.
pub const INSECURE_SECRET: &[u8] = b"synod insecure mode: no secret at all";

/// Groups a node may host at most.
pub const GROUPS_MAX: u32 = 1024;
/// Executors (cores) a node may run at most.
pub const CORES_MAX: u32 = 64;

/// Command bytes one slot of a node's group holds (`Config::batch_bytes_max`):
/// a request's commands share one slot, so this bounds a client batch too.
pub const BATCH_BYTES_MAX: u32 = 256 << 10;

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// This node.
    pub id: NodeId,
    /// Where peers connect.
    pub listen: SocketAddr,
    /// Every member with its peer address, this node included. A host
    /// name is resolved each time a peer is dialed, not at start.
    pub peers: Vec<(NodeId, PeerAddr)>,
    /// Holds one WAL directory per group.
    pub data_dir: PathBuf,
    /// Groups (shards of the log) this node hosts.
    pub groups: u32,
    /// Executors, one per core; group g runs on core g mod cores.
    pub cores: u32,
    /// Pin core i's executor to CPU i (off: a local cluster shares CPUs).
    pub pin: bool,
    /// The shared cluster secret; `None` runs insecure.
    pub secret: Option<Vec<u8>>,
    /// Peers of another cluster id are refused.
    pub cluster_id: u64,
    /// Wall-clock length of a protocol tick.
    pub tick: Duration,
    /// glommio's registered I/O memory (counts against memlock).
    pub io_memory_bytes: usize,
    /// When each group snapshots and compacts.
    pub snapshot: SnapshotPolicy,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Whether the WALs fdatasync before a write counts as durable. Off is
    /// unsafe (see [`synod_wal::WalConfig::fsync`]): for measuring what
    /// fsync costs, never for data anyone needs.
    pub fsync: bool,
    /// This node lost its disk: each group without any state rebuilds from
    /// the peers before it votes again (`protocol::Replica::rejoining`). A
    /// node whose disk is intact ignores it. Starting a node whose disk was
    /// lost *without* it is unsafe: it may overwrite chosen commands.
    pub rejoin: bool,
    /// Bytes of recently applied commands each group keeps for
    /// subscriptions from an index already applied
    /// ([`NodeHandle::subscribe`](super::node::NodeHandle::subscribe));
    /// 0 keeps none.
    pub commit_history_bytes: usize,
    /// If set, clients must prove they know this secret before the client
    /// port serves them (`synod_net`'s client authentication).
    pub client_secret: Option<Vec<u8>>,
    /// Encrypt the bodies of peer frames (they are always authenticated);
    /// every replica of the cluster must agree (`synod_net::PeerConfig::encrypt`).
    pub encrypt_peer_frames: bool,
    /// This node joins groups that run already: it is in none of their
    /// first configurations (the other `peers` are), and takes part once a
    /// leader adds it (`Node::change_members`). A node's own id stays in
    /// `peers`, at its listen address.
    pub join: bool,
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
        addr: PeerAddr,
        /// The cores each node runs.
        cores: u32,
    },
    /// Two members share one address: one would dial the other as itself.
    #[error("peers {} and {} share the address {addr}", first.0, second.0)]
    SharedAddress {
        /// The first member at it.
        first: NodeId,
        /// The second.
        second: NodeId,
        /// The address.
        addr: PeerAddr,
    },
    /// This node is not among the members.
    #[error("node {} is not in the peer list", id.0)]
    NotAMember {
        /// This node.
        id: NodeId,
    },
    /// The peer list names this node at another address than it listens on:
    /// its peers would dial a place where it does not answer.
    #[error(
        "node {} listens on {listen}, but the peer list names it at {listed}",
        id.0
    )]
    ListenNotListed {
        /// This node.
        id: NodeId,
        /// Where it listens.
        listen: SocketAddr,
        /// Where the peer list says it is.
        listed: PeerAddr,
    },
}

/// The core that hosts `group`: the same on every node, so core i of one
/// node talks only to core i of the others.
pub fn core_of(group: u32, cores: u32) -> u32 {
    group % cores
}

/// Core `core`'s peer address: the node's address with the port advanced
/// by the core number (core 0 listens on the configured port itself).
pub fn core_addr(addr: SocketAddr, core: u32) -> Option<SocketAddr> {
    let port = u16::try_from(u32::from(addr.port()) + core).ok()?;
    Some(SocketAddr::new(addr.ip(), port))
}

/// [`core_addr`] of a peer's address as configured (a name stays a name).
pub fn core_peer_addr(addr: &PeerAddr, core: u32) -> Option<PeerAddr> {
    let port = u16::try_from(u32::from(addr.port()) + core).ok()?;
    Some(addr.with_port(port))
}

impl NodeOptions {
    /// A node `id` listening for peers on `listen`, one of `peers`, with its
    /// data in `data_dir`, and defaults for the rest: one group on one core,
    /// no secret (set one, or the cluster is open to anyone on the
    /// network), cluster 1, 5 ms ticks, 1 MiB of io_memory, the default
    /// snapshot policy, no metrics.
    pub fn new<A: Into<PeerAddr>>(
        id: NodeId,
        listen: SocketAddr,
        peers: Vec<(NodeId, A)>,
        data_dir: PathBuf,
    ) -> NodeOptions {
        NodeOptions {
            id,
            listen,
            peers: peers.into_iter().map(|(id, a)| (id, a.into())).collect(),
            data_dir,
            groups: 1,
            cores: 1,
            pin: false,
            secret: None,
            cluster_id: 1,
            tick: Duration::from_millis(5),
            io_memory_bytes: 1 << 20,
            snapshot: SnapshotPolicy::default(),
            metrics: None,
            fsync: true,
            rejoin: false,
            commit_history_bytes: 0,
            client_secret: None,
            encrypt_peer_frames: false,
            join: false,
        }
    }

    /// Checks what cannot be left to the groups: counts and the port ranges
    /// the cores need.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.groups == 0 || self.groups > GROUPS_MAX {
            return Err(OptionsError::Groups {
                groups: self.groups,
            });
        }
        if self.cores == 0 || self.cores > CORES_MAX || self.cores > self.groups {
            return Err(OptionsError::Cores {
                cores: self.cores,
                groups: self.groups,
            });
        }
        if self.snapshot.write_pace > 0 && self.snapshot.write_floor_bytes_per_sec == 0 {
            return Err(OptionsError::SnapshotWriteFloor);
        }
        let last = self.cores - 1;
        for (id, addr) in &self.peers {
            if core_peer_addr(addr, last).is_none() {
                return Err(OptionsError::PeerPorts {
                    peer: *id,
                    addr: addr.clone(),
                    cores: self.cores,
                });
            }
        }
        self.validate_peers()
    }
}

impl NodeOptions {
    /// Every member at an address of its own (as written: two names for
    /// one host are not caught), this node among them at the address it
    /// listens on. A wildcard listen address, 0.0.0.0 or ::, is checked by
    /// its port only; so is a name of this node that does not resolve yet
    /// (its peers cannot dial it by that name either, until it does).
    fn validate_peers(&self) -> Result<(), OptionsError> {
        let mut seen: std::collections::BTreeMap<&PeerAddr, NodeId> = Default::default();
        for (id, addr) in &self.peers {
            if let Some(first) = seen.insert(addr, *id) {
                return Err(OptionsError::SharedAddress {
                    first,
                    second: *id,
                    addr: addr.clone(),
                });
            }
        }
        let Some((_, listed)) = self.peers.iter().find(|(id, _)| *id == self.id) else {
            return Err(OptionsError::NotAMember { id: self.id });
        };
        let same = if self.listen.ip().is_unspecified() {
            self.listen.port() == listed.port()
        } else {
            match listed.resolve_all() {
                Ok(addrs) => addrs.contains(&self.listen),
                Err(_) => self.listen.port() == listed.port(),
            }
        };
        if !same {
            return Err(OptionsError::ListenNotListed {
                id: self.id,
                listen: self.listen,
                listed: listed.clone(),
            });
        }
        Ok(())
    }
}

/// The protocol's configuration of `group` on the node of `options`.
pub(super) fn group_config(options: &NodeOptions, group: u32) -> Config {
    let members = options
        .peers
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !options.join || *id != options.id)
        .collect();
    let mut config = Config::new(options.id, members);
    config.group = GroupId(group);
    config.batch_bytes_max = BATCH_BYTES_MAX;
    // Promise and catch-up pages stay well inside the transport's 1 MiB frames.
    config.page_bytes_max = 512 << 10;
    config.seed = options.id.0 ^ u64::from(group);
    config
}

/// The bounds peer frames are decoded within, from a group's configuration.
pub(super) fn limits(config: &Config) -> BatchLimits {
    BatchLimits {
        batch_bytes_max: config.batch_bytes_max as usize,
        command_bytes_max: config.command_bytes_max as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_peers(peers: &[(u64, &str)]) -> NodeOptions {
        let peers = peers
            .iter()
            .map(|(id, addr)| (NodeId(*id), addr.parse::<PeerAddr>().unwrap()))
            .collect();
        let listen = "127.0.0.1:7001".parse().unwrap();
        NodeOptions::new(NodeId(1), listen, peers, PathBuf::from("/nonexistent"))
    }

    /// Peers may be names that do not resolve yet; this node's own entry
    /// is compared with where it listens once resolved, and by its port
    /// while it does not resolve.
    #[test]
    fn peers_may_be_names_and_this_nodes_entry_must_be_where_it_listens() {
        let later = (2, "notyet.invalid:7002");
        for me in ["127.0.0.1:7001", "localhost:7001", "me.invalid:7001"] {
            let options = with_peers(&[(1, me), later]);
            options.validate().unwrap_or_else(|e| panic!("{me}: {e}"));
        }
        for me in ["localhost:7005", "me.invalid:7005"] {
            let error = with_peers(&[(1, me), later]).validate().unwrap_err();
            assert!(
                matches!(error, OptionsError::ListenNotListed { .. }),
                "{me}: {error}"
            );
            assert!(error.to_string().contains(me), "{error}");
        }
        let twice = with_peers(&[(1, "localhost:7001"), (2, "localhost:7001")]);
        let error = twice.validate().unwrap_err();
        assert!(
            matches!(error, OptionsError::SharedAddress { .. }),
            "{error}"
        );
        let high = with_peers(&[(1, "localhost:7001"), (2, "db-2:65535")]);
        let error = NodeOptions {
            cores: 2,
            groups: 2,
            ..high
        }
        .validate()
        .unwrap_err();
        assert!(error.to_string().contains("db-2:65535"), "{error}");
    }
}

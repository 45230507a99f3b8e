//! A node: the groups it hosts, thread-per-core, and the embedding API
//! ([`Node`], [`NodeHandle`]). Group g lives on core g mod cores on every
//! node; nothing is shared between cores but requests routed to a group's
//! core (`cores.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::SinkExt;
use glommio::{LocalExecutorBuilder, Placement};
use thiserror::Error;

use super::codec::BatchLimits;
use super::cores::{Core, CoreEvent, CoreRequest, CORE_REQUESTS_MAX};
use super::group::{Committed, GroupError, ProposeOutcome, ReadOutcome, StatusView};
use super::machine::NodeMachine;
use super::metrics::{serve_metrics, GroupMetrics, NodeMetrics};
use super::snapshot::SnapshotPolicy;
use crate::group::state_machine::StateMachine;
use crate::protocol::{ClientId, Command, Config, GroupId, NodeId};

/// The secret used by `--insecure` nodes: public, so it proves nothing.
pub const INSECURE_SECRET: &[u8] = b"synod insecure mode: no secret at all";

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// This node.
    pub id: NodeId,
    /// Where peers connect.
    pub listen: SocketAddr,
    /// Where clients connect (core 0 serves the client port); `None` for an
    /// embedded node that takes commands only through its handle.
    pub client_listen: Option<SocketAddr>,
    /// Every member with its peer address, this node included.
    pub peers: Vec<(NodeId, SocketAddr)>,
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
}

/// Why a node stopped.
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
    /// The transport or the client port could not start.
    #[error("network: {0}")]
    Network(String),
    /// The executor could not start.
    #[error("executor: {0}")]
    Executor(String),
    /// The data directory belongs to another cluster or node, or is unusable.
    #[error("data directory {0}")]
    DataDir(String),
    /// The options contradict each other.
    #[error("configuration: {0}")]
    Config(String),
}

/// The file in a node's data directory that names its cluster and node.
pub const IDENTITY_FILE: &str = "synod-node";

/// Claims `data_dir` for this cluster and node, or refuses a directory that
/// belongs to another (its WALs would be another cluster's promises).
pub fn claim_data_dir(options: &NodeOptions) -> Result<(), NodeError> {
    let dir = &options.data_dir;
    let path = dir.join(IDENTITY_FILE);
    let identity = format!("cluster {} node {}\n", options.cluster_id, options.id.0);
    let refuse = |reason: String| Err(NodeError::DataDir(format!("{}: {reason}", dir.display())));
    match std::fs::read_to_string(&path) {
        Ok(found) if found == identity => Ok(()),
        Ok(found) => refuse(format!(
            "holds `{}`, not `{}`",
            found.trim(),
            identity.trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_data = std::fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if has_data {
                return refuse(format!(
                    "not empty and has no {IDENTITY_FILE} file: not a synod data directory"
                ));
            }
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, &identity))
                .or_else(|e| refuse(e.to_string()))
        }
        Err(e) => refuse(e.to_string()),
    }
}

/// Locks a claimed data directory for this process (an exclusive lock on
/// its identity file, released when the returned file is dropped or the
/// process dies), so a second node started on it is refused instead of
/// writing the same WALs.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, NodeError> {
    let refuse = |reason: String| NodeError::DataDir(format!("{}: {reason}", dir.display()));
    let file = std::fs::File::open(dir.join(IDENTITY_FILE)).map_err(|e| refuse(e.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(refuse("in use by another running node".into()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(refuse(e.to_string())),
    }
}

/// Groups a node may host at most.
pub const GROUPS_MAX: u32 = 1024;
/// Executors (cores) a node may run at most.
pub const CORES_MAX: u32 = 64;

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

impl NodeOptions {
    /// A node `id` listening for peers on `listen`, one of `peers`, with its
    /// data in `data_dir`, and defaults for the rest: one group on one core,
    /// no client port, no secret (set one, or the cluster is open to anyone
    /// on the network), cluster 1, 5 ms ticks, 1 MiB of io_memory, the
    /// default snapshot policy, no metrics.
    pub fn new(
        id: NodeId,
        listen: SocketAddr,
        peers: Vec<(NodeId, SocketAddr)>,
        data_dir: PathBuf,
    ) -> NodeOptions {
        NodeOptions {
            id,
            listen,
            client_listen: None,
            peers,
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
        }
    }

    /// Checks what cannot be left to the groups: counts and the port ranges
    /// the cores need.
    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |reason: String| Err(NodeError::Config(reason));
        if self.groups == 0 || self.groups > GROUPS_MAX {
            return bad(format!("groups must be 1 to {GROUPS_MAX}"));
        }
        if self.cores == 0 || self.cores > CORES_MAX || self.cores > self.groups {
            return bad(format!(
                "cores must be 1 to {CORES_MAX} and at most groups ({})",
                self.groups
            ));
        }
        if self.snapshot.write_pace > 0 && self.snapshot.write_floor_bytes_per_sec == 0 {
            return bad(
                "snapshot_write_floor must be positive while snapshot_write_pace is".into(),
            );
        }
        let last = self.cores - 1;
        for (id, addr) in &self.peers {
            if core_addr(*addr, last).is_none() {
                return bad(format!(
                    "peer {} at {addr}: {} cores need ports {}..={}",
                    id.0,
                    self.cores,
                    addr.port(),
                    u32::from(addr.port()) + last
                ));
            }
        }
        Ok(())
    }
}

/// Every core's route, for a handle to reach the core of any group.
type Routes = Arc<Vec<mpsc::Sender<CoreRequest>>>;

/// A running node: one glommio executor per core, each with its own groups,
/// transport and WAL directories. Embedders start one with their own
/// [`StateMachine`] and talk to it through a [`NodeHandle`] from any thread;
/// no glommio type crosses this API.
///
/// ```no_run
/// use synod_engine::runtime::kv::{Kv, KvCommand, KvOp};
/// use synod_engine::runtime::node::{Node, NodeOptions};
/// use synod_engine::protocol::GroupId;
/// # fn options() -> NodeOptions { unimplemented!() }
/// let node = Node::start(options(), |_group| Kv::default())?;
/// let handle = node.handle();
/// let put = KvCommand { now_ms: 0, op: KvOp::Put { key: b"k".to_vec(), value: b"v".to_vec(), ttl_ms: None } };
/// let outcome = futures_executor_block_on(handle.propose(GroupId(0), put.encode()));
/// # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output { unimplemented!() }
/// node.shutdown()?;
/// # Ok::<(), synod_engine::runtime::node::NodeError>(())
/// ```
pub struct Node {
    handle: NodeHandle,
    stops: Vec<oneshot::Sender<()>>,
    events: std::sync::mpsc::Receiver<CoreEvent>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    /// Cores that have not reported their stop yet.
    running: usize,
    /// The data directory's lock, held while the node lives.
    _lock: std::fs::File,
    /// The client port's claim, held while the node lives.
    _client_port: Option<synod_net::PortClaim>,
}

/// A cheap, cloneable way into a node from any thread or async runtime.
#[derive(Clone)]
pub struct NodeHandle {
    cores: u32,
    groups: u32,
    routes: Routes,
}

impl Node {
    /// Checks `options`, claims the data directory and starts every core;
    /// returns once every group has recovered and started, or with the first
    /// error. `machines` makes each group's state machine on its own core.
    pub fn start<S, F>(mut options: NodeOptions, machines: F) -> Result<Node, NodeError>
    where
        S: StateMachine,
        F: Fn(GroupId) -> S + Send + Sync + 'static,
    {
        options.validate()?;
        // The cores share the client port (SO_REUSEPORT); nobody else may.
        let client_port = options
            .client_listen
            .filter(|addr| addr.port() != 0)
            .map(|addr| {
                synod_net::claim_shared_port(addr, synod_net::BIND_BUSY_WAIT)
                    .map_err(|e| NodeError::Network(format!("client port {addr}: {e}")))
            })
            .transpose()?;
        // glommio opens directories by absolute path only (a relative one
        // fails with EBADF at the first directory fsync).
        options.data_dir = std::path::absolute(&options.data_dir)
            .map_err(|e| NodeError::DataDir(format!("{}: {e}", options.data_dir.display())))?;
        claim_data_dir(&options)?;
        let lock = lock_data_dir(&options.data_dir)?;
        if !options.fsync {
            tracing::warn!("UNSAFE: fsync is off; acknowledged commands can be lost in a power cut or kernel crash");
        }
        let (metrics, mut group_metrics) = node_metrics(&options)?;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..options.cores)
            .map(|_| mpsc::channel::<CoreRequest>(CORE_REQUESTS_MAX))
            .unzip();
        let routes: Routes = Arc::new(senders);
        let machines: Arc<dyn Fn(GroupId) -> S + Send + Sync> = Arc::new(machines);
        let (events_tx, events) = std::sync::mpsc::channel();
        let (mut stops, mut threads) = (Vec::new(), Vec::new());
        for (core, requests) in (0..options.cores).zip(receivers) {
            let (stop_tx, stop_rx) = oneshot::channel();
            stops.push(stop_tx);
            let core_metrics = std::mem::take(&mut group_metrics[core as usize]);
            // Every core takes clients (the port is bound once per core,
            // SO_REUSEPORT spreading connections) and routes their requests
            // to the core of the group.
            let others = routes.to_vec();
            let placement = if options.pin {
                Placement::Fixed(core as usize)
            } else {
                Placement::Unbound
            };
            let worker = Core {
                options: options.clone(),
                core,
                metrics: metrics.clone(),
                machines: machines.clone(),
            };
            let events_tx = events_tx.clone();
            let thread = LocalExecutorBuilder::new(placement)
                .name(&format!("synod-core-{core}"))
                .io_memory(options.io_memory_bytes)
                .spawn(move || worker.serve(core_metrics, requests, others, stop_rx, events_tx))
                .map_err(|e| NodeError::Executor(format!("core {core}: {e}")))?;
            threads.push(thread);
        }
        let mut node = Node {
            handle: NodeHandle {
                cores: options.cores,
                groups: options.groups,
                routes,
            },
            stops,
            events,
            threads,
            running: options.cores as usize,
            _lock: lock,
            _client_port: client_port,
        };
        node.await_ready(options.cores)?;
        Ok(node)
    }

    fn await_ready(&mut self, cores: u32) -> Result<(), NodeError> {
        let mut ready = 0;
        while ready < cores {
            match self.events.recv() {
                Ok(CoreEvent::Ready) => ready += 1,
                Ok(CoreEvent::Stopped(core, result)) => {
                    self.running -= 1;
                    let error = result.err().unwrap_or_else(|| {
                        NodeError::Executor(format!("core {core} stopped while starting"))
                    });
                    let _ = self.stop_all();
                    return Err(error);
                }
                Err(_) => return Err(NodeError::Executor("every core vanished".into())),
            }
        }
        Ok(())
    }

    /// A handle for proposals, reads and commit streams.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Blocks until a core stops, then stops the others; returns the first
    /// error (a fatal WAL failure, say), or `Ok` after [`Node::shutdown`].
    pub fn wait(mut self) -> Result<(), NodeError> {
        let first = match self.events.recv() {
            Ok(CoreEvent::Stopped(_, result)) => {
                self.running -= 1;
                result
            }
            Ok(CoreEvent::Ready) => Err(NodeError::Executor("a core started twice".into())),
            Err(_) => Err(NodeError::Executor("every core vanished".into())),
        };
        let rest = self.stop_all();
        first.and(rest)
    }

    /// Stops every group (pending proposals are answered `Stopped`) and
    /// joins every core.
    pub fn shutdown(mut self) -> Result<(), NodeError> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<(), NodeError> {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        let mut result = Ok(());
        while self.running > 0 {
            match self.events.recv() {
                Ok(CoreEvent::Stopped(_, outcome)) => {
                    self.running -= 1;
                    result = result.and(outcome);
                }
                Ok(CoreEvent::Ready) => {}
                Err(_) => break,
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        result
    }
}

impl NodeHandle {
    fn route(&self, group: GroupId) -> Option<mpsc::Sender<CoreRequest>> {
        (group.0 < self.groups).then(|| self.routes[core_of(group.0, self.cores) as usize].clone())
    }

    async fn ask<T>(
        &self,
        group: GroupId,
        request: impl FnOnce(oneshot::Sender<T>) -> CoreRequest,
    ) -> Option<T> {
        let mut route = self.route(group)?;
        let (reply, answer) = oneshot::channel();
        route.send(request(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Proposes `data` without a client session (a retry may apply twice)
    /// and waits until it is applied.
    pub async fn propose(&self, group: GroupId, data: Bytes) -> ProposeOutcome {
        self.propose_session(group, ClientId(0), 0, data).await
    }

    /// Proposes `data` as `(client, seq)`: a retry with the same pair is
    /// answered with the first reply and applied once.
    ///
    /// A session numbers its commands 1, 2, 3, ... (or on from the
    /// `resume_at` of an [`ProposeOutcome::Expired`]), one outstanding at a
    /// time: send a command again with the same pair, to whichever node
    /// leads, until it is `Applied`, or give it up and go on as a new
    /// session (a new `client`). Numbering past a command given up lets
    /// sequence numbers outrun the log, and once the bounded session table
    /// has evicted such a session its retries may apply twice (see
    /// `protocol::sessions`).
    pub async fn propose_session(
        &self,
        group: GroupId,
        client: ClientId,
        seq: u64,
        data: Bytes,
    ) -> ProposeOutcome {
        let command = Command { client, seq, data };
        let asked = self.ask(group, |reply| CoreRequest::Propose {
            group: group.0,
            command,
            reply,
        });
        asked.await.unwrap_or(ProposeOutcome::Stopped)
    }

    /// A linearizable read of `query` (read-index at the leader).
    pub async fn read(&self, group: GroupId, query: Bytes) -> ReadOutcome {
        self.read_at(group, query, false).await
    }

    /// Answers `query` from this node's state as it stands: a stale read.
    pub async fn read_local(&self, group: GroupId, query: Bytes) -> ReadOutcome {
        self.read_at(group, query, true).await
    }

    async fn read_at(&self, group: GroupId, query: Bytes, local: bool) -> ReadOutcome {
        let asked = self.ask(group, |reply| CoreRequest::Read {
            group: group.0,
            query,
            local,
            reply,
        });
        asked.await.unwrap_or(ReadOutcome::Stopped)
    }

    /// `group`'s status on this node (what it applied, who leads, its
    /// latest snapshot); `None` if there is no such group or its core has
    /// stopped (a group that failed reports its last status until then).
    pub async fn status(&self, group: GroupId) -> Option<StatusView> {
        let asked = self.ask(group, |reply| CoreRequest::Status {
            group: group.0,
            reply,
        });
        asked.await.flatten()
    }

    /// Every command this node applies to `group` from now on, in log order
    /// (see [`Committed`]); `None` if there is no such group.
    pub async fn subscribe(
        &self,
        group: GroupId,
    ) -> Option<crossbeam_channel::Receiver<Committed>> {
        let asked = self.ask(group, |reply| CoreRequest::Subscribe {
            group: group.0,
            reply,
        });
        asked.await.flatten()
    }
}

/// Each core's groups with their metrics.
type MetricsByCore = Vec<Vec<(u32, GroupMetrics)>>;

/// Registers every group's metrics (grouped by core) and serves them.
fn node_metrics(options: &NodeOptions) -> Result<(Arc<NodeMetrics>, MetricsByCore), NodeError> {
    let mut metrics = NodeMetrics::default();
    let mut by_core: MetricsByCore = vec![Vec::new(); options.cores as usize];
    for group in 0..options.groups {
        let core = core_of(group, options.cores) as usize;
        by_core[core].push((group, metrics.add_group(GroupId(group))));
    }
    let metrics = Arc::new(metrics);
    if let Some(addr) = options.metrics {
        let bound = serve_metrics(addr, metrics.clone())
            .map_err(|e| NodeError::Network(format!("metrics on {addr}: {e}")))?;
        tracing::info!(%bound, "serving metrics");
    }
    Ok((metrics, by_core))
}

/// Runs `synod node`: the node's own state machine (the raw log and the KV
/// store) behind the client port, until a core stops. Blocks.
pub fn run_node(options: NodeOptions) -> Result<(), NodeError> {
    Node::start(options, |_| NodeMachine::default())?.wait()
}

pub(super) fn limits(config: &Config) -> BatchLimits {
    BatchLimits {
        batch_bytes_max: config.batch_bytes_max as usize,
        command_bytes_max: config.command_bytes_max as usize,
    }
}

/// Command bytes one slot of a node's group holds (`Config::batch_bytes_max`):
/// a request's commands share one slot, so this bounds a client batch too.
pub const BATCH_BYTES_MAX: u32 = 256 << 10;

pub(super) fn group_config(options: &NodeOptions, group: u32) -> Config {
    let members = options.peers.iter().map(|(id, _)| *id).collect();
    let mut config = Config::new(options.id, members);
    config.group = GroupId(group);
    config.batch_bytes_max = BATCH_BYTES_MAX;
    // Promise and catch-up pages stay well inside the transport's 1 MiB frames.
    config.page_bytes_max = 512 << 10;
    config.seed = options.id.0 ^ u64::from(group);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &std::path::Path, cluster_id: u64, id: u64) -> NodeOptions {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let peers = vec![(NodeId(id), addr)];
        NodeOptions {
            cluster_id,
            ..NodeOptions::new(NodeId(id), addr, peers, dir.to_path_buf())
        }
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
        let second = lock_data_dir(&data).unwrap_err().to_string();
        assert!(second.contains("in use"), "{second}");
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
}

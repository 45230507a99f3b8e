//! A node: the groups it hosts, thread-per-core.
//!
//! ```text
//!  clients ──► core 0: client port ──► its groups
//!                 │ shared channel (request, oneshot for the answer)
//!                 └──────────────► core i: its groups
//!  core i ◄── own transport, port + i ──► core i of every peer
//! ```
//!
//! Group g lives on core g mod cores on every node; nothing else is shared
//! between cores.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};
use rkyv::util::AlignedVec;
use synod_net::{ClientListener, ClientListenerConfig, Inbox, PeerConfig, Secret, Transport};
use synod_wal::WalConfig;
use thiserror::Error;

use super::client_proto::{
    ClientOp, ClientRequest, ClientResponse, KIND_CLIENT_REPLY, KIND_CLIENT_REQUEST,
};
use super::codec::{decode_envelope, BatchLimits, KIND_PEER_MESSAGE};
use super::group::{
    start_group, GroupError, GroupHandle, GroupOptions, GroupStatus, PeerLink, ProposeOutcome,
    ReadOutcome,
};
use super::kv::{KvCommand, KvReply};
use super::machine::{append_command, get_query, kv_command, log_query, NodeMachine};
use super::metrics::{serve_metrics, GroupMetrics, NodeMetrics, PeerLabel};
use super::snapshot::{decode_chunk, SnapshotPolicy, KIND_SNAPSHOT_CHUNK};
use crate::protocol::{ClientId, Config, GroupId, NodeId, Refusal};

/// The secret used by `--insecure` nodes: public, so it proves nothing.
pub const INSECURE_SECRET: &[u8] = b"synod insecure mode: no secret at all";

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// This node.
    pub id: NodeId,
    /// Where peers connect.
    pub listen: SocketAddr,
    /// Where clients connect.
    pub client_listen: SocketAddr,
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

/// A client request for a group on another core, with where to answer.
struct Routed {
    request: ClientRequest,
    reply: oneshot::Sender<ClientResponse>,
}

/// Runs the node until a group stops; blocks the calling thread. One glommio
/// executor per core, each with its own groups, transport and WAL
/// directories; core 0 also takes the clients and routes each request to the
/// core of its group.
pub fn run_node(mut options: NodeOptions) -> Result<(), NodeError> {
    options.validate()?;
    // glommio opens directories by absolute path only (a relative one fails
    // with EBADF at the first directory fsync).
    options.data_dir = std::path::absolute(&options.data_dir)
        .map_err(|e| NodeError::DataDir(format!("{}: {e}", options.data_dir.display())))?;
    claim_data_dir(&options)?;
    let mut metrics = NodeMetrics::default();
    let mut group_metrics: Vec<Vec<(u32, GroupMetrics)>> = vec![Vec::new(); options.cores as usize];
    for group in 0..options.groups {
        let core = core_of(group, options.cores) as usize;
        group_metrics[core].push((group, metrics.add_group(GroupId(group))));
    }
    let metrics = Arc::new(metrics);
    if let Some(addr) = options.metrics {
        let bound = serve_metrics(addr, metrics.clone())
            .map_err(|e| NodeError::Network(format!("metrics on {addr}: {e}")))?;
        tracing::info!(%bound, "serving metrics");
    }
    let (senders, receivers): (Vec<_>, Vec<_>) = (1..options.cores)
        .map(|_| shared_channel::new_bounded::<Routed>(1024))
        .unzip();
    let mut routes = Some(senders);
    let mut inboxes = receivers.into_iter();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for (core, group_metrics) in (0..options.cores).zip(group_metrics) {
        let role = match core {
            0 => CoreRole::Clients(routes.take().unwrap_or_default()),
            _ => CoreRole::Routed(inboxes.next().expect("one inbox per core but 0")),
        };
        let placement = if options.pin {
            Placement::Fixed(core as usize)
        } else {
            Placement::Unbound
        };
        let (options, metrics, done) = (options.clone(), metrics.clone(), done_tx.clone());
        LocalExecutorBuilder::new(placement)
            .name(&format!("synod-core-{core}"))
            .io_memory(options.io_memory_bytes)
            .spawn(move || async move {
                let core = Core {
                    options,
                    core,
                    metrics,
                };
                let _ = done.send(core.serve(group_metrics, role).await);
            })
            .map_err(|e| NodeError::Executor(format!("core {core}: {e}")))?;
    }
    // The first core to stop stops the node; the process exit takes the rest.
    done_rx
        .recv()
        .unwrap_or_else(|_| Err(NodeError::Executor("every core vanished".into())))
}

/// What a core does beside its groups.
enum CoreRole {
    /// Core 0: the client port, and a route to every other core.
    Clients(Vec<SharedSender<Routed>>),
    /// Any other core: requests core 0 routes here.
    Routed(SharedReceiver<Routed>),
}

struct TransportLink(Rc<Transport>);

impl PeerLink for TransportLink {
    fn send_frame(&self, to: NodeId, kind: u16, body: AlignedVec) -> bool {
        self.0.send(synod_net::NodeId(to.0), kind, &body).is_ok()
    }
}

fn limits(config: &Config) -> BatchLimits {
    BatchLimits {
        batch_bytes_max: config.batch_bytes_max as usize,
        command_bytes_max: config.command_bytes_max as usize,
    }
}

fn group_config(options: &NodeOptions, group: u32) -> Config {
    let members = options.peers.iter().map(|(id, _)| *id).collect();
    let mut config = Config::new(options.id, members);
    config.group = GroupId(group);
    config.batch_bytes_max = 256 << 10;
    // Promise and catch-up pages stay well inside the transport's 1 MiB frames.
    config.page_bytes_max = 512 << 10;
    config.seed = options.id.0 ^ u64::from(group);
    config
}

/// The groups of one core, by group id.
type Groups = Rc<BTreeMap<u32, (GroupHandle, Rc<GroupStatus>)>>;

/// One executor of a node.
struct Core {
    options: NodeOptions,
    core: u32,
    metrics: Arc<NodeMetrics>,
}

impl Core {
    async fn serve(
        self,
        group_metrics: Vec<(u32, GroupMetrics)>,
        role: CoreRole,
    ) -> Result<(), NodeError> {
        let (transport, inbox) = self.start_transport()?;
        let transport = Rc::new(transport);
        let link: Rc<dyn PeerLink> = Rc::new(TransportLink(transport.clone()));
        if self.options.metrics.is_some() {
            self.watch_peer_queues(transport.clone());
        }
        let (groups, failed) = start_groups(&self.options, link, group_metrics).await?;
        route_peer_frames(&groups, inbox, limits(&group_config(&self.options, 0)));
        match role {
            CoreRole::Clients(routes) => self.serve_clients(groups, routes).await?,
            CoreRole::Routed(inbox) => serve_routed(self.options.id, groups, inbox).await,
        }
        tracing::info!(node = self.options.id.0, core = self.core, "core up");
        Err(failed
            .recv()
            .await
            .unwrap_or_else(|| NodeError::Executor("groups channel closed".into())))
    }

    fn start_transport(&self) -> Result<(Transport, Inbox), NodeError> {
        let options = &self.options;
        let secret = Secret::new(
            options
                .secret
                .clone()
                .unwrap_or_else(|| INSECURE_SECRET.to_vec()),
        );
        let at = |addr: SocketAddr| core_addr(addr, self.core).expect("validated port range");
        let peers = options
            .peers
            .iter()
            .map(|(id, addr)| (synod_net::NodeId(id.0), at(*addr)))
            .collect();
        let mut peer_config = PeerConfig::new(
            options.cluster_id,
            synod_net::NodeId(options.id.0),
            secret,
            at(options.listen),
            peers,
        );
        peer_config.core = self.core;
        Transport::start(peer_config).map_err(|e| NodeError::Network(e.to_string()))
    }

    /// Reads the transport's per-peer queues into the metrics twice a second.
    fn watch_peer_queues(&self, transport: Rc<Transport>) {
        let peers: Vec<u64> = self
            .options
            .peers
            .iter()
            .map(|(id, _)| id.0)
            .filter(|id| *id != self.options.id.0)
            .collect();
        let (metrics, core) = (self.metrics.clone(), self.core);
        glommio::spawn_local(async move {
            loop {
                for peer in &peers {
                    let queued = transport
                        .queued_bytes(synod_net::NodeId(*peer))
                        .unwrap_or(0);
                    metrics
                        .peer_queue_bytes
                        .get_or_create(&PeerLabel { peer: *peer, core })
                        .set(queued as i64);
                }
                glommio::timer::sleep(Duration::from_millis(500)).await;
            }
        })
        .detach();
    }

    /// Core 0: takes client requests and answers them, here or through the
    /// core of their group.
    async fn serve_clients(
        &self,
        groups: Groups,
        routes: Vec<SharedSender<Routed>>,
    ) -> Result<(), NodeError> {
        let mut connected = Vec::new();
        for route in routes {
            connected.push(Rc::new(route.connect().await));
        }
        let listener = ClientListener::bind(ClientListenerConfig::new(self.options.client_listen))
            .map_err(|e| NodeError::Network(e.to_string()))?;
        let options = &self.options;
        tracing::info!(node = options.id.0, peers = %options.listen, clients = %options.client_listen, groups = options.groups, cores = options.cores, "node up");
        let router = Rc::new(Router {
            node: options.id,
            cores: options.cores,
            groups_total: options.groups,
            local: groups,
            routes: connected,
        });
        glommio::spawn_local(async move {
            while let Some(request) = listener.next().await {
                let router = router.clone();
                glommio::spawn_local(async move {
                    let response = router.answer(request.kind, &request.body).await;
                    if let Err(error) = request.reply(KIND_CLIENT_REPLY, &response.encode()) {
                        tracing::debug!(%error, "client gone before its reply");
                    }
                })
                .detach();
            }
        })
        .detach();
        Ok(())
    }
}

/// Decodes frames from peers and hands each to its group on this core.
fn route_peer_frames(groups: &Groups, mut inbox: Inbox, limits: BatchLimits) {
    let routes = groups.clone();
    glommio::spawn_local(async move {
        while let Some(message) = inbox.recv().await {
            let from = NodeId(message.from.0);
            if message.kind == KIND_SNAPSHOT_CHUNK {
                route_chunk(&routes, from, &message.body);
                continue;
            }
            if message.kind != KIND_PEER_MESSAGE {
                tracing::warn!(
                    from = from.0,
                    kind = message.kind,
                    "unknown peer frame kind; dropped"
                );
                continue;
            }
            let frame = aligned(message.body);
            match decode_envelope(&frame, &frame, limits) {
                Ok((group, envelope)) => match routes.get(&group.0) {
                    Some((handle, _)) => {
                        handle.try_deliver(envelope);
                    }
                    None => tracing::warn!(
                        from = from.0,
                        group = group.0,
                        "message for a group not on this core"
                    ),
                },
                Err(error) => {
                    tracing::warn!(from = from.0, %error, "undecodable peer message; dropped")
                }
            }
        }
    })
    .detach();
}

/// Another core: answers what core 0 routes here.
async fn serve_routed(node: NodeId, groups: Groups, inbox: SharedReceiver<Routed>) {
    let inbox = inbox.connect().await;
    glommio::spawn_local(async move {
        while let Some(Routed { request, reply }) = inbox.recv().await {
            let groups = groups.clone();
            glommio::spawn_local(async move {
                let response = match groups.get(&request.group) {
                    Some((handle, status)) => answer_op(node, handle, status, request.op).await,
                    None => ClientResponse::Error(format!(
                        "group {} is not on this core",
                        request.group
                    )),
                };
                let _ = reply.send(response);
            })
            .detach();
        }
    })
    .detach();
}

/// Hands a snapshot chunk from a peer to its group.
fn route_chunk(groups: &Groups, from: NodeId, body: &[u8]) {
    match decode_chunk(body) {
        Ok((group, chunk)) => match groups.get(&group.0) {
            Some((handle, _)) => {
                handle.try_deliver_chunk(from, chunk);
            }
            None => tracing::warn!(
                from = from.0,
                group = group.0,
                "snapshot chunk for a group not on this core"
            ),
        },
        Err(error) => tracing::warn!(from = from.0, %error, "undecodable snapshot chunk; dropped"),
    }
}

/// Starts this core's groups; the receiver yields the first fatal error.
async fn start_groups(
    options: &NodeOptions,
    link: Rc<dyn PeerLink>,
    metrics: Vec<(u32, GroupMetrics)>,
) -> Result<(Groups, LocalReceiver<NodeError>), NodeError> {
    let (fail_tx, fail_rx) = local_channel::new_bounded(1);
    let fail_tx = Rc::new(fail_tx);
    let mut groups = BTreeMap::new();
    for (group, metrics) in metrics {
        let group_options = GroupOptions {
            config: group_config(options, group),
            wal_dir: options.data_dir.join(format!("group-{group}")),
            wal: WalConfig {
                write_bytes_max: 256 << 10,
                ..WalConfig::default()
            },
            tick: options.tick,
            snapshot: options.snapshot,
            metrics,
        };
        let (handle, status, task) = start_group(
            group_options,
            GroupId(group),
            NodeMachine::default(),
            link.clone(),
        )
        .await
        .map_err(|source| NodeError::Group { group, source })?;
        let fail_tx = fail_tx.clone();
        glommio::spawn_local(async move {
            let error = match task.await {
                Ok(()) => NodeError::Executor(format!("group {group} stopped")),
                Err(source) => NodeError::Group { group, source },
            };
            tracing::error!(%error, "fatal: the node stops");
            let _ = fail_tx.try_send(error);
        })
        .detach();
        groups.insert(group, (handle, status));
    }
    Ok((Rc::new(groups), fail_rx))
}

/// Frame bodies must be 16-byte aligned for zero-copy access; one that is
/// not (a body at an odd place in a read buffer) is copied once.
fn aligned(body: Bytes) -> Bytes {
    if (body.as_ptr() as usize).is_multiple_of(16) {
        return body;
    }
    let mut copy = AlignedVec::<16>::new();
    copy.extend_from_slice(&body);
    Bytes::from_owner(copy)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Core 0's view of where every group lives.
struct Router {
    node: NodeId,
    cores: u32,
    groups_total: u32,
    local: Groups,
    routes: Vec<Rc<ConnectedSender<Routed>>>,
}

impl Router {
    /// Answers one client request; every failure is a response, never a panic.
    async fn answer(&self, kind: u16, body: &[u8]) -> ClientResponse {
        if kind != KIND_CLIENT_REQUEST {
            return ClientResponse::Error(format!("unknown request kind {kind}"));
        }
        let request = match ClientRequest::decode(body) {
            Ok(request) => request,
            Err(reason) => return ClientResponse::Error(format!("malformed request: {reason}")),
        };
        if request.group >= self.groups_total {
            return ClientResponse::Error(format!(
                "no group {} (this node hosts {})",
                request.group, self.groups_total
            ));
        }
        match core_of(request.group, self.cores) {
            0 => match self.local.get(&request.group) {
                Some((handle, status)) => answer_op(self.node, handle, status, request.op).await,
                None => ClientResponse::Error(format!("group {} missing", request.group)),
            },
            core => {
                let (reply, answer) = oneshot::channel();
                let route = &self.routes[core as usize - 1];
                if route.send(Routed { request, reply }).await.is_err() {
                    return ClientResponse::Error(format!("core {core} stopped"));
                }
                answer.await.unwrap_or_else(|_| {
                    ClientResponse::Error(format!("core {core} dropped the request"))
                })
            }
        }
    }
}

/// Carries out one client operation on a group of this core.
async fn answer_op(
    node: NodeId,
    handle: &GroupHandle,
    status: &GroupStatus,
    op: ClientOp,
) -> ClientResponse {
    match op {
        ClientOp::Append { client, seq, data } => {
            let outcome = handle
                .propose(ClientId(client), seq, append_command(&data))
                .await;
            proposed(outcome, |index, _| ClientResponse::Appended { index })
        }
        ClientOp::Kv { client, seq, op } => {
            let command = kv_command(&KvCommand {
                now_ms: now_ms(),
                op,
            });
            let outcome = handle.propose(ClientId(client), seq, command).await;
            proposed(outcome, |index, reply| match KvReply::decode(&reply) {
                Ok(reply) => ClientResponse::Kv { index, reply },
                Err(reason) => ClientResponse::Error(reason),
            })
        }
        ClientOp::Get { key } => match handle.read(get_query(&key)).await {
            ReadOutcome::Value(bytes) => match KvReply::decode(&bytes) {
                Ok(KvReply::Value(value)) => ClientResponse::Value(value),
                other => ClientResponse::Error(format!("unexpected reply {other:?}")),
            },
            ReadOutcome::Refused(reason) => refused(reason),
            ReadOutcome::Stopped => ClientResponse::Error("group stopped".into()),
        },
        ClientOp::ReadLog { from, count } => {
            match handle.read_local(log_query(from, count)).await {
                ReadOutcome::Value(bytes) => {
                    ClientResponse::decode(&bytes).unwrap_or_else(ClientResponse::Error)
                }
                ReadOutcome::Refused(reason) => refused(reason),
                ReadOutcome::Stopped => ClientResponse::Error("group stopped".into()),
            }
        }
        ClientOp::Status => ClientResponse::Status {
            node: node.0,
            leader: status.leader.get().map(|l| l.0),
            leading: status.leading.get(),
            applied: status.applied.get().0,
            ballot: (status.promised.get().round, status.promised.get().node.0),
        },
    }
}

fn proposed(
    outcome: ProposeOutcome,
    applied: impl FnOnce(u64, Bytes) -> ClientResponse,
) -> ClientResponse {
    match outcome {
        ProposeOutcome::Applied { index, reply } => applied(index.0, reply),
        ProposeOutcome::Refused(reason) => refused(reason),
        ProposeOutcome::Stale => {
            ClientResponse::Error("sequence number older than the session's last".into())
        }
        ProposeOutcome::Stopped => ClientResponse::Error("group stopped".into()),
    }
}

fn refused(reason: Refusal) -> ClientResponse {
    match reason {
        Refusal::NotLeader(leader) => ClientResponse::NotLeader {
            leader: leader.map(|l| l.0),
        },
        Refusal::Busy => ClientResponse::Busy,
        Refusal::TooLarge => ClientResponse::Error("command too large".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &std::path::Path, cluster_id: u64, id: u64) -> NodeOptions {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        NodeOptions {
            id: NodeId(id),
            listen: addr,
            client_listen: addr,
            peers: vec![(NodeId(id), addr)],
            data_dir: dir.to_path_buf(),
            groups: 1,
            cores: 1,
            pin: false,
            secret: None,
            cluster_id,
            tick: Duration::from_millis(5),
            io_memory_bytes: 1 << 20,
            snapshot: SnapshotPolicy::default(),
            metrics: None,
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
        let stranger = dir.path().join("stranger");
        std::fs::create_dir_all(&stranger).unwrap();
        std::fs::write(stranger.join("something"), b"x").unwrap();
        let refused = claim_data_dir(&options(&stranger, 7, 1))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("not a synod data directory"), "{refused}");
    }
}

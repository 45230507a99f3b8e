//! A node: the groups it hosts, their peer transport and the client port,
//! on one glommio executor.
//!
//! Every group of the node lives on this executor for now; spreading groups
//! over `cores` executors (group g on core g mod cores, core i talking to
//! core i) is the next step of the runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use rkyv::util::AlignedVec;
use synod_net::{ClientListener, ClientListenerConfig, PeerConfig, Secret, Transport};
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
    /// The shared cluster secret; `None` runs insecure.
    pub secret: Option<Vec<u8>>,
    /// Peers of another cluster id are refused.
    pub cluster_id: u64,
    /// Wall-clock length of a protocol tick.
    pub tick: Duration,
    /// glommio's registered I/O memory (counts against memlock).
    pub io_memory_bytes: usize,
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

/// Runs the node until a group stops; blocks the calling thread.
pub fn run_node(options: NodeOptions) -> Result<(), NodeError> {
    claim_data_dir(&options)?;
    let io_memory = options.io_memory_bytes;
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("synod-core-0")
        .io_memory(io_memory)
        .spawn(move || serve(options))
        .map_err(|e| NodeError::Executor(e.to_string()))?
        .join()
        .map_err(|e| NodeError::Executor(e.to_string()))?
}

struct TransportLink(Rc<Transport>);

impl PeerLink for TransportLink {
    fn send(&self, to: NodeId, body: AlignedVec) -> bool {
        self.0
            .send(synod_net::NodeId(to.0), KIND_PEER_MESSAGE, &body)
            .is_ok()
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

async fn serve(options: NodeOptions) -> Result<(), NodeError> {
    let secret = Secret::new(
        options
            .secret
            .clone()
            .unwrap_or_else(|| INSECURE_SECRET.to_vec()),
    );
    let peers = options
        .peers
        .iter()
        .map(|(id, addr)| (synod_net::NodeId(id.0), *addr))
        .collect();
    let peer_config = PeerConfig::new(
        options.cluster_id,
        synod_net::NodeId(options.id.0),
        secret,
        options.listen,
        peers,
    );
    let (transport, mut inbox) =
        Transport::start(peer_config).map_err(|e| NodeError::Network(e.to_string()))?;
    let link: Rc<dyn PeerLink> = Rc::new(TransportLink(Rc::new(transport)));
    let (groups, failed) = start_groups(&options, link).await?;
    let limits = limits(&group_config(&options, 0));
    let routes = groups.clone();
    glommio::spawn_local(async move {
        while let Some(message) = inbox.recv().await {
            if message.kind != KIND_PEER_MESSAGE {
                tracing::warn!(from = message.from.0, kind = message.kind, "unknown peer frame kind; dropped");
                continue;
            }
            let frame = aligned(message.body);
            match decode_envelope(&frame, &frame, limits) {
                Ok((group, envelope)) => match routes.get(group.0 as usize) {
                    Some((handle, _)) => {
                        handle.try_deliver(envelope);
                    }
                    None => tracing::warn!(from = message.from.0, group = group.0, "message for an unknown group"),
                },
                Err(error) => tracing::warn!(from = message.from.0, %error, "undecodable peer message; dropped"),
            }
        }
    })
    .detach();
    let listener = ClientListener::bind(ClientListenerConfig::new(options.client_listen))
        .map_err(|e| NodeError::Network(e.to_string()))?;
    tracing::info!(node = options.id.0, peers = %options.listen, clients = %options.client_listen, groups = options.groups, "node up");
    let node = options.id;
    glommio::spawn_local(async move {
        while let Some(request) = listener.next().await {
            let groups = groups.clone();
            glommio::spawn_local(async move {
                let response = answer(node, &groups, request.kind, &request.body).await;
                if let Err(error) = request.reply(KIND_CLIENT_REPLY, &response.encode()) {
                    tracing::debug!(%error, "client gone before its reply");
                }
            })
            .detach();
        }
    })
    .detach();
    Err(failed
        .recv()
        .await
        .unwrap_or_else(|| NodeError::Executor("groups channel closed".into())))
}

type Groups = Rc<Vec<(GroupHandle, Rc<GroupStatus>)>>;

/// Starts every group; the receiver yields the first fatal error.
async fn start_groups(
    options: &NodeOptions,
    link: Rc<dyn PeerLink>,
) -> Result<
    (
        Groups,
        glommio::channels::local_channel::LocalReceiver<NodeError>,
    ),
    NodeError,
> {
    let (fail_tx, fail_rx) = glommio::channels::local_channel::new_bounded(1);
    let fail_tx = Rc::new(fail_tx);
    let mut groups = Vec::new();
    for group in 0..options.groups {
        let group_options = GroupOptions {
            config: group_config(options, group),
            wal_dir: options.data_dir.join(format!("group-{group}")),
            wal: WalConfig {
                write_bytes_max: 256 << 10,
                ..WalConfig::default()
            },
            tick: options.tick,
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
        groups.push((handle, status));
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

/// Answers one client request; every failure is a response, never a panic.
async fn answer(node: NodeId, groups: &Groups, kind: u16, body: &[u8]) -> ClientResponse {
    if kind != KIND_CLIENT_REQUEST {
        return ClientResponse::Error(format!("unknown request kind {kind}"));
    }
    let request = match ClientRequest::decode(body) {
        Ok(request) => request,
        Err(reason) => return ClientResponse::Error(format!("malformed request: {reason}")),
    };
    let Some((handle, status)) = groups.get(request.group as usize) else {
        return ClientResponse::Error(format!(
            "no group {} (this node hosts {})",
            request.group,
            groups.len()
        ));
    };
    match request.op {
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
            secret: None,
            cluster_id,
            tick: Duration::from_millis(5),
            io_memory_bytes: 1 << 20,
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

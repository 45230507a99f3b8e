//! One core of a node: its groups, its transport, and for core 0 the
//! client port.
//!
//! ```text
//!  clients ──► any core (one client port, SO_REUSEPORT) ──► its groups
//!                 │ CoreRequest over a bounded channel (oneshot answers)
//!                 └──────────────► the group's core
//!  embedder threads ──CoreRequest──► the core of the group
//!  core i ◄── own transport, port + i ──► core i of every peer
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::future::{self, Either};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use glommio::channels::local_channel::{self, LocalReceiver};
use synod_net::{ClientListener, ClientListenerConfig, Inbox, PeerConfig, Secret, Transport};
use synod_wal::WalConfig;

use super::client_proto::{
    ArchivedClientOp, ArchivedClientRequest, ClientOp, ClientRequest, ClientResponse,
    APPEND_BATCH_MAX, KIND_CLIENT_REPLY, KIND_CLIENT_REQUEST,
};
use super::group::{
    start_group, Committed, GroupError, GroupHandle, GroupOptions, GroupStatus, PeerLink,
    ProposeOutcome, ReadOutcome, StatusView,
};
use super::kv::{KvCommand, KvReply};
use super::machine::{
    append_batch_bytes, append_command, append_commands, get_query, kv_command, log_query,
};
use super::metrics::{GroupMetrics, NodeMetrics, PeerLabel};
use super::node::{
    core_addr, core_of, group_config, limits, NodeError, NodeOptions, BATCH_BYTES_MAX,
    INSECURE_SECRET,
};
use super::peer_frames::route_peer_frames;
use crate::group::archive::{deserialize, Aligned};
use crate::group::state_machine::StateMachine;
use crate::protocol::{ClientId, Command, GroupId, NodeId, Refusal};

/// Requests a core takes from other threads: core 0's client port, or an
/// embedder's [`super::node::NodeHandle`].
pub(super) enum CoreRequest {
    /// Propose a command to a group of this core.
    Propose {
        group: u32,
        command: Command,
        reply: oneshot::Sender<ProposeOutcome>,
    },
    /// A linearizable read, or a local one (stale reads allowed).
    Read {
        group: u32,
        query: Bytes,
        local: bool,
        reply: oneshot::Sender<ReadOutcome>,
    },
    /// A client-port operation (the node's own state machine's commands).
    Client {
        request: ClientRequest,
        reply: oneshot::Sender<ClientResponse>,
    },
    /// The group's status as it stands.
    Status {
        group: u32,
        reply: oneshot::Sender<Option<StatusView>>,
    },
    /// Stream a group's commits to this channel.
    Subscribe {
        group: u32,
        reply: oneshot::Sender<Option<crossbeam_channel::Receiver<Committed>>>,
    },
}

/// Requests queued towards one core at most: callers wait beyond it.
pub(super) const CORE_REQUESTS_MAX: usize = 1024;

/// What a core reports to the thread that started the node.
pub(super) enum CoreEvent {
    /// Every group of the core started.
    Ready,
    /// The core stopped: on a fatal error, or cleanly after a stop.
    Stopped(u32, Result<(), NodeError>),
}

/// The groups of one core, by group id.
use super::group::Groups;

/// One executor of a node.
pub(super) struct Core<S> {
    pub(super) options: NodeOptions,
    pub(super) core: u32,
    pub(super) metrics: Arc<NodeMetrics>,
    pub(super) machines: Arc<dyn Fn(GroupId) -> S + Send + Sync>,
}

struct TransportLink(Rc<Transport>);

impl PeerLink for TransportLink {
    fn send_frame(&self, to: NodeId, kind: u16, body: Bytes) -> bool {
        // Large bodies are queued by reference, not copied (the transport's
        // send_bytes); the encoded message is sent as it was built.
        self.0
            .send_bytes(synod_net::NodeId(to.0), kind, body)
            .is_ok()
    }

    fn is_connected(&self, to: NodeId) -> bool {
        self.0.is_connected(synod_net::NodeId(to.0))
    }
}

impl<S: StateMachine> Core<S> {
    /// Runs the core until `stop` fires or a group fails; `events` hears
    /// when it is ready and when it stopped.
    pub(super) async fn serve(
        self,
        group_metrics: Vec<(u32, GroupMetrics)>,
        requests: mpsc::Receiver<CoreRequest>,
        routes: Vec<mpsc::Sender<CoreRequest>>,
        stop: oneshot::Receiver<()>,
        events: std::sync::mpsc::Sender<CoreEvent>,
    ) {
        // A panic outside a group's task (the state machine's constructor,
        // say) must still reach `Node::wait`; its tasks are leaked, but the
        // node stops instead of hanging.
        let result = AssertUnwindSafe(self.run(group_metrics, requests, routes, stop, &events))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(NodeError::Executor(format!(
                    "core {} panicked: {}",
                    self.core,
                    panic_message(&*panic)
                )))
            });
        let _ = events.send(CoreEvent::Stopped(self.core, result));
    }

    async fn run(
        &self,
        group_metrics: Vec<(u32, GroupMetrics)>,
        requests: mpsc::Receiver<CoreRequest>,
        routes: Vec<mpsc::Sender<CoreRequest>>,
        stop: oneshot::Receiver<()>,
        events: &std::sync::mpsc::Sender<CoreEvent>,
    ) -> Result<(), NodeError> {
        let (transport, inbox) = self.start_transport()?;
        let transport = Rc::new(transport);
        let link: Rc<dyn PeerLink> = Rc::new(TransportLink(transport.clone()));
        if self.options.metrics.is_some() {
            self.watch_peer_queues(transport.clone());
        }
        let (groups, ended) = self.start_groups(link, group_metrics).await?;
        let limits = limits(&group_config(&self.options, 0));
        route_peer_frames(&groups, inbox, self.options.id, limits);
        let requests = serve_requests(self.options.id, groups.clone(), requests);
        let clients = self
            .options
            .client_listen
            .map(|addr| self.serve_clients(addr, groups.clone(), routes))
            .transpose();
        let (clients, result) = match clients {
            Ok(clients) => (
                clients,
                self.serve_until_stopped(&groups, &ended, stop, events)
                    .await,
            ),
            Err(error) => (None, Err(error)),
        };
        // However the core ends, its other groups stop as well and every
        // request still waiting here is answered `Stopped` (its reply channel
        // dropped): the executor exits next, and the tasks it leaves behind
        // are never dropped, so their callers would wait forever.
        stop_groups(&groups, &ended).await;
        if let Some(clients) = clients {
            clients.close().await;
        }
        requests.cancel().await;
        result
    }

    /// Serves until every group ends (after a stop) or one fails.
    async fn serve_until_stopped(
        &self,
        groups: &Groups,
        ended: &LocalReceiver<Result<(), NodeError>>,
        stop: oneshot::Receiver<()>,
        events: &std::sync::mpsc::Sender<CoreEvent>,
    ) -> Result<(), NodeError> {
        tracing::info!(
            node = self.options.id.0,
            core = self.core,
            groups = groups.len(),
            "core up"
        );
        let _ = events.send(CoreEvent::Ready);
        let stopping = {
            let groups = groups.clone();
            glommio::spawn_local(async move {
                if stop.await.is_ok() {
                    for (handle, _) in groups.values() {
                        handle.stop().await;
                    }
                }
            })
        };
        let mut running = groups.len();
        while running > 0 {
            match ended.recv().await {
                Some(Ok(())) => running -= 1,
                Some(Err(error)) => return Err(error),
                None => break,
            }
        }
        drop(stopping);
        Ok(())
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
        // A replica that would keep another session table is refused.
        peer_config.compat = crate::protocol::SESSION_BOUNDS;
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

    /// Takes client requests on this core's share of the client port and
    /// answers them, here or through the core of their group.
    fn serve_clients(
        &self,
        addr: SocketAddr,
        groups: Groups,
        routes: Vec<mpsc::Sender<CoreRequest>>,
    ) -> Result<ClientPort, NodeError> {
        let listener = ClientListener::bind(ClientListenerConfig::new(addr))
            .map_err(|e| NodeError::Network(e.to_string()))?;
        let listener = Rc::new(listener);
        let options = &self.options;
        if self.core == 0 {
            tracing::info!(node = options.id.0, peers = %options.listen, clients = %addr, groups = options.groups, cores = options.cores, "node up");
        }
        let router = Rc::new(Router {
            node: options.id,
            core: self.core,
            cores: options.cores,
            groups_total: options.groups,
            local: groups,
            routes,
        });
        let incoming = Box::pin(futures_util::stream::unfold(
            listener.clone(),
            |listener| async move { listener.next().await.map(|request| (request, listener)) },
        ));
        let serving = answer_each(incoming, move |request| {
            let router = router.clone();
            async move {
                let response = router.answer(request.kind, &request.body).await;
                if let Err(error) = request.reply(KIND_CLIENT_REPLY, &response.encode()) {
                    tracing::debug!(%error, "client gone before its reply");
                }
            }
        });
        Ok(ClientPort { listener, serving })
    }

    /// Starts this core's groups; the receiver yields how each one ended.
    async fn start_groups(
        &self,
        link: Rc<dyn PeerLink>,
        metrics: Vec<(u32, GroupMetrics)>,
    ) -> Result<(Groups, LocalReceiver<Result<(), NodeError>>), NodeError> {
        let options = &self.options;
        let (ended_tx, ended_rx) = local_channel::new_bounded(metrics.len().max(1));
        let ended_tx = Rc::new(ended_tx);
        let mut groups = BTreeMap::new();
        for (group, metrics) in metrics {
            let group_options = GroupOptions {
                config: group_config(options, group),
                wal_dir: options.data_dir.join(format!("group-{group}")),
                wal: WalConfig {
                    write_bytes_max: 256 << 10,
                    fsync: options.fsync,
                    ..WalConfig::default()
                },
                tick: options.tick,
                snapshot: options.snapshot,
                metrics,
                rejoin: options.rejoin,
            };
            let machine = (self.machines)(GroupId(group));
            let started = start_group(group_options, GroupId(group), machine, link.clone()).await;
            let (handle, status, task) = match started {
                Ok(started) => started,
                Err(source) => {
                    // The groups started so far stop too, or they would run
                    // on, leaked, holding their WALs and this core's ports.
                    drop(ended_tx);
                    stop_groups(&Rc::new(groups), &ended_rx).await;
                    return Err(NodeError::Group { group, source });
                }
            };
            let ended_tx = ended_tx.clone();
            glommio::spawn_local(async move {
                // A panic would otherwise unwind the whole executor and leak
                // its tasks, and with them the channels that callers wait
                // on: they would hang. The group's driver is dropped, never
                // used again; what outlives it (its status cells, its WAL,
                // held by sync tasks) is read or finished, never resumed as
                // if the step had completed.
                let ended = AssertUnwindSafe(task)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(GroupError::Panicked(panic_message(&*panic))))
                    .map_err(|source| NodeError::Group { group, source });
                if let Err(error) = &ended {
                    tracing::error!(%error, "fatal: the node stops");
                }
                let _ = ended_tx.send(ended).await;
            })
            .detach();
            groups.insert(group, (handle, status));
        }
        Ok((Rc::new(groups), ended_rx))
    }
}

/// What a panic said, if it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Answers requests from other threads for this core's groups.
fn serve_requests(
    node: NodeId,
    groups: Groups,
    requests: mpsc::Receiver<CoreRequest>,
) -> glommio::Task<()> {
    answer_each(requests, move |request| {
        let groups = groups.clone();
        async move { carry_out(node, &groups, request).await }
    })
}

/// Answers one stream of requests has in progress at most: beyond it the
/// stream is not read, so its bounded channel fills and the sockets behind
/// it stop being read (each answer holds its request, up to a 1 MiB frame).
const ANSWERS_IN_PROGRESS_MAX: usize = 1024;

/// Runs `answer` on every item of `incoming`, all within one task, so that
/// cancelling the task drops every answer in progress, and with them their
/// reply channels. At most `ANSWERS_IN_PROGRESS_MAX` at a time.
fn answer_each<T, F, A>(
    mut incoming: impl futures_util::Stream<Item = T> + Unpin + 'static,
    answer: F,
) -> glommio::Task<()>
where
    F: Fn(T) -> A + 'static,
    A: std::future::Future<Output = ()> + 'static,
{
    glommio::spawn_local(async move {
        let mut in_progress = FuturesUnordered::new();
        loop {
            if in_progress.len() >= ANSWERS_IN_PROGRESS_MAX {
                in_progress.next().await;
                continue;
            }
            let next = if in_progress.is_empty() {
                incoming.next().await
            } else {
                match future::select(incoming.next(), in_progress.next()).await {
                    Either::Left((next, _)) => next,
                    Either::Right(_) => continue,
                }
            };
            match next {
                Some(item) => in_progress.push(answer(item)),
                None => break,
            }
        }
        while in_progress.next().await.is_some() {}
    })
}

/// The client port of one core and the task answering it.
struct ClientPort {
    listener: Rc<ClientListener>,
    serving: glommio::Task<()>,
}

impl ClientPort {
    /// Drops every request in progress and closes the port.
    async fn close(self) {
        self.serving.cancel().await;
        match Rc::try_unwrap(self.listener) {
            Ok(listener) => listener.shutdown().await,
            Err(_) => tracing::warn!("the client port is still in use; it closes when dropped"),
        }
    }
}

/// Stops every group of `groups` and waits until each has ended.
async fn stop_groups(groups: &Groups, ended: &LocalReceiver<Result<(), NodeError>>) {
    for (handle, _) in groups.values() {
        handle.stop().await;
    }
    while let Some(ended) = ended.recv().await {
        if let Err(error) = ended {
            tracing::warn!(%error, "another group failed while the core stopped");
        }
    }
}

async fn carry_out(node: NodeId, groups: &Groups, request: CoreRequest) {
    let missing = |group: u32| format!("group {group} is not on this core");
    match request {
        CoreRequest::Propose {
            group,
            command,
            reply,
        } => {
            let outcome = match groups.get(&group) {
                Some((handle, _)) => {
                    handle
                        .propose(command.client, command.seq, command.data)
                        .await
                }
                None => ProposeOutcome::Stopped,
            };
            let _ = reply.send(outcome);
        }
        CoreRequest::Read {
            group,
            query,
            local,
            reply,
        } => {
            let outcome = match groups.get(&group) {
                Some((handle, _)) if local => handle.read_local(query).await,
                Some((handle, _)) => handle.read(query).await,
                None => ReadOutcome::Stopped,
            };
            let _ = reply.send(outcome);
        }
        CoreRequest::Client { request, reply } => {
            let response = match groups.get(&request.group) {
                Some((handle, status)) => answer_op(node, handle, status, request.op).await,
                None => ClientResponse::Error(missing(request.group)),
            };
            let _ = reply.send(response);
        }
        CoreRequest::Status { group, reply } => {
            let _ = reply.send(groups.get(&group).map(|(_, status)| status.view()));
        }
        CoreRequest::Subscribe { group, reply } => {
            let receiver = match groups.get(&group) {
                Some((handle, _)) => Some(handle.subscribe().await),
                None => None,
            };
            let _ = reply.send(receiver);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Core 0's view of where every group lives.
struct Router {
    node: NodeId,
    /// The core this router runs on.
    core: u32,
    cores: u32,
    groups_total: u32,
    local: Groups,
    routes: Vec<mpsc::Sender<CoreRequest>>,
}

impl Router {
    /// Answers one client request; every failure is a response, never a panic.
    async fn answer(&self, kind: u16, body: &[u8]) -> ClientResponse {
        if kind != KIND_CLIENT_REQUEST {
            return ClientResponse::Error(format!("unknown request kind {kind}"));
        }
        // Checked in place: appends to a group on this core go from the
        // frame into their commands with one copy, not through a `Vec` each.
        let body = Aligned::new(body);
        let archived = match body.access::<ArchivedClientRequest>() {
            Ok(archived) => archived,
            Err(reason) => return ClientResponse::Error(format!("malformed request: {reason}")),
        };
        let group = archived.group.to_native();
        if group >= self.groups_total {
            return ClientResponse::Error(format!(
                "no group {group} (this node hosts {})",
                self.groups_total
            ));
        }
        // Anything but an append is answered from an owned copy.
        let owned = || {
            deserialize::<ClientRequest>(archived)
                .map_err(|reason| ClientResponse::Error(format!("malformed request: {reason}")))
        };
        let core = core_of(group, self.cores);
        if core == self.core {
            let Some((handle, status)) = self.local.get(&group) else {
                return ClientResponse::Error(format!("group {group} missing"));
            };
            return match &archived.op {
                ArchivedClientOp::Append { client, seq, data } => {
                    let (client, seq) = (ClientId(client.to_native()), seq.to_native());
                    append(handle, client, seq, data.as_slice()).await
                }
                ArchivedClientOp::AppendBatch { client, seq, items } => {
                    // One past the limit is enough for `append_batch` to refuse.
                    let items = items.iter().take(APPEND_BATCH_MAX + 1);
                    let items: Vec<&[u8]> = items.map(|item| item.as_slice()).collect();
                    let (client, seq) = (ClientId(client.to_native()), seq.to_native());
                    append_batch(handle, client, seq, &items).await
                }
                _ => match owned() {
                    Ok(request) => answer_op(self.node, handle, status, request.op).await,
                    Err(refused) => refused,
                },
            };
        }
        let request = match owned() {
            Ok(request) => request,
            Err(refused) => return refused,
        };
        let (reply, answer) = oneshot::channel();
        let mut route = self.routes[core as usize].clone();
        if route
            .send(CoreRequest::Client { request, reply })
            .await
            .is_err()
        {
            return ClientResponse::Error(format!("core {core} stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| ClientResponse::Error(format!("core {core} dropped the request")))
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
            append(handle, ClientId(client), seq, &data).await
        }
        ClientOp::AppendBatch { client, seq, items } => {
            append_batch(handle, ClientId(client), seq, &items).await
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

/// Proposes one append as `(client, seq)`.
async fn append(handle: &GroupHandle, client: ClientId, seq: u64, data: &[u8]) -> ClientResponse {
    let outcome = handle.propose(client, seq, append_command(data)).await;
    proposed(outcome, |index, _| ClientResponse::Appended { index })
}

/// Proposes a batch's items as one client's consecutive commands. Any item
/// refused makes the whole answer that refusal: the client retries the
/// batch with the same sequence numbers, and what was applied stays applied
/// once (the session answers it as older than its last).
async fn append_batch<T: AsRef<[u8]>>(
    handle: &GroupHandle,
    client: ClientId,
    seq: u64,
    items: &[T],
) -> ClientResponse {
    if items.is_empty() || items.len() > APPEND_BATCH_MAX {
        return ClientResponse::Error(format!("a batch holds 1 to {APPEND_BATCH_MAX} items"));
    }
    let Some(last) = seq.checked_add(items.len() as u64 - 1) else {
        return ClientResponse::Error("sequence numbers overflow".into());
    };
    let bytes: usize = items
        .iter()
        .map(|item| append_batch_bytes(item.as_ref().len(), 1))
        .sum();
    if bytes > BATCH_BYTES_MAX as usize {
        return ClientResponse::Error(format!(
            "a batch's commands take {bytes} bytes; one slot holds {BATCH_BYTES_MAX}"
        ));
    }
    debug_assert!(last >= seq);
    let commands = append_commands(items)
        .into_iter()
        .enumerate()
        .map(|(i, data)| Command {
            client,
            seq: seq + i as u64,
            data,
        })
        .collect();
    let mut indexes = Vec::with_capacity(items.len());
    for outcome in handle.propose_many(commands).await {
        match outcome {
            ProposeOutcome::Applied { index, .. } => indexes.push(Some(index.0)),
            ProposeOutcome::Stale => indexes.push(None),
            other => return proposed(other, |index, _| ClientResponse::Appended { index }),
        }
    }
    ClientResponse::AppendedBatch { indexes }
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
        ProposeOutcome::Expired { resume_at } => ClientResponse::SessionExpired { resume_at },
        // The client retries where the group is led now, with the same
        // sequence numbers: the session applies what was chosen once.
        ProposeOutcome::InDoubt { leader } => refused(Refusal::NotLeader(leader)),
    }
}

fn refused(reason: Refusal) -> ClientResponse {
    match reason {
        Refusal::NotLeader(leader) => ClientResponse::NotLeader {
            leader: leader.map(|l| l.0),
        },
        Refusal::Busy => ClientResponse::Busy,
        Refusal::TooLarge => {
            ClientResponse::Error("command, or request, too large for one slot".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    /// A client that pipelines faster than the group answers must meet the
    /// bounded channels, not an ever longer list of answers in progress.
    #[test]
    fn answers_in_progress_are_bounded_and_the_rest_wait_unread() {
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(|| async {
                let (started, done) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
                let gates: Rc<RefCell<Vec<oneshot::Sender<()>>>> = Rc::default();
                let requests = 3 * ANSWERS_IN_PROGRESS_MAX;
                let task = {
                    let (started, done, gates) = (started.clone(), done.clone(), gates.clone());
                    answer_each(futures_util::stream::iter(0..requests), move |_| {
                        let (started, done, gates) = (started.clone(), done.clone(), gates.clone());
                        async move {
                            started.set(started.get() + 1);
                            let (tx, rx) = oneshot::channel();
                            gates.borrow_mut().push(tx);
                            let _ = rx.await;
                            done.set(done.get() + 1);
                        }
                    })
                };
                glommio::timer::sleep(Duration::from_millis(20)).await;
                assert_eq!(started.get(), ANSWERS_IN_PROGRESS_MAX);
                while done.get() < requests {
                    for gate in gates.borrow_mut().drain(..) {
                        let _ = gate.send(());
                    }
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    assert!(started.get() - done.get() <= ANSWERS_IN_PROGRESS_MAX);
                }
                task.await;
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

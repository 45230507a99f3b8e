//! A node: the groups it hosts, thread-per-core, and the embedding API
//! ([`Node`], [`NodeHandle`]). Group g lives on core g mod cores on every
//! node; nothing is shared between cores but requests routed to a group's
//! core (`requests.rs`, `client_port.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::SinkExt;
use glommio::{LocalExecutorBuilder, Placement};

use super::client_port::{forward_channel, ClientService, NoClientPort, PortSetup};
use super::cores::{Core, CoreEvent};
use super::group::{
    ChangeError, CommitStream, MemberChange, MembershipView, ProposeOutcome, ReadOutcome,
    StatusView, SubscribeError, TransferError,
};
use super::metrics::{serve_metrics, GroupMetrics, NodeMetrics};
use super::requests::{CoreRequest, CORE_REQUESTS_MAX};
use crate::group::state_machine::StateMachine;
use crate::protocol::{ClientId, Command, GroupId, LogIndex, NodeId};

pub use super::client_port::{ClientGroups, ClientReply, ForwardError, LocalGroup};
pub use super::data_dir::{
    claim_data_dir, create_dir_durably, lock_data_dir, DataDirError, DataDirOperation,
    DataDirProblem, IDENTITY_FILE,
};
pub use super::error::{ClientPortError, ExecutorError, NodeError};
pub use super::options::{
    core_addr, core_of, core_peer_addr, NodeOptions, OptionsError, BATCH_BYTES_MAX, CORES_MAX,
    GROUPS_MAX, INSECURE_SECRET,
};
pub use synod_net::PeerAddr;

/// Every core's route, for a handle to reach the core of any group.
type Routes = Arc<Vec<mpsc::Sender<CoreRequest>>>;

/// A running node: one glommio executor per core, each with its own groups,
/// transport and WAL directories. Embedders start one with their own
/// [`StateMachine`] and talk to it through a [`NodeHandle`] from any thread;
/// no glommio type crosses this API.
///
/// ```no_run
/// use bytes::Bytes;
/// use synod_engine::runtime::node::{Node, NodeOptions};
/// use synod_engine::runtime::{Applying, Capture, StateMachine};
/// use synod_engine::protocol::GroupId;
/// # #[derive(Default)] struct MyMachine;
/// # impl StateMachine for MyMachine {
/// #     fn apply(&mut self, c: &[Applying<'_>]) -> Vec<Bytes> { vec![Bytes::new(); c.len()] }
/// #     fn query(&self, _: &[u8]) -> Bytes { Bytes::new() }
/// #     fn snapshot(&self) -> Capture { Capture::encoded(Bytes::new()) }
/// #     fn restore(&mut self, _: &[u8]) -> Result<(), String> { Ok(()) }
/// # }
/// # fn options() -> NodeOptions { unimplemented!() }
/// let node = Node::start(options(), |_group| MyMachine::default())?;
/// let handle = node.handle();
/// let outcome = futures_executor_block_on(handle.propose(GroupId(0), Bytes::from_static(b"command")));
/// # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output { unimplemented!() }
/// node.shutdown()?;
/// # Ok::<(), synod_engine::runtime::node::NodeError>(())
/// ```
pub struct Node {
    handle: NodeHandle,
    stops: NodeStopper,
    events: std::sync::mpsc::Receiver<CoreEvent>,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    /// Cores that have not reported their stop yet.
    running: usize,
    /// The data directory's lock, held while the node lives.
    _lock: std::fs::File,
    /// The client port's claim, held while the node lives.
    _client_port: Option<synod_net::PortClaim>,
}

/// Asks a node to stop from any thread (a signal handler, say): every
/// group stops, and [`Node::wait`] returns once every core has.
#[derive(Clone, Default)]
pub struct NodeStopper {
    stops: std::sync::Arc<std::sync::Mutex<Vec<oneshot::Sender<()>>>>,
}

impl NodeStopper {
    /// Stops every core; a second call does nothing.
    pub fn stop(&self) {
        let stops = match self.stops.lock() {
            Ok(mut stops) => std::mem::take(&mut *stops),
            // A thread panicked holding the lock: the senders are still
            // there, and sending on them is all that is left to do.
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for stop in stops {
            let _ = stop.send(());
        }
    }
}

/// A cheap, cloneable way into a node from any thread or async runtime.
#[derive(Clone)]
pub struct NodeHandle {
    cores: u32,
    groups: u32,
    routes: Routes,
}

/// The client port a node serves, and how it answers.
struct ClientPort<C> {
    listen: SocketAddr,
    service: C,
}

impl Node {
    /// Checks `options`, claims the data directory and starts every core;
    /// returns once every group has recovered and started, or with the first
    /// error. `machines` makes each group's state machine on its own core.
    /// The node has no client port: commands come through its handle.
    pub fn start<S, F>(options: NodeOptions, machines: F) -> Result<Node, NodeError>
    where
        S: StateMachine,
        F: Fn(GroupId) -> S + Send + Sync + 'static,
    {
        Node::launch::<S, F, NoClientPort>(options, machines, None)
    }

    /// [`Node::start`], with a client port on `client_listen` answered by
    /// `service`: every core accepts on it and answers requests for its own
    /// groups in place; the engine routes the others to their group's core
    /// and never reads a body (see [`ClientService`]).
    pub fn start_with_client_port<S, F, C>(
        options: NodeOptions,
        machines: F,
        client_listen: SocketAddr,
        service: C,
    ) -> Result<Node, NodeError>
    where
        S: StateMachine,
        F: Fn(GroupId) -> S + Send + Sync + 'static,
        C: ClientService,
    {
        let port = ClientPort {
            listen: client_listen,
            service,
        };
        Node::launch(options, machines, Some(port))
    }

    fn launch<S, F, C>(
        mut options: NodeOptions,
        machines: F,
        clients: Option<ClientPort<C>>,
    ) -> Result<Node, NodeError>
    where
        S: StateMachine,
        F: Fn(GroupId) -> S + Send + Sync + 'static,
        C: ClientService,
    {
        options.validate()?;
        // The cores share the client port (SO_REUSEPORT); nobody else may.
        let client_port = clients
            .as_ref()
            .map(|port| port.listen)
            .filter(|addr| addr.port() != 0)
            .map(|addr| {
                synod_net::claim_shared_port(addr, synod_net::BIND_BUSY_WAIT).map_err(|source| {
                    NodeError::ClientPort {
                        addr,
                        source: ClientPortError::Claim(source),
                    }
                })
            })
            .transpose()?;
        // glommio opens directories by absolute path only (a relative one
        // fails with EBADF at the first directory fsync).
        options.data_dir =
            std::path::absolute(&options.data_dir).map_err(|source| DataDirError {
                path: options.data_dir.clone(),
                source: DataDirProblem::Absolute(source),
            })?;
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
        let secret = options.client_secret.clone();
        let mut ports = client_port_setups(clients, options.cores, secret);
        let machines: Arc<dyn Fn(GroupId) -> S + Send + Sync> = Arc::new(machines);
        let (events_tx, events) = std::sync::mpsc::channel();
        let (mut stops, mut threads) = (Vec::new(), Vec::new());
        for (core, requests) in (0..options.cores).zip(receivers) {
            let (stop_tx, stop_rx) = oneshot::channel();
            stops.push(stop_tx);
            let core_metrics = std::mem::take(&mut group_metrics[core as usize]);
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
                clients: ports.as_mut().and_then(Iterator::next),
            };
            let events_tx = events_tx.clone();
            let thread = LocalExecutorBuilder::new(placement)
                .name(&format!("synod-core-{core}"))
                .io_memory(options.io_memory_bytes)
                .spawn(move || worker.serve(core_metrics, requests, stop_rx, events_tx))
                .map_err(|source| ExecutorError::Spawn { core, source })?;
            threads.push(thread);
        }
        let mut node = Node {
            handle: NodeHandle {
                cores: options.cores,
                groups: options.groups,
                routes,
            },
            stops: NodeStopper {
                stops: std::sync::Arc::new(std::sync::Mutex::new(stops)),
            },
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
                    let error = result
                        .err()
                        .unwrap_or(ExecutorError::StoppedWhileStarting { core }.into());
                    let _ = self.stop_all();
                    return Err(error);
                }
                Err(_) => return Err(ExecutorError::Vanished.into()),
            }
        }
        Ok(())
    }

    /// A handle for proposals, reads and commit streams.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// A way to stop the node from another thread while one waits on it.
    pub fn stopper(&self) -> NodeStopper {
        self.stops.clone()
    }

    /// Blocks until a core stops, then stops the others; returns the first
    /// error (a fatal WAL failure, say), or `Ok` after [`Node::shutdown`].
    pub fn wait(mut self) -> Result<(), NodeError> {
        let first = match self.events.recv() {
            Ok(CoreEvent::Stopped(_, result)) => {
                self.running -= 1;
                result
            }
            Ok(CoreEvent::Ready) => Err(ExecutorError::StartedTwice.into()),
            Err(_) => Err(ExecutorError::Vanished.into()),
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
        self.stops.stop();
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

/// Each core's share of the client port, in core order: every core takes
/// clients (the port is bound once per core, SO_REUSEPORT spreading
/// connections) and forwards requests to the core of their group.
fn client_port_setups<C: ClientService>(
    clients: Option<ClientPort<C>>,
    cores: u32,
    secret: Option<Vec<u8>>,
) -> Option<impl Iterator<Item = PortSetup<C>>> {
    let ClientPort { listen, service } = clients?;
    let service = Arc::new(service);
    let (routes, receivers): (Vec<_>, Vec<_>) = (0..cores).map(|_| forward_channel()).unzip();
    Some(receivers.into_iter().map(move |forwarded| PortSetup {
        listen,
        secret: secret.clone(),
        service: service.clone(),
        forwarded,
        routes: routes.clone(),
    }))
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

    /// `group`'s configuration on this node: the members in force (each a
    /// voter or a learner) and a change under way, if any; `None` if this
    /// node has no such group.
    pub async fn membership(&self, group: GroupId) -> Option<MembershipView> {
        let asked = self.ask(group, |reply| CoreRequest::Membership {
            group: group.0,
            reply,
        });
        asked.await.flatten()
    }

    /// Hands `group`'s leadership to member `to`, which takes it at once
    /// instead of waiting out an election (before removing the leader, or
    /// to move load). This node must lead the group; returns once it sees
    /// `to` lead, or an error after [`TRANSFER_WAIT`](super::group::TRANSFER_WAIT).
    pub async fn transfer_leadership(
        &self,
        group: GroupId,
        to: NodeId,
    ) -> Result<(), TransferError> {
        let asked = self.ask(group, |reply| CoreRequest::TransferLeadership {
            group: group.0,
            to,
            reply,
        });
        asked.await.unwrap_or(Err(TransferError::Stopped))
    }

    /// Changes `group`'s members (see [`MemberChange`]): this node must
    /// lead the group. Returns once it sees the change done (an added
    /// member in force in its role, a removal chosen), or an error after
    /// `within`; the configuration as it then stands.
    pub async fn change_members(
        &self,
        group: GroupId,
        change: MemberChange,
        within: Duration,
    ) -> Result<MembershipView, ChangeError> {
        let asked = self.ask(group, |reply| CoreRequest::ChangeMembers {
            group: group.0,
            change,
            within,
            reply,
        });
        asked.await.unwrap_or(Err(ChangeError::Stopped))
    }

    /// Every command this node applies to `group` from log index `from` on,
    /// in log order (see [`CommitStream`]): those already applied come
    /// from the group's history ([`NodeOptions::commit_history_bytes`]), or
    /// the answer is [`SubscribeError::Compacted`] with where a stream can
    /// start now. Subscribing from the group's `next_index` (in its
    /// [`StatusView`]) streams what is applied from now on.
    pub async fn subscribe(
        &self,
        group: GroupId,
        from: LogIndex,
    ) -> Result<CommitStream, SubscribeError> {
        let asked = self.ask(group, |reply| CoreRequest::Subscribe {
            group: group.0,
            from,
            reply,
        });
        asked.await.unwrap_or(Err(SubscribeError::NoGroup(group.0)))
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
            .map_err(|source| NodeError::Metrics { addr, source })?;
        tracing::info!(%bound, "serving metrics");
    }
    Ok((metrics, by_core))
}

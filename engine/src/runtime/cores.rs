//! One core of a node: its groups, its transport, and its share of the
//! client port.
//!
//! ```text
//!  clients ──► any core (client_port.rs) ──► its groups, or the group's core
//!  embedder threads ──CoreRequest──► the core of the group (requests.rs)
//!  core i ◄── own transport, port + i ──► core i of every peer
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::FutureExt;
use glommio::channels::local_channel::{self, LocalReceiver};
use synod_net::{Inbox, PeerAddr, PeerConfig, Secret, Transport};
use synod_wal::WalConfig;

use super::client_port::{self, ClientService, Layout, OpenPort, PortSetup};
use super::error::{ExecutorError, NodeError};
use super::group::{start_group, GroupError, GroupOptions, Groups, PeerLink};
use super::metrics::{GroupMetrics, NodeMetrics, PeerLabel};
use super::options::{
    core_addr, core_peer_addr, group_config, limits, NodeOptions, INSECURE_SECRET,
};
use super::peer_frames::route_peer_frames;
use super::requests::{serve_requests, CoreRequest};
use crate::group::state_machine::StateMachine;
use crate::protocol::{GroupId, NodeId};

/// What a core reports to the thread that started the node.
pub(super) enum CoreEvent {
    /// Every group of the core started.
    Ready,
    /// The core stopped: on a fatal error, or cleanly after a stop.
    Stopped(u32, Result<(), NodeError>),
}

/// One executor of a node.
pub(super) struct Core<S, C: ClientService> {
    pub(super) options: NodeOptions,
    pub(super) core: u32,
    pub(super) metrics: Arc<NodeMetrics>,
    pub(super) machines: Arc<dyn Fn(GroupId) -> S + Send + Sync>,
    /// Its share of the client port, if the node has one.
    pub(super) clients: Option<PortSetup<C>>,
}

/// A core's transport as its groups see it.
struct TransportLink {
    transport: Rc<Transport>,
    /// This core's index: a member's core `i` listens at its address's
    /// port plus `i`.
    core: u32,
    /// Each member's address as configurations name it (its core 0's):
    /// the node's `--peers`, then members added while it runs.
    addrs: RefCell<BTreeMap<NodeId, String>>,
}

impl PeerLink for TransportLink {
    fn send_frame(&self, to: NodeId, kind: u16, body: Bytes) -> bool {
        // Large bodies are queued by reference, not copied (the transport's
        // send_bytes); the encoded message is sent as it was built.
        self.transport
            .send_bytes(synod_net::NodeId(to.0), kind, body)
            .is_ok()
    }

    fn is_connected(&self, to: NodeId) -> bool {
        self.transport.is_connected(synod_net::NodeId(to.0))
    }

    fn add_peer(&self, to: NodeId, addr: &str) -> bool {
        if self.addrs.borrow().contains_key(&to) {
            return true;
        }
        let Some(at) = addr
            .parse::<PeerAddr>()
            .ok()
            .and_then(|a| core_peer_addr(&a, self.core))
        else {
            return false;
        };
        if self
            .transport
            .add_peer(synod_net::NodeId(to.0), at)
            .is_err()
        {
            return false;
        }
        self.addrs.borrow_mut().insert(to, addr.to_string());
        true
    }

    fn addr_of(&self, to: NodeId) -> Option<String> {
        self.addrs.borrow().get(&to).cloned()
    }
}

impl<S: StateMachine, C: ClientService> Core<S, C> {
    /// Runs the core until `stop` fires or a group fails; `events` hears
    /// when it is ready and when it stopped.
    pub(super) async fn serve(
        mut self,
        group_metrics: Vec<(u32, GroupMetrics)>,
        requests: mpsc::Receiver<CoreRequest>,
        stop: oneshot::Receiver<()>,
        events: std::sync::mpsc::Sender<CoreEvent>,
    ) {
        let clients = self.clients.take();
        // A panic outside a group's task (the state machine's constructor,
        // say) must still reach `Node::wait`; its tasks are leaked, but the
        // node stops instead of hanging.
        let result = AssertUnwindSafe(self.run(group_metrics, requests, clients, stop, &events))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(NodeError::Executor(ExecutorError::Panicked {
                    core: self.core,
                    message: panic_message(&*panic),
                }))
            });
        let _ = events.send(CoreEvent::Stopped(self.core, result));
    }

    async fn run(
        &self,
        group_metrics: Vec<(u32, GroupMetrics)>,
        requests: mpsc::Receiver<CoreRequest>,
        clients: Option<PortSetup<C>>,
        stop: oneshot::Receiver<()>,
        events: &std::sync::mpsc::Sender<CoreEvent>,
    ) -> Result<(), NodeError> {
        let (transport, inbox) = self.start_transport()?;
        let transport = Rc::new(transport);
        let addrs = self
            .options
            .peers
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect();
        let link: Rc<dyn PeerLink> = Rc::new(TransportLink {
            transport: transport.clone(),
            core: self.core,
            addrs: RefCell::new(addrs),
        });
        if self.options.metrics.is_some() {
            self.watch_peer_queues(transport.clone());
        }
        let (groups, ended) = self.start_groups(link, group_metrics).await?;
        let limits = limits(&group_config(&self.options, 0));
        route_peer_frames(&groups, inbox, self.options.id, limits);
        let requests = serve_requests(groups.clone(), requests);
        let clients = clients
            .map(|setup| self.open_client_port(setup, groups.clone()))
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
        let core = self.core;
        let peers = options
            .peers
            .iter()
            .map(|(id, addr)| {
                let at = core_peer_addr(addr, core).expect("validated port range");
                (synod_net::NodeId(id.0), at)
            })
            .collect();
        let listen = core_addr(options.listen, core).expect("validated port range");
        let mut peer_config = PeerConfig::new(
            options.cluster_id,
            synod_net::NodeId(options.id.0),
            secret,
            listen,
            peers,
        );
        peer_config.core = self.core;
        // A replica that would keep another session table, or speaks
        // another revision of the messages, is refused.
        peer_config.compat = super::codec::PEER_COMPAT;
        peer_config.encrypt = options.encrypt_peer_frames;
        Transport::start(peer_config).map_err(|source| NodeError::Transport {
            core: self.core,
            source,
        })
    }

    /// Reads the transport's per-peer queues and links into the metrics
    /// twice a second.
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
                    let label = PeerLabel { peer: *peer, core };
                    metrics
                        .peer_queue_bytes
                        .get_or_create(&label)
                        .set(queued as i64);
                    let connected = transport.is_connected(synod_net::NodeId(*peer));
                    metrics
                        .peer_connected
                        .get_or_create(&label)
                        .set(i64::from(connected));
                }
                glommio::timer::sleep(Duration::from_millis(500)).await;
            }
        })
        .detach();
    }

    /// Opens this core's share of the client port.
    fn open_client_port(&self, setup: PortSetup<C>, groups: Groups) -> Result<OpenPort, NodeError> {
        let options = &self.options;
        if self.core == 0 {
            tracing::info!(node = options.id.0, peers = %options.listen, clients = %setup.listen, groups = options.groups, cores = options.cores, "node up");
        }
        let layout = Layout {
            core: self.core,
            cores: options.cores,
            groups: options.groups,
        };
        client_port::open(setup, layout, groups)
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
                commit_history_bytes: options.commit_history_bytes,
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
